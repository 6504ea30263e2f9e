"""A workspace folder and one SAE run in it, each artifact opened once.

A workspace is ``store.zarr`` plus ``saes/<run>/`` with everything derived from the store by one SAE.
:class:`Run` is what every stage, the CLI, the widgets and the figures take: it opens the store, the
model, the codes, the one in-memory inverted index (:class:`~sae.codes.Postings`), the metadata and
the labels lazily, each once, and checks once that the model and the codes were made from this
version of the store. A new stage asks the run for what it needs instead of repeating "open the
store, check the fingerprint, open the codes, build the index, load the labels, read the metadata".
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sae.codes import Codes, Postings
from sae.errors import SaeError, StaleArtifactError, StoreError
from sae.models import SparseAutoencoder
from sae.models.io import load_sae, model_digest, read_config
from sae.store import Store

if TYPE_CHECKING:
    from sae.interpret.labels import LabelSet

STORE_NAME = "store.zarr"
SAES_DIR = "saes"
CODES = "codes.zarr"
METRICS = "metrics.json"


def _artifact_status(open_it: Callable[[], Any], exists: bool) -> str:
    if not exists:
        return "missing"
    try:
        open_it()
    except SaeError as e:
        return f"stale: {e}"
    return "ok"


class Workspace:
    """One folder per dataset: the store and the SAE runs trained on it."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @property
    def store_path(self) -> Path:
        return self.path / STORE_NAME

    def exists(self) -> bool:
        return self.store_path.exists()

    def open_store(self, mode: str = "r") -> Store:
        """Open the workspace's store, with a hint when the folder is not a workspace."""
        if not self.exists():
            raise StoreError(
                f"{self.path} is not a workspace (no {STORE_NAME} inside); create one with `sae ingest` or `sae demo`"
            )
        return Store.open(self.store_path, mode=mode)

    def sae_runs(self) -> list[Path]:
        """SAE run folders (each holding a ``config.json``), sorted by name."""
        root = self.path / SAES_DIR
        if not root.is_dir():
            return []
        return sorted(p for p in root.iterdir() if (p / "config.json").exists())

    def run(self, name: str | None = None) -> Run:
        """The named run, or the most recently trained one."""
        return Run.find(self, name)

    def info(self) -> dict[str, Any]:
        """Summary of the store and of every SAE run (labels included when present)."""
        store = self.open_store()
        runs = []
        for path in self.sae_runs():
            run = Run(self, path)
            cfg = run.config
            runs.append({"run": run.name, "arch": cfg.get("arch"), "n_latents": cfg.get("n_latents"), "k": cfg.get("k"), **run.status()})
        return {"workspace": str(self.path), "store": store.summary(), "saes": runs}

    def _repr_html_(self) -> str:
        info = self.info()
        runs = "".join(f"<li>{html.escape(json.dumps(r))}</li>" for r in info["saes"]) or "<li>none yet</li>"
        return f"<div><b>workspace</b> {html.escape(str(self.path))}{self.open_store()._repr_html_()}<ul>{runs}</ul></div>"


class Run:
    """One trained SAE in a workspace, opened once: weights, config, store, codes, postings, metadata, labels.

    Every artifact is read on first use and kept; :meth:`refresh` forgets them after a stage rewrote
    one (re-encoding, relabeling). The store is checked against the model once, when first opened.
    """

    def __init__(self, ws: Workspace, path: str | os.PathLike, store: Store | None = None, name: str | None = None):
        """``name``: the run's name when ``path`` is the hidden folder it is being built in."""
        self.ws = ws
        self.path = Path(path)
        self._name = name
        self._labels: dict[str | None, LabelSet] = {}
        self._derived: dict[Any, Any] = {}
        if store is not None:
            self.__dict__["store"] = store
            self.check_store(store)

    @classmethod
    def find(cls, ws: Workspace, name: str | None = None) -> Run:
        """The named run, or the most recently trained one."""
        runs = ws.sae_runs()
        if not runs:
            raise SaeError(f"no SAE in {ws.path}; train one with `sae train {ws.path}`")
        if name is None:
            return cls(ws, max(runs, key=lambda p: (p / "config.json").stat().st_mtime))
        match = [p for p in runs if p.name == name]
        if not match:
            raise SaeError(f"no SAE run {name!r} in {ws.path}; available: {[p.name for p in runs]}")
        return cls(ws, match[0])

    @classmethod
    def open(cls, workspace: str | os.PathLike, name: str | None = None) -> Run:
        """Open a workspace folder's run (default: the most recently trained one)."""
        return cls.find(Workspace(workspace), name)

    @property
    def name(self) -> str:
        return self._name or self.path.name

    # -- artifacts, each opened once -----------------------------------------------------------
    @cached_property
    def config(self) -> dict[str, Any]:
        return read_config(self.path)

    @cached_property
    def model(self) -> SparseAutoencoder:
        model, _ = load_sae(self.path)
        return model

    @cached_property
    def store(self) -> Store:
        """The workspace store, checked against the model (fingerprint and width) on opening."""
        store = self.ws.open_store()
        self.check_store(store)
        return store

    @cached_property
    def model_digest(self) -> str:
        """Digest of the run's saved model: every derived artifact records it, readers compare it."""
        return model_digest(self.path)

    @cached_property
    def codes(self) -> Codes:
        """The run's ``codes.zarr``, refused when it was computed from another version of the store or
        by another model (a retrained run whose codes were not rewritten)."""
        codes = Codes.open(self.path / CODES, store=self.store)
        if codes.model_digest and codes.model_digest != self.model_digest:
            raise StaleArtifactError(f"{codes.path} was encoded by another model than {self.name}'s (the run was retrained); "
                                     f"re-encode with `sae encode {self.ws.path} --run {self.name}`")
        return codes

    @cached_property
    def postings(self) -> Postings:
        """The inverted index in memory, read once for every reader (search, evidence, audit)."""
        return Postings.from_codes(self.codes)

    @cached_property
    def stats(self) -> pd.DataFrame:
        """Per-feature statistics of the codes."""
        return self.codes.stats()

    @cached_property
    def meta(self) -> pd.DataFrame:
        """All metadata columns (with ``id``), read once."""
        return self.store.meta()

    @cached_property
    def decoder(self) -> np.ndarray:
        """Decoder directions (n_latents x d_in) as NumPy."""
        return self.model.W_dec.detach().numpy()

    @property
    def group_key(self) -> str | None:
        return self.store.provenance.get("group_key")

    def labels(self, labeler: str | None = None, edits: bool = True) -> LabelSet:
        """The labels of ``labeler`` (default: the most recent), hand edits applied; loaded once per labeler."""
        from sae.interpret.labels import load_labels  # the one upward import: labels are made by interpret

        if not edits:
            return load_labels(self, labeler, edits=False)
        if labeler not in self._labels:
            self._labels[labeler] = load_labels(self, labeler)
        return self._labels[labeler]

    def cached(self, key: Any, build: Callable[[], Any]) -> Any:
        """A derived in-memory object (a concept index, an evidence builder) built once per run and kept
        until :meth:`refresh`; stages ask for it by key so one run holds one copy."""
        if key not in self._derived:
            self._derived[key] = build()
        return self._derived[key]

    def refresh(self, *names: str) -> Run:
        """Forget cached artifacts (all, or the named ones: ``codes``, ``labels``...) after a stage rewrote them."""
        names = names or ("config", "model", "model_digest", "store", "codes", "postings", "stats", "meta", "decoder", "labels")
        dependants = {"store": ("codes", "postings", "stats", "meta"), "codes": ("postings", "stats"), "model": ("decoder", "model_digest")}
        for n in list(names):
            names += dependants.get(n, ())
        if set(names) - {"labels"}:
            self._derived.clear()  # derived objects are built from the artifacts: rebuild them all
        for n in set(names):
            if n == "labels":
                self._labels.clear()
            else:
                self.__dict__.pop(n, None)
        return self

    def verify(self) -> Run:
        """Check, at the start of a stage, that the store on disk is still the one this run has open
        (one small read of its attributes); if another process changed it, reopen it, which refuses a
        store this SAE was not trained on. Returns the run."""
        if "store" in self.__dict__ and Store.open(self.ws.store_path).fingerprint != self.store.fingerprint:
            self.refresh("store", "labels")
        _ = self.store
        return self

    # -- checks and small documents ------------------------------------------------------------
    def check_store(self, store: Store) -> None:
        """Refuse a store this SAE was not trained on (fingerprint) or cannot read (width)."""
        fp = self.config.get("store_fingerprint")
        if fp and fp != store.fingerprint:
            raise StaleArtifactError(f"SAE {self.name} was trained on a different version of the store; retrain it")
        if store.dim != int(self.config.get("d_in", store.dim)):
            raise SaeError(f"SAE {self.name} expects {self.config.get('d_in')}-d inputs, the store has {store.dim}-d")

    def holdout(self) -> slice:
        split = self.config.get("split", {})
        a, b = split.get("holdout_rows", [0, 0])
        return slice(int(a), int(b))

    def metrics(self) -> dict[str, Any]:
        """``metrics.json``, or {} when missing or computed for another model (see :meth:`status`)."""
        path = self.path / METRICS
        doc = json.loads(path.read_text()) if path.exists() else {}
        if doc.get("model_digest") and doc["model_digest"] != self.model_digest:
            return {}
        return doc

    def status(self) -> dict[str, str]:
        """Whether each derived artifact is current: ``ok``, ``missing`` or ``stale: <why and the fix>``."""
        probe = Run(self.ws, self.path, name=self._name)  # fresh: checking never disturbs this run's open artifacts
        out = {"model": _artifact_status(lambda: probe.store, True),
               "codes": _artifact_status(lambda: probe.codes, (self.path / CODES).exists())}
        if not (self.path / METRICS).exists():
            out["metrics"] = "missing"
        elif out["model"] != "ok":
            out["metrics"] = out["model"]  # measured on a store the model no longer matches
        else:
            out["metrics"] = "ok" if self.metrics() else "stale: made for another model; run `sae evaluate`"
        labels = sorted(self.path.glob("labels-*.parquet"))
        out["labels"] = _artifact_status(probe.labels, bool(labels))
        return out

    def __repr__(self) -> str:
        return f"Run({self.name!r} in {str(self.ws.path)!r})"

    def _repr_html_(self) -> str:
        m = self.metrics().get("reconstruction", {})
        return (f"<div><b>SAE run</b> {html.escape(self.name)}: {html.escape(str(self.config.get('arch')))}, "
                f"n={self.config.get('n_latents')}, k={self.config.get('k')}; held-out R2 {m.get('r2', float('nan')):.3f}, "
                f"L0 {m.get('l0', float('nan')):.1f}</div>")
