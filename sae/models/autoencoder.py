"""The sparse autoencoder module: TopK, BatchTopK, Matryoshka-BatchTopK and ReLU + L1.

Weights: ``W_enc`` (n x d), ``b_enc`` (n), ``W_dec`` (n x d, unit-norm rows except for ReLU),
``b_dec`` (d). Inputs are multiplied by ``scale`` (mean norm sqrt(d) on the training data) before
encoding; :meth:`folded` returns an equivalent module with the scale folded into the weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from sae.errors import DimensionMismatchError
from sae.models.config import SAEConfig
from sae.models.sparse import SparseEncode, batch_topk_indices, decode, topk_selector

THRESHOLD_EMA = 0.99


@dataclass
class StepOutput:
    """What one training forward returns."""

    loss: torch.Tensor
    fvu: torch.Tensor
    aux_loss: torch.Tensor
    l0: float
    fired: torch.Tensor
    """Latent indices that fired in this batch (for dead-latent tracking)."""


def fvu(x: torch.Tensor, x_hat: torch.Tensor, denom: torch.Tensor | None = None) -> torch.Tensor:
    """Fraction of variance unexplained: residual energy over energy around the batch mean.

    ``denom`` replaces the energy around the batch mean (data-parallel training passes each rank's
    share of the global batch's energy, so the ranks' averaged gradients equal the global batch's).
    """
    if denom is None:
        denom = (x - x.mean(0)).pow(2).sum().clamp_min(1e-12)
    return (x - x_hat).pow(2).sum() / denom


class SparseAutoencoder(nn.Module):
    """One module for every architecture; ``cfg.arch`` picks the selection rule."""

    def __init__(self, cfg: SAEConfig, *, seed: int = 0, device: str | torch.device = "cpu"):
        super().__init__()
        self.cfg = cfg
        n, d = cfg.n_latents, cfg.d_in
        gen = torch.Generator().manual_seed(seed)
        w = torch.randn(n, d, generator=gen)
        w /= w.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w.clone().to(device))
        self.W_enc = nn.Parameter((w * cfg.enc_init_norm).to(device))
        self.b_enc = nn.Parameter(torch.zeros(n, device=device))
        self.b_dec = nn.Parameter(torch.zeros(d, device=device))
        self.register_buffer("scale", torch.ones((), device=device))
        self.register_buffer("threshold", torch.zeros(n, device=device))
        self._groups = self._group_bounds()
        self.fvu_denominator = None
        """Optional ``x -> denominator`` for the training FVUs (set by data-parallel training)."""

    def _fvu(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        return fvu(x, x_hat, None if self.fvu_denominator is None else self.fvu_denominator(x))

    # ------------------------------------------------------------------ structure
    def _group_bounds(self) -> list[tuple[int, int, int]]:
        """(start, end, k) of each batch-top-k group (one group unless Matryoshka)."""
        if self.cfg.arch == "matryoshka":
            sizes, ks = self.cfg.levels()
            ends = np.cumsum(sizes)
            return [(int(e - s), int(e), int(k)) for s, e, k in zip(sizes, ends, ks)]
        return [(0, self.cfg.n_latents, self.cfg.k)]

    @property
    def unit_norm_decoder(self) -> bool:
        return self.cfg.arch != "relu"

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.cfg.d_in:
            raise DimensionMismatchError(f"SAE expects inputs of width {self.cfg.d_in}, got shape {tuple(x.shape)}")

    # ------------------------------------------------------------------ training forward
    def _train_selector(self):
        cfg = self.cfg
        if cfg.arch == "topk":
            return topk_selector(cfg.k)
        groups, cap = self._groups, cfg.row_cap

        def select(pre: torch.Tensor):
            parts = [batch_topk_indices(pre[:, a:b], k, cap, offset=a) for a, b, k in groups]
            return torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1)

        return select

    def forward_train(self, x: torch.Tensor, dead_mask: torch.Tensor | None = None) -> StepOutput:
        """Loss on a batch already multiplied by ``scale``; updates BatchTopK thresholds."""
        if self.cfg.arch == "relu":
            return self._forward_relu(x)
        n_dead = int(dead_mask.sum()) if dead_mask is not None else 0
        k_aux = min(self.cfg.aux_k_effective, n_dead)  # never more than there are dead latents
        aux = topk_selector(k_aux) if k_aux > 0 else None
        vals, idx, aux_vals, aux_idx = SparseEncode.apply(x - self.b_dec.detach(), self.W_enc, self.b_enc, self._train_selector(), aux, dead_mask)
        # the encoder sees x - b_dec; b_dec still learns through the decoder
        recon_loss, full_fvu = self._recon_losses(x, vals, idx)
        aux_loss = torch.zeros((), device=x.device)
        if aux_idx.shape[1]:
            residual = (x - decode(vals, idx, self.W_dec, self.b_dec)).detach()
            e_hat = decode(aux_vals, aux_idx, self.W_dec, None)
            aux_loss = self._fvu(residual, e_hat) * min(1.0, n_dead / max(1, self.cfg.aux_k_effective))
        loss = recon_loss + self.cfg.aux_coeff * aux_loss
        active = vals > 0
        if self.cfg.arch in ("batchtopk", "matryoshka"):
            self._update_thresholds(vals, idx)
        return StepOutput(loss, full_fvu.detach(), aux_loss.detach(), float(active.sum()) / x.shape[0], idx[active])

    def _recon_losses(self, x, vals, idx) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cfg.arch != "matryoshka":
            f = self._fvu(x, decode(vals, idx, self.W_dec, self.b_dec))
            return f, f
        x_hat = self.b_dec.expand_as(x)
        losses = []
        col = 0
        for _, _, k in self._groups:  # prefix i reconstructs with groups 1..i only
            m = min(self.cfg.row_cap * k, idx.shape[1] - col)
            x_hat = x_hat + decode(vals[:, col : col + m], idx[:, col : col + m], self.W_dec, None)
            losses.append(self._fvu(x, x_hat))
            col += m
        return torch.stack(losses).mean(), losses[-1]

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
        """Set each group's JumpReLU threshold so the mean L0 on ``x_raw`` equals its k (BatchTopK, Matryoshka).

        The EMA threshold from training drifts away from the target L0; a quantile on real rows does not.
        """
        if self.cfg.arch not in ("batchtopk", "matryoshka") or not len(x_raw):
            return
        pre = self.pre_acts(x_raw)
        for a, b, k in self._groups:
            flat = pre[:, a:b].reshape(-1)
            want = min(flat.numel(), k * len(x_raw))
            cut = flat.topk(want, sorted=False).values.min()
            self.threshold[a:b] = cut.clamp_min(1e-6)

    def _forward_relu(self, x: torch.Tensor) -> StepOutput:
        z = F.relu(F.linear(x - self.b_dec.detach(), self.W_enc, self.b_enc))
        x_hat = z @ self.W_dec + self.b_dec
        f = self._fvu(x, x_hat)
        denom = (x - x.mean(0)).pow(2).sum(1).mean().clamp_min(1e-12).sqrt()
        l1 = (z * self.W_dec.norm(dim=1)).sum(1).mean() / denom
        active = z > 0
        return StepOutput(f + self.cfg.l1_coeff * l1 / self.cfg.n_latents ** 0.5, f.detach(), torch.zeros(()), float(active.sum()) / x.shape[0], active.nonzero()[:, 1])

    # ------------------------------------------------------------------ decoder constraint
    @torch.no_grad()
    def project_decoder_grad(self) -> None:
        """Remove the gradient component parallel to each (unit) decoder row."""
        if self.unit_norm_decoder and self.W_dec.grad is not None:
            g = self.W_dec.grad
            g -= (g * self.W_dec).sum(1, keepdim=True) * self.W_dec

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        if self.unit_norm_decoder:
            self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations of raw (unscaled) inputs."""
        self.check_input(x)
        return torch.addmm(self.b_enc, x * self.scale - self.b_dec, self.W_enc.t())

    @torch.no_grad()
    def encode(self, x: torch.Tensor, max_active: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse codes of raw inputs as (values, indices), B x m, zero-padded where inactive.

        TopK: exactly k. BatchTopK / Matryoshka: JumpReLU with the learned thresholds (a value is kept
        only above its threshold and never shifted). ReLU: every positive pre-activation. Rows are
        padded to the batch's largest L0, or cut to ``max_active`` when given.
        """
        pre = self.pre_acts(x)
        cfg = self.cfg
        if cfg.arch == "topk":
            vals, idx = pre.topk(cfg.k, dim=1)
            return vals.clamp_min(0), idx
        gate = pre > self.threshold if cfg.arch != "relu" else pre > 0
        m = max(1, int(gate.sum(1).max())) if len(pre) else 1
        if max_active:
            m = min(m, int(max_active))
        vals, idx = torch.where(gate, pre, torch.zeros_like(pre)).topk(min(m, cfg.n_latents), dim=1)
        return vals, idx

    @torch.no_grad()
    def decode_codes(self, vals: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Reconstruction in raw input units."""
        return decode(vals, idx, self.W_dec, self.b_dec) / self.scale

    @torch.no_grad()
    def folded(self) -> "SparseAutoencoder":
        """An equivalent module with ``scale`` folded into the weights (scale = 1): what is saved."""
        out = SparseAutoencoder(self.cfg, device=self.W_enc.device)
        s = self.scale
        out.W_enc.copy_(self.W_enc * s)
        out.b_enc.copy_(self.b_enc)
        out.W_dec.copy_(self.W_dec / s)
        out.b_dec.copy_(self.b_dec / s)
        out.threshold.copy_(self.threshold)
        return out

    def to_csr(self, vals: torch.Tensor, idx: torch.Tensor) -> sp.csr_matrix:
        """Padded (values, indices) to a SciPy CSR matrix, dropping zeros."""
        v = vals.cpu().numpy()
        i = idx.cpu().numpy()
        keep = v > 0
        counts = keep.sum(1)
        indptr = np.concatenate([[0], np.cumsum(counts)])
        mat = sp.csr_matrix((v[keep], i[keep], indptr), shape=(v.shape[0], self.cfg.n_latents))
        mat.sort_indices()
        return mat
