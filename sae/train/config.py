"""Training configuration (a frozen dataclass saved next to the model it produced)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sae.compute import MEMORY_BUDGET_GB
from sae.errors import SaeError


@dataclass(frozen=True)
class TrainConfig:
    """How an SAE is trained; together with the SAEConfig and the store it fixes the result."""

    batch_size: int | None = None
    """Rows per optimizer step; default from the training rows (:func:`sae.train.plan.default_batch_size`)."""
    epochs: float | None = None
    """Passes over the training rows (fractions allowed); ``max_samples`` and ``max_steps`` win when set.
    Unset, the schedule is automatic (:mod:`sae.train.plan`): up to ``TARGET_STEPS`` steps, stopped on a plateau."""
    max_samples: int | None = None
    max_steps: int | None = None
    """Optimizer steps (the cap when the plateau stop is on)."""
    stop_on_plateau: bool | None = None
    """Stop (after a short learning-rate decay) once the validation FVU stops improving; default on unless
    the length of training is fixed (``epochs``, ``max_steps`` or ``max_samples``)."""
    validation_rows: int | None = None
    """Rows carved from the end of the training rows to watch the FVU (default 5%, 256..4,096); only
    with the plateau stop. They are not trained on; the held-out evaluation rows are never used."""
    eval_every: int | None = None
    """Steps between validation FVUs (default: 1% of the step cap, at least 20)."""
    lr: float | None = None
    """Adam learning rate; default 2e-4 / sqrt(n_latents / 2**14) (the sparsify / OpenAI scaling)."""
    warmup_steps: int | None = None
    """Linear warm-up; default 5% of the steps, at most 1,000."""
    decay_frac: float = 0.2
    """The last ``decay_frac`` of the steps decay the learning rate linearly to zero."""
    grad_clip: float = 1.0
    seed: int = 0
    shuffle: bool = True
    """Shuffle rows every epoch (seeded); off, batches follow the store's row order."""
    holdout_frac: float = 0.1
    """The last share of rows is held out for evaluation (whole groups when the store is ordered by group)."""
    memory_budget_gb: float = MEMORY_BUDGET_GB
    """Per-process memory budget of each stage (see :mod:`sae.compute`): training rows are loaded into
    memory when they fit it, otherwise streamed from Zarr; ``train_run`` passes it on to the encode step."""
    dead_window: int | None = None
    """A latent is dead after this many samples without firing; default one epoch of training rows (max 10M)."""
    checkpoint_every: int = 0
    """Steps between checkpoints (0: only at the end)."""
    log_every: int = 10
    device: str = "cpu"
    bf16: bool | None = None
    """bf16 autocast; default on for CUDA, off on CPU."""
    threads: int | None = None
    """torch intra-op threads (default: torch's choice)."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_samples", "max_steps", "eval_every"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise SaeError(f"{name} must be positive, got {value}")
        if self.epochs is not None and self.epochs <= 0:
            raise SaeError(f"epochs must be positive, got {self.epochs}")
        if self.validation_rows is not None and self.validation_rows < 0:
            raise SaeError(f"validation_rows must be >= 0, got {self.validation_rows}")
        if not 0 <= self.holdout_frac < 1:
            raise SaeError(f"holdout_frac must be in [0, 1), got {self.holdout_frac}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def resolved_lr(self, n_latents: int) -> float:
        return float(self.lr) if self.lr is not None else 2e-4 / (n_latents / 2**14) ** 0.5

    def use_bf16(self) -> bool:
        return self.device.startswith("cuda") if self.bf16 is None else bool(self.bf16)
