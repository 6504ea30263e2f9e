"""``FailureExplorer``: the concept map coloured by failure and slice, lasso selection, slices, queue export."""

from __future__ import annotations

from pathlib import Path

import ipywidgets
import numpy as np
import pandas as pd
import traitlets

from sae._io import atomic_path
from sae.errors import SaeError
from sae.views import FAILING, PASSING, slice_members, slice_points
from sae.widgets._base import View, asset
from sae.widgets.feature_browser import records
from sae.widgets.workbench import Workbench

MAX_THUMBS = 24


class AuditPanel(View):
    """The explorer's side panel: slice list, the current selection and its enriched concepts, export."""

    _esm = traitlets.Unicode(asset("common.js", "audit_panel.js")).tag(sync=True)
    summary = traitlets.Unicode("").tag(sync=True)
    slices: traitlets.List = traitlets.List().tag(sync=True)
    selected_slice = traitlets.Int(-1).tag(sync=True)
    selection = traitlets.Dict().tag(sync=True)
    thumbs = traitlets.List(traitlets.Bytes()).tag(sync=True)
    export_path = traitlets.Unicode("").tag(sync=True)

    def __init__(self, explorer: FailureExplorer, **kwargs):
        super().__init__(**kwargs)
        self.explorer = explorer

    def _on_slice(self, msg: dict) -> None:
        self.explorer.select_slice(int(msg["slice"]))

    def _on_clear(self, msg: dict) -> None:
        self.explorer.select([])

    def _on_export(self, msg: dict) -> None:
        self.explorer.export_queue()

    def _on_open_feature(self, msg: dict) -> None:
        self.explorer.wb.emit("feature", int(msg["feature"]))

    def _on_theme(self, msg: dict) -> None:
        self.explorer.set_theme(bool(msg.get("dark")))

    def _on_add_concept(self, msg: dict) -> None:
        self.explorer.wb.emit("add_concept", {"feature": int(msg["feature"])})


class FailureExplorer(ipywidgets.VBox):
    """Lasso items on the concept map; see what they share, how often they fail, and export the look-alikes."""

    def __init__(self, report, workbench: Workbench | None = None, height: int = 480):
        import jscatter

        if report.map is None:
            raise SaeError("the audit has no concept map: run it with with_map=True (CLI: sae audit ... --map)")
        if workbench is None and report.run is None:
            raise SaeError("give the Workbench of the audited run (the report does not know its run)")
        self.report = report
        self.wb = workbench or Workbench(report.run)
        self.status = slice_points(report)
        frame = pd.DataFrame({"x": report.map["x"].to_numpy(), "y": report.map["y"].to_numpy(), "status": self.status.to_numpy(),
                              "id": report.ids})
        cats = [PASSING, FAILING] + sorted(set(self.status) - {PASSING, FAILING})
        palette = ["#c8c8c8", "#5a5a5a", "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#469990", "#9a6324"]
        cmap = {c: palette[i % len(palette)] for i, c in enumerate(cats)}
        frame["status"] = pd.Categorical(frame["status"], categories=cats)
        self.scatter = jscatter.Scatter(data=frame, x="x", y="y", color_by="status", color_map=cmap, height=height,
                                        legend=True, size=4, tooltip=True, tooltip_properties=["status", "id"])
        self.scatter.widget.mouse_mode = "lasso"
        self.panel = AuditPanel(self, summary=report.summary(), slices=self._slice_rows())
        self.scatter.widget.observe(self._on_lasso, names="selection")
        self._rows = np.zeros(0, np.int64)
        super().__init__([ipywidgets.HBox([self.scatter.show(), self.panel])])

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

    def select_slice(self, slice_id: int) -> None:
        """Select a slice's members (its rule applied to every item)."""
        rows = slice_members(self.report, slice_id)["row"].to_numpy()
        self.panel.selected_slice = slice_id
        self.select(rows)

    def selected_concepts(self, n: int = 12) -> pd.DataFrame:
        """Concepts enriched in the selection against the other items (Fisher exact, BH q)."""
        from sae.audit.enrichment import concept_enrichment

        flag = np.zeros(len(self.status), bool)
        flag[self._rows] = True
        if flag.sum() < 1 or flag.all():
            return pd.DataFrame(columns=["feature", "label", "n_active", "lift", "q"])
        enr = concept_enrichment(self.wb.index, flag, self.wb.labels.mapping(), min_active=3)
        return enr[(enr["q"] < 0.05) & (enr["lift"] > 1)].head(n).reset_index(drop=True)

    def set_theme(self, dark: bool) -> None:
        """Map background to match JupyterLab's theme (the panel follows it by itself; the WebGL map needs telling)."""
        self.scatter.background(color="#111111" if dark else "#ffffff")

    def export_queue(self, path: str | Path | None = None) -> Path:
        """Write the look-alike queue as CSV (default: next to the saved audit) and return the path."""
        if path is None:
            base = self.report.path or (self.wb.run.path / "audits" / "explorer")
            path = Path(base) / "queue-export.csv"
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            self.report.queue.to_csv(tmp, index=False)
        self.panel.export_path = str(path)
        return path

    # -- internals -----------------------------------------------------------------------------
    def _slice_rows(self) -> list[dict]:
        t = self.report.slice_table()
        keep = ["slice", "name", "validated", "holdout_members", "holdout_failure_rate", "holdout_lift", "why_not", "llm_name"]
        return records(t[keep])

    def _on_lasso(self, change) -> None:
        rows = np.asarray(change["new"] if change["new"] is not None else [], dtype=np.int64)
        self.panel.guard(self._update, rows)

    def _update(self, rows: np.ndarray) -> None:
        self._rows = np.unique(rows)
        failed = self.report.signal.failed
        with self.panel.hold_sync():
            if not len(self._rows):
                self.panel.selection, self.panel.thumbs = {}, []
                return
            shown = self._rows[np.argsort(~failed[self._rows], kind="stable")][:MAX_THUMBS]
            concepts = self.selected_concepts()
            cols = [c for c in ("feature", "label", "n_active", "lift", "q") if c in concepts]
            self.panel.selection = {
                "n": int(len(self._rows)), "n_failed": int(failed[self._rows].sum()),
                "rate": float(failed[self._rows].mean()), "base_rate": float(self.report.signal.rate),
                "concepts": records(concepts[cols]),
                "items": [{"row": int(r), "id": str(self.report.ids[r]), "failed": bool(failed[r]), "caption": c}
                          for r, c in zip(shown, self.wb.captions(shown))],
            }
            self.panel.thumbs = self.wb.thumbnails(shown)
