"""A small radiology thesaurus: lay, anatomical and spelling variants rewritten to the terms labels use.

Sentence encoders such as MiniLM do not know that "lower brain" is "inferior", that "intensity
inhomogeneity" is a "bias field", that "transverse" is "axial" or that an "enlarged heart" is "cardiomegaly". The planner matches a phrase both
as typed and as rewritten here, keeping the better match, so a synonym can only help. Entries are
general radiology vocabulary (directions, planes, MRI artifact names, lay words for chest radiograph
findings, British/American spelling), not any dataset's values; extend with ``Thesaurus({...})``.
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
    # lay words for chest radiograph findings (what a clinician or student types, rewritten to report terms)
    "cardiomegaly": ("enlarged heart", "big heart", "large heart", "heart enlargement", "heart is enlarged", "heart looks big"),
    "pleural effusion": ("fluid around the lungs", "fluid around the lung", "water on the lungs", "water on the lung",
                         "fluid in the chest", "fluid at the lung base", "fluid in the pleural space"),
    "atelectasis": ("collapsed lung", "lung collapse", "partially collapsed lung", "part of the lung has collapsed",
                    "lung not fully expanded", "airless lung"),
    "pneumothorax": ("air around the lung", "air outside the lung", "air leak in the chest"),
    "fracture": ("broken bone", "broken rib", "break in the bone", "cracked rib", "cracked bone"),
    "scoliosis": ("curved spine", "curvature of the spine", "spinal curve", "sideways curve of the spine"),
    "thoracic spine": ("upper back", "backbone", "vertebrae of the chest", "spine in the chest", "mid back"),
    "granulomatous disease": ("old tuberculosis", "old tb", "healed tuberculosis", "prior tuberculosis", "old fungal infection"),
    "calcified granuloma": ("chalky nodule", "calcified nodule", "calcified spot"),
    "opacity": ("white area", "white patch", "hazy area", "hazy patch", "cloudy area", "cloudy patch", "shadow on the lung",
                "white spot", "whiter area"),
    "nodule": ("round spot", "small spot", "lump in the lung", "small mass"),
    "emphysema": ("overinflated lungs", "overexpanded lungs", "destroyed air sacs", "damaged air sacs"),
    "pulmonary edema": ("fluid in the lungs", "fluid backing up in the lungs", "wet lungs", "water in the lungs"),
    "airspace disease": ("air sacs filled with fluid", "filled air sacs", "lung infection", "pus in the lungs"),
    "osteophytes": ("bone spurs", "bony spurs", "spurs on the spine"),
    "degenerative changes": ("wear and tear", "arthritic changes", "degeneration"),
    "aorta": ("main artery", "largest artery", "big artery"),
    "atherosclerotic": ("hardening of the arteries", "hardened arteries", "calcified arteries", "furred arteries"),
    "surgical clips": ("metal clips", "surgical staples", "metal staples", "staples from surgery"),
    "catheter": ("line in a vein", "tube in a vein", "central line", "iv line", "venous line"),
    "pacemaker": ("heart device", "cardiac device", "implanted cardiac device", "heart rhythm device"),
    "diaphragm": ("muscle under the lungs", "breathing muscle", "muscle below the lungs"),
    "costophrenic blunting": ("blunted corner", "blunted angle", "rounded corner at the lung base"),
    "cardiac silhouette": ("outline of the heart", "heart outline", "heart shadow", "shape of the heart"),
    "pleural thickening": ("thick lining of the lung", "thickened lining of the lung", "lining of the lung is thick"),
    "scarring": ("scar tissue", "scarred lung", "lung scar"),
    "interstitial markings": ("prominent lines", "lines in the lungs", "streaky lungs", "streaks in the lungs"),
    "deformity": ("misshapen", "abnormal shape", "out of shape"),
    "technical quality": ("poor quality", "bad image quality", "poor image", "underexposed", "overexposed"),
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
