"""ReLU SAE: every positive pre-activation is active; sparsity comes from an L1 penalty.

The penalty weights each latent by its decoder row's norm (so shrinking codes while growing the
decoder does not pay), is measured on the FVU scale (divided by the batch's RMS distance to its
mean) and scaled by ``l1_coeff / sqrt(n_latents)``. The decoder is not kept at unit norm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sae.models.base import SparseAutoencoder, StepOutput, register
from sae.models.config import SAEConfig


@register("relu")
class ReLUSAE(SparseAutoencoder):
    """ReLU + decoder-norm-weighted L1; trained densely (no selection, no AuxK)."""

    unit_norm_decoder = False

    @classmethod
    def validate_config(cls, cfg: SAEConfig) -> None:
        """Nothing beyond the shared checks: ``k`` is not used."""

    def forward_train(self, x: torch.Tensor, dead_mask: torch.Tensor | None = None) -> StepOutput:
        """FVU + L1 penalty on a batch already multiplied by ``scale`` (``dead_mask`` is ignored)."""
        z = F.relu(F.linear(x - self.b_dec.detach(), self.W_enc, self.b_enc))
        x_hat = z @ self.W_dec + self.b_dec
        f = self._fvu(x, x_hat)
        penalty = self.l1_penalty(x, z)
        active = z > 0
        return StepOutput(f + penalty, f.detach(), torch.zeros(()), float(active.sum()) / x.shape[0], active.nonzero()[:, 1])

    def l1_penalty(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``l1_coeff / sqrt(n)`` times the decoder-norm-weighted L1 of the codes over the batch's RMS spread."""
        denom = (x - x.mean(0)).pow(2).sum(1).mean().clamp_min(1e-12).sqrt()
        l1 = (z * self.W_dec.norm(dim=1)).sum(1).mean() / denom
        return self.cfg.l1_coeff * l1 / self.cfg.n_latents ** 0.5

    def gate(self, pre: torch.Tensor) -> torch.Tensor:
        """Every positive pre-activation."""
        return pre > 0
