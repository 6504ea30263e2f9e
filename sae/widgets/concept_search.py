"""``ConceptSearch``: a query box, the plan as editable chips, a result grid where every hit explains itself.

A refused query (the planner's or the index's :class:`~sae.errors.SaeError`: a query matching no
labeled feature, a plan without a positive concept, filters no item passes) clears the results and
stands in the view as ``no results: <reason>`` until the next successful search; the plan's notes
(e.g. a candidate feature dropped as contradicting the query) are shown under the plan.

Facets. Each metadata column with 2..30 distinct values (not ``id``, not a float column: those are continuous) lists
its values with how many items the current plan matches (score > 0, under the plan's filters) have each; clicking
one adds the filter ``column == value`` to the plan. A plan's filters stay through new query text (the text is
planned again, the filters are kept) until removed (:meth:`ConceptSearch.unfilter`) or the box is cleared.

A hit's "enlarge" button opens the shared item viewer (:class:`~sae.widgets.items.ItemViewing`); clicking the hit
elsewhere selects it (its strongest concepts are listed beside the grid)."""

from __future__ import annotations

import functools
import html
import time
from collections import OrderedDict

import numpy as np
import pandas as pd
import traitlets

from sae.errors import SaeError
from sae.search.index import SearchResult
from sae.search.plan import QueryPlan
from sae.search.searcher import filter_mask
from sae.widgets._base import View, asset
from sae.widgets.feature_browser import _clean
from sae.widgets.items import ItemViewing
from sae.widgets.workbench import Workbench

FACET_VALUES = (2, 30)
"""A metadata column is a facet when it has this many distinct values (inclusive)."""
PLAN_CACHE = 64
"""Query texts whose plans a view remembers (see :meth:`ConceptSearch._planned`)."""


def facet_columns(meta: pd.DataFrame) -> dict[str, tuple[np.ndarray, list]]:
    """The facet columns of ``meta`` (see the module doc), each as (a value code per row, -1 when missing; the
    values as JSON-safe scalars): factorized once, so a search counts its matches per value with one bincount."""
    out: dict[str, tuple[np.ndarray, list]] = {}
    for col in meta.columns:
        s = meta[col]
        if col == "id" or pd.api.types.is_float_dtype(s):
            continue
        try:
            codes, uniques = pd.factorize(s, sort=True)
        except TypeError:  # values of mixed types do not sort: keep them in order of appearance
            codes, uniques = pd.factorize(s)
        if FACET_VALUES[0] <= len(uniques) <= FACET_VALUES[1]:
            out[str(col)] = (codes.astype(np.int64), [_clean(v) for v in uniques])
    return out


class ConceptSearch(ItemViewing, View):
    """Language-driven retrieval in a notebook: type, edit the plan, inspect and extend from a hit."""

    _esm = traitlets.Unicode(asset("common.js", "concept_search.js")).tag(sync=True)
    query = traitlets.Unicode("").tag(sync=True)
    query_seq = traitlets.Int(0).tag(sync=True)
    """Sequence number of the query the view sent last ..."""
    answered_seq = traitlets.Int(0).tag(sync=True)
    """... and of the one the results answer (the view measures keystroke-to-grid latency with them)."""
    top = traitlets.Int(24).tag(sync=True)
    chips: traitlets.List = traitlets.List().tag(sync=True)
    notes: traitlets.List = traitlets.List().tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)
    hits: traitlets.List = traitlets.List().tag(sync=True)
    thumbs = traitlets.List(traitlets.Bytes()).tag(sync=True)
    selected_row = traitlets.Int(-1).tag(sync=True)
    hit_features: traitlets.List = traitlets.List().tag(sync=True)
    latencies: traitlets.List = traitlets.List().tag(sync=True)
    """Keystroke-to-grid latencies (ms) the view measured, newest last."""
    facets: traitlets.List = traitlets.List().tag(sync=True)
    """Per facet column: ``{column, values: [{value, count, active}]}``, values by count (see the module doc)."""
    filters: traitlets.List = traitlets.List().tag(sync=True)
    """The plan's filters as ``{column, op, value}`` (value as text), each removable in the view (a refused query
    text keeps them: they apply to the next one)."""

    def __init__(self, workbench: Workbench, query: str = "", plan: QueryPlan | None = None,
                 result: SearchResult | None = None, **kwargs):
        """Start from query text (planned), an edited ``plan`` (run; ``query`` is then only shown in the box) or a
        ``result`` (shown as it is: its hits, its plan, its query text)."""
        if result is not None:
            kwargs.setdefault("top", len(result.hits) or type(self).top.default_value)
        super().__init__(**kwargs)
        self.wb = workbench
        self.plan: QueryPlan | None = None
        self.result: SearchResult | None = None
        self._quiet = False
        self._filters: tuple = ()
        """The filters shown (the plan's; kept through a refused query text for the next one)."""
        self._plans: OrderedDict[str, tuple[object, QueryPlan]] = OrderedDict()
        self.observe(lambda ch: None if self._quiet else self._typed(ch["new"]), names="query")
        self.observe(lambda ch: self.guard(self._explain, ch["new"]), names="selected_row")
        self.observe(lambda _: self.guard(self._synced, self._run), names="top")
        workbench.on("add_concept", self._linked_concept)
        if result is not None:
            self.guard(self._synced, self.show_result, result)
        elif plan is not None:
            self._show_query(query or plan.query)
            self.set_plan(plan)
        elif query:
            self.query = query

    # -- Python API ----------------------------------------------------------------------------
    def search(self, query: str) -> None:
        """Plan ``query`` with the run's planner and show the results (also what typing does); a refused
        query is shown in the view (``error``), not raised."""
        if query != self.query:
            self.query = query  # the observer re-enters with the same text
            return
        if not query.strip():
            self.plan, self.result = None, None
            self.chips, self.hits, self.thumbs, self.notes, self.status = [], [], [], [], ""
            self.facets, self.filters, self._filters = [], [], ()
            self.answered_seq = self.query_seq
            self.withdraw()
            return
        kept = self._filters
        try:
            plan = self._planned(query)
        except SaeError as exc:
            self.plan, self.chips, self.notes, self.facets = None, [], [], []
            self._refuse(exc)
            return
        self.set_plan(functools.reduce(lambda p, f: p.where(*f), kept, plan))

    def _planned(self, query: str) -> QueryPlan:
        """The run's plan of ``query``, remembered for the last :data:`PLAN_CACHE` texts (typing back to a text
        seen before, e.g. a backspace, skips the embedding); a new planner (a label edited) plans again."""
        planner = self.wb.searcher.planner
        hit = self._plans.get(query)
        if hit is not None and hit[0] is planner:
            self._plans.move_to_end(query)
            return hit[1]
        plan = self.wb.searcher.plan(query)
        self._plans[query] = (planner, plan)
        while len(self._plans) > PLAN_CACHE:
            self._plans.popitem(last=False)
        return plan

    def set_plan(self, plan: QueryPlan) -> None:
        """Show and run an (edited) plan."""
        self._show_plan(plan)
        self._run()

    def show_result(self, result: SearchResult) -> None:
        """Show a search result as it is (its hits in its order, its plan, its query text), without running it again:
        the plan may have been edited or composed, and the result may have left out the example items."""
        self._show_query(result.plan.query)
        self._show_plan(result.plan)
        self._show_hits(result, None)

    def unfilter(self, index: int) -> None:
        """Remove the plan's ``index``-th filter and run the plan again (with no plan, e.g. a refused query text,
        the filter is only forgotten)."""
        if self.plan is None:
            self._set_filters(QueryPlan("", filters=self._filters).without_filter(index).filters)
            return
        self._edit(lambda p: p.without_filter(index))

    def _set_filters(self, filters: tuple) -> None:
        self._filters = tuple(filters)
        self.filters = [{"column": str(c), "op": op, "value": str(v)} for c, op, v in self._filters]

    def _show_query(self, text: str) -> None:
        """Put ``text`` in the query box without planning it (the plan shown already answers it)."""
        self._quiet = True
        try:
            self.query = text
        finally:
            self._quiet = False

    def _show_plan(self, plan: QueryPlan) -> None:
        self.plan = plan
        self.notes = list(plan.notes)
        self.chips = [{"feature": c.feature, "label": c.label, "weight": round(c.weight, 3), "negated": c.negated,
                       "required": c.required, "group": c.group, "phrase": c.phrase} for c in plan.concepts]
        self._set_filters(plan.filters)

    def add_concept(self, feature: int, negated: bool = False, weight: float = 1.0) -> None:
        """Add a feature to the current plan (from a hit, or a linked FeatureBrowser)."""
        label = self.wb.labels.mapping().get(int(feature), "")
        base = self.plan or QueryPlan(query=self.query or label)
        if any(c.feature == int(feature) for c in base.concepts):
            if negated != next(c.negated for c in base.concepts if c.feature == int(feature)):
                self.set_plan(base.negate(int(feature)))
            return
        self.set_plan(base.add(int(feature), weight, negated=negated, label=label))

    # -- running -------------------------------------------------------------------------------
    def _run(self) -> None:
        if self.plan is None:
            return
        if not self.plan.concepts:
            self.hits, self.thumbs, self.facets, self.status = [], [], [], "the plan is empty: add a concept"
            self.answered_seq = self.query_seq
            return
        t0 = time.perf_counter()
        try:
            res = self.wb.searcher.search(self.plan, top=self.top)
        except SaeError as exc:  # e.g. no positive concept left, or filters no item passes: the plan stays
            self.notes = list(self.plan.notes)
            self.facets = []
            self._refuse(exc)
            return
        self._show_hits(res, 1000 * (time.perf_counter() - t0))

    def _show_hits(self, res: SearchResult, ms: float | None) -> None:
        """Show ``res``'s hits (each with its caption, thumbnail and per-concept contributions), its notes, the facet
        counts of its plan; ``ms`` is how long the search took (None: a result given, not run here)."""
        self.result = res
        rows = res.hits["row"].to_numpy()
        caps = self.wb.captions(rows)
        ids = res.hits["id"] if "id" in res.hits else self.wb.meta["id"].to_numpy()[rows]
        self.hits = [{"row": int(r), "id": str(i), "score": float(s), "caption": cap,
                      "concepts": [{"name": c.display(), "feature": c.feature, "negated": c.negated,
                                    "value": _clean(res.hits[c.column].iloc[k])} for c in res.contributions]}
                     for k, (r, i, s, cap) in enumerate(zip(rows, ids, res.hits["score"], caps))]
        self.thumbs = self.wb.thumbnails(rows)
        self.notes = list(res.plan.notes) + list(res.notes)
        self.facets = self._facets_of(res.plan) if res.plan.concepts else []
        kind = "every hit shows every required concept" if res.strict else "partial matches"
        took = f"in {ms:.0f} ms " if ms is not None else ""
        self.status = f"{len(rows)} hits {took}over {self.wb.store.n_rows:,} items; {kind}"
        self.answered_seq = self.query_seq
        self.withdraw()
        if self.selected_row not in set(rows.tolist()):
            self.selected_row = -1

    @functools.cached_property
    def _facet_cols(self) -> dict[str, tuple[np.ndarray, list]]:
        """The workbench's facet columns (:func:`facet_columns`), factorized on first use."""
        return facet_columns(self.wb.meta)

    def _facets_of(self, plan: QueryPlan) -> list[dict]:
        """Per facet column, how many items ``plan`` matches (score > 0, under its filters) have each value, most
        first; ``active`` marks a value the plan filters on (``==``). One scoring pass and a bincount per column."""
        if not self._facet_cols:
            return []
        try:
            allowed = filter_mask(self.wb.meta, plan.filters) if plan.filters else None
            scored = self.wb.index.score(plan, allowed)
        except SaeError:  # a plan the index refuses (no positive concept) matches nothing to count
            return []
        matched = scored.rows[scored.score > 0]
        chosen = {(str(c), _clean(v)) for c, op, v in plan.filters if op == "==" and isinstance(v, (str, int, float, np.generic))}
        out = []
        for col, (codes, values) in self._facet_cols.items():
            at = codes[matched]
            counts = np.bincount(at[at >= 0], minlength=len(values))
            order = sorted(range(len(values)), key=lambda j: (-counts[j], str(values[j])))
            out.append({"column": col, "values": [{"value": values[j], "count": int(counts[j]),
                                                   "active": (col, values[j]) in chosen} for j in order]})
        return out

    def _refuse(self, exc: SaeError) -> None:
        """Clear the results of a refused query and keep its reason shown until the next successful search."""
        self.result = None
        self.hits, self.thumbs, self.status = [], [], ""
        self.answered_seq = self.query_seq
        self.selected_row = -1
        self.stand(f"no results: {exc}")

    def _explain(self, row: int) -> None:
        if row < 0:
            self.hit_features = []
            return
        feats = self.wb.item_features(row, n=10)
        in_plan = {c.feature: c for c in (self.plan.concepts if self.plan else ())}
        self.hit_features = [{"feature": int(f), "label": lab, "presence": float(p), "activation": float(a),
                              "in_plan": int(f) in in_plan}
                             for f, lab, a, p in feats[["feature", "label", "activation", "presence"]].itertuples(index=False)]

    def static_html(self) -> str:
        """The static copy shown where the live view cannot be (:mod:`sae.widgets.fallback`): the query, the plan
        (grouped, see :meth:`QueryPlan._repr_html_`), the status and the hits' preview (thumbnail or text), rank, id,
        score and caption (when it is not the id), escaped."""
        from sae._io import html_table

        hits = pd.DataFrame([{"rank": k + 1, "id": h["id"], "score": h["score"], "caption": h["caption"]}
                             for k, h in enumerate(self.hits)], columns=["rank", "id", "score", "caption"])
        if (hits["caption"] == hits["id"]).all():
            hits = hits.drop(columns="caption")
        if len(hits):
            hits.insert(0, "preview", self.wb.searcher.previews_html(np.asarray([h["row"] for h in self.hits], np.int64)))
        plan = self.plan._repr_html_() if self.plan is not None else ""
        why = f"<div><i>{html.escape(self.error)}</i></div>" if self.error else ""
        return (f"<div><b>ConceptSearch</b>: <q>{html.escape(self.query)}</q>{plan}{why}"
                f"<div>{html.escape(self.status)}</div>{html_table(hits, raw=('preview',))}</div>")

    # -- messages from the view ----------------------------------------------------------------
    def _typed(self, query: str) -> None:
        """The view sent a query: search it. The view waits for ``answered_seq`` before sending the next text, so a
        search that fails unexpectedly still answers (its error is shown)."""
        if not self.guard(self._synced, self.search, query):
            self.answered_seq = self.query_seq

    def _linked_concept(self, payload: dict) -> None:
        """``add_concept`` from a linked widget: add the feature (negated when asked) to the plan."""
        self.guard(self._synced, self.add_concept, payload["feature"], payload.get("negated", False))

    def _synced(self, fn, *args) -> None:
        """Send every trait ``fn`` changes in one message, so the view redraws once and consistently."""
        with self.hold_sync():
            fn(*args)

    def _dispatch(self, widget, content, buffers) -> None:
        with self.hold_sync():
            super()._dispatch(widget, content, buffers)

    def _edit(self, fn) -> None:
        if self.plan is None:
            raise SaeError("there is no plan to edit yet: type a query")
        self.set_plan(fn(self.plan))

    @staticmethod
    def _targets(msg: dict) -> list[int]:
        """The features an action applies to: one chip (``feature``) or a whole OR-group (``features``)."""
        feats = msg.get("features", [msg.get("feature")])
        if not feats or any(f is None for f in feats):
            raise SaeError("the action names no feature")
        return [int(f) for f in feats]

    def _each(self, msg: dict, op: str) -> None:
        """Apply a one-feature plan edit (``drop``, ``negate``) to every feature the action names."""
        self._edit(lambda p: functools.reduce(lambda q, f: getattr(q, op)(f), self._targets(msg), p))

    def _on_drop(self, msg: dict) -> None:
        self._each(msg, "drop")

    def _on_negate(self, msg: dict) -> None:
        self._each(msg, "negate")

    def _on_weight(self, msg: dict) -> None:
        """Set the weight of a chip, or of a group's strongest member (the others keep their ratios to it)."""
        try:
            w = float(msg["weight"])
        except (TypeError, ValueError):
            raise SaeError(f"a weight must be a number (got {msg.get('weight')!r})") from None
        if not w > 0:
            raise SaeError("weights must be positive; negate (¬) to exclude a concept or drop (×) to remove it")

        def reweight(p: QueryPlan) -> QueryPlan:
            feats = self._targets(msg)
            current = {c.feature: c.weight for c in p.concepts if c.feature in feats}
            factor = w / max(current.values())
            for f in feats:
                p = p.reweight(f, current[f] * factor)
            return p
        self._edit(reweight)

    def _on_add(self, msg: dict) -> None:
        self.add_concept(int(msg["feature"]), bool(msg.get("negated", False)))
        self._explain(self.selected_row)

    def _on_facet(self, msg: dict) -> None:
        """A facet value clicked: filter the plan on ``column == value`` (a value already filtered on is kept once)."""
        col, value = str(msg.get("column", "")), msg.get("value")
        if col not in self._facet_cols:
            raise SaeError(f"{col!r} is not a facet column; they are {sorted(self._facet_cols)}")
        self._edit(lambda p: p if (col, "==", value) in p.filters else p.where(col, "==", value))

    def _on_unfilter(self, msg: dict) -> None:
        try:
            index = int(msg["index"])
        except (KeyError, TypeError, ValueError):
            raise SaeError(f"a filter is removed by its position, not {msg.get('index')!r}") from None
        self.unfilter(index)

    def _on_open_feature(self, msg: dict) -> None:
        self.wb.emit("feature", int(msg["feature"]))

    def _on_latency(self, msg: dict) -> None:
        self.latencies = (self.latencies + [float(msg["ms"])])[-200:]

    @property
    def latency_summary(self) -> dict:
        """Median and 95th percentile of the measured keystroke-to-grid latencies (ms)."""
        lat = np.asarray(self.latencies, float)
        return {"n": int(len(lat)), "p50": float(np.median(lat)) if len(lat) else None,
                "p95": float(np.percentile(lat, 95)) if len(lat) else None}
