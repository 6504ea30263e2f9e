"""An exact offline judge for labels made of evidence terms: does the item carry what the label names?

The MiniLM judge reads a label and an item description as sentences, which blurs numeric ranges and
similar term lists; this judge reads them as the claims they are. A label "sagittal orientation,
motion artifact" scores an item by the share of its comma-separated parts the item carries (a
metadata term in the item's description, or a phrase of its text, negation-aware: "no pleural
effusion" in a report does not carry "pleural effusion"). It is the right reader for the offline
labeler's labels, and a strict one for free-text LLM labels (no synonyms): report both judges.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sae.interpret.describe import normalize_label
from sae.interpret.phrases import text_phrases


def _item_terms(description: str) -> set[str]:
    """The normalised terms and text phrases (keys and surface forms) an item description carries."""
    head, _, text = description.partition("; text: ")
    if not text and "," not in head and len(head) > 80:  # a text-only description
        head, text = "", head
    terms = {normalize_label(t) for t in head.split(",") if t.strip()}
    for key, surface in text_phrases(text).items():
        terms |= {normalize_label(key), normalize_label(surface)}
    return terms


class TermJudge:
    """Offline, exact: the share of a label's parts each item carries (see the module docstring)."""

    name = "terms"

    def __init__(self) -> None:
        self._cache: dict[str, set[str]] = {}

    def _terms(self, description: str) -> set[str]:
        if description not in self._cache:
            self._cache[description] = _item_terms(description)
        return self._cache[description]

    def detect(self, label: str, items: Sequence[str]) -> np.ndarray:
        parts = [normalize_label(p) for p in str(label).split(",") if p.strip()]
        if not parts:
            return np.zeros(len(items))
        return np.array([np.mean([p in self._terms(d) for p in parts]) for d in items], dtype=float)

    def intruder(self, items: Sequence[str]) -> np.ndarray:
        sets = [self._terms(d) for d in items]
        sim = np.array([[len(a & b) / max(len(a | b), 1) for b in sets] for a in sets], dtype=float)
        np.fill_diagonal(sim, np.nan)
        return -np.nanmean(sim, axis=1)
