"""Where distributed work runs: a Dask cluster (a LocalCluster by default, any scheduler by address).

The embarrassingly parallel stages (encoding, feature statistics, the inverted index, enrichment
counts, UMAP transforms) are split into tasks over Zarr row or entry ranges and run on
``dask.distributed`` workers. A ``DaskConfig`` says where and how much memory each task may use:

    with dask_client(DaskConfig(n_workers=2, cluster_memory_gb=4)) as client:
        encode_store(store, model, dest, compute=DaskConfig(...))

Two memory settings, each with one meaning:

- ``memory_budget_gb`` (:data:`MEMORY_BUDGET_GB` by default) is per process and per stage: the most
  a stage's working set (training rows held in memory, inverted-index blocks being sorted, ...) may
  take in the process that runs it, beyond the interpreter, torch and the model. ``TrainConfig``,
  ``encode_store`` and the CLI's ``--memory-budget-gb`` all mean this, and ``sae train`` passes its
  budget on to the encode step it runs afterwards.
- ``DaskConfig.cluster_memory_gb`` (``--cluster-memory-gb``) is the total for the tasks of a whole
  Dask cluster: every stage sizes its tasks so
one task fits a worker's equal share. A LocalCluster sets each worker's Dask ``memory_limit`` to that
share plus ``WORKER_BASELINE_GB`` for the interpreter, torch and the scattered model (below that a
worker would pause at Dask's 80% threshold and the stage would wait forever).
"""

from __future__ import annotations

import contextlib
import os
import resource
from collections.abc import Iterator
from dataclasses import dataclass

from sae.errors import SaeError

MEMORY_BUDGET_GB = 2.0
"""Default per-process, per-stage memory budget (GB) of every stage."""

def rows_within(memory_budget_gb: float, row_bytes: int, lo: int, hi: int) -> int:
    """How many rows of ``row_bytes`` bytes fit ``memory_budget_gb``, kept within ``[lo, hi]``: every
    stage sizes its batches, samples and reads with it."""
    return int(max(lo, min(hi, memory_budget_gb * 2**30 // max(1, row_bytes))))


def batch_rows(memory_budget_gb: float, width: int, cap: int, copies: int = 4) -> int:
    """Rows per batch so ``copies`` float32 arrays of ``width`` columns fit the budget (at least 64, at most ``cap``)."""
    return rows_within(memory_budget_gb, 4 * width * copies, 64, cap)


WORKER_BASELINE_GB = 1.0
"""Memory of an idle worker process with torch imported and the SAE scattered (added to its memory limit)."""


@dataclass(frozen=True)
class DaskConfig:
    """How to reach (or start) a Dask cluster and how much memory its tasks may use."""

    address: str | None = None
    """Scheduler address (``tcp://host:8786``); None starts a LocalCluster on this machine."""
    n_workers: int = 2
    """LocalCluster worker processes (ignored with ``address``: the cluster decides)."""
    threads_per_worker: int = 1
    """Threads per worker (and torch intra-op threads inside tasks)."""
    cluster_memory_gb: float = 4.0
    """Memory for the whole cluster; each worker gets ``cluster_memory_gb / n_workers`` and tasks are sized to fit."""
    tasks_per_worker: int = 4
    """Target tasks per worker (more: better balance; fewer: less overhead)."""

    def __post_init__(self) -> None:
        if self.n_workers <= 0 or self.threads_per_worker <= 0:
            raise SaeError(f"n_workers and threads_per_worker must be positive, got {self.n_workers}, {self.threads_per_worker}")
        if self.cluster_memory_gb <= 0:
            raise SaeError(f"cluster_memory_gb must be positive, got {self.cluster_memory_gb}")

    @property
    def worker_budget_bytes(self) -> int:
        """Memory one task may use (a worker's share of the budget)."""
        return int(self.cluster_memory_gb * 2**30 / self.n_workers)


def _start_local(cfg: DaskConfig):
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=cfg.n_workers, threads_per_worker=cfg.threads_per_worker, processes=True,
        memory_limit=cfg.worker_budget_bytes + int(WORKER_BASELINE_GB * 2**30), dashboard_address=":0", scheduler_kwargs={"dashboard": False}, silence_logs=40,
    )


@contextlib.contextmanager
def dask_client(cfg: DaskConfig | None = None, client=None) -> Iterator:
    """A ``distributed.Client`` for ``cfg`` (closed on exit), or ``client`` itself when given (left open)."""
    if client is not None:
        yield client
        return
    from distributed import Client

    cfg = cfg or DaskConfig()
    if cfg.address:
        try:
            c = Client(cfg.address, timeout="30s")
        except OSError as exc:
            raise SaeError(f"cannot reach the Dask scheduler at {cfg.address}: {exc}") from exc
        c.run(_warm_up)
        try:
            yield c
        finally:
            c.close()
        return
    cluster = _start_local(cfg)
    c = Client(cluster)
    c.run(_warm_up)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


WARM_MODULES = ("sae.codes.encode_dask", "sae.audit.dask")
"""Modules the tasks of the Dask stages run (torch, zarr, the models), imported by name on each worker."""


def _warm_up() -> None:
    """Import what tasks use once per worker, while the cluster starts (not inside the first task of a stage)."""
    import importlib

    for name in WARM_MODULES:
        importlib.import_module(name)


def n_workers(client) -> int:
    """Workers currently connected (at least 1)."""
    return max(1, len(client.nthreads()))


def peak_rss_gb() -> float:
    """Peak resident memory of this process (GiB), from getrusage."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def children_peak_rss_gb() -> float:
    """Largest peak resident memory among finished child processes (GiB)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20


def workers_peak_rss_gb(client) -> float:
    """Sum over the cluster's workers of each worker process's peak resident memory (GiB)."""
    peaks = client.run(peak_rss_gb)
    return float(sum(peaks.values()))


def task_threads(threads: int) -> None:
    """Inside a task: limit torch (and BLAS) to the worker's threads so workers do not oversubscribe cores."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
