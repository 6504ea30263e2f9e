"""One object that ties a run's labels, the planners, the index and the store together for search."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from sae.errors import SaeError, UnknownColumnError
from sae.run import Run
from sae.search.example import DenseIndex, ExamplePlanner, compose, overlap
from sae.search.hybrid import dense_result, fuse
from sae.search.index import META_PREFIX, ConceptIndex, SearchResult, _check_top
from sae.search.language import QueryLanguageError
from sae.search.plan import QueryPlan
from sae.search.planner import EmbeddingPlanner

MODES = ("concept", "hybrid", "dense")
"""How :meth:`Searcher.search` ranks: the concept plan, the plan fused with dense query similarity, or dense alone."""

_LIKE = re.compile(
    r"^\s*(?:(?:more\s+)?like|similar\s+to)\s+(?:this|these|that|those|the\s+example)"
    r"(?:\s+(?:one|ones|slice|slices|image|images|item|items|scan|scans|study|studies|case|cases))?\s*[,;:]?\s*", re.I)


def _coerce(series: pd.Series, value: Any) -> Any:
    """A filter value as the column's type (CLI values arrive as strings)."""
    if not isinstance(value, str):
        return value
    if pd.api.types.is_bool_dtype(series):
        if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise SaeError(f"column {series.name!r} is boolean; filter it with true or false (got {value!r})")
        return value.lower() in ("true", "1", "yes")
    if pd.api.types.is_numeric_dtype(series):
        try:
            return float(value)
        except ValueError:
            raise SaeError(f"column {series.name!r} is numeric; {value!r} is not a number") from None
    return value


def filter_mask(meta: pd.DataFrame, filters) -> np.ndarray:
    """Rows passing every (column, op, value) filter."""
    mask = np.ones(len(meta), bool)
    for col, op, value in filters:
        if col not in meta:
            raise UnknownColumnError(f"unknown column {col!r} in a filter; the store has {sorted(str(c) for c in meta.columns if c != 'id')}")
        s = meta[col]
        if op in ("in", "not in"):
            hit = s.isin([_coerce(s, v) for v in value]).to_numpy()
            mask &= hit if op == "in" else ~hit
            continue
        v = _coerce(s, value)
        ops = {"==": s.__eq__, "!=": s.__ne__, ">": s.__gt__, ">=": s.__ge__, "<": s.__lt__, "<=": s.__le__}
        mask &= ops[op](v).to_numpy(bool)
    return mask


@dataclass
class ExampleComparison:
    """Sparse-fingerprint and dense-embedding neighbours of the same example(s), side by side."""

    plan: QueryPlan
    sparse: pd.DataFrame
    dense: pd.DataFrame
    overlap: float

    def _repr_html_(self) -> str:
        return (f"<div>{self.plan._repr_html_()}<div>overlap of the two top-{len(self.sparse)} lists: {self.overlap:.0%}</div>"
                f"<div style='display:flex;gap:16px'><div><b>sparse fingerprint</b>{self.sparse.to_html(index=False)}</div>"
                f"<div><b>dense embedding</b>{self.dense.to_html(index=False)}</div></div></div>")


def nothing_explained(labels) -> str:
    """Why a labeled run cannot be searched by text: labeled, but no feature has a label."""
    s = labels.summary
    counts = ", ".join(f"{s.get(k, 0)} {k}" for k in ("unexplained", "dead", "failed") if s.get(k))
    why = s.get("why_no_labels") or "no feature's items share a term"
    return (f"the SAE is labeled ({labels.labeler}) but no feature has a label ({counts}): {why}. "
            "Search by example items (--like) works without labels")


@dataclass(frozen=True)
class Unlabeled:
    """The text planner of a run whose labels name no feature: every text query is refused with the reason."""

    reason: str
    name: str = "unlabeled"

    def plan(self, query: str):
        raise SaeError(self.reason)


class Searcher:
    """Text, example items or an edited plan in; ranked items or groups (with their explanations) out."""

    def __init__(self, run: Run, labeler: str | None = None, planner=None, query_encoder=None):
        """``query_encoder``: embeds text queries into the store's embedding space (``encode(list[str])``), for the
        hybrid and dense modes; by default the planner's MiniLM when the store was embedded by MiniLM too."""
        self.run = run.verify()
        self.store, self.codes, self.meta = run.store, run.codes, run.meta
        self.index = ConceptIndex.of(run)
        self.labels = run.labels(labeler)
        if planner is None and not self.labels.mapping():
            planner = Unlabeled(nothing_explained(self.labels))  # example search still works
        self.planner = planner or EmbeddingPlanner(self.labels.mapping(), term_columns=self.labels.term_columns())
        self.examples = ExamplePlanner(self.index, self.codes, self.labels.mapping())
        self.group_key = run.group_key
        self._dense: DenseIndex | None = None
        self._query_encoder = query_encoder

    # -- items ---------------------------------------------------------------------------------
    def rows_of(self, items: Any) -> np.ndarray:
        """Row numbers of items given as rows (ints) or ids (strings)."""
        items = [items] if isinstance(items, (int, np.integer, str)) else list(items)
        ids = pd.Index(self.meta["id"].astype(object))
        rows = []
        for it in items:
            if isinstance(it, str):
                where = ids.get_indexer([it])[0]
                if where < 0:
                    raise SaeError(f"unknown item id {it!r}")
                rows.append(int(where))
            else:
                if not 0 <= int(it) < len(self.meta):
                    raise SaeError(f"row {it} is outside the store's rows 0..{len(self.meta) - 1}")
                rows.append(int(it))
        if not rows:
            raise SaeError("no example items given")
        return np.asarray(rows, dtype=np.int64)

    def item_columns(self, rows: np.ndarray) -> pd.DataFrame:
        """``id`` and every metadata column (as ``meta.<column>``) of ``rows``, for result tables."""
        info = self.meta.iloc[rows].reset_index(drop=True)
        return info.rename(columns={c: f"{META_PREFIX}{c}" for c in info.columns if c != "id"})

    def previews_html(self, rows: np.ndarray) -> list[str]:
        """An <img> (thumbnail) or escaped text snippet per row, for result tables."""
        if self.store.has_image_previews:
            from sae._io import png_data_url

            return [f"<img src='{png_data_url(im)}' width='64'>" for im in self.store.previews(rows)]
        if self.store.has_text_previews:
            return [html.escape(str(t)[:160]) for t in self.store.texts(rows)]
        return [html.escape(str(i)) for i in self.meta["id"].iloc[rows]]

    # -- planning ------------------------------------------------------------------------------
    def plan(self, query: str | None = None, like: Any = None, top_k: int | None = None) -> QueryPlan:
        """A plan from text, from example items (``like``), or both (a composed query)."""
        text = _LIKE.sub("", query or "").strip() if like is not None else (query or "")
        if like is None:
            return self.planner.plan(text)
        example = self.examples.plan(self.rows_of(like), top_k=top_k, query=query)
        if not text:
            return example
        return compose(example, replace(self.planner.plan(text), query=query))

    # -- searching -----------------------------------------------------------------------------
    def _allowed(self, plan: QueryPlan) -> np.ndarray | None:
        allowed = filter_mask(self.meta, plan.filters) if plan.filters else None
        if allowed is not None and not allowed.any():
            raise SaeError(f"no item passes the filters {list(plan.filters)}")
        return allowed

    def search(self, query: str | QueryPlan | None = None, top: int = 10, like: Any = None, exclude_examples: bool = True,
               mode: str = "concept", **filters: Any) -> SearchResult:
        """Search by text, by example (``like=``), both, or an edited plan; keyword filters mean ``column == value``.

        ``mode``: ``concept`` (the plan over SAE concepts), ``hybrid`` (the plan fused with dense similarity of the
        query text, see :mod:`sae.search.hybrid`) or ``dense`` (cosine of the query embedding alone, the baseline)."""
        if mode not in MODES:
            raise SaeError(f"unknown search mode {mode!r}; use one of {MODES}")
        unplanned = ""
        if mode == "dense":
            plan = query if isinstance(query, QueryPlan) else QueryPlan(str(query or ""), planner="dense")
        elif mode == "hybrid" and not isinstance(query, QueryPlan):
            try:
                plan = self.plan(query, like=like)
            except QueryLanguageError:
                raise
            except SaeError as e:  # no concept matches: the dense half still answers, and says so
                plan, unplanned = QueryPlan(str(query or ""), planner="dense"), str(e)
        else:
            plan = query if isinstance(query, QueryPlan) else self.plan(query, like=like)
        for col, value in filters.items():
            plan = plan.where(col, "==", value)
        allowed = self._allowed(plan)
        if like is not None and exclude_examples:
            allowed = np.ones(len(self.meta), bool) if allowed is None else allowed.copy()
            allowed[self.rows_of(like)] = False
        _check_top(top)
        if mode == "concept":
            res = self.index.search(plan, top=top, allowed=allowed)
        else:
            text = _LIKE.sub("", plan.query).strip() if like is not None else plan.query
            sims = self.query_similarity(text)
            res = (dense_result(plan, sims, allowed, top) if mode == "dense" or unplanned
                   else fuse(plan, self.index.score(plan, allowed), sims, allowed, top))
            if unplanned:
                res.notes.insert(0, f"hybrid search fell back to dense ranking: {unplanned}")
        res.hits = pd.concat([res.hits, self.item_columns(res.hits["row"].to_numpy())], axis=1)
        res.previews = self.previews_html
        res.searcher = self
        return res

    def query_encoder(self):
        """The encoder that embeds a text query into the store's space (hybrid and dense modes), or an error saying why none."""
        if self._query_encoder is not None:
            return self._query_encoder
        from sae.encoders import MiniLMEncoder

        name = str(self.store.encoder.get("name", ""))
        if name != MiniLMEncoder.name:
            raise SaeError(f"hybrid and dense search embed the query text, but this store's embeddings come from "
                           f"{name or 'an unnamed encoder'}, which does not embed text: use mode='concept', or pass "
                           "Searcher(run, query_encoder=...) with the text tower of the image-text model that made them")
        planner_encoder = getattr(self.planner, "encoder", None)
        self._query_encoder = planner_encoder if getattr(planner_encoder, "name", "") == name else MiniLMEncoder()
        return self._query_encoder

    def query_similarity(self, text: str) -> np.ndarray:
        """Cosine of the query text's embedding to every item's embedding."""
        if not text.strip():
            raise SaeError("hybrid and dense search need query text (an example alone has no text to embed)")
        q = np.asarray(self.query_encoder().encode([text], progress=False), dtype=np.float32)
        if q.shape[1] != self.store.dim:
            raise SaeError(f"the query encoder gives {q.shape[1]}-d vectors; the store's embeddings are {self.store.dim}-d")
        return self.dense().similarity(q[0])

    def search_groups(self, query: str | QueryPlan, pool: str = "max", top: int = 10, **filters: Any) -> pd.DataFrame:
        """Rank groups (the store's group key: volume, study, patient) by pooled item scores."""
        if not self.group_key or self.group_key not in self.meta:
            raise SaeError("this store has no group key (provenance 'group_key'); rank items with search() instead")
        plan = query if isinstance(query, QueryPlan) else self.plan(query)
        for col, value in filters.items():
            plan = plan.where(col, "==", value)
        codes, names = pd.factorize(self.meta[self.group_key].astype(object))
        out = self.index.rank_groups(plan, codes, np.asarray(names, dtype=object), pool=pool, top=top, allowed=self._allowed(plan))
        return out.rename(columns={"group": self.group_key})

    def dense(self) -> DenseIndex:
        if self._dense is None:
            self._dense = DenseIndex.from_store(self.store)
        return self._dense

    def compare_example(self, like: Any, top: int = 10, top_k: int | None = None) -> ExampleComparison:
        """Neighbours of the example(s) by sparse fingerprint and by dense embedding, with their overlap."""
        rows = self.rows_of(like)
        plan = self.examples.plan(rows, top_k=top_k)
        sparse = self.search(plan, top=top, like=rows).hits
        dense_rows = self.dense().search(rows, top=top)
        dense = pd.concat([pd.DataFrame({"rank": np.arange(1, len(dense_rows) + 1), "row": dense_rows}),
                           self.item_columns(dense_rows)], axis=1)
        return ExampleComparison(plan, sparse, dense, overlap(sparse["row"].to_numpy(), dense_rows))
