"""Training schedules chosen from the data: batch size, steps, dictionary size and the stopping rule.

A fixed "10 epochs at batch 4,096" gives a 4k-row store ten optimizer steps and a 1e7-row store
24,000: neither converges sensibly. The SAE literature trains on many passes of small stores, so the
schedule is set in optimizer steps: a batch size that grows with the row count (sqrt rule, 256..4,096),
a cap of :data:`TARGET_STEPS` steps (at least one pass over the rows), and a stop once the FVU on
validation rows (carved from the training rows, never the held-out evaluation rows) plateaus, followed
by a short learning-rate decay. Every choice is written as a sentence (printed once, saved in
``config.json``); anything the user sets explicitly wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from sae.train.config import TrainConfig
from sae.train.data import Split

TARGET_STEPS = 6000
"""The step cap of an automatic schedule (the plateau rule usually stops earlier)."""
MIN_BATCH, MAX_BATCH = 256, 4096
MAX_AUTO_LATENTS = 4096
"""The largest dictionary chosen automatically (larger ones are a choice: ``--n``)."""
PLATEAU_WINDOW = 0.25
"""The plateau rule compares the best validation FVU now with the best one this share of the steps ago."""
PLATEAU_TOL = 0.01
"""... and stops when it improved by less than this fraction."""


def _pow2(x: float) -> int:
    """The power of two nearest to ``x`` on a log scale."""
    return 2 ** max(0, round(math.log2(max(1.0, x))))


def default_batch_size(n_train: int) -> int:
    """``4 * sqrt(rows)`` rounded to a power of two, within 256..4,096 (never above the rows):
    3.5k rows -> 256, 1e5 -> 1,024, 1e6 and more -> 4,096."""
    return max(1, min(_pow2(4 * math.sqrt(max(1, n_train))), MAX_BATCH, max(MIN_BATCH, _pow2(n_train)), n_train))


def default_n_latents(n_rows: int, d_in: int, k: int = 32) -> int:
    """A dictionary that fits the data: about one latent per 8 rows (a power of two), at most 16 x d_in
    and :data:`MAX_AUTO_LATENTS`, at least 4 x k (3,927 rows -> 512; 1e5 rows of 384-d -> 4,096)."""
    return int(max(min(_pow2(n_rows / 8), _latents_cap(d_in)), 4 * k, 128))


def _latents_cap(d_in: int) -> int:
    """The largest automatic dictionary for ``d_in``-d inputs: 16 x d_in rounded down to a power of two, at most 4,096."""
    return min(MAX_AUTO_LATENTS, 2 ** int(math.log2(16 * d_in)))


def training_rows(n_rows: int, holdout_frac: float) -> int:
    """Rows left for training (validation included) once the held-out tail is set aside, as the trainer splits them."""
    return Split.of(n_rows, holdout_frac).train.stop


def validation_rows(n_train: int) -> int:
    """Rows carved from the end of the training rows to watch the FVU: 5%, within 256..4,096."""
    return int(min(4096, max(256, round(0.05 * n_train)), n_train // 4))


@dataclass(frozen=True)
class Plan:
    """A resolved schedule: the training config with every automatic field filled in, and why."""

    config: TrainConfig
    max_steps: int
    notes: tuple[str, ...]
    """One sentence per automatic choice or warning, in the order they were made."""


def plan_schedule(cfg: TrainConfig, n_train: int, n_latents: int) -> Plan:
    """Fill in ``cfg``'s automatic fields for ``n_train`` training rows (validation rows included).

    Explicit ``batch_size`` / ``epochs`` / ``max_steps`` / ``max_samples`` win; the plateau stop is on
    unless the user fixed the length of training (``epochs``, ``max_steps`` or ``max_samples``)."""
    notes: list[str] = []
    fixed_length = cfg.epochs is not None or cfg.max_steps is not None or cfg.max_samples is not None
    plateau = cfg.stop_on_plateau if cfg.stop_on_plateau is not None else not fixed_length
    n_val = (cfg.validation_rows if cfg.validation_rows is not None else validation_rows(n_train)) if plateau else 0
    n_val = min(n_val, max(0, n_train - 1))
    fit_rows = n_train - n_val
    batch = cfg.batch_size or default_batch_size(fit_rows)
    if cfg.batch_size is None:
        notes.append(f"{fit_rows:,} training rows: batch {batch:,}")
    per_epoch = max(1, math.ceil(fit_rows / batch))
    if cfg.max_samples is not None:
        steps = max(1, math.ceil(cfg.max_samples / batch))
    elif cfg.max_steps is not None:
        steps = cfg.max_steps
    elif cfg.epochs is not None:
        steps = max(1, round(cfg.epochs * per_epoch))
    else:
        steps = max(TARGET_STEPS, per_epoch)
        notes.append(f"up to {steps:,} steps ({steps * batch / fit_rows:,.1f} passes over the rows)")
    if plateau:
        notes.append(f"stop when the FVU on {n_val:,} validation rows plateaus (<{PLATEAU_TOL:.0%} better over the last "
                     f"{PLATEAU_WINDOW:.0%} of the steps), then decay the learning rate")
    if n_latents > fit_rows / 2:
        notes.append(f"warning: {n_latents:,} latents for {fit_rows:,} training rows; most latents will see few rows "
                     f"(about {_pow2(fit_rows / 8):,} fit this store)")
    resolved = replace(cfg, batch_size=batch, stop_on_plateau=plateau, validation_rows=n_val,
                       max_steps=steps if cfg.max_samples is None else cfg.max_steps)
    return Plan(resolved, steps, tuple(notes))


def latents_note(n_latents: int, n_rows: int, d_in: int) -> str:
    """The sentence that explains an automatic dictionary size."""
    return f"{n_rows:,} rows of {d_in}-d: n={n_latents:,} latents (about one per 8 rows, at most {_latents_cap(d_in):,})"
