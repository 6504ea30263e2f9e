"""Matryoshka-BatchTopK SAE: nested prefix dictionaries, each trained to reconstruct on its own.

The latents form groups (``SAEConfig.levels()``: sizes summing to n_latents, per-group k summing to
k); every group has its own batch-top-k and threshold, and the loss is the mean FVU of the prefix
reconstructions (groups 1..i for every i), so the first latents learn the coarsest concepts.
"""

from __future__ import annotations

import numpy as np
import torch

from sae.errors import SaeError
from sae.models.base import register
from sae.models.batchtopk import BatchTopKSAE
from sae.models.config import SAEConfig
from sae.models.sparse import decode


@register("matryoshka")
class MatryoshkaSAE(BatchTopKSAE):
    """BatchTopK per nested group, with one reconstruction loss per prefix."""

    @classmethod
    def validate_config(cls, cfg: SAEConfig) -> None:
        """0 < k < n_latents, and levels that partition the latents and k with 0 < k_i < size_i."""
        super().validate_config(cfg)
        sizes, ks = cfg.levels()
        if sum(sizes) != cfg.n_latents or sum(ks) != cfg.k or len(sizes) != len(ks):
            raise SaeError(f"matryoshka level_sizes must sum to n_latents and level_ks to k; got {sizes}, {ks}")
        if any(kk <= 0 or kk >= s for s, kk in zip(sizes, ks, strict=True)):
            raise SaeError(f"each matryoshka level needs 0 < k_i < size_i; got sizes {sizes}, ks {ks}")

    @classmethod
    def config_levels(cls, cfg: SAEConfig) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The resolved levels (defaults filled in) are saved, so a reload does not depend on the defaults."""
        return cfg.levels()

    def _group_bounds(self) -> list[tuple[int, int, int]]:
        """(start, end, k) of each nested group, in order."""
        sizes, ks = self.cfg.levels()
        ends = np.cumsum(sizes)
        return [(int(e - s), int(e), int(k)) for s, e, k in zip(sizes, ends, ks, strict=True)]

    def _recon_losses(self, x: torch.Tensor, vals: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean FVU over the prefix reconstructions, FVU of the full reconstruction)."""
        x_hat = self.b_dec.expand_as(x)
        losses = []
        col = 0
        for _, _, k in self._groups:  # prefix i reconstructs with groups 1..i only
            m = min(self.cfg.row_cap * k, idx.shape[1] - col)
            x_hat = x_hat + decode(vals[:, col : col + m], idx[:, col : col + m], self.W_dec, None)
            losses.append(self._fvu(x, x_hat))
            col += m
        return torch.stack(losses).mean(), losses[-1]
