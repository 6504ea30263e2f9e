"""BatchTopK SAE: k latents per row on average over a batch while training, JumpReLU at inference.

Training keeps the ``B * k`` largest positive pre-activations of the whole batch (each row at most
``row_cap * k``), so rows get more latents where they need them. The smallest kept activation is
tracked as an EMA: it is the JumpReLU threshold used at inference (a value is kept only above its
threshold and never shifted), and :meth:`BatchTopKSAE.calibrate_thresholds` resets it after training
so the mean L0 on real rows equals k.
"""

from __future__ import annotations

import torch

from sae.models.base import SparseAutoencoder, register
from sae.models.config import SAEConfig
from sae.models.sparse import Selector, batch_topk_indices

THRESHOLD_EMA = 0.99


@register("batchtopk")
class BatchTopKSAE(SparseAutoencoder):
    """Batch-wide top-k over groups of latents (one group here; Matryoshka nests several)."""

    batch_statistic_buffers = ("threshold",)

    def __init__(self, cfg: SAEConfig, *, seed: int = 0, device: str | torch.device = "cpu"):
        super().__init__(cfg, seed=seed, device=device)
        self._groups = self._group_bounds()

    def _group_bounds(self) -> list[tuple[int, int, int]]:
        """(start, end, k) of each batch-top-k group: the whole dictionary with the config's k."""
        return [(0, self.cfg.n_latents, self.cfg.k)]

    def _train_selector(self) -> Selector:
        """Batch top-k inside every group; the groups' selections are concatenated in order."""
        groups, cap = self._groups, self.cfg.row_cap

        def select(pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            parts = [batch_topk_indices(pre[:, a:b], k, cap, offset=a) for a, b, k in groups]
            return torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1)

        return select

    def _observe_train_codes(self, vals: torch.Tensor, idx: torch.Tensor) -> None:
        """Move the inference thresholds towards this batch's smallest kept activations."""
        self._update_thresholds(vals, idx)

    @torch.no_grad()
    def _update_thresholds(self, vals: torch.Tensor, idx: torch.Tensor) -> None:
        """EMA of the smallest kept activation per group: the JumpReLU threshold used at inference."""
        col = 0
        for a, b, k in self._groups:
            m = min(self.cfg.row_cap * k, idx.shape[1] - col)
            v = vals[:, col : col + m]
            pos = v[v > 0]
            if pos.numel():
                cur = self.threshold[a]
                new = pos.min() if float(cur) == 0 else THRESHOLD_EMA * cur + (1 - THRESHOLD_EMA) * pos.min()
                self.threshold[a:b] = new
            col += m

    @torch.no_grad()
    def calibrate_thresholds(self, x_raw: torch.Tensor) -> None:
        """Set each group's JumpReLU threshold so the mean L0 on ``x_raw`` equals its k.

        The EMA threshold from training drifts away from the target L0; a quantile on real rows does not.
        """
        if not len(x_raw):
            return
        pre = self.pre_acts(x_raw)
        for a, b, k in self._groups:
            flat = pre[:, a:b].reshape(-1)
            want = min(flat.numel(), k * len(x_raw))
            cut = flat.topk(want, sorted=False).values.min()
            self.threshold[a:b] = cut.clamp_min(1e-6)

    def gate(self, pre: torch.Tensor) -> torch.Tensor:
        """JumpReLU: a latent is active where its pre-activation exceeds its learned threshold."""
        return pre > self.threshold
