"""Data-parallel SAE training with torch DistributedDataParallel (gloo on CPU, NCCL on GPUs).

Launch with torchrun; the process group is read from the environment it sets (``WORLD_SIZE``,
``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``)::

    torchrun --nproc_per_node 2 -m sae.cli train WORKSPACE --n 4096 --k 32      # 2 ranks on this machine
    torchrun --nnodes 4 --nproc_per_node 8 --rdzv-endpoint HOST:29400 -m sae.cli train ...

How it matches single-process training:

- every rank draws its slice of the same global batches (:class:`sae.train.sharded.ShardedData`),
  so the global batch ``batch_size`` and the seed fix the data, whatever the world size;
- DDP averages the ranks' gradients; the FVU loss of each rank is divided by its share of the
  *global* batch's variance (one small all-reduce), so the average is the global batch's gradient;
- latents that fired on any rank count as fired (an all-reduce of a mask), and BatchTopK thresholds
  are averaged across ranks after every step;
- rank 0 writes checkpoints (the unwrapped model, the optimizer, the schedule and the position in
  global batches) and the run folder; any world size resumes from them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from sae.models import SAEConfig, SparseAutoencoder
from sae.models.base import StepOutput
from sae.store import Store
from sae.train import TrainConfig, Trainer
from sae.train.data import Split
from sae.train.sharded import ShardedData


def launched_by_torchrun() -> bool:
    """True when the environment describes a process group (torchrun, or any launcher setting WORLD_SIZE and RANK)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def backend_for(device: str) -> str:
    """NCCL for CUDA devices, gloo otherwise."""
    return "nccl" if str(device).startswith("cuda") else "gloo"


@contextlib.contextmanager
def process_group(device: str = "cpu") -> Iterator[None]:
    """Join the process group described by the environment (once), and leave it on exit."""
    created = False
    if launched_by_torchrun() and not dist.is_initialized():
        if str(device).startswith("cuda"):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend_for(device))
        created = True
    try:
        yield
    finally:
        if created:
            dist.destroy_process_group()


class _Step(nn.Module):
    """What DDP wraps: one training forward of the SAE, returning the loss (the full output is kept)."""

    def __init__(self, sae: SparseAutoencoder):
        super().__init__()
        self.sae = sae
        self.out: StepOutput | None = None

    def forward(self, x: torch.Tensor, dead: torch.Tensor) -> torch.Tensor:
        self.out = self.sae.forward_train(x, dead)
        return self.out.loss


class DistributedTrainer(Trainer):
    """:class:`sae.train.Trainer` over a process group: each rank trains on its slices of the global batches.

    Outside a process group it runs as world size 1 (the single-process reference with the same
    data order). ``batch_size`` is the global batch; it must be divisible by the world size.
    """

    def __init__(self, sae_cfg: SAEConfig, train_cfg: TrainConfig | None = None, *, run_dir=None, progress: bool = True):
        super().__init__(sae_cfg, train_cfg, run_dir=run_dir, progress=progress)
        active = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if active else 0
        self.world = dist.get_world_size() if active else 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _identity(self, fingerprint):
        # the data order differs from the single-process Trainer's: its checkpoints are not interchangeable
        return {**super()._identity(fingerprint), "data_order": "sharded-global-batches"}

    def _make_data(self, source, split: Split) -> ShardedData:
        return ShardedData(source, split.train, self.batch_size, self.cfg.seed, self.cfg.shuffle, self.rank, self.world)

    def _global_denominator(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's share of the global batch's energy around its mean (float64 sums, one all-reduce)."""
        with torch.no_grad():
            xd = x.detach().double()
            t = torch.cat([xd.sum(0), xd.pow(2).sum().view(1), torch.tensor([float(x.shape[0])], dtype=torch.float64, device=x.device)])
            dist.all_reduce(t)
            n = t[-1]
            energy = t[-2] - t[:-2].pow(2).sum() / n
            return (energy / self.world).clamp_min(1e-12).to(x.dtype)

    def _step_fn(self, model: SparseAutoencoder):
        if self.world == 1:
            return model.forward_train
        model.fvu_denominator = self._global_denominator
        wrapper = _Step(model)
        device_ids = [model.W_enc.device.index] if model.W_enc.device.type == "cuda" else None
        import inspect

        ddp_cls = nn.parallel.DistributedDataParallel
        # buffers (scale, thresholds) are synced at construction, then kept in step by _sync, not by every forward
        no_buffer_sync: dict[str, Any] = (
            {"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(ddp_cls).parameters else {"broadcast_buffers": False}
        )
        ddp = ddp_cls(wrapper, device_ids=device_ids, **no_buffer_sync)

        def step(x: torch.Tensor, dead: torch.Tensor):
            loss = ddp(x, dead)
            out = wrapper.out
            assert out is not None, "the forward DDP just ran sets it"
            return dataclasses.replace(out, loss=loss)

        return step

    def _sync(self, model: SparseAutoencoder, out, n_local: int):
        if self.world == 1:
            return out.fired, n_local
        mask = torch.zeros(model.cfg.n_latents, dtype=torch.int32, device=out.fired.device)
        mask[out.fired] = 1
        dist.all_reduce(mask, op=dist.ReduceOp.MAX)
        with torch.no_grad():
            for name in model.batch_statistic_buffers:  # batch statistics (thresholds, L0 controller): the ranks' mean
                buf = getattr(model, name)
                dist.all_reduce(buf)
                buf /= self.world
        return mask.nonzero().squeeze(1), n_local * self.world

    def _log_fvu(self, out) -> float:
        if self.world == 1:
            return float(out.fvu)
        t = out.fvu.detach().clone().float().view(1)
        dist.all_reduce(t)  # each rank's FVU is its residual over 1/world of the global energy
        return float(t) / self.world

    def fit(self, source: Store | np.ndarray, *, resume: bool = False, stop_after: int | None = None) -> SparseAutoencoder:
        if self.world > 1 and self.cfg.threads is None and self.cfg.device == "cpu":
            local = int(os.environ.get("LOCAL_WORLD_SIZE", self.world))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
        model = super().fit(source, resume=resume, stop_after=stop_after)
        model.fvu_denominator = None
        if self.world > 1:
            dist.barrier()  # rank 0 has written its checkpoint / run folder
        return model
