"""Query plans: the editable, printable form of a query over SAE concepts.

A plan is a tuple of :class:`Concept` (feature, weight, negated) plus metadata filters. Plans are
immutable: ``add``, ``drop``, ``reweight``, ``negate`` and ``where`` return a new plan, so a user
can print one, change it and re-run it without surprises.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from sae.errors import SaeError

FILTER_OPS = ("==", "!=", "in", "not in", ">", ">=", "<", "<=")


@dataclass(frozen=True)
class Concept:
    """One feature in a plan: its weight, whether it is negated, and where it came from."""

    feature: int
    weight: float = 1.0
    negated: bool = False
    label: str = ""
    phrase: str = ""
    """The query phrase that produced it ("" when added by hand)."""
    match: float = float("nan")
    """How well the phrase matched the feature's label (the planner's confidence)."""
    group: int = -1
    """Concepts sharing a group are alternatives (OR: the strongest counts); groups are ANDed.
    -1 (the default) puts the concept in a group of its own."""
    required: bool = True
    """False for a soft concept (e.g. one of an example item's features): it adds to the score but
    a hit need not show it. Negated concepts always penalise."""


@dataclass(frozen=True)
class QueryPlan:
    query: str
    concepts: tuple[Concept, ...] = ()
    filters: tuple[tuple[str, str, Any], ...] = ()
    planner: str = "manual"
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        seen = [c.feature for c in self.concepts]
        if len(seen) != len(set(seen)):
            raise SaeError(f"a plan names each feature once; duplicates in {seen}")
        for col, op, _ in self.filters:
            if op not in FILTER_OPS:
                raise SaeError(f"unknown filter operator {op!r} on {col!r}; use one of {FILTER_OPS}")

    @property
    def positives(self) -> tuple[Concept, ...]:
        return tuple(c for c in self.concepts if not c.negated)

    @property
    def negatives(self) -> tuple[Concept, ...]:
        return tuple(c for c in self.concepts if c.negated)

    def groups(self) -> list[tuple[Concept, ...]]:
        """Concepts grouped for ranking: one tuple per OR-group (ungrouped concepts stand alone), in plan order."""
        out: dict = {}
        for c in self.concepts:
            key = ("g", c.group, c.negated, c.required) if c.group >= 0 else ("f", c.feature)
            out.setdefault(key, []).append(c)
        return [tuple(v) for v in out.values()]

    def _find(self, feature: int) -> int:
        for i, c in enumerate(self.concepts):
            if c.feature == int(feature):
                return i
        raise SaeError(f"feature {feature} is not in the plan; it has {[c.feature for c in self.concepts]}")

    def add(self, feature: int, weight: float = 1.0, negated: bool = False, label: str = "", required: bool = True) -> QueryPlan:
        if any(c.feature == int(feature) for c in self.concepts):
            raise SaeError(f"feature {feature} is already in the plan; use reweight() or negate()")
        if not weight > 0:
            raise SaeError("weights must be positive; use negated=True to exclude a concept")
        new = Concept(int(feature), float(weight), negated, label, required=required)
        return replace(self, concepts=self.concepts + (new,), planner=self._edited())

    def drop(self, feature: int) -> QueryPlan:
        """The plan without ``feature``. Dropping may leave no positive concept (an intermediate edit);
        searching such a plan is refused (:meth:`ConceptIndex.score`), never answered with arbitrary items."""
        i = self._find(feature)
        return replace(self, concepts=self.concepts[:i] + self.concepts[i + 1 :], planner=self._edited())

    def reweight(self, feature: int, weight: float) -> QueryPlan:
        if not weight > 0:
            raise SaeError("weights must be positive; use negate() to exclude a concept or drop() to remove it")
        i = self._find(feature)
        new = replace(self.concepts[i], weight=float(weight))
        return replace(self, concepts=self.concepts[:i] + (new,) + self.concepts[i + 1 :], planner=self._edited())

    def negate(self, feature: int) -> QueryPlan:
        """Flip a concept between required and excluded."""
        i = self._find(feature)
        new = replace(self.concepts[i], negated=not self.concepts[i].negated)
        return replace(self, concepts=self.concepts[:i] + (new,) + self.concepts[i + 1 :], planner=self._edited())

    def where(self, column: str, op: str, value: Any) -> QueryPlan:
        """Add a metadata filter, e.g. ``where("orientation", "==", "axial")``."""
        return replace(self, filters=self.filters + ((column, op, value),), planner=self._edited())

    def without_filter(self, index: int) -> QueryPlan:
        """The plan without its ``index``-th filter (in :attr:`filters` order)."""
        if not 0 <= int(index) < len(self.filters):
            raise SaeError(f"the plan has no filter {index}; it has {len(self.filters)}: {list(self.filters)}")
        i = int(index)
        return replace(self, filters=self.filters[:i] + self.filters[i + 1 :], planner=self._edited())

    def _edited(self) -> str:
        return self.planner if self.planner.endswith("+edited") else f"{self.planner}+edited"

    def frame(self) -> pd.DataFrame:
        cols = ["feature", "label", "weight", "negated", "required", "group", "phrase", "match"]
        return pd.DataFrame([{k: getattr(c, k) for k in cols} for c in self.concepts], columns=cols)

    def __str__(self) -> str:
        def one(c: Concept) -> str:
            return f"#{c.feature} {c.label!r} x{c.weight:.3g}" + ("" if c.required or c.negated else " (soft)")

        parts = []
        for grp in self.groups():
            body = " OR ".join(one(c) for c in grp[:4]) + (f" OR ... ({len(grp)} features)" if len(grp) > 4 else "")
            body = f"({body})" if len(grp) > 1 else body
            parts.append(("NOT " if grp[0].negated else "") + body)
        filt = [f"{c} {op} {v!r}" for c, op, v in self.filters]
        text = " AND ".join(parts) or "(no concepts)"
        if filt:
            text += " WHERE " + " AND ".join(filt)
        return f"plan ({self.planner}) for {self.query!r}: {text}" + "".join(f"\n  note: {n}" for n in self.notes)

    def summary(self, width: int = 48) -> str:
        """One line per OR-group: the phrase, how many features express it, the best one's label."""
        lines = []
        for g in self.groups():
            head = max(g, key=lambda c: c.weight)
            label = head.label if len(head.label) <= width else head.label[: width - 3] + "..."
            kind = "NOT " if g[0].negated else ("" if g[0].required else "soft ")
            phrase = f"{g[0].phrase!r} -> " if g[0].phrase else ""
            more = f" (+{len(g) - 1} OR)" if len(g) > 1 else ""
            lines.append(f"{kind}{phrase}#{head.feature} {label!r}{more}")
        return "; ".join(lines)

    def _repr_html_(self) -> str:
        """The plan as :meth:`groups` ranks it: one box per group, boxes joined by AND; an OR-group's strongest
        :data:`HTML_SHOWN` members joined by "or", the rest folded under "+N more"; NOT and soft groups marked; then
        the filters and the notes. Every label, phrase, value and note is escaped (they are untrusted text)."""
        esc = html.escape
        boxes = " <b class='sae-plan-and'>AND</b> ".join(_group_html(g) for g in self.groups()) or "<i>(no concepts)</i>"
        filt = " AND ".join(f"<code>{esc(str(c))} {esc(op)} {esc(repr(v))}</code>" for c, op, v in self.filters)
        where = f"<div class='sae-plan-filters'><b>where</b> {filt}</div>" if filt else ""
        notes = "".join(f"<div class='sae-plan-note'><i>note: {esc(n)}</i></div>" for n in self.notes)
        return (f"<div class='sae-plan'><b>plan</b> ({esc(self.planner)}) for <q>{esc(self.query)}</q>"
                f"<div style='display:flex;flex-wrap:wrap;align-items:center;gap:4px;margin:4px 0'>{boxes}</div>"
                f"{where}{notes}</div>")


HTML_SHOWN = 3
"""Members of an OR-group shown in :meth:`QueryPlan._repr_html_` before the rest fold under "+N more"."""


def _chip_html(c: Concept) -> str:
    """One concept: its id, label and weight (escaped)."""
    return (f"<span class='sae-plan-chip' style='padding:0 4px;border-radius:6px;background:var(--jp-layout-color2,#f3f3f3)'>"
            f"#{c.feature} {html.escape(c.label)} <small>&times;{c.weight:.3g}</small></span>")


def _group_html(group: tuple[Concept, ...]) -> str:
    """One plan group as a box: NOT groups red and labeled NOT, soft ones dashed and labeled soft; an OR-group's
    members strongest first, the first :data:`HTML_SHOWN` joined by "or", the others under ``<details>``."""
    head = group[0]
    kind = "not" if head.negated else ("soft" if not head.required else "and")
    border = {"not": "2px solid #c62828", "soft": "1px dashed #888", "and": "1px solid var(--jp-border-color1,#ccc)"}[kind]
    tag = {"not": "<b style='color:#c62828'>NOT</b> ", "soft": "<i>soft (example)</i> ", "and": ""}[kind]
    members = sorted(group, key=lambda c: -c.weight)
    shown = " <i>or</i> ".join(_chip_html(c) for c in members[:HTML_SHOWN])
    rest = members[HTML_SHOWN:]
    more = (f" <details style='display:inline-block'><summary>+{len(rest)} more</summary>"
            f"{' <i>or</i> '.join(_chip_html(c) for c in rest)}</details>") if rest else ""
    phrase = f"<q>{html.escape(head.phrase)}</q>: " if head.phrase else ""
    return (f"<span class='sae-plan-group' data-kind='{kind}' style='border:{border};border-radius:8px;padding:2px 6px'>"
            f"{tag}{phrase}{shown}{more}</span>")
