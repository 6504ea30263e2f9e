"""The training loop: Adam with warm-up and decay, clipping, dead-latent tracking, exact resume."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sae._io import atomic_path, atomic_write_text
from sae._progress import tqdm
from sae.compute import rows_within
from sae.errors import DimensionMismatchError, SaeError
from sae.models import SAEConfig, SparseAutoencoder
from sae.models.io import save_sae
from sae.store import Store
from sae.train.config import TrainConfig
from sae.train.data import Split, TrainingData, check_finite
from sae.train.plan import PLATEAU_TOL, PLATEAU_WINDOW, plan_schedule

CHECKPOINT = "checkpoint.pt"


def geometric_median(x: np.ndarray, iters: int = 50, tol: float = 1e-6) -> np.ndarray:
    """Weiszfeld's algorithm: the point minimising the sum of distances to the rows of ``x``."""
    y = x.mean(axis=0)
    for _ in range(iters):
        dist = np.linalg.norm(x - y, axis=1).clip(min=1e-8)
        w = 1.0 / dist
        y_new = (w[:, None] * x).sum(0) / w.sum()
        if np.linalg.norm(y_new - y) < tol * max(1.0, float(np.linalg.norm(y))):
            return y_new
        y = y_new
    return y


def init_from_data(model: SparseAutoencoder, sample: np.ndarray) -> None:
    """Input scale (mean norm -> sqrt(d)) and decoder bias (geometric median / mean of the scaled sample)."""
    cfg = model.cfg
    mean_norm = float(np.linalg.norm(sample, axis=1).mean())
    scale = math.sqrt(cfg.d_in) / mean_norm if cfg.normalize_input and mean_norm > 0 else 1.0
    scaled = sample.astype(np.float64) * scale
    if cfg.bdec_init == "median":
        b = geometric_median(scaled)
    elif cfg.bdec_init == "mean":
        b = scaled.mean(0)
    else:
        b = np.zeros(cfg.d_in)
    with torch.no_grad():
        model.scale.fill_(scale)
        model.b_dec.copy_(torch.as_tensor(b, dtype=torch.float32))


@dataclass
class TrainState:
    """Everything that must survive a checkpoint for an exact resume."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    samples: int = 0
    last_fired: torch.Tensor | None = None
    log: list[dict[str, Any]] = field(default_factory=list)
    end: int = 0
    """The step training stops at: the step cap, or earlier once the plateau rule fired."""
    decay_start: int = 0
    """The step the linear learning-rate decay to zero begins."""
    validation: list[tuple[int, float]] = field(default_factory=list)
    """(step, validation FVU) pairs of the plateau rule."""
    stopped: str = ""
    """Why training ended: ``plateau at step ...`` or ``step cap``."""


class Trainer:
    """Train one SAE on a store (or an in-memory array) and write the run folder."""

    def __init__(self, sae_cfg: SAEConfig, train_cfg: TrainConfig | None = None, *, run_dir: str | os.PathLike | None = None, progress: bool = True,
                 notes: Sequence[str] = ()):
        """``notes``: sentences about choices made before training (an automatic n or k), saved in
        ``config.json`` before the schedule's own (:mod:`sae.train.plan`)."""
        self.sae_cfg = sae_cfg
        self.cfg = train_cfg or TrainConfig()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.progress = progress
        self.notes = tuple(notes)

    # ------------------------------------------------------------------ setup
    def _prepare(self, source: Store | np.ndarray) -> tuple[TrainingData, Split, str | None]:
        """Check the source, resolve the schedule (:mod:`sae.train.plan`) and carve the validation rows."""
        source, split, fingerprint = self._checked_source(source)
        n_train = split.train.stop - split.train.start
        self.plan_ = plan_schedule(self.cfg, n_train, self.sae_cfg.n_latents)
        self.cfg = self.plan_.config
        n_val = int(self.cfg.validation_rows or 0)
        fit = slice(split.train.start, split.train.stop - n_val)
        self.validation = slice(fit.stop, split.train.stop)
        split = Split(fit, split.holdout)
        self._x_val = self._read_rows(source, self.validation) if n_val else None
        return self._make_data(source, split), split, fingerprint

    @staticmethod
    def _read_rows(source: Store | np.ndarray, rows: slice) -> torch.Tensor:
        x = source.read_embeddings(rows) if isinstance(source, Store) else source[rows]
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    def _checked_source(self, source: Store | np.ndarray) -> tuple[Store | np.ndarray, Split, str | None]:
        if isinstance(source, Store):
            if source.dim != self.sae_cfg.d_in:
                raise DimensionMismatchError(f"the store has {source.dim}-d embeddings but the SAE expects d_in={self.sae_cfg.d_in}")
            split = Split.of(source.n_rows, self.cfg.holdout_frac)
            check_finite(source, slice(0, source.n_rows), self.cfg.memory_budget_gb)
            fingerprint = source.fingerprint
        else:
            source = np.asarray(source, dtype=np.float32)
            if source.ndim != 2 or source.shape[1] != self.sae_cfg.d_in:
                raise DimensionMismatchError(f"expected an (N, {self.sae_cfg.d_in}) array, got shape {source.shape}")
            if not np.isfinite(source).all():
                raise SaeError("training data contains NaN or Inf")
            split = Split.of(len(source), self.cfg.holdout_frac)
            fingerprint = None
        return source, split, fingerprint

    def _make_data(self, source: Store | np.ndarray, split: Split) -> TrainingData:
        """The training batches (``sae.train.ddp.DistributedTrainer`` gives each rank its share)."""
        return TrainingData(source, split.train, self.batch_size, self.cfg.seed, self.cfg.memory_budget_gb, self.cfg.shuffle)

    @property
    def batch_size(self) -> int:
        """The resolved batch size (after :meth:`_prepare`)."""
        assert self.cfg.batch_size is not None, "the schedule is resolved in _prepare"
        return self.cfg.batch_size

    # ------------------------------------------------------------------ hooks for data-parallel training
    @property
    def is_main(self) -> bool:
        """Whether this process writes checkpoints, the run folder and the progress bar (rank 0)."""
        return True

    def _step_fn(self, model: SparseAutoencoder):
        """``(x, dead) -> StepOutput`` for one training batch (DDP wraps the model here)."""
        return model.forward_train

    def _sync(self, model: SparseAutoencoder, out, n_local: int) -> tuple[torch.Tensor, int]:
        """After a step: (latents that fired anywhere in the global batch, rows in the global batch)."""
        return out.fired, n_local

    def _log_fvu(self, out) -> float:
        return float(out.fvu)

    def _init_rows(self) -> int:
        """Rows sampled to initialise the scale and decoder bias (and calibrate thresholds): 16,384, fewer
        when the memory budget cannot hold the float64 copies the geometric median makes (~8 of them)."""
        return rows_within(self.cfg.memory_budget_gb, 8 * 8 * self.sae_cfg.d_in, 1024, 16384)

    def _warmup_steps(self) -> int:
        """Linear warm-up length: ``warmup_steps``, else 5% of the step cap (at most 1,000)."""
        return self.cfg.warmup_steps if self.cfg.warmup_steps is not None else min(1000, max(1, self.plan_.max_steps // 20))

    def _schedule(self, state: TrainState):
        """Warm-up, then constant, then a linear decay from ``state.decay_start`` to ``state.end`` (both
        move when the plateau rule fires, so the factor reads them from the state)."""
        warm = self._warmup_steps()

        def factor(step: int) -> float:
            f = min(1.0, (step + 1) / max(1, warm))
            if step >= state.decay_start and state.end > state.decay_start:
                f *= max(0.0, (state.end - step) / (state.end - state.decay_start))
            return f

        return factor

    def _identity(self, fingerprint: str | None) -> dict[str, Any]:
        return {"sae": self.sae_cfg.to_dict(), "train": self.cfg.to_dict(), "store_fingerprint": fingerprint}

    # ------------------------------------------------------------------ fit
    def fit(self, source: Store | np.ndarray, *, resume: bool = False, stop_after: int | None = None) -> SparseAutoencoder:
        """Train; with ``resume`` continue from the run folder's checkpoint (same config required).

        ``stop_after`` ends the loop after that many steps (with a checkpoint), as an interruption would.
        """
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        data, split, fingerprint = self._prepare(source)
        self.split = split
        device = torch.device(self.cfg.device)
        model = SparseAutoencoder(self.sae_cfg, seed=self.cfg.seed, device=device)
        opt = torch.optim.Adam(model.parameters(), lr=self.cfg.resolved_lr(self.sae_cfg.n_latents), betas=(0.9, 0.999), **_fused(device))
        total = self.plan_.max_steps
        state = TrainState(last_fired=torch.zeros(self.sae_cfg.n_latents, dtype=torch.int64, device=device),
                           end=total, decay_start=int(total * (1 - self.cfg.decay_frac)))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self._schedule(state))
        identity = self._identity(fingerprint)
        if resume:
            self._load_checkpoint(model, opt, sched, state, identity)
        else:
            sample = data.sample(self._init_rows(), self.cfg.seed)
            init_from_data(model, sample)
            model.init_from_sample(torch.from_numpy(sample).to(device))
        step_fn = self._step_fn(model)
        dead_window = self.cfg.dead_window or min(data.n_rows, 10_000_000)
        self._loop(model, opt, sched, state, data, dead_window, stop_after, identity, step_fn)
        if state.step >= state.end:
            model.calibrate_thresholds(torch.from_numpy(data.sample(self._init_rows(), self.cfg.seed + 1)).to(device))
        self.model_, self.state_, self.in_memory_ = model, state, data.in_memory
        if self.run_dir is not None and state.step >= state.end and self.is_main:
            self._save_run(model, state, identity, data)
        return model

    def _loop(self, model, opt, sched, state, data, dead_window, stop_after, identity, step_fn=None) -> None:
        step_fn = step_fn or model.forward_train
        bf16 = self.cfg.use_bf16()
        start_step = state.step
        bar = tqdm(total=state.end, initial=state.step, desc=f"train {self.sae_cfg.arch} n={self.sae_cfg.n_latents} k={self.sae_cfg.k}",
                   disable=not (self.progress and self.is_main), unit="step")
        t0, window_start = time.perf_counter(), state.samples
        self.step_times_: list[float] = []
        t_step = time.perf_counter()
        while state.step < state.end:
            for x in data.epoch(state.epoch, skip=state.batch_in_epoch):
                x = x.to(model.W_enc.device, non_blocking=True) * model.scale
                dead = (state.samples - state.last_fired) > dead_window
                with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=bf16):
                    out = step_fn(x, dead)
                out.loss.backward()
                model.project_decoder_grad()
                if self.cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), self.cfg.grad_clip)
                opt.step()
                opt.zero_grad(set_to_none=True)
                sched.step()
                model.normalize_decoder()
                fired, n_rows = self._sync(model, out, x.shape[0])
                state.samples += n_rows
                state.last_fired[fired] = state.samples
                state.step += 1
                state.batch_in_epoch += 1
                now = time.perf_counter()
                self.step_times_.append(now - t_step)
                t_step = now
                if state.step % self.cfg.log_every == 0 or state.step == state.end:
                    rate = (state.samples - window_start) / max(1e-9, time.perf_counter() - t0)
                    entry = {"step": state.step, "samples": state.samples, "fvu": self._log_fvu(out), "l0": out.l0,
                             "dead_frac": float(dead.float().mean()), "aux_loss": float(out.aux_loss), "lr": sched.get_last_lr()[0], "samples_per_s": rate}
                    state.log.append(entry)
                    bar.set_postfix(fvu=f"{entry['fvu']:.3f}", l0=f"{entry['l0']:.1f}", dead=f"{entry['dead_frac']:.1%}")
                self._watch_plateau(model, state, bar)
                bar.update(1)
                done = state.step >= state.end or (stop_after is not None and state.step - start_step >= stop_after)
                if self.run_dir is not None and self.is_main and (done or (self.cfg.checkpoint_every and state.step % self.cfg.checkpoint_every == 0)):
                    self._save_checkpoint(model, opt, sched, state, identity)
                if done:
                    bar.close()
                    return
            state.epoch += 1
            state.batch_in_epoch = 0
        bar.close()

    # ------------------------------------------------------------------ the plateau rule
    def _eval_every(self) -> int:
        return self.cfg.eval_every or max(20, self.plan_.max_steps // 100)

    @torch.no_grad()
    def validation_fvu(self, model: SparseAutoencoder) -> float:
        """FVU of the model's inference codes on the validation rows (variance around their mean)."""
        assert self._x_val is not None, "validation rows exist when the plateau stop is on"
        x = self._x_val.to(model.W_enc.device)
        x_hat = model.decode_codes(*model.encode(x))
        return float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum().clamp_min(1e-12))

    def _watch_plateau(self, model: SparseAutoencoder, state: TrainState, bar) -> None:
        """Every ``eval_every`` steps before the decay: the validation FVU; on a plateau, start the decay now.

        Plateau: the best FVU so far improved by less than ``PLATEAU_TOL`` (relative) on the best one
        ``PLATEAU_WINDOW`` of the steps ago. The decay then lasts ``decay_frac`` of the whole run."""
        if self._x_val is None or not self.cfg.stop_on_plateau or state.step >= state.decay_start or state.step % self._eval_every():
            return
        state.validation.append((state.step, self.validation_fvu(model)))
        if state.step < max(2 * self._warmup_steps(), 5 * self._eval_every()):
            return
        horizon = state.step * (1 - PLATEAU_WINDOW)
        before = [f for s, f in state.validation if s <= horizon]
        if not before:
            return
        best_before, best_now = min(before), min(f for _, f in state.validation)
        if best_before - best_now < PLATEAU_TOL * best_before:
            decay = max(1, math.ceil(state.step * self.cfg.decay_frac / max(1e-9, 1 - self.cfg.decay_frac)))
            state.decay_start, state.end = state.step, state.step + decay
            state.stopped = f"plateau at step {state.step:,} (validation FVU {best_now:.4f}, {best_before:.4f} at step {int(horizon):,})"
            bar.total = state.end
            bar.refresh()

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, model, opt, sched, state: TrainState, identity) -> None:
        assert self.run_dir is not None, "callers save only with a run_dir"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        payload = {"identity": identity, "model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "state": state.__dict__}
        with atomic_path(self.run_dir / CHECKPOINT) as tmp:
            torch.save(payload, tmp)

    def _load_checkpoint(self, model, opt, sched, state: TrainState, identity) -> None:
        path = (self.run_dir or Path(".")) / CHECKPOINT
        if self.run_dir is None or not path.exists():
            raise SaeError(f"nothing to resume: no {CHECKPOINT} in {self.run_dir}")
        payload = torch.load(path, map_location=model.W_enc.device, weights_only=False)
        if payload["identity"] != identity:
            diff = _diff(payload["identity"], identity)
            raise SaeError(f"cannot resume {self.run_dir}: the checkpoint was made with a different configuration ({diff})")
        model.load_state_dict(payload["model"])
        opt.load_state_dict(payload["opt"])
        sched.load_state_dict(payload["sched"])
        state.__dict__.update(payload["state"])

    def _save_run(self, model, state: TrainState, identity, data: TrainingData) -> None:
        assert self.run_dir is not None, "callers save only with a run_dir"
        split = {"train_rows": [self.split.train.start, self.split.train.stop], "holdout_rows": [self.split.holdout.start, self.split.holdout.stop],
                 "validation_rows": [self.validation.start, self.validation.stop]}
        extra = {"train": identity["train"], "store_fingerprint": identity["store_fingerprint"], "split": split,
                 "steps": state.step, "stopped": state.stopped or "step cap", "plan": [*self.notes, *self.plan_.notes], "in_memory": data.in_memory}
        save_sae(model, self.run_dir, extra)
        last = state.log[-1] if state.log else {}
        summary = {"train": {"steps": state.step, "samples": state.samples, "final_fvu": last.get("fvu"), "final_l0": last.get("l0"),
                             "dead_frac": last.get("dead_frac"), "samples_per_s": last.get("samples_per_s"), "stopped": state.stopped or "step cap",
                             "validation_fvu": state.validation[-1][1] if state.validation else None},
                   "log": state.log, "validation": [{"step": s, "fvu": f} for s, f in state.validation]}
        atomic_write_text(self.run_dir / "train_log.json", json.dumps(summary, indent=1))


def _fused(device: torch.device) -> dict[str, bool]:
    return {"fused": True} if device.type in ("cpu", "cuda") else {}


def _diff(a: dict, b: dict, prefix: str = "") -> str:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            sub = _diff(va, vb, f"{prefix}{key}.")
            if sub:
                out.append(sub)
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} -> {vb!r}")
    return "; ".join(out[:5])
