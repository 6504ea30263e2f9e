"""``ConceptSearch``: a query box, the plan as editable chips, a result grid where every hit explains itself.

A refused query (the planner's or the index's :class:`~sae.errors.SaeError`: a query matching no
labeled feature, a plan without a positive concept, filters no item passes) clears the results and
stands in the view as ``no results: <reason>`` until the next successful search; the plan's notes
(e.g. a candidate feature dropped as contradicting the query) are shown under the plan."""

from __future__ import annotations

import functools
import time

import numpy as np
import traitlets

from sae.errors import SaeError
from sae.search.index import SearchResult
from sae.search.plan import QueryPlan
from sae.widgets._base import View, asset
from sae.widgets.feature_browser import _clean
from sae.widgets.workbench import Workbench


class ConceptSearch(View):
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

    def __init__(self, workbench: Workbench, query: str = "", plan: QueryPlan | None = None, **kwargs):
        super().__init__(**kwargs)
        self.wb = workbench
        self.plan: QueryPlan | None = None
        self.result: SearchResult | None = None
        self.observe(lambda ch: self.guard(self._synced, self.search, ch["new"]), names="query")
        self.observe(lambda ch: self.guard(self._explain, ch["new"]), names="selected_row")
        self.observe(lambda _: self.guard(self._synced, self._run), names="top")
        workbench.on("add_concept", self._linked_concept)
        if plan is not None:
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
            self.answered_seq = self.query_seq
            self.withdraw()
            return
        try:
            plan = self.wb.searcher.plan(query)
        except SaeError as exc:
            self.plan, self.chips, self.notes = None, [], []
            self._refuse(exc)
            return
        self.set_plan(plan)

    def set_plan(self, plan: QueryPlan) -> None:
        """Show and run an (edited) plan."""
        self.plan = plan
        self.notes = list(plan.notes)
        self.chips = [{"feature": c.feature, "label": c.label, "weight": round(c.weight, 3), "negated": c.negated,
                       "required": c.required, "group": c.group, "phrase": c.phrase} for c in plan.concepts]
        self._run()

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
            self.hits, self.thumbs, self.status = [], [], "the plan is empty: add a concept"
            self.answered_seq = self.query_seq
            return
        t0 = time.perf_counter()
        try:
            res = self.wb.searcher.search(self.plan, top=self.top)
        except SaeError as exc:  # e.g. no positive concept left, or filters no item passes: the plan stays
            self.notes = list(self.plan.notes)
            self._refuse(exc)
            return
        ms = 1000 * (time.perf_counter() - t0)
        self.result = res
        rows = res.hits["row"].to_numpy()
        caps = self.wb.captions(rows)
        self.hits = [{"row": int(r), "id": str(i), "score": float(s), "caption": cap,
                      "concepts": [{"name": c.display(), "feature": c.feature, "negated": c.negated,
                                    "value": _clean(res.hits[c.column].iloc[k])} for c in res.contributions]}
                     for k, (r, i, s, cap) in enumerate(zip(rows, res.hits["id"], res.hits["score"], caps))]
        self.thumbs = self.wb.thumbnails(rows)
        self.notes = list(self.plan.notes) + list(res.notes)
        kind = "every hit shows every required concept" if res.strict else "partial matches"
        self.status = f"{len(rows)} hits in {ms:.0f} ms over {self.wb.store.n_rows:,} items; {kind}"
        self.answered_seq = self.query_seq
        self.withdraw()
        if self.selected_row not in set(rows.tolist()):
            self.selected_row = -1

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

    # -- messages from the view ----------------------------------------------------------------
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
