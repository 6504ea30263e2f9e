"""SAE runs inside a workspace: train -> encode -> evaluate, each writing into ``saes/<run>/``."""

from __future__ import annotations

import html
import json
import time
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from sae import evaluate as ev
from sae.codes import Codes, encode_store
from sae.errors import SaeError, StaleArtifactError
from sae.models import SAEConfig, SparseAutoencoder
from sae.models.io import atomic_write_text, load_sae, read_config
from sae.store import Store
from sae.train import TrainConfig, Trainer
from sae.workspace import SAES_DIR, Workspace

CODES = "codes.zarr"
METRICS = "metrics.json"


def run_name(sae_cfg: SAEConfig, train_cfg: TrainConfig) -> str:
    return f"{sae_cfg.arch}-n{sae_cfg.n_latents}-k{sae_cfg.k}-s{train_cfg.seed}"


class SAERun:
    """One trained SAE in a workspace: weights, config, codes and metrics."""

    def __init__(self, ws: Workspace, path: Path):
        self.ws = ws
        self.path = Path(path)

    @classmethod
    def find(cls, ws: Workspace, name: str | None = None) -> "SAERun":
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

    @property
    def name(self) -> str:
        return self.path.name

    @cached_property
    def config(self) -> dict[str, Any]:
        return read_config(self.path)

    @cached_property
    def model(self) -> SparseAutoencoder:
        model, _ = load_sae(self.path)
        return model

    def check_store(self, store: Store) -> None:
        fp = self.config.get("store_fingerprint")
        if fp and fp != store.fingerprint:
            raise StaleArtifactError(f"SAE {self.name} was trained on a different version of the store; retrain it")
        if store.dim != self.model.cfg.d_in:
            raise SaeError(f"SAE {self.name} expects {self.model.cfg.d_in}-d inputs, the store has {store.dim}-d")

    def codes(self, store: Store | None = None) -> Codes:
        return Codes.open(self.path / CODES, store=store)

    def holdout(self) -> slice:
        split = self.config.get("split", {})
        a, b = split.get("holdout_rows", [0, 0])
        return slice(int(a), int(b))

    def metrics(self) -> dict[str, Any]:
        path = self.path / METRICS
        return json.loads(path.read_text()) if path.exists() else {}

    def _repr_html_(self) -> str:
        m = self.metrics().get("reconstruction", {})
        return (f"<div><b>SAE run</b> {html.escape(self.name)}: {html.escape(str(self.config.get('arch')))}, "
                f"n={self.config.get('n_latents')}, k={self.config.get('k')}; held-out R2 {m.get('r2', float('nan')):.3f}, L0 {m.get('l0', float('nan')):.1f}</div>")


def train_run(ws: Workspace, sae_cfg: SAEConfig, train_cfg: TrainConfig, *, name: str | None = None, resume: bool = False,
              encode: bool = True, evaluate: bool = True, progress: bool = True, compute=None) -> SAERun:
    """Train on the workspace store, then encode the store and evaluate (each step optional).

    ``compute``: a :class:`sae.distributed.DaskConfig` encodes on a Dask cluster (same codes)."""
    store = ws.open_store()
    folder = ws.path / SAES_DIR / (name or run_name(sae_cfg, train_cfg))
    t0 = time.perf_counter()
    Trainer(sae_cfg, train_cfg, run_dir=folder, progress=progress).fit(store, resume=resume)
    return finish_run(ws, store, SAERun(ws, folder), {"train": time.perf_counter() - t0}, encode=encode, evaluate=evaluate,
                      progress=progress, compute=compute)


def finish_run(ws: Workspace, store: Store, run: SAERun, seconds: dict, *, encode: bool, evaluate: bool, progress: bool,
               compute=None) -> SAERun:
    """After training: encode the store into the run's codes and evaluate it (each optional), timing both."""
    if encode:
        t1 = time.perf_counter()
        encode_store(store, run.model, run.path / CODES, sae_id=run.name, progress=progress, compute=compute)
        seconds["encode"] = time.perf_counter() - t1
    if evaluate:
        evaluate_run(ws, run, progress=progress, extra={"seconds": seconds})
    return run


def default_targets(store: Store, max_values: int = 20, limit: int = 6) -> list[str]:
    """Categorical metadata columns worth probing: str/bool with 2..max_values distinct values.

    The group key (volume, patient...) is skipped: held-out rows are whole groups, so it cannot transfer.
    """
    out = []
    group_key = store.provenance.get("group_key")
    for name, kind in store.columns.items():
        if kind in ("str", "bool") and name != group_key:
            n = pd.Series(store.column(name)).nunique()
            if 2 <= n <= max_values:
                out.append(name)
    return out[:limit]


def evaluate_run(ws: Workspace, run: SAERun, *, targets: Sequence[str] | None = None, probe_ns: Sequence[int] = (1, 3, 10, 50),
                 max_probe_rows: int = 20000, seed: int = 0, progress: bool = True, extra: dict | None = None) -> pd.DataFrame:
    """Compute every metric that applies, write ``metrics.json`` and return a tidy DataFrame."""
    store = ws.open_store()
    run.check_store(store)
    codes = run.codes(store)
    holdout = run.holdout()
    if holdout.stop <= holdout.start:
        holdout = slice(0, store.n_rows)
    metrics: dict[str, Any] = dict(extra or {})
    metrics["reconstruction"] = ev.reconstruction(run.model, store.iter_batches(8192, rows=holdout))
    metrics["reconstruction"]["rows"] = f"held-out {holdout.start}:{holdout.stop}"
    stats = codes.stats()
    metrics["sparsity"] = {"l0_all_rows": float(codes.l0().mean()), **ev.sparsity(stats["rate"].to_numpy())}
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(store.n_rows, size=min(store.n_rows, max_probe_rows), replace=False))
    is_train = (sample < holdout.start) | (sample >= holdout.stop)
    dense = store.read_embeddings(sample)
    sub_codes = codes.rows(sample)
    targets = list(targets) if targets is not None else default_targets(store)
    probes = []
    for col in targets:
        labels = store.column(col, rows=sample)
        try:
            df = ev.probe_recovery(dense, sub_codes, labels, is_train, ns=probe_ns, seed=seed)
        except SaeError:
            continue
        probes.extend({"target": col, **r} for r in df.to_dict("records"))
    metrics["probes"] = probes
    queries = np.flatnonzero(~is_train)[:200] if (~is_train).any() else np.arange(min(200, len(sample)))
    metrics["fingerprint_fidelity@10"] = ev.fingerprint_fidelity(dense, sub_codes, queries, k=10, top_features=8)
    metrics["monosemanticity"] = _monosemanticity(store, codes, targets, seed)
    truth = ws.path / "truth.npz"
    if truth.exists():
        directions = np.load(truth)["directions"]
        if directions.shape[1] == run.model.cfg.d_in:
            metrics["ground_truth_recovery"] = ev.ground_truth_recovery(directions, run.model.W_dec.detach().numpy())[0]
    atomic_write_text(run.path / METRICS, json.dumps(metrics, indent=2, default=float))
    return metrics_frame(metrics)


def _monosemanticity(store: Store, codes: Codes, columns: Sequence[str], seed: int, top: int = 50) -> dict[str, Any]:
    if not columns:
        return {}
    meta = store.meta(list(columns))
    alive = np.flatnonzero(codes.stats()["count"].to_numpy() >= 5)
    top_rows, active = {}, {}
    for f in alive:
        rows, _ = codes.feature_rows(f)
        top_rows[f], active[f] = rows[:top], rows
    df = ev.monosemanticity(top_rows, active, meta, columns, seed=seed)
    if df.empty:
        return {}
    return {"mean": float(df["score"].mean()), "median": float(df["score"].median()), "features": int(len(df)),
            "by_column": df.groupby("column")["score"].agg(["count", "mean"]).reset_index().to_dict("records")}


def metrics_frame(metrics: dict[str, Any]) -> pd.DataFrame:
    """Flatten a metrics document into (metric, value) rows (probes as probe/<target>/<probe>)."""
    rows = []
    for key, value in metrics.items():
        if key == "probes":
            rows += [{"metric": f"probe/{p['target']}/{p['probe']}", "value": p["balanced_accuracy"], "ratio_to_dense": p["ratio_to_dense"]} for p in value]
        elif isinstance(value, dict):
            rows += [{"metric": f"{key}/{k}", "value": v} for k, v in value.items() if isinstance(v, (int, float))]
        elif isinstance(value, (int, float)):
            rows.append({"metric": key, "value": value})
    return pd.DataFrame(rows)
