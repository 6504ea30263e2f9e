"""One object that ties a run's labels, the planner, the index and the store together for text search."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sae.errors import SaeError, UnknownColumnError
from sae.search.index import ConceptIndex, SearchResult
from sae.search.plan import QueryPlan
from sae.search.planner import EmbeddingPlanner


def filter_mask(meta: pd.DataFrame, filters) -> np.ndarray:
    """Rows passing every (column, op, value) filter."""
    mask = np.ones(len(meta), bool)
    for col, op, value in filters:
        if col not in meta:
            raise UnknownColumnError(f"unknown column {col!r} in a filter; the store has {sorted(c for c in meta if c != 'id')}")
        s = meta[col]
        if op in ("in", "not in"):
            hit = s.isin(list(value)).to_numpy()
            mask &= hit if op == "in" else ~hit
            continue
        v = type(s.iloc[0])(value) if len(s) and not isinstance(value, str) else value
        if s.dtype == bool and isinstance(value, str):
            v = value.lower() in ("true", "1", "yes")
        elif pd.api.types.is_numeric_dtype(s) and isinstance(value, str):
            v = float(value)
        ops = {"==": s == v, "!=": s != v, ">": s > v, ">=": s >= v, "<": s < v, "<=": s <= v}
        mask &= ops[op].to_numpy(bool)
    return mask


class Searcher:
    """Text or plan in, ranked items (with ids, metadata and per-concept contributions) out."""

    def __init__(self, run, labeler: str | None = None, planner=None):
        from sae.interpret import load_labels

        self.run = run
        self.store = run.ws.open_store()
        run.check_store(self.store)
        self.index = ConceptIndex(run.codes(self.store))
        self.labels = load_labels(run, labeler, store=self.store)
        self.planner = planner or EmbeddingPlanner(self.labels.mapping())
        self.meta = self.store.meta()

    def plan(self, query: str) -> QueryPlan:
        return self.planner.plan(query)

    def search(self, query: str | QueryPlan, top: int = 10, **filters: Any) -> SearchResult:
        """Search by text (planned first) or by an edited plan; keyword filters mean ``column == value``."""
        plan = self.plan(query) if isinstance(query, str) else query
        for col, value in filters.items():
            plan = plan.where(col, "==", value)
        allowed = filter_mask(self.meta, plan.filters) if plan.filters else None
        if allowed is not None and not allowed.any():
            raise SaeError(f"no item passes the filters {list(plan.filters)}")
        res = self.index.search(plan, top=top, allowed=allowed)
        rows = res.hits["row"].to_numpy()
        info = self.meta.iloc[rows].reset_index(drop=True)
        res.hits = pd.concat([res.hits.iloc[:, :3], info, res.hits.iloc[:, 3:]], axis=1)
        return res
