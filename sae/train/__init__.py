"""The trainer: streams a store, Adam with warm-up and decay, AuxK, dead latents, exact resume, sweeps."""

from sae.train.config import TrainConfig
from sae.train.trainer import Trainer, geometric_median, init_from_data

__all__ = ["TrainConfig", "Trainer", "geometric_median", "init_from_data"]
