"""Hybrid ranking: the concept plan's ranking fused with dense query similarity by reciprocal-rank fusion.

When the store's encoder also embeds text (a text store embedded by MiniLM; any image-text encoder a user
passes as ``Searcher(query_encoder=...)``), the query itself can be embedded and compared with every item.
The two rankings are fused by reciprocal-rank fusion (RRF, Cormack et al. 2009): an item's score is
``1 / (k + concept rank) + 1 / (k + dense rank)`` with ``k = 60`` by default; an item the plan does not
rank (no positive concept score) gets no concept part, one beyond the dense depth no dense part. RRF
needs no calibration between a concept score and a cosine, and it rewards items both rankings agree on.

Every hit stays explained: the concept part is split over the plan's groups in proportion to their
signed contributions to the item's concept score (so ``concept.<group>`` columns keep their meaning) and
the ``dense`` column holds the dense part; the columns sum to the score.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sae.search.index import Contribution, Scored, SearchResult
from sae.search.plan import QueryPlan

RRF_K = 60
"""The reciprocal-rank-fusion constant (the value of the original paper; larger = flatter)."""

DENSE_COLUMN = "dense"
"""Hits column with the dense similarity's share of the score (hybrid) or the cosine itself (dense)."""


def _ranks(order: np.ndarray, n: int) -> np.ndarray:
    """1-based rank of every row in ``order``; 0 for rows not in it."""
    rank = np.zeros(n, np.int64)
    rank[order] = np.arange(1, len(order) + 1)
    return rank


def concept_order(scored: Scored) -> np.ndarray:
    """Rows of a concept plan in ranking order (score, then tie-break, then row), positive scores only."""
    keep = scored.score > 0
    rows, score, tie = scored.rows[keep], scored.score[keep], scored.tiebreak[keep]
    return rows[np.lexsort((rows, -tie, -score))]


def dense_order(sims: np.ndarray, allowed: np.ndarray | None, depth: int) -> np.ndarray:
    """The ``depth`` rows most similar to the query (allowed rows only), best first, ties by row."""
    cand = np.flatnonzero(allowed) if allowed is not None else np.arange(len(sims))
    if len(cand) > depth:
        cand = cand[np.argpartition(-sims[cand], depth - 1)[:depth]]
    return cand[np.lexsort((cand, -sims[cand]))]


def fuse(plan: QueryPlan, scored: Scored, sims: np.ndarray, allowed: np.ndarray | None, top: int, k: int = RRF_K) -> SearchResult:
    """The ``top`` hits of RRF(concept ranking, dense ranking), each with its per-group and dense parts."""
    n = len(sims)
    c_order = concept_order(scored)
    d_order = dense_order(sims, allowed, min(n, max(4 * top, 1000)))
    c_rank, d_rank = _ranks(c_order, n), _ranks(d_order, n)
    rows = np.union1d(c_order, d_order)
    c_part = np.where(c_rank[rows] > 0, 1.0 / (k + c_rank[rows]), 0.0)
    d_part = np.where(d_rank[rows] > 0, 1.0 / (k + d_rank[rows]), 0.0)
    score = c_part + d_part
    order = np.lexsort((rows, -d_part, -score))[:top]
    picked = rows[order]
    at = np.minimum(np.searchsorted(scored.rows, picked), max(len(scored.rows) - 1, 0))  # scored.rows ascend
    found = scored.rows[at] == picked if len(scored.rows) else np.zeros(len(picked), bool)
    concept_score = np.where(found, scored.score[at], 0.0) if len(scored.rows) else np.zeros(len(picked))
    share = np.divide(c_part[order], concept_score, out=np.zeros(len(order)), where=concept_score > 0)
    columns = {c.column: (np.where(found, v[at], 0.0) if len(v) else np.zeros(len(picked))) * share for c, v in scored.contrib.items()}
    hits = pd.DataFrame({"rank": np.arange(1, len(order) + 1), "row": picked, "score": score[order], **columns,
                         DENSE_COLUMN: d_part[order]})
    notes = [f"hybrid ranking: the concept plan fused with dense query similarity (reciprocal-rank fusion, k={k}); "
             "a hit may lack a concept when its dense similarity is high (its concept columns are then 0)"]
    return SearchResult(plan, hits, list(scored.contrib), False, notes + scored.notes)


def dense_result(plan: QueryPlan, sims: np.ndarray, allowed: np.ndarray | None, top: int) -> SearchResult:
    """Plain dense retrieval: the ``top`` rows by cosine to the query embedding (the baseline, explained by nothing else)."""
    order = dense_order(sims, allowed, min(len(sims), top))
    hits = pd.DataFrame({"rank": np.arange(1, len(order) + 1), "row": order, "score": sims[order], DENSE_COLUMN: sims[order]})
    contributions: list[Contribution] = []
    return SearchResult(plan, hits, contributions, False, ["dense ranking: cosine of the query embedding to each item's embedding"])
