"""The state linked widgets share: one run's searcher, labels, evidence and thumbnails, plus an event bus.

Widgets never compute what the Python API cannot: they call the searcher, the evidence builder and
the audit report held here. Events link them: ``feature`` (open a feature's card), ``add_concept``
(add a feature to the current query plan), ``rows`` (show items).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

EVENTS = ("feature", "add_concept", "rows")


def _text(v: object) -> str:
    """A metadata value as text ("" when missing; a float to 6 significant digits, not 0.26620335068952744)."""
    if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, (float, np.floating)) and np.isnan(v)):
        return ""
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.6g}"
    return str(v)


class Workbench:
    """One SAE run opened for interactive work; pass the same one to every widget to link them."""

    def __init__(self, run, labeler: str | None = None, thumb_cache: int = 4096, searcher=None):
        from sae.search.searcher import Searcher

        self.run = run
        self.searcher = searcher or Searcher(run, labeler)
        self._handlers: dict[str, list[Callable[[Any], None]]] = {e: [] for e in EVENTS}
        self._thumbs: OrderedDict[int, bytes] = OrderedDict()
        self._thumb_cache = thumb_cache

    @classmethod
    def open(cls, workspace: str | Path, run: str | None = None, labeler: str | None = None) -> Workbench:
        """Open a workspace folder's run (default: the only or most recent one)."""
        from sae.run import Run

        return cls(Run.open(Path(workspace), run), labeler)

    @classmethod
    def of(cls, searcher) -> Workbench:
        """The workbench around an existing :class:`~sae.search.searcher.Searcher` (one per searcher)."""
        wb = getattr(searcher, "_workbench", None)
        if wb is None:
            wb = searcher._workbench = cls(searcher.run, searcher=searcher)
        return wb

    # -- shared objects ------------------------------------------------------------------------
    @property
    def store(self):
        return self.searcher.store

    @property
    def index(self):
        return self.searcher.index

    @property
    def labels(self):
        return self.searcher.labels

    @property
    def meta(self) -> pd.DataFrame:
        return self.searcher.meta

    @cached_property
    def evidence(self):
        """The evidence builder (built on first use: it reads the inverted index into memory)."""
        from sae.interpret.evidence import EvidenceBuilder

        return EvidenceBuilder.of(self.run, progress=False)

    # -- events --------------------------------------------------------------------------------
    def on(self, event: str, handler: Callable[[Any], None]) -> None:
        """Call ``handler(payload)`` whenever a linked widget emits ``event``."""
        if event not in self._handlers:
            raise ValueError(f"unknown event {event!r}; one of {EVENTS}")
        self._handlers[event].append(handler)

    def emit(self, event: str, payload: Any) -> None:
        for handler in list(self._handlers[event]):
            handler(payload)

    # -- items ---------------------------------------------------------------------------------
    @property
    def has_images(self) -> bool:
        return bool(self.store.has_image_previews)

    def thumbnails(self, rows) -> list[bytes]:
        """PNG bytes per row (empty when the store has no image previews); an LRU cache keeps repeats free."""
        from sae._io import png_bytes

        rows = [int(r) for r in rows]
        if not self.has_images:
            return [b""] * len(rows)
        missing = sorted({r for r in rows if r not in self._thumbs})
        if missing:
            for r, im in zip(missing, self.store.previews(np.asarray(missing, np.int64))):
                self._thumbs[r] = png_bytes(im)
        for r in rows:
            self._thumbs.move_to_end(r)
        while len(self._thumbs) > self._thumb_cache:
            self._thumbs.popitem(last=False)
        return [self._thumbs[r] for r in rows]

    def captions(self, rows, width: int = 140) -> list[str]:
        """A short text per row: the text preview when the store has one, else the id."""
        rows = np.asarray(rows, np.int64)
        if self.store.has_text_previews:
            return [str(t)[:width] for t in self.store.texts(rows)]
        return [str(i) for i in self.meta["id"].to_numpy()[rows]]

    def item_features(self, row: int, n: int = 8) -> pd.DataFrame:
        """The features an item shows most (by calibrated presence), with their labels."""
        csr = self.searcher.codes.rows([int(row)])
        feats, vals = csr.indices.astype(np.int64), csr.data.astype(np.float64)
        pres = np.minimum(vals / self.index.scale[feats], 1.0)
        labels = self.labels.mapping()
        df = pd.DataFrame({"feature": feats, "label": [labels.get(int(f), "") for f in feats], "activation": vals, "presence": pres})
        return df.sort_values(["presence", "activation"], ascending=False, kind="stable").head(n).reset_index(drop=True)

    def item_details(self, row: int, n_concepts: int = 8) -> dict:
        """What an item viewer shows of one item: its row, id, caption, every metadata column but ``id`` as text
        (never HTML), and its strongest features (by calibrated presence) with their labels."""
        from sae.errors import SaeError

        meta = self.meta
        if not 0 <= int(row) < len(meta):
            raise SaeError(f"unknown item row {row}; the store has rows 0..{len(meta) - 1}")
        values = meta.iloc[int(row)]
        top = self.item_features(int(row), n_concepts)
        return {
            "row": int(row), "id": str(values["id"]), "caption": self.captions([int(row)])[0],
            "metadata": {str(k): _text(v) for k, v in values.items() if k != "id"},
            "concepts": [{"feature": int(f), "label": str(lab), "presence": float(p)}
                         for f, lab, p in zip(top["feature"], top["label"], top["presence"])],
        }

    def edit_label(self, feature: int, label: str, description: str = "", author: str | None = None) -> dict:
        """Edit a label by hand (provenance recorded) and let search use it at once."""
        import dataclasses

        from sae.search.planner import EmbeddingPlanner

        rec = self.labels.edit(feature, label, description, author)
        mapping = self.labels.mapping()
        if isinstance(self.searcher.planner, EmbeddingPlanner):
            self.searcher.planner = dataclasses.replace(self.searcher.planner, labels=mapping)
        self.searcher.examples.labels = mapping
        return rec

    # -- features ------------------------------------------------------------------------------
    def feature_table(self) -> pd.DataFrame:
        """Every feature with its label, score and density (see :func:`sae.views.feature_table`)."""
        from sae.views import feature_table

        return feature_table(self.run.stats, self.labels)

    def card(self, feature: int):
        """The :class:`~sae.views.FeatureCard` of a feature (what the browser and the figure show)."""
        from sae.views import feature_card

        return feature_card(self.evidence, self.labels, int(feature))

    def __repr__(self) -> str:
        return f"Workbench(run={self.run.name!r}, rows={self.store.n_rows:,}, features={self.searcher.codes.n_latents:,})"
