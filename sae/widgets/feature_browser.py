"""``FeatureBrowser``: find features by label text, score and density; a card with the evidence; edit labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import traitlets

from sae.errors import SaeError
from sae.widgets._base import View, asset
from sae.widgets.workbench import Workbench

SORTS = ("score", "rate", "feature", "label")


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
    return [{k: _clean(v) for k, v in r.items()} for r in frame.to_dict("records")]


class FeatureBrowser(View):
    """Browse a run's features: filter by label text, score and density, open a card, edit its label."""

    _esm = traitlets.Unicode(asset("common.js", "feature_browser.js")).tag(sync=True)
    filter_text = traitlets.Unicode("").tag(sync=True)
    min_score = traitlets.Float(0.0).tag(sync=True)
    min_rate = traitlets.Float(0.0).tag(sync=True)
    max_rate = traitlets.Float(1.0).tag(sync=True)
    sort_by = traitlets.Enum(SORTS, "score").tag(sync=True)
    limit = traitlets.Int(300).tag(sync=True)
    rows: traitlets.List = traitlets.List().tag(sync=True)
    n_matched = traitlets.Int(0).tag(sync=True)
    selected = traitlets.Int(-1).tag(sync=True)
    card = traitlets.Dict().tag(sync=True)
    top_images = traitlets.List(traitlets.Bytes()).tag(sync=True)
    quantile_images = traitlets.List(traitlets.Bytes()).tag(sync=True)

    def __init__(self, workbench: Workbench, feature: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.wb = workbench
        self._table = workbench.feature_table()
        self.observe(lambda _: self.guard(self.refresh), names=["filter_text", "min_score", "min_rate", "max_rate", "sort_by", "limit"])
        self.observe(lambda ch: self.guard(self._show_synced, ch["new"]), names="selected")
        workbench.on("feature", self._linked)
        self.refresh()
        if feature is not None:
            self.selected = int(feature)

    # -- the list ------------------------------------------------------------------------------
    def matches(self) -> pd.DataFrame:
        """Features passing the current filters, sorted."""
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
        m = self.matches()
        self.n_matched = len(m)
        self.rows = records(m.head(self.limit)[["feature", "label", "score", "rate", "edited"]])

    # -- the card ------------------------------------------------------------------------------
    def show(self, feature: int) -> None:
        """Open a feature's card (label, scores, thumbnails, histogram, enrichment, siblings, edits)."""
        if feature < 0:
            self.card, self.top_images, self.quantile_images = {}, [], []
            return
        wb = self.wb
        card = wb.card(int(feature))
        row = self._table.iloc[int(feature)]
        counts, edges = card.histogram(30)
        enr = card.enriched
        self.card = {
            "feature": card.feature, "label": str(row["label"]), "status": str(row["status"]),
            "description": card.description,
            "scores": {k: _clean(v) for k, v in card.scores.items()},
            "stats": {k: _clean(v) for k, v in card.stats.items()},
            "hist": {"counts": counts.astype(int).tolist(), "edges": edges.astype(float).tolist(), "q90": _clean(card.stats.get("q90"))},
            "enriched": records(enr[["text", "active_frac", "base_frac", "lift", "q"]]) if len(enr) else [],
            "siblings": records(card.siblings[[c for c in ("feature", "label", "jaccard", "decoder_cos") if c in card.siblings]]),
            "top": self._items(card.top.head(12)), "quantiles": self._items(card.quantiles.head(10)),
            "coverage": [{"term": t, "share": _clean(c)} for t, c in card.coverage], "unsupported": list(card.unsupported),
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
        """Replace a feature's label by hand (recorded with provenance; see :mod:`sae.interpret.edits`)."""
        rec = self.wb.edit_label(int(feature), label, description, author)
        self._table = self.wb.feature_table()
        self.refresh()
        if self.selected == int(feature):
            self.show(int(feature))
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
