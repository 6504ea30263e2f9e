"""The run pipeline: train -> encode -> evaluate, each writing into ``saes/<run>/`` of a workspace."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from sae._io import atomic_write_text, replace_dir, safe_name
from sae._lock import exclusive
from sae.assess import default_targets, evaluate_run, headline_table, metrics_frame
from sae.codes import Codes, encode_store
from sae.compute import MEMORY_BUDGET_GB
from sae.errors import SaeError
from sae.models import SAEConfig
from sae.run import CODES, METRICS, SAES_DIR, Run, Workspace
from sae.store import Store
from sae.train import TrainConfig, Trainer
from sae.train.trainer import CHECKPOINT

__all__ = ["default_targets", "encode_run", "evaluate_run", "finish_run", "headline_table", "metrics_frame", "run_name", "train_run",
           "train_run_ddp"]

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
              overwrite: bool = False, encode: bool = True, evaluate: bool = True, progress: bool = True, compute=None,
              notes: Sequence[str] = ()) -> Run:
    """Train on the workspace store, then encode the store and evaluate (each step optional).

    The run folder is locked while this runs. A new run (or, with ``overwrite``, a replacement of an
    existing one) is built in a hidden sibling folder and renamed into place only when training,
    encoding and evaluation are done, so the old run's codes, labels, edits and audits are never
    mixed with a new model, and an interrupted run leaves the old one intact. An existing run is
    refused unless ``resume`` (continue its checkpoint) or ``overwrite``. ``compute``: a
    :class:`sae.compute.DaskConfig` encodes on a Dask cluster (same codes). ``notes``: choices made
    before training (an automatic n or k), saved in ``config.json``. The evaluation after training
    is the bounded one (``quick``); ``sae evaluate`` runs the full one."""
    store = ws.open_store()
    final = run_folder(ws, name or run_name(sae_cfg, train_cfg))
    with exclusive(final, f"sae train {final.name}"):
        folder = _train_folder(final, resume, overwrite)
        t0 = time.perf_counter()
        Trainer(sae_cfg, train_cfg, run_dir=folder, progress=progress, notes=notes).fit(store, resume=resume)
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
        t2 = time.perf_counter()
        evaluate_run(run, quick=True, progress=progress, extra={"seconds": seconds}, memory_budget_gb=memory_budget_gb)
        _record_eval_seconds(run, seconds, time.perf_counter() - t2)
    return run


def _record_eval_seconds(run: Run, seconds: dict, evaluate_s: float) -> None:
    """Add the evaluation's own time (and its share of the training time) to ``metrics.json``."""
    path = run.path / METRICS
    doc = json.loads(path.read_text())
    doc["seconds"] = {**seconds, "evaluate": evaluate_s, "evaluate_share_of_train": evaluate_s / max(1e-9, seconds.get("train", 0.0))}
    atomic_write_text(path, json.dumps(doc, indent=2, default=float))


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
