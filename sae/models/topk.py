"""TopK SAE: exactly the k largest pre-activations of every row, in training and at inference."""

from __future__ import annotations

import torch

from sae.models.base import SparseAutoencoder, register
from sae.models.sparse import Selector, topk_selector


@register("topk")
class TopKSAE(SparseAutoencoder):
    """Each row keeps its k largest pre-activations (clamped at zero); no thresholds to learn."""

    def _train_selector(self) -> Selector:
        """The per-row top-k, the same rule as at inference."""
        return topk_selector(self.cfg.k)

    def select_codes(self, pre: torch.Tensor, max_active: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Exactly k (values, indices) per row, whatever ``max_active`` says (a fixed-L0 code)."""
        vals, idx = pre.topk(self.cfg.k, dim=1)
        return vals.clamp_min(0), idx
