"""A small radiology thesaurus: lay, anatomical and spelling variants rewritten to the terms labels use.

Sentence encoders such as MiniLM do not know that "lower brain" is "inferior", that "intensity
inhomogeneity" is a "bias field" or that "transverse" is "axial". The planner matches a phrase both
as typed and as rewritten here, keeping the better match, so a synonym can only help. Entries are
general radiology vocabulary (directions, planes, MRI artifact names, British/American spelling),
not any dataset's values; extend with ``Thesaurus({...})``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

RADIOLOGY: dict[str, tuple[str, ...]] = {
    # directions
    "inferior": ("lower", "bottom", "caudal", "base of the"),
    "superior": ("upper", "top", "cranial", "vertex"),
    "anterior": ("front", "ventral", "frontal part", "forward"),
    "posterior": ("back", "rear", "dorsal", "occipital part"),
    "lateral": ("side", "lateral edge", "peripheral", "outer"),
    "medial": ("midline", "near the midline", "inner"),
    "mid": ("middle", "central", "centre", "center"),
    # planes
    "axial": ("transverse", "transaxial", "horizontal plane"),
    "coronal": ("frontal plane",),
    "sagittal": ("midsagittal", "parasagittal"),
    # MRI artifacts and image quality
    "bias field": ("intensity inhomogeneity", "intensity non-uniformity", "intensity nonuniformity", "shading", "rf inhomogeneity"),
    "noise": ("grainy", "low snr", "noisy", "snr", "graininess"),
    "blur": ("blurry", "blurred", "unsharp", "smeared", "out of focus"),
    "motion": ("movement", "moving", "patient motion", "motion-corrupted", "motion corrupted"),
    "ghosting": ("ghost", "ghosts", "ghosted", "replicas", "n/2 ghost"),
    "spike": ("herringbone", "k-space spike", "corduroy", "spike noise"),
    "artifact": ("artefact", "artefacts", "artifacts"),
    # British / American spelling
    "edema": ("oedema",), "hematoma": ("haematoma",), "hemorrhagic": ("haemorrhagic",), "tumor": ("tumour",),
    "ischemic": ("ischaemic",), "hemangioma": ("haemangioma",),
}


@dataclass(frozen=True)
class Thesaurus:
    """Rewrites synonyms (longest first, whole words) to canonical terms."""

    entries: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(RADIOLOGY))

    _pattern: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _canon: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        pairs = sorted(((syn.lower(), canon) for canon, syns in self.entries.items() for syn in syns), key=lambda p: -len(p[0]))
        object.__setattr__(self, "_pattern", re.compile(r"\b(" + "|".join(re.escape(s) for s, _ in pairs) + r")\b", re.I) if pairs else None)
        object.__setattr__(self, "_canon", dict(pairs))

    def rewrite(self, phrase: str) -> str:
        """The phrase with every known synonym replaced by its canonical term (unchanged if none)."""
        if self._pattern is None:
            return phrase
        return self._pattern.sub(lambda m: self._canon[m.group(1).lower()], phrase)
