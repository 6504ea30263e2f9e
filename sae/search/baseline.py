"""SAIL's language retrieval, re-implemented as the baseline our planners are measured against.

SAIL asks an LLM to pick exactly three SAE features for the whole query and ranks every item by the
cosine between its activations on those three features and the all-ones vector (the query "wants"
each picked feature equally). Negations are not represented. Offline, the three features are the
labels nearest to the whole query in the planner's text-embedding space (the same encoder our
embedding planner uses, so the comparison isolates the planning and ranking method).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from sae.search.index import ConceptIndex


class NearestLabels(Protocol):
    """What picks the features: the ``n`` labels nearest a query, as (feature, label, cosine)."""

    def nearest(self, phrase: str, n: int = ...) -> list[tuple[int, str, float]]: ...


@dataclass
class SAILBaseline:
    """Three features per query, cosine ranking over their raw activations."""

    index: ConceptIndex
    planner: NearestLabels
    """An :class:`~sae.search.planner.EmbeddingPlanner` (its ``nearest`` picks the features)."""
    n_features: int = 3

    def features(self, query: str) -> list[int]:
        return [f for f, _, _ in self.planner.nearest(query, self.n_features)]

    def rank(self, query: str, top: int = 100) -> np.ndarray:
        """Rows ranked by cosine(activations on the picked features, ones); items with none of them last."""
        feats = self.features(query)
        rows = np.unique(np.concatenate([self.index.active_rows(f) for f in feats]))
        acts = np.stack([self.index.activation_at(f, rows) for f in feats], axis=1)
        cos = acts.sum(1) / (np.linalg.norm(acts, axis=1) * np.sqrt(len(feats)) + 1e-12)
        order = np.lexsort((rows, -cos))[:top]
        return rows[order]
