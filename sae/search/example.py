"""Query by example: an item (or a set) becomes a plan of its shared top features; dense retrieval beside it.

The sparse *fingerprint* of a set of items is the features they share, ranked by mean presence
(a feature silent on an example counts 0 there), top ``k`` kept as soft concepts weighted by that
mean presence: hits need not show every one, but the more they show and the stronger, the higher
they rank. Dense retrieval (cosine over the raw embeddings; FAISS when installed) is the reference
it is compared with, item for item.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from sae.codes import Codes
from sae.errors import SaeError
from sae.search.index import ConceptIndex
from sae.search.plan import Concept, QueryPlan


@dataclass
class ExamplePlanner:
    """Items -> a plan of their shared top features (soft concepts)."""

    index: ConceptIndex
    codes: Codes
    labels: dict[int, str] | None = None
    top_k: int = 8
    name: str = "example"

    def fingerprint(self, rows: Sequence[int] | np.ndarray) -> pd.DataFrame:
        """Every feature active on any example: mean presence over the examples and the share they fire on."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            raise SaeError("query by example needs at least one item")
        csc = self.index.presences(self.codes, rows, dtype=np.float64).tocsc()
        feats = np.flatnonzero(np.diff(csc.indptr))
        if len(feats) == 0:
            raise SaeError(f"no SAE feature fires on the example item(s) {rows.tolist()[:5]}: nothing to search by")
        pres = csc[:, feats].toarray()
        out = pd.DataFrame({"feature": feats, "presence": pres.mean(0), "share": (pres > 0).mean(0)})
        if self.labels is not None:
            out["label"] = [self.labels.get(int(f), "") for f in feats]
        return out.sort_values(["presence", "feature"], ascending=[False, True], kind="stable").reset_index(drop=True)

    def plan(self, rows: Sequence[int] | np.ndarray, top_k: int | None = None, query: str | None = None) -> QueryPlan:
        fp = self.fingerprint(rows).head(top_k or self.top_k)
        top = float(fp["presence"].max())
        concepts = tuple(Concept(int(f), round(float(p) / top, 3), False, (self.labels or {}).get(int(f), ""),
                                 "example", float(p), required=False) for f, p in zip(fp["feature"], fp["presence"]))
        text = query or f"like item(s) {', '.join(str(int(r)) for r in np.asarray(rows)[:5])}"
        return QueryPlan(text, concepts, planner=self.name)


def compose(example: QueryPlan, text: QueryPlan) -> QueryPlan:
    """One plan from an example's soft concepts and a text plan's modifiers.

    Text concepts win: an example feature that the text negates or requires is taken from the text
    (so "like this one without the bias field" turns the example's bias-field features into
    exclusions). Example concepts stay soft, text concepts keep their AND / NOT semantics, and the
    example's weights are scaled to count as much as the text's positive concepts together.
    """
    named = {c.feature for c in text.concepts}
    soft = [c for c in example.concepts if c.feature not in named]
    n_text = len([g for g in text.groups() if not g[0].negated])
    total = sum(c.weight for c in soft)
    if n_text and total > 0:  # the example counts as much as the text's positive concepts together
        soft = [replace(c, weight=round(c.weight * n_text / total, 4)) for c in soft]
    return QueryPlan(text.query, text.concepts + tuple(soft), text.filters + example.filters, planner=f"{example.planner}+{text.planner}",
                     notes=text.notes + example.notes)


class DenseIndex:
    """Exact cosine search over the store's embeddings (FAISS IndexFlatIP when installed, else NumPy)."""

    def __init__(self, embeddings: np.ndarray, use_faiss: bool | None = None):
        x = np.ascontiguousarray(embeddings, dtype=np.float32)
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        self.x = x
        self.faiss = None
        if use_faiss is not False:
            try:
                import faiss

                self.faiss = faiss.IndexFlatIP(x.shape[1])
                self.faiss.add(x)
            except ImportError:
                if use_faiss:
                    raise SaeError("FAISS is not installed: pip install faiss-cpu (or use_faiss=None for NumPy)") from None

    @classmethod
    def from_store(cls, store, use_faiss: bool | None = None) -> DenseIndex:
        return cls(store.read_embeddings(), use_faiss)

    def similarity(self, query: np.ndarray) -> np.ndarray:
        """Cosine of one query vector (any norm) to every item."""
        q = np.asarray(query, dtype=np.float32).ravel()
        return self.x @ (q / max(float(np.linalg.norm(q)), 1e-12))

    def search(self, rows: Sequence[int] | np.ndarray, top: int = 10, exclude_examples: bool = True) -> np.ndarray:
        """Rows most similar to the mean of the examples' normalised embeddings."""
        rows = np.asarray(rows, dtype=np.int64)
        q = self.x[rows].mean(0, keepdims=True)
        q /= max(float(np.linalg.norm(q)), 1e-12)
        want = top + (len(rows) if exclude_examples else 0)
        if self.faiss is not None:
            _, idx = self.faiss.search(q, want)
            ranked = idx[0]
        else:
            sims = self.x @ q[0]
            part = np.argpartition(-sims, min(want, len(sims) - 1))[:want]
            ranked = part[np.lexsort((part, -sims[part]))]
        if exclude_examples:
            ranked = ranked[~np.isin(ranked, rows)]
        return ranked[:top]


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Share of ``a``'s items that ``b`` also returned (both top-k lists of equal length)."""
    return float(len(np.intersect1d(a, b)) / max(len(a), 1))
