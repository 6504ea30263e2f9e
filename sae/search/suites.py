"""Paraphrase suites for the MNI demo: queries as a radiologist or a new user would type them.

:data:`~sae.search.evaluate.DEMO_VOCABULARY` builds queries from three fixed phrasings per value;
these suites test the planner on wording it was not tuned on, one suite per query form:

* ``direction`` / ``direction+artifact``: anatomical directions in plain words ("towards the back of
  the head", "close to the midline"), alone and with an artifact ("noise near the top of the head");
* ``or``: "A or B" queries; an :class:`AnyCase` is relevant when any of its alternatives holds;
* ``attribute``: prepositional and adjectival attributes ("blurry coronal images");
* ``negation``: negations in varied forms ("free of blur", "no motion", "without any artefact").

The cases were written from the demo's metadata columns only (``orientation``, ``region``,
``artifact``, ``severity``), independently of the planner's vocabulary, and none reuses a phrase of
``DEMO_VOCABULARY`` verbatim. In the demo, regions belong to one plane each: inferior / superior
are axial, anterior / posterior coronal, lateral / medial sagittal. Every case has >= 10 relevant
rows in the demo store (``tests/test_suites.py`` checks it when the demo exists).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sae.search.evaluate import QueryCase

Pairs = tuple[tuple[str, str], ...]
"""(column, value) pairs."""


@dataclass(frozen=True)
class AnyCase:
    """A query with an OR: relevant when any alternative group holds, every positive and no negative.

    Each alternative group is itself an AND of (column, value) pairs, so "spikes at the front or blur
    at the back" is two groups of two pairs. Same attributes as :class:`QueryCase`, so
    :func:`~sae.search.evaluate.evaluate_methods` runs it unchanged."""

    text: str
    kind: str
    alternatives: tuple[Pairs, ...]
    positive: Pairs = ()
    negative: Pairs = ()
    paraphrase: int = 0

    def __post_init__(self) -> None:
        if not self.alternatives or not all(self.alternatives):
            raise ValueError(f"AnyCase {self.text!r} needs at least one non-empty alternative group")

    def relevant(self, meta: pd.DataFrame) -> np.ndarray:
        """Boolean mask over ``meta``'s rows."""
        either = np.zeros(len(meta), bool)
        for group in self.alternatives:
            either |= QueryCase("", self.kind, group).relevant(meta)
        return either & QueryCase("", self.kind, self.positive, self.negative).relevant(meta)


Case = QueryCase | AnyCase

A = "artifact"
R = "region"
O = "orientation"  # noqa: E741
S = "severity"


def _direction(region: str, plain: list[str], with_artifact: list[tuple[str, str]]) -> list[QueryCase]:
    """Cases for one region: ``plain`` phrases alone, then (phrase, artifact) pairs."""
    out = [QueryCase(t, "direction", ((R, region),), paraphrase=i) for i, t in enumerate(plain)]
    out += [QueryCase(t, "direction+artifact", ((R, region), (A, art)), paraphrase=i) for i, (t, art) in enumerate(with_artifact)]
    return out


DIRECTION_SUITE: list[QueryCase] = [
    *_direction("inferior",
                ["the lower part of the brain", "slices near the base of the skull", "lowest slices of the head",
                 "low axial cuts through the cerebellum and temporal poles"],
                [("grainy images from the lower part of the brain", "noise"), ("motion in scans near the skull base", "motion"),
                 ("ghosts on the bottom slices of the head", "ghosting"), ("blurred images of the inferior brain", "blur")]),
    *_direction("superior",
                ["slices near the top of the head", "the upper part of the brain", "high sections near the vertex",
                 "the uppermost slices of the cerebrum"],
                [("noise near the top of the head", "noise"), ("spikes in the uppermost slices", "spike"),
                 ("uneven brightness across slices at the vertex", "bias_field"), ("smeared images near the crown of the head", "blur")]),
    *_direction("anterior",
                ["towards the front of the head", "slices through the frontal lobes", "the anterior part of the brain",
                 "sections near the forehead"],
                [("blurry slices near the forehead", "blur"), ("ghosting in the frontal lobes", "ghosting"),
                 ("motion degraded images of the anterior brain", "motion"), ("noisy sections at the front of the head", "noise")]),
    *_direction("posterior",
                ["towards the back of the head", "slices through the occipital lobe", "the rear of the brain",
                 "sections near the back of the skull"],
                [("motion near the back of the head", "motion"), ("blur in the occipital region", "blur"),
                 ("herringbone stripes towards the back of the head", "spike"), ("ghost copies at the back of the skull", "ghosting")]),
    *_direction("lateral",
                ["the outer edge of the hemisphere", "far from the midline", "slices close to the outer surface of the brain",
                 "off-midline sections through the temporal lobe"],
                [("noise in the outer parts of the hemispheres", "noise"), ("blurry slices far from the midline", "blur"),
                 ("ghosting on sections towards the sides of the head", "ghosting"),
                 ("shading from coil sensitivity towards the sides of the head", "bias_field")]),
    *_direction("medial",
                ["close to the midline", "midsagittal sections", "slices along the interhemispheric fissure",
                 "the inner part of the hemispheres"],
                [("motion close to the midline", "motion"), ("spikes in midsagittal images", "spike"),
                 ("blurred sections next to the falx", "blur"), ("noisy images close to the interhemispheric fissure", "noise")]),
]

OR_SUITE: list[AnyCase] = [
    AnyCase("ghosting or spike artefacts", "or", (((A, "ghosting"),), ((A, "spike"),))),
    AnyCase("blur or motion", "or", (((A, "blur"),), ((A, "motion"),))),
    AnyCase("motion or ghosting artefacts in sagittal images", "or", (((A, "motion"),), ((A, "ghosting"),)), ((O, "sagittal"),)),
    AnyCase("noisy or blurry coronal images", "or", (((A, "noise"),), ((A, "blur"),)), ((O, "coronal"),)),
    AnyCase("uneven intensity or grainy noise", "or", (((A, "bias_field"),), ((A, "noise"),))),
    AnyCase("axial or coronal images with motion", "or", (((O, "axial"),), ((O, "coronal"),)), ((A, "motion"),)),
    AnyCase("slices near the crown or the skull base", "or", (((R, "superior"),), ((R, "inferior"),))),
    AnyCase("spikes at the front or blur at the back of the head", "or",
            (((A, "spike"), (R, "anterior")), ((A, "blur"), (R, "posterior")))),
    AnyCase("sagittal images with noise or spikes", "or", (((A, "noise"),), ((A, "spike"),)), ((O, "sagittal"),)),
    AnyCase("either motion corrupted or ghosted axial images", "or", (((A, "motion"),), ((A, "ghosting"),)), ((O, "axial"),)),
    AnyCase("shading or blurring close to the midline", "or", (((A, "bias_field"),), ((A, "blur"),)), ((R, "medial"),)),
    AnyCase("sagittal or axial sections", "or", (((O, "sagittal"),), ((O, "axial"),))),
]

ATTRIBUTE_SUITE: list[QueryCase] = [
    QueryCase("noise in sagittal images", "attribute", ((A, "noise"), (O, "sagittal"))),
    QueryCase("motion artefact on coronal images", "attribute", ((A, "motion"), (O, "coronal"))),
    QueryCase("blurry coronal images", "attribute", ((A, "blur"), (O, "coronal"))),
    QueryCase("spikes in axial images of the lower part of the brain", "attribute", ((A, "spike"), (O, "axial"), (R, "inferior"))),
    QueryCase("coronal sections with ghosting", "attribute", ((A, "ghosting"), (O, "coronal"))),
    QueryCase("severely blurred axial images", "attribute", ((A, "blur"), (O, "axial"), (S, "severe"))),
    QueryCase("mild motion in sagittal sections", "attribute", ((A, "motion"), (O, "sagittal"), (S, "mild"))),
    QueryCase("shading from uneven coil sensitivity on axial images", "attribute", ((A, "bias_field"), (O, "axial"))),
    QueryCase("grainy sagittal pictures hugging the midline", "attribute", ((A, "noise"), (O, "sagittal"), (R, "medial"))),
    QueryCase("ghosting at the back of the head on coronal images", "attribute", ((A, "ghosting"), (O, "coronal"), (R, "posterior"))),
    QueryCase("heavy noise in transverse images", "attribute", ((A, "noise"), (O, "axial"), (S, "severe"))),
]

NEGATION_SUITE: list[QueryCase] = [
    QueryCase("sagittal images without any artefact", "negation", ((O, "sagittal"), (A, "none"))),
    QueryCase("coronal images, no motion", "negation", ((O, "coronal"),), ((A, "motion"),)),
    QueryCase("axial sections free of blur", "negation", ((O, "axial"),), ((A, "blur"),)),
    QueryCase("artefact-free slices near the top of the head", "negation", ((R, "superior"), (A, "none"))),
    QueryCase("noise, but not in axial images", "negation", ((A, "noise"),), ((O, "axial"),)),
    QueryCase("motion artefacts, excluding coronal", "negation", ((A, "motion"),), ((O, "coronal"),)),
    QueryCase("slices by the midline that aren't blurry", "negation", ((R, "medial"),), ((A, "blur"),)),
    QueryCase("any artefact other than ghosting on sagittal images", "negation", ((O, "sagittal"),), ((A, "none"), (A, "ghosting"))),
    QueryCase("corrupted images that are not sagittal", "negation", (), ((A, "none"), (O, "sagittal"))),
]

ALL_SUITES: dict[str, list[Case]] = {
    "direction": list(DIRECTION_SUITE),
    "or": list(OR_SUITE),
    "attribute": list(ATTRIBUTE_SUITE),
    "negation": list(NEGATION_SUITE),
}
"""Suite name -> cases (the direction suite holds both ``direction`` and ``direction+artifact`` kinds)."""


def suite_cases() -> list[Case]:
    """Every case of every suite, in suite order."""
    return [c for cases in ALL_SUITES.values() for c in cases]
