"""The run pipeline: train -> encode -> evaluate, each writing into ``saes/<run>/`` of a workspace."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from sae import evaluate as ev
from sae._io import atomic_write_text
from sae.codes import Codes, encode_store
from sae.compute import MEMORY_BUDGET_GB
from sae.errors import SaeError
from sae.models import SAEConfig
from sae.run import CODES, METRICS, SAES_DIR, Run, Workspace
from sae.store import Store
from sae.train import TrainConfig, Trainer


def run_name(sae_cfg: SAEConfig, train_cfg: TrainConfig) -> str:
    return f"{sae_cfg.arch}-n{sae_cfg.n_latents}-k{sae_cfg.k}-s{train_cfg.seed}"


def train_run(ws: Workspace, sae_cfg: SAEConfig, train_cfg: TrainConfig, *, name: str | None = None, resume: bool = False,
              encode: bool = True, evaluate: bool = True, progress: bool = True, compute=None) -> Run:
    """Train on the workspace store, then encode the store and evaluate (each step optional).

    ``compute``: a :class:`sae.compute.DaskConfig` encodes on a Dask cluster (same codes)."""
    store = ws.open_store()
    folder = ws.path / SAES_DIR / (name or run_name(sae_cfg, train_cfg))
    t0 = time.perf_counter()
    Trainer(sae_cfg, train_cfg, run_dir=folder, progress=progress).fit(store, resume=resume)
    return finish_run(Run(ws, folder, store=store), {"train": time.perf_counter() - t0}, encode=encode, evaluate=evaluate,
                      progress=progress, compute=compute, memory_budget_gb=train_cfg.memory_budget_gb)


def finish_run(run: Run, seconds: dict, *, encode: bool, evaluate: bool, progress: bool, compute=None,
               memory_budget_gb: float = MEMORY_BUDGET_GB) -> Run:
    """After training: encode the store into the run's codes (within ``memory_budget_gb``) and evaluate
    it (each optional), timing both."""
    if encode:
        t1 = time.perf_counter()
        encode_run(run, progress=progress, compute=compute, memory_budget_gb=memory_budget_gb)
        seconds["encode"] = time.perf_counter() - t1
    if evaluate:
        evaluate_run(run, progress=progress, extra={"seconds": seconds})
    return run


def encode_run(run: Run, *, batch_size: int = 8192, memory_budget_gb: float = MEMORY_BUDGET_GB, progress: bool = True,
               compute=None) -> Codes:
    """Encode the run's store into its ``codes.zarr`` (replacing any old codes) and return them."""
    encode_store(run.verify().store, run.model, run.path / CODES, sae_id=run.name, batch_size=batch_size, progress=progress,
                 compute=compute, memory_budget_gb=memory_budget_gb)
    return run.refresh("codes", "labels").codes


def train_run_ddp(ws, sae_cfg: SAEConfig, train_cfg: TrainConfig, *, name: str | None = None, resume: bool = False,
                  encode: bool = True, evaluate: bool = True, progress: bool = True, compute=None):
    """``sae.pipeline.train_run`` under torchrun: every rank trains, rank 0 encodes (``compute``: on Dask) and evaluates.

    Returns the Run on rank 0 and None on the other ranks.
    """
    import torch.distributed as dist

    from sae.train.ddp import DistributedTrainer, process_group

    store = ws.open_store()
    folder = ws.path / SAES_DIR / (name or run_name(sae_cfg, train_cfg))
    with process_group(train_cfg.device):
        t0 = time.perf_counter()
        DistributedTrainer(sae_cfg, train_cfg, run_dir=folder, progress=progress).fit(store, resume=resume)
        rank = dist.get_rank() if dist.is_initialized() else 0
        world = dist.get_world_size() if dist.is_initialized() else 1
    if rank != 0:
        return None
    seconds = {"train": time.perf_counter() - t0, "world_size": world}
    return finish_run(Run(ws, folder, store=store), seconds, memory_budget_gb=train_cfg.memory_budget_gb, encode=encode, evaluate=evaluate,
                      progress=progress, compute=compute)


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


def evaluate_run(run: Run, *, targets: Sequence[str] | None = None, probe_ns: Sequence[int] = (1, 3, 10, 50),
                 max_probe_rows: int = 20000, seed: int = 0, progress: bool = True, extra: dict | None = None) -> pd.DataFrame:
    """Compute every metric that applies, write ``metrics.json`` and return a tidy DataFrame."""
    store, codes = run.verify().store, run.codes
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
    probes: list[dict] = []
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
    truth = run.ws.path / "truth.npz"
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
    for f in alive.tolist():
        rows, _ = codes.read_feature(f)
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
