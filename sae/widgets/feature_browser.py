"""``FeatureBrowser``: find features by label text, score and density (a paged list); a card with the evidence;
an item viewer (a thumbnail's id, metadata and top concepts); edit labels.

A hand-edited label has no scores until it is re-scored: the label table keeps the replaced label's scores, so
the browser shows the edited feature as "not scored (edited by hand)" rather than numbers about another label.

Facets. The list can be narrowed to the features enriched for one metadata value (``column = value``): enriched as
in the card (the evidence's enrichment of every feature at once, q < alpha and lift >= min_lift; text phrases are
left out), computed once per browser. Each value's count is how many features of the list filtered by the other
filters (text, score, density) carry it, i.e. how many the list would show once the value is chosen."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import traitlets

from sae.errors import SaeError
from sae.widgets._base import View, asset
from sae.widgets.items import ItemViewing
from sae.widgets.workbench import Workbench

SORTS = ("score", "rate", "feature", "label")
FILTERS = ["filter_text", "min_score", "min_rate", "max_rate", "sort_by", "page_size", "facet"]
"""Traits whose change starts the list again from its first page."""
NOT_SCORED = "not scored (edited by hand)"
LIST_COLUMNS = ["feature", "label", "score", "rate", "edited"]


def _clean(v):
    """JSON-safe scalars (NaN -> None, NumPy -> Python)."""
    if isinstance(v, (np.floating, float)):
        return None if not np.isfinite(v) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def records(frame: pd.DataFrame) -> list[dict]:
    """Rows of ``frame`` as JSON-safe dicts (what the views sync)."""
    return [{k: _clean(v) for k, v in r.items()} for r in frame.to_dict("records")]


def _unscored(table: pd.DataFrame) -> pd.DataFrame:
    """The feature table with hand-edited features' scores removed (they scored the replaced label)."""
    out = table.copy()
    out.loc[out["edited"].to_numpy(bool), "score"] = np.nan
    return out


def facet_terms(evidence, n_features: int) -> tuple[pd.DataFrame, np.ndarray]:
    """The metadata terms some feature is enriched for (indexed by term; column, value, text), by column and value,
    and a features x terms boolean matrix: which feature is enriched for which term (the card's test: q < alpha and
    lift >= min_lift of the evidence's enrichment table, computed once for every feature)."""
    from sae.interpret.describe import TEXT_KINDS

    e, cfg = evidence.enrichment, evidence.cfg
    e = e[(e["q"] < cfg.alpha) & (e["lift"] >= cfg.min_lift) & ~e["kind"].isin(list(TEXT_KINDS))]
    terms = e.drop_duplicates("term").set_index("term")[["column", "value", "text"]].sort_values(["column", "value"], kind="stable")
    carry = np.zeros((n_features, len(terms)), bool)
    carry[e["feature"].to_numpy(np.int64), terms.index.get_indexer(e["term"])] = True
    return terms, carry


class FeatureBrowser(ItemViewing, View):
    """Browse a run's features: filter by label text, score and density, page through them, open a card, look
    at an item large with its metadata and concepts, edit a label."""

    _esm = traitlets.Unicode(asset("common.js", "feature_browser.js")).tag(sync=True)
    filter_text = traitlets.Unicode("").tag(sync=True)
    min_score = traitlets.Float(0.0).tag(sync=True)
    min_rate = traitlets.Float(0.0).tag(sync=True)
    max_rate = traitlets.Float(1.0).tag(sync=True)
    sort_by = traitlets.Enum(SORTS, "score").tag(sync=True)
    page = traitlets.Int(0).tag(sync=True)
    """The list page shown (0-based); a filter change goes back to 0, a page past the last shows the last."""
    page_size = traitlets.Int(100).tag(sync=True)
    rows: traitlets.List = traitlets.List().tag(sync=True)
    """The current page of matching features."""
    n_matched = traitlets.Int(0).tag(sync=True)
    page_text = traitlets.Unicode("").tag(sync=True)
    """What the list shows of the matches, e.g. ``features 101-200 of 512``."""
    selected = traitlets.Int(-1).tag(sync=True)
    card = traitlets.Dict().tag(sync=True)
    top_images = traitlets.List(traitlets.Bytes()).tag(sync=True)
    quantile_images = traitlets.List(traitlets.Bytes()).tag(sync=True)
    facet = traitlets.Int(-1).tag(sync=True)
    """The metadata term (a ``term`` of :attr:`facets`) the list is narrowed to; -1: none."""
    facets: traitlets.List = traitlets.List().tag(sync=True)
    """Every metadata value some feature is enriched for: ``{"term", "column", "value", "text", "count"}``, by column
    and value; ``count``: the features of the list filtered by the other filters that carry it."""

    def __init__(self, workbench: Workbench, feature: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.wb = workbench
        self._table = _unscored(workbench.feature_table())
        self._terms, self._carry = facet_terms(workbench.evidence, len(self._table))
        self.observe(lambda _: self.guard(self._refilter), names=FILTERS)
        self.observe(lambda _: self.guard(self.refresh), names="page")
        self.observe(lambda ch: self.guard(self._show_synced, ch["new"]), names="selected")
        workbench.on("feature", self._linked)
        self.refresh()
        if feature is not None:
            self.selected = int(feature)

    @traitlets.validate("page")
    def _valid_page(self, proposal) -> int:
        return max(0, int(proposal["value"]))

    @traitlets.validate("page_size")
    def _valid_page_size(self, proposal) -> int:
        return max(1, int(proposal["value"]))

    # -- the list ------------------------------------------------------------------------------
    def matches(self) -> pd.DataFrame:
        """Features passing the current filters (the facet included), sorted."""
        m = self._filtered()
        if self.facet < 0:
            return m
        if self.facet not in self._terms.index:
            raise SaeError(f"no feature is enriched for metadata term {self.facet}; choose one of the listed values")
        return m[self._carry[m["feature"].to_numpy(), self._terms.index.get_loc(self.facet)]]

    def _filtered(self) -> pd.DataFrame:
        """Features passing the filters but the facet, sorted (the facets' counts are over these)."""
        t = self._table
        keep = (t["rate"] >= self.min_rate) & (t["rate"] <= self.max_rate) & (t["count"] > 0)
        if self.min_score > 0:
            keep &= t["score"].fillna(-1) >= self.min_score
        text = self.filter_text.strip().lower()
        if text.lstrip("#").isdigit():
            keep &= t["feature"] == int(text.lstrip("#"))
        elif text:
            keep &= t["label"].str.lower().str.contains(text, regex=False)
        asc = self.sort_by in ("feature", "label")
        return t[keep].sort_values([self.sort_by, "feature"], ascending=[asc, True], kind="stable", na_position="last")

    def refresh(self) -> None:
        """Recompute the matches and show the current page (a page past the last one moves to the last)."""
        m = self.matches()
        last = max(0, (len(m) - 1) // self.page_size)
        if self.page > last:
            self.page = last  # its observer shows that page
            return
        start = self.page * self.page_size
        shown = m.iloc[start:start + self.page_size]
        with self.hold_sync():
            self._count_facets()
            self.n_matched = len(m)
            self.rows = records(shown[LIST_COLUMNS])
            self.page_text = f"features {start + 1}-{start + len(shown)} of {len(m)}" if len(m) else "no feature matches"

    def _count_facets(self) -> None:
        """Each facet's count over the list filtered by the other filters (what choosing it would show)."""
        counts = self._carry[self._filtered()["feature"].to_numpy()].sum(axis=0)
        t = self._terms
        self.facets = [{"term": int(k), "column": str(c), "value": str(v), "text": str(x), "count": int(n)}
                       for k, c, v, x, n in zip(t.index, t["column"], t["value"], t["text"], counts)]

    def _refilter(self) -> None:
        """A filter changed: back to the first page (its observer refreshes), or refresh when already there."""
        if self.page != 0:
            self.page = 0
        else:
            self.refresh()

    def static_html(self) -> str:
        """The static copy shown where the live view cannot be (:mod:`sae.widgets.fallback`): the list's page and
        the open card's label and enriched terms, escaped."""
        from sae._io import html_table

        page = pd.DataFrame(self.rows, columns=LIST_COLUMNS) if self.rows else pd.DataFrame(columns=LIST_COLUMNS)
        out = f"<div><b>FeatureBrowser</b>: {html.escape(self.page_text)}{html_table(page.head(20))}"
        c = self.card
        if c.get("feature") is not None:
            terms = pd.DataFrame(c.get("enriched") or [], columns=["text", "active_frac", "base_frac", "lift", "q"])
            out += f"<h4>#{int(c['feature'])} {html.escape(str(c['label']))}</h4>{html_table(terms)}"
        return out + "</div>"

    # -- the card ------------------------------------------------------------------------------
    def show(self, feature: int) -> None:
        """Open a feature's card (label, scores, thumbnails, histogram, enrichment, siblings, edits); the item
        viewer closes (its thumbnail is gone). A hand-edited label's scores are left out (see the module doc)."""
        self.item = {}
        if feature < 0:
            self.card, self.top_images, self.quantile_images = {}, [], []
            return
        wb = self.wb
        card = wb.card(int(feature))
        row = self._table.iloc[int(feature)]
        counts, edges = card.histogram(30)
        enr = card.enriched
        edited = card.edited_by is not None
        self.card = {
            "feature": card.feature, "label": str(row["label"]), "status": str(row["status"]),
            "description": card.description,
            "scores": {} if edited else {k: _clean(v) for k, v in card.scores.items()},
            "score_note": NOT_SCORED if edited else "",
            "stats": {k: _clean(v) for k, v in card.stats.items()},
            "hist": {"counts": counts.astype(int).tolist(), "edges": edges.astype(float).tolist(), "q90": _clean(card.stats.get("q90"))},
            "enriched": records(enr[["text", "active_frac", "base_frac", "lift", "q"]]) if len(enr) else [],
            "siblings": records(card.siblings[[c for c in ("feature", "label", "jaccard", "decoder_cos") if c in card.siblings]]),
            "top": self._items(card.top.head(12)), "quantiles": self._items(card.quantiles.head(10)),
            "coverage": [] if edited else [{"term": t, "share": _clean(c)} for t, c in card.coverage],
            "unsupported": [] if edited else list(card.unsupported),
            "edited_by": _clean(card.edited_by), "edited_at": _clean(card.edited_at),
            "images": wb.has_images,
        }
        self.top_images = wb.thumbnails(card.top["row"].head(12))
        self.quantile_images = wb.thumbnails(card.quantiles["row"].head(10))

    def _show_synced(self, feature: int) -> None:
        with self.hold_sync():
            self.show(feature)

    def _items(self, items: pd.DataFrame) -> list[dict]:
        rows = items["row"].to_numpy()
        return [{"row": int(r), "id": str(i), "activation": float(a), "caption": c}
                for r, i, a, c in zip(rows, items["id"], items["activation"], self.wb.captions(rows))]

    # -- edits and links -----------------------------------------------------------------------
    def edit_label(self, feature: int, label: str, description: str = "", author: str | None = None) -> dict:
        """Replace a feature's label by hand (recorded with provenance; see :mod:`sae.interpret.edits`); the list
        and the open card are rebuilt at once, showing the new label as not scored."""
        rec = self.wb.edit_label(int(feature), label, description, author)
        self._table = _unscored(self.wb.feature_table())
        self.refresh()
        if self.selected == int(feature):
            self._show_synced(int(feature))
        return rec

    def _linked(self, feature: int) -> None:
        if int(feature) != self.selected:
            self.selected = int(feature)

    def _on_select(self, msg: dict) -> None:
        self.selected = int(msg["feature"])

    def _on_edit(self, msg: dict) -> None:
        if self.selected < 0:
            raise SaeError("open a feature before editing its label")
        self.edit_label(self.selected, msg.get("label", ""), msg.get("description", ""))

    def _on_search(self, msg: dict) -> None:
        self.wb.emit("add_concept", {"feature": int(msg["feature"]), "negated": bool(msg.get("negated", False))})

    def _on_open_feature(self, msg: dict) -> None:
        self.wb.emit("feature", int(msg["feature"]))
