"""The run pipeline: train -> encode -> evaluate, each writing into ``saes/<run>/`` of a workspace."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sae import evaluate as ev
from sae._io import atomic_write_text, replace_dir, safe_name
from sae._lock import exclusive
from sae.codes import Codes, encode_store
from sae.compute import MEMORY_BUDGET_GB, batch_rows
from sae.errors import SaeError
from sae.models import SAEConfig
from sae.run import CODES, METRICS, SAES_DIR, Run, Workspace
from sae.store import Store
from sae.store.stream import read_bytes_within
from sae.train import TrainConfig, Trainer
from sae.train.trainer import CHECKPOINT

_NOT_IN_NAME = ("device", "threads", "log_every", "checkpoint_every", "memory_budget_gb", "bf16")
"""Training settings that do not change the trained model (left out of the default run name)."""


def run_name(sae_cfg: SAEConfig, train_cfg: TrainConfig) -> str:
    """``ARCH-nN-kK-sSEED-<hash>``: the hash covers every other setting that changes the model (epochs,
    batch size, learning rate, ...), so runs that differ never share a folder by default."""
    train = {k: v for k, v in train_cfg.to_dict().items() if k not in _NOT_IN_NAME}
    digest = hashlib.sha256(json.dumps([sae_cfg.to_dict(), train], sort_keys=True, default=str).encode()).hexdigest()[:6]
    return f"{sae_cfg.arch}-n{sae_cfg.n_latents}-k{sae_cfg.k}-s{train_cfg.seed}-{digest}"


def run_folder(ws: Workspace, name: str) -> Path:
    return ws.path / SAES_DIR / safe_name(name, "run name")


def building_folder(final: Path) -> Path:
    """Where a new or replaced run is built until it is published (kept across a crash for ``resume``)."""
    return final.with_name(f".{final.name}.building")


def train_run(ws: Workspace, sae_cfg: SAEConfig, train_cfg: TrainConfig, *, name: str | None = None, resume: bool = False,
              overwrite: bool = False, encode: bool = True, evaluate: bool = True, progress: bool = True, compute=None) -> Run:
    """Train on the workspace store, then encode the store and evaluate (each step optional).

    The run folder is locked while this runs. A new run (or, with ``overwrite``, a replacement of an
    existing one) is built in a hidden sibling folder and renamed into place only when training,
    encoding and evaluation are done, so the old run's codes, labels, edits and audits are never
    mixed with a new model, and an interrupted run leaves the old one intact. An existing run is
    refused unless ``resume`` (continue its checkpoint) or ``overwrite``. ``compute``: a
    :class:`sae.compute.DaskConfig` encodes on a Dask cluster (same codes)."""
    store = ws.open_store()
    final = run_folder(ws, name or run_name(sae_cfg, train_cfg))
    with exclusive(final, f"sae train {final.name}"):
        folder = _train_folder(final, resume, overwrite)
        t0 = time.perf_counter()
        Trainer(sae_cfg, train_cfg, run_dir=folder, progress=progress).fit(store, resume=resume)
        run = finish_run(Run(ws, folder, store=store, name=final.name), {"train": time.perf_counter() - t0}, encode=encode, evaluate=evaluate,
                         progress=progress, compute=compute, memory_budget_gb=train_cfg.memory_budget_gb)
        return _publish(run, final, store)


def _train_folder(final: Path, resume: bool, overwrite: bool) -> Path:
    """The folder to train in: the run itself when resuming it in place, else its building folder."""
    building = building_folder(final)
    exists = (final / "config.json").exists() or (final / CHECKPOINT).exists()
    if resume:
        if (building / CHECKPOINT).exists():
            return building  # an interrupted new / replacing run
        if not exists:
            raise SaeError(f"nothing to resume: run {final.name} has no checkpoint; train it without --resume")
        return final
    if exists and not overwrite:
        raise SaeError(f"run {final.name} exists; give --resume to continue its checkpoint, --overwrite to replace it "
                       "(its codes, labels, hand edits and audits are removed), or --name for a new run")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    return building


def _publish(run: Run, final: Path, store: Store) -> Run:
    """Rename a built run into place (replacing the old one and everything derived from it)."""
    if run.path == final:
        return run
    replace_dir(run.path, final)
    return Run(run.ws, final, store=store)


def finish_run(run: Run, seconds: dict, *, encode: bool, evaluate: bool, progress: bool, compute=None,
               memory_budget_gb: float = MEMORY_BUDGET_GB) -> Run:
    """After training: encode the store into the run's codes (within ``memory_budget_gb``) and evaluate
    it (each optional), timing both."""
    if encode:
        t1 = time.perf_counter()
        encode_run(run, progress=progress, compute=compute, memory_budget_gb=memory_budget_gb)
        seconds["encode"] = time.perf_counter() - t1
    if evaluate:
        evaluate_run(run, progress=progress, extra={"seconds": seconds}, memory_budget_gb=memory_budget_gb)
    return run


def encode_run(run: Run, *, batch_size: int = 8192, memory_budget_gb: float = MEMORY_BUDGET_GB, progress: bool = True,
               compute=None) -> Codes:
    """Encode the run's store into its ``codes.zarr`` (replacing any old codes; the run is locked
    meanwhile) and return them; the codes record the model's digest."""
    with exclusive(run.path, f"sae encode {run.name}"):
        encode_store(run.verify().store, run.model, run.path / CODES, sae_id=run.name, batch_size=batch_size, progress=progress,
                     compute=compute, memory_budget_gb=memory_budget_gb, model_digest=run.model_digest)
    return run.refresh("codes", "labels").codes


def train_run_ddp(ws, sae_cfg: SAEConfig, train_cfg: TrainConfig, *, name: str | None = None, resume: bool = False,
                  encode: bool = True, evaluate: bool = True, progress: bool = True, compute=None):
    """``sae.pipeline.train_run`` under torchrun: every rank trains, rank 0 encodes (``compute``: on Dask) and evaluates.

    Returns the Run on rank 0 and None on the other ranks.
    """
    import torch.distributed as dist

    from sae.train.ddp import DistributedTrainer, process_group

    store = ws.open_store()
    folder = run_folder(ws, name or run_name(sae_cfg, train_cfg))
    if (folder / "config.json").exists() and not resume:
        raise SaeError(f"run {folder.name} exists; give --resume to continue it or --name for a new run (--overwrite is single-process only)")
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
                 max_probe_rows: int = 20000, seed: int = 0, progress: bool = True, extra: dict | None = None,
                 memory_budget_gb: float = MEMORY_BUDGET_GB) -> pd.DataFrame:
    """Compute every metric that applies, write ``metrics.json`` (with the model's digest) and return a
    tidy DataFrame. ``memory_budget_gb`` bounds the batches and the probe sample held in memory."""
    store, codes = run.verify().store, run.codes
    holdout = run.holdout()
    if holdout.stop <= holdout.start:
        holdout = slice(0, store.n_rows)
    metrics: dict[str, Any] = {**(extra or {}), "model_digest": run.model_digest}
    batch = batch_rows(memory_budget_gb, store.dim + codes.n_latents, 8192)
    max_probe_rows = batch_rows(memory_budget_gb, store.dim, max_probe_rows, copies=8)  # the dense probe copies its sample
    metrics["reconstruction"] = ev.reconstruction(run.model, store.iter_batches(batch, rows=holdout, read_bytes=read_bytes_within(memory_budget_gb)))
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
