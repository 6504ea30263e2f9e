"""``FailureExplorer``: the concept map coloured by failure and slice (or any metadata column or feature), lasso
selection, slices (the audit's and hand-made ones), export of the look-alike queue and of the selection.

Layout. The map fills the width left of the side panel (:data:`PANEL_PX`) at a given height; its legend sits in the
top-right corner, in a band above the points that is kept free for it (the y scale is padded by the legend's height),
so the legend never covers a point of the initial view.

Hovering a point shows its thumbnail (or text preview) with its id and status; the panel lists the selection in a
paged table (:mod:`sae.widgets.explorer_map`: failing items first, then by row) whose thumbnails open the shared item
viewer (:class:`~sae.widgets.items.ItemViewing`) with the item's id, metadata and top concepts."""

from __future__ import annotations

import re
from pathlib import Path

import ipywidgets
import numpy as np
import pandas as pd
import traitlets

from sae._io import atomic_path
from sae.errors import SaeError
from sae.views import FAILING, PASSING, slice_members, slice_points, status_colors
from sae.widgets import explorer_map
from sae.widgets._base import View, asset
from sae.widgets.explorer_map import legend_on_top, legend_scales, numeric_colors
from sae.widgets.fallback import StaticFallback
from sae.widgets.feature_browser import records
from sae.widgets.items import ItemViewing
from sae.widgets.workbench import Workbench

MAX_THUMBS = explorer_map.TABLE_PAGE  # thumbnails sent to the panel at once: a page of the selection table
PANEL_PX = 420
"""Width of the side panel; the map takes the rest of the output's width."""
STATUS = "status"
MAX_CATEGORIES = 8
"""A categorical column shows at most this many values: the most frequent ones, the rest together as ``other``."""
CATEGORY_PALETTE = ("#56b4e9", "#e69f00", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7", "#8c564b")
"""Okabe-Ito (black swapped for brown, which stays visible on the dark theme); ``other`` is grey."""
OTHER_COLOR, MISSING = "#bbbbbb", "(missing)"
"""Height of a legend row (jscatter's small legend: 10 px text, 16 px leaves room for a tall line height), the legend's
margin and padding (numeric colourings and the points' margin: :mod:`sae.widgets.explorer_map`)."""
FEATURE = re.compile(r"^\s*(?:feature\s*)?#?\s*(\d+)\s*$", re.IGNORECASE)


class AuditPanel(ItemViewing, View):
    """The explorer's side panel: slice list, colouring, the current selection (its enriched concepts, a paged table
    of its items whose thumbnails open the item viewer), exports."""

    _esm = traitlets.Unicode(asset("common.js", "audit_panel.js")).tag(sync=True)
    summary = traitlets.Unicode("").tag(sync=True)
    slices: traitlets.List = traitlets.List().tag(sync=True)
    selected_slice = traitlets.Int(-1).tag(sync=True)
    selection = traitlets.Dict().tag(sync=True)
    thumbs = traitlets.List(traitlets.Bytes()).tag(sync=True)
    """Thumbnails of the selection table's current page (its rows' order)."""
    table = traitlets.Dict().tag(sync=True)
    """The selection table's current page (:func:`sae.widgets.explorer_map.table_page`); ``{}`` with no selection."""
    table_page = traitlets.Int(0).tag(sync=True)
    """The selection table's page (0-based; set by the view's previous / next); a new selection starts at 0."""
    export_path = traitlets.Unicode("").tag(sync=True)
    color_choices: traitlets.List = traitlets.List().tag(sync=True)
    """What the map can be coloured by: ``{"value", "label"}`` per choice (status, metadata columns, slice concepts)."""
    color = traitlets.Unicode(STATUS).tag(sync=True)
    """What the map is coloured by now (a value of :attr:`color_choices`, or a feature chosen in Python)."""
    next_name = traitlets.Unicode("selection 1").tag(sync=True)
    """Default name of the next hand-made slice."""
    height = traitlets.Int(560).tag(sync=True)

    def __init__(self, explorer: FailureExplorer, **kwargs):
        super().__init__(**kwargs)
        self.explorer = explorer
        self.observe(self._paged, names="table_page")

    @property
    def wb(self) -> Workbench:
        """The explorer's workbench (the item viewer reads items from it)."""
        return self.explorer.wb

    def _paged(self, change) -> None:
        if change["new"] != self.table.get("page"):  # the view asks for another page (not the one just shown)
            self.guard(self.explorer.show_page, change["new"])

    def _on_slice(self, msg: dict) -> None:
        self.explorer.select_slice(int(msg["slice"]))

    def _on_clear(self, msg: dict) -> None:
        self.explorer.select([])

    def _on_export(self, msg: dict) -> None:
        self.explorer.export_queue()

    def _on_export_selection(self, msg: dict) -> None:
        self.explorer.export_selection()

    def _on_add_selection(self, msg: dict) -> None:
        self.explorer.add_selection(str(msg.get("name", "")))

    def _on_color(self, msg: dict) -> None:
        self.explorer.color_by(str(msg.get("what", STATUS)))

    def _on_open_feature(self, msg: dict) -> None:
        self.explorer.wb.emit("feature", int(msg["feature"]))

    def _on_theme(self, msg: dict) -> None:
        self.explorer.set_theme(bool(msg.get("dark")))

    def _on_add_concept(self, msg: dict) -> None:
        self.explorer.wb.emit("add_concept", {"feature": int(msg["feature"])})


class FailureExplorer(StaticFallback, ipywidgets.VBox):
    """Lasso items on the concept map; see what they share, how often they fail, and export the look-alikes.
    Displayed with the audit's static view beside it (:mod:`sae.widgets.fallback`), hidden by the panel's JS."""

    def __init__(self, report, workbench: Workbench | None = None, height: int = 560):
        import jscatter

        if report.map is None:
            raise SaeError("the audit has no concept map: run it with with_map=True (CLI: sae audit ... --map)")
        if workbench is None and report.run is None:
            raise SaeError("give the Workbench of the audited run (the report does not know its run)")
        if isinstance(height, bool) or not isinstance(height, (int, np.integer)) or height < 200:
            raise SaeError(f"height must be a number of pixels >= 200, got {height!r}")
        self.report = report
        self.wb = workbench or Workbench(report.run)
        self.height = int(height)
        self.status = slice_points(report)
        self.coloring = STATUS
        """What the map is coloured by (see :meth:`color_by`)."""
        status, cmap = self._status_colors()
        frame = pd.DataFrame({"x": report.map["x"].to_numpy(), "y": report.map["y"].to_numpy(), "status": status, "id": report.ids})
        self.preview = explorer_map.preview_kind(self.wb, len(frame))  # tooltips: "image", "text" or None (id, status)
        frame[explorer_map.PREVIEW] = explorer_map.preview_values(self.wb, len(frame), self.preview)
        x_scale, y_scale = self._scales(len(cmap))
        self.scatter = jscatter.Scatter(data=frame, x="x", y="y", x_scale=x_scale, y_scale=y_scale,
                                        color_by="status", color_map=cmap, width="auto", height=self.height, axes=False,
                                        legend=True, legend_position="top-right", legend_size="small", size=4,
                                        tooltip=True, tooltip_properties=["color", "status", "id"],
                                        **explorer_map.tooltip_options(self.preview))
        self.scatter.widget.mouse_mode = "lasso"
        self.scatter.widget.layout = ipywidgets.Layout(flex="1 1 0%", min_width="0", width="auto")  # the width left of the panel
        self._legend_rows = 1 + len(cmap)
        self._rows = self._ordered = np.zeros(0, np.int64)
        self.panel = AuditPanel(self, summary=report.summary(), slices=self._slice_rows(), color_choices=self.color_choices(),
                                height=self.height, layout=ipywidgets.Layout(flex=f"0 0 {PANEL_PX}px"))
        self.panel.next_name = self._next_name()
        self.scatter.widget.observe(self._on_lasso, names="selection")
        box = ipywidgets.HBox([self.scatter.show(), self.panel], layout=ipywidgets.Layout(width="100%", align_items="flex-start"))
        super().__init__([box], layout=ipywidgets.Layout(width="100%"))

    # -- Python API ----------------------------------------------------------------------------
    @property
    def selection(self) -> np.ndarray:
        """Rows currently selected (by the lasso, a slice click or :meth:`select`)."""
        return self._rows

    def select(self, rows) -> None:
        """Select items (row numbers); the map and the panel follow."""
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        if len(rows) and (rows[0] < 0 or rows[-1] >= len(self.status)):
            raise SaeError(f"rows must be within 0..{len(self.status) - 1}")
        self.scatter.widget.selection = rows.astype(np.int64)
        self._update(rows)

    def selected_items(self) -> pd.DataFrame:
        """The selection in the table's order (failing first, then by row): row, id, failing, status on the map."""
        rows = self._ordered
        return pd.DataFrame({"row": rows, "id": [str(i) for i in np.asarray(self.report.ids)[rows]],
                             "failing": self.report.signal.failed[rows], "status": self.status.to_numpy()[rows]})

    def show_page(self, page: int) -> None:
        """Show a page of the selection table (clamped to the pages there are) with its thumbnails."""
        table, thumbs = explorer_map.table_page(self.wb, self.report, self.status, self._ordered, page) if len(self._ordered) else ({}, [])
        with self.panel.hold_sync():
            self.panel.table, self.panel.thumbs, self.panel.table_page = table, thumbs, table.get("page", 0)

    def select_slice(self, slice_id: int) -> None:
        """Select a slice's members (its rule applied to every item)."""
        rows = slice_members(self.report, slice_id)["row"].to_numpy()
        self.panel.selected_slice = slice_id
        self.select(rows)

    def selected_concepts(self, n: int = 12) -> pd.DataFrame:
        """Concepts enriched in the selection against the other items (Fisher exact, BH q), with the items where each
        fires inside the selection (``n_in_selection``) and among all items (``n_overall``); a concept "fires" as in the
        audit (its firm activations, :mod:`sae.audit.firm`), so the panel and the slices count alike."""
        from sae.audit.enrichment import concept_enrichment

        cols = ["feature", "label", "n_in_selection", "n_overall", "lift", "q"]
        flag = np.zeros(len(self.status), bool)
        flag[self._rows] = True
        if flag.sum() < 1 or flag.all():
            return pd.DataFrame(columns=cols)
        enr = concept_enrichment(self.report.index if self.report.index is not None else self.wb.index, flag, self.wb.labels.mapping(), min_active=3)
        enr = enr.rename(columns={"n_failed": "n_in_selection", "n_active": "n_overall"})  # the flag here is "selected"
        return enr[(enr["q"] < 0.05) & (enr["lift"] > 1)].head(n).reset_index(drop=True)[cols]

    def color_choices(self) -> list[dict]:
        """What the panel offers to colour by: status, every metadata column but ``id``, the slices' concepts."""
        labels = self.wb.labels.mapping()
        out = [{"value": STATUS, "label": "status (passing / failing / validated slice)"}]
        out += [{"value": c, "label": c} for c in self._columns()]
        out += [{"value": f"feature #{f}", "label": f"feature #{f}: {labels.get(f, '')}"[:60]} for f in self._slice_concepts()]
        return out

    def color_by(self, what: str | int = STATUS) -> str:
        """Colour the map by ``what`` and return its name: ``"status"`` (passing / failing / validated slice, the
        colours of :func:`sae.views.status_colors`), a metadata column (categorical: a palette, at most
        :data:`MAX_CATEGORIES` values; numeric: a continuous colormap) or a feature (a number, ``"#12"`` or
        ``"feature #12"``: its calibrated activation per item, 0 where it does not fire). Refuses anything else,
        naming the valid choices."""
        kind, key = self._resolve(what)
        if kind == STATUS:
            _, cmap = self._status_colors()
            spec: dict = {"by": "status", "map": cmap, "norm": None, "labeling": None}
            entries = len(cmap)
        elif kind == "feature":
            spec, entries = numeric_colors(self.wb.index.ratio_at(int(key), np.arange(len(self.status))), f"feature #{key}")
        else:
            spec, entries = self._column_spec(str(key))
        self._paint(spec, entries)
        name = STATUS if kind == STATUS else (f"feature #{key}" if kind == "feature" else str(key))
        self.coloring = self.panel.color = name
        return name

    def set_theme(self, dark: bool) -> None:
        """Map background to match JupyterLab's theme (the panel follows it by itself; the WebGL map needs telling)."""
        self.scatter.background(color="#111111" if dark else "#ffffff")
        if not self.scatter.widget.axes:  # jscatter 1.0 draws axes when their colour changes, even with axes off:
            self.scatter.widget.axes = True  # so switch them on and off again (the view removes them)
            self.scatter.widget.axes = False

    def export_queue(self, path: str | Path | None = None) -> Path:
        """Write the look-alike queue as CSV (default: next to the saved audit) and return the path."""
        return self._write_csv(self.report.queue, path, "queue-export.csv")

    def export_selection(self, path: str | Path | None = None) -> Path:
        """Write the selected items as CSV (default: ``selection-export.csv`` next to the saved audit): id, row,
        failing and their status on the map (passing / failing / the validated slice); refuses an empty selection."""
        rows = self._rows
        if not len(rows):
            raise SaeError("nothing is selected: lasso items on the map or click a slice, then export")
        frame = pd.DataFrame({"id": np.asarray(self.report.ids)[rows], "row": rows, "failing": self.report.signal.failed[rows],
                              "status": self.status.to_numpy()[rows]})
        return self._write_csv(frame, path, "selection-export.csv")

    def add_selection(self, name: str | None = None):
        """Add the selection to the audit as a hand-made slice (:func:`sae.audit.hand.add_selection_slice`: listed with
        the slices, never validated) named ``name`` (default ``selection N``), list it and return it. It lives in
        ``self.report``; ``report.save(folder)`` writes it with the others."""
        from sae.audit.hand import add_selection_slice

        s = add_selection_slice(self.report, self._rows, self._next_name() if name is None else name)
        with self.panel.hold_sync():
            self.panel.slices = self._slice_rows()
            self.panel.selected_slice = s.id
            self.panel.summary = self.report.summary()
            self.panel.color_choices = self.color_choices()
            self.panel.next_name = self._next_name()
        return s

    def static_html(self) -> str:
        """The audit's static view: what a reopened notebook shows in place of the explorer."""
        return self.report._repr_html_()

    def fallback_target(self) -> AuditPanel:
        """The panel (an anywidget) hides the static copy; the map cannot."""
        return self.panel

    # -- internals -----------------------------------------------------------------------------
    def _slice_rows(self) -> list[dict]:
        t = self.report.slice_table()
        keep = ["slice", "name", "kind", "validated", "holdout_members", "holdout_failure_rate", "holdout_lift", "why_not", "llm_name"]
        return records(t[keep])

    def _next_name(self) -> str:
        from sae.audit.hand import next_selection_name

        return next_selection_name(self.report)

    def _write_csv(self, frame: pd.DataFrame, path: str | Path | None, default: str) -> Path:
        """Write ``frame`` atomically to ``path`` (default: ``default`` next to the saved audit), show and return it."""
        if path is None:
            base = self.report.path or (self.wb.run.path / "audits" / "explorer")
            path = Path(base) / default
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False)
        self.panel.export_path = str(path)
        return path

    def _columns(self) -> list[str]:
        """Metadata columns to colour by: all but ``id`` (one value per item colours nothing)."""
        return [str(c) for c in self.wb.meta.columns if c != "id"]

    def _slice_concepts(self) -> list[int]:
        """The slices' defining concepts, in slice order, each once."""
        return list(dict.fromkeys(int(f) for s in self.report.slices for f in s.concepts))

    def _resolve(self, what) -> tuple[str, str | int]:
        """(``"status"`` / ``"column"`` / ``"feature"``, the column or feature number) of ``what``; refuses the rest."""
        n_features = int(self.wb.index.n_latents)
        feature: int | None = None
        if isinstance(what, (int, np.integer)) and not isinstance(what, bool):
            feature = int(what)
        elif isinstance(what, str):
            if what == STATUS:
                return STATUS, STATUS
            if what in self._columns():
                return "column", what
            m = FEATURE.match(what)
            feature = int(m.group(1)) if m else None
        if feature is not None and 0 <= feature < n_features:
            return "feature", feature
        raise SaeError(f"cannot colour by {what!r}: choose 'status', a metadata column ({', '.join(self._columns()) or 'none'}) "
                       f"or a feature number 0..{n_features - 1} (e.g. 'feature #{(self._slice_concepts() or [0])[0]}')")

    def _status_colors(self) -> tuple[pd.Categorical, dict[str, str]]:
        """Per item its status (categorical) and the colours of the statuses present (shared with the figures)."""
        colors = status_colors(self.report)  # a slice has one colour everywhere
        present = set(self.status)
        cmap = {c: colors[c] for c in colors if c in (PASSING, FAILING) or c in present}
        if legend_on_top(len(cmap), self.height):
            return pd.Categorical(self.status.to_numpy(), categories=list(cmap)), cmap
        short = {c: c.split(":")[0] for c in cmap}  # a legend beside the points: "slice 12" (the panel lists the names)
        status = pd.Categorical(self.status.map(short).to_numpy(), categories=list(short.values()))
        return status, {short[c]: v for c, v in cmap.items()}

    def _column_spec(self, column: str) -> tuple[dict, int]:
        """The colour encoding of a metadata column (categorical or numeric) and its number of legend entries."""
        values = self.wb.meta[column].reset_index(drop=True)
        if len(values) != len(self.status):
            raise SaeError(f"the run's metadata has {len(values)} rows; the audit has {len(self.status)} items")
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            return numeric_colors(values.to_numpy(np.float64), column)
        cats, cmap = _categories(values)
        return {"by": cats, "map": cmap, "norm": None, "labeling": {"variable": column}}, len(cmap)

    def _paint(self, spec: dict, entries: int) -> None:
        """Apply a colour encoding with ONE update of the points: the map drops a points update that arrives while it
        still draws the previous one, so when the legend's band changes too, the colours are set without sending the
        points and the new y scale sends them (without a transition: the map is busy during one)."""
        if 1 + entries == self._legend_rows:
            self.scatter.color(**spec)
            return
        self.scatter.color(**spec, skip_widget_update=True)
        x_scale, y_scale = self._scales(entries)
        self.scatter.xy(x_scale=x_scale, y_scale=y_scale, animate=False)
        self._legend_rows = 1 + entries

    def _scales(self, entries: int) -> tuple[tuple[float, float], tuple[float, float]]:
        """The map's domains keeping the band of a legend of ``entries`` values free (see :func:`legend_scales`)."""
        return legend_scales(self.report.map["x"], self.report.map["y"], entries, self.height)

    def _on_lasso(self, change) -> None:
        rows = np.asarray(change["new"] if change["new"] is not None else [], dtype=np.int64)
        self.panel.guard(self._update, rows)

    def _update(self, rows: np.ndarray) -> None:
        """A new selection: its summary and concepts, the table's first page; the item viewer closes."""
        self._rows = np.unique(rows)
        self._ordered = explorer_map.table_order(self._rows, self.report.signal.failed)
        failed = self.report.signal.failed
        with self.panel.hold_sync():
            self.panel.item = {}
            if not len(self._rows):
                self.panel.selection = {}
            else:
                self.panel.selection = {
                    "n": int(len(self._rows)), "n_failed": int(failed[self._rows].sum()),
                    "rate": float(failed[self._rows].mean()), "base_rate": float(self.report.signal.rate),
                    "concepts": records(self.selected_concepts()),
                }
            self.show_page(0)


def _categories(values: pd.Series) -> tuple[pd.Categorical, dict[str, str]]:
    """Values as categories (missing as ``(missing)``; beyond :data:`MAX_CATEGORIES`, the rarer ones together as
    ``other (N values)``, in grey) and a colour per category, in the categories' order."""
    text = values.astype(object).where(values.notna(), MISSING).astype(str)
    counts = text.value_counts()
    keep = sorted(counts.index) if len(counts) <= MAX_CATEGORIES else sorted(counts.index[: MAX_CATEGORIES - 1])
    other = f"other ({len(counts) - len(keep)} values)"
    text = text.where(text.isin(keep), other)
    cmap = {c: CATEGORY_PALETTE[i % len(CATEGORY_PALETTE)] for i, c in enumerate(keep)}
    if len(counts) > len(keep):
        cmap[other] = OTHER_COLOR
    cats = list(cmap)
    return pd.Categorical(text.to_numpy(), categories=cats), cmap
