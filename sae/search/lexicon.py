"""A small radiology lexicon of opposites: what a query phrase asserts about direction, degree and normality.

Sentence encoders put "inferior" next to "superior" and "mild" next to "severe", so an embedding match
alone maps a phrase to its opposite. The planner therefore reads the *poles* a phrase and a label assert
on a few axes and refuses a label that asserts the other pole of an axis the phrase speaks about.

Axes (each a pair of poles, each pole a set of words; comparatives and plurals are listed, matching is
by whole words or word sequences, case-insensitive, longest first, so "far from the midline" is lateral
although "midline" is medial). Anatomical landmarks carry their primary direction ("cerebellum" and
"skull base" inferior, "forehead" and "frontal lobe" anterior, "occipital lobe" posterior,
"interhemispheric" medial):

* directions: vertical (superior / inferior), anteroposterior, side (left / right), mediolateral,
  proximodistal;
* degree: severity (mild / severe), size (small / large), level (low / high);
* normality (normal / abnormal): a degree word ("enlarged", "severe", "low") also asserts "abnormal",
  so "enlarged heart" never maps to "heart size normal".

Presence (a finding stated absent, "no pleural effusion") is read from the label's own negation: a
label part that states an absence never answers a phrase that asks for a presence (see
:data:`NEGATED_PART`). The lexicon is general radiology vocabulary, not any dataset's values; pass
your own :class:`Lexicon` to change it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

Poles = dict[str, frozenset[str]]
"""axis -> the poles a text asserts on it (two poles on one axis: the text itself is mixed)."""

OPPOSITES: dict[str, dict[str, tuple[str, ...]]] = {
    "vertical": {
        "superior": ("superior", "upper", "uppermost", "top", "cranial", "cephalad", "vertex", "apex", "apical", "apices",
                     "above", "higher up", "high convexity", "crown of the head", "crown", "centrum semiovale"),
        "inferior": ("inferior", "lower", "lowermost", "bottom", "caudal", "base", "bases", "basal", "basilar", "below",
                     "skull base", "base of the", "cerebellum", "cerebellar", "brainstem", "brain stem", "posterior fossa",
                     "foramen magnum", "medulla", "pons", "temporal poles", "temporal pole"),
    },
    "anteroposterior": {
        "anterior": ("anterior", "front", "frontal part", "ventral", "forward", "frontward", "forehead", "frontal lobe",
                     "frontal lobes", "frontal pole", "frontal poles"),
        "posterior": ("posterior", "back", "rear", "dorsal", "behind", "backward", "occipital part", "occiput", "occipital lobe",
                      "occipital lobes", "occipital pole", "occipital poles", "occipital"),
    },
    "side": {"left": ("left", "left-sided", "sinistral"), "right": ("right", "right-sided", "dextral")},
    "mediolateral": {
        "medial": ("medial", "midline", "inner", "innermost", "near the midline", "close to the midline", "paramedian",
                   "midsagittal", "mid-sagittal", "interhemispheric", "falx", "corpus callosum"),
        "lateral": ("lateral", "outer", "outermost", "peripheral", "periphery", "side of the", "sides of the", "far side", "edge of the", "edges of the",
                    "off-midline", "off midline", "far from the midline", "away from the midline", "lateral convexity"),
    },
    "proximodistal": {"proximal": ("proximal",), "distal": ("distal",)},
    "severity": {
        "mild": ("mild", "mildly", "minimal", "minor", "slight", "slightly", "subtle", "faint", "trace", "trivial"),
        "severe": ("severe", "severely", "marked", "markedly", "extensive", "gross", "massive", "pronounced"),
    },
    "size": {
        "small": ("small", "smaller", "tiny", "little", "diminutive", "shrunken"),
        "large": ("large", "larger", "big", "bigger", "enlarged", "enlargement", "huge", "dilated", "widened", "prominent"),
    },
    "level": {
        "low": ("low", "reduced", "decreased", "diminished"),
        "high": ("high", "increased", "elevated", "raised"),
    },
    "normality": {
        "normal": ("normal", "normally", "unremarkable", "within normal limits", "healthy", "clean", "clear"),
        "abnormal": ("abnormal", "abnormality", "abnormalities", "pathologic", "pathological", "diseased"),
    },
}
"""axis -> pole -> words asserting it."""

IMPLIES: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {
    (axis, pole): (("normality", "abnormal"),) for axis in ("severity", "size", "level") for pole in OPPOSITES[axis]
}
"""A degree word also asserts an abnormality ("enlarged heart" is not "heart size normal")."""

NEGATED_PART = re.compile(r"^\s*(no|not|without|free of|negative for|absence of)\b", re.IGNORECASE)
"""A label part stating an absence (the offline labeler writes negated report phrases as "no ...")."""


@dataclass(frozen=True)
class Lexicon:
    """Reads the poles a text asserts and tells whether two readings contradict each other."""

    opposites: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=lambda: OPPOSITES)
    implies: Mapping[tuple[str, str], tuple[tuple[str, str], ...]] = field(default_factory=lambda: IMPLIES)
    _pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _pole_of: dict[str, tuple[str, str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        pole_of = {w.lower(): (axis, pole) for axis, poles in self.opposites.items() for pole, words in poles.items() for w in words}
        words = sorted(pole_of, key=len, reverse=True)
        object.__setattr__(self, "_pole_of", pole_of)
        object.__setattr__(self, "_pattern", re.compile(r"(?<![\w-])(" + "|".join(re.escape(w) for w in words) + r")(?![\w-])", re.I))

    def words(self, text: str) -> list[tuple[str, str, str]]:
        """(word as written, axis, pole) for every pole word in ``text``, longest phrases first, left to right."""
        return [(m.group(1), *self._pole_of[m.group(1).lower()]) for m in self._pattern.finditer(text)]

    def poles(self, text: str) -> Poles:
        """axis -> poles asserted by ``text`` (implied poles included)."""
        out: dict[str, set[str]] = {}
        for _, axis, pole in self.words(text):
            out.setdefault(axis, set()).add(pole)
            for ax, po in self.implies.get((axis, pole), ()):
                out.setdefault(ax, set()).add(po)
        return {a: frozenset(p) for a, p in out.items()}

    def query_poles(self, text: str) -> Poles:
        """The poles a query phrase asserts: :meth:`poles`, plus "abnormal" when it says nothing about normality.
        A search names something to find; a label asserting normality ("clear lungs", "heart size is normal")
        answers only a query that itself asks for normality ("normal heart size", "clear lungs")."""
        out = self.poles(text)
        if "normality" not in out:
            out = {**out, "normality": frozenset({"abnormal"})}
        return out

    def canonical(self, text: str) -> str:
        """``text`` with every pole word replaced by its pole ("slices near the skull base" -> "slices near the inferior"):
        the planner also matches this form, since a sentence encoder knows "inferior region" better than "skull base"."""
        return self._pattern.sub(lambda m: self._pole_of[m.group(1).lower()][1], text)

    @staticmethod
    def conflicts(a: Poles, b: Poles) -> list[tuple[str, str, str]]:
        """(axis, pole of a, pole of b) for every axis where ``a`` and ``b`` assert different poles only."""
        out = []
        for axis in sorted(a.keys() & b.keys()):
            if not a[axis] & b[axis]:
                out.append((axis, "/".join(sorted(a[axis])), "/".join(sorted(b[axis]))))
        return out

    @staticmethod
    def missing(wanted: Poles, have: Poles, axes: frozenset[str] | None = None) -> list[tuple[str, str]]:
        """(axis, pole) the query ``wanted`` on ``axes`` (default: every axis) that ``have`` does not assert."""
        return [(axis, "/".join(sorted(p))) for axis, p in sorted(wanted.items())
                if (axes is None or axis in axes) and not p & have.get(axis, frozenset())]

    @staticmethod
    def merge(*readings: Poles) -> Poles:
        out: dict[str, frozenset[str]] = {}
        for r in readings:
            for axis, p in r.items():
                out[axis] = out.get(axis, frozenset()) | p
        return out


DIRECT_AXES = frozenset({"vertical", "anteroposterior", "side", "mediolateral", "proximodistal"})
"""Axes a phrase's matched label must itself state when the phrase does ("lower brain" needs a label saying
inferior, not one that merely mentions the brain). Degree and normality are only checked for conflicts:
"enlarged heart" may be answered by "cardiomegaly", which names no degree word."""
