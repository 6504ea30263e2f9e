"""JumpReLU SAE (Rajamanoharan et al. 2024, "Jumping Ahead"; the architecture of Gemma Scope and SAELens).

A latent is active where its pre-activation exceeds its own learned threshold, and then keeps its raw
value: ``z = pre * H(pre - theta)``. Training is dense (every latent is computed, no selection, no
AuxK) on ``FVU + lambda * L0``, where L0 is the number of active latents per row. ``H`` has no useful
derivative, so, as in the paper, the thresholds learn through straight-through estimators with a
rectangle kernel of width ``eps`` (:data:`BANDWIDTH`):

- ``d/d theta [pre * H(pre - theta)] := -(theta / eps) * 1{|pre - theta| < eps / 2}`` (reconstruction),
- ``d/d theta H(pre - theta) := -(1 / eps) * 1{|pre - theta| < eps / 2}`` (the L0 penalty),

while the pre-activations get the exact gradient of the JumpReLU output (``H(pre - theta)``) and none
from the L0 penalty. The default ``eps = 0.05`` is SAELens's, on inputs normalised as here (mean norm
sqrt(d)); the paper's 0.001 is for inputs of norm ~1 (about 0.001 * sqrt(d) in these units). On planted
data, 0.01 to 0.2 train alike.

Thresholds are learned in log space, ``theta = exp(THRESHOLD_SPEED * log_threshold_scaled)``: Adam moves
every parameter by about ``lr`` per step whatever its gradient, and the encoder moves pre-activations
faster than that in log terms, so with ``theta = exp(log_threshold)`` L0 follows the encoder rather
than the penalty and the controller below oscillates. The multiplier lets the thresholds keep up (on
planted data, 2,000 steps: held-out FVU 0.30 with a multiplier of 1, 0.27 with 3, 0.24 with 10).

The sparsity target is the config's ``k``, so JumpReLU compares with the k-sparse architectures at the
same L0: :meth:`JumpReLUSAE.init_from_sample` starts every latent's threshold at the quantile of its
pre-activations where it fires on ``k / n`` of the sample rows (mean L0 = k, no latent dead at the
start), and ``lambda`` follows a proportional-integral controller towards mean L0 = k. The integral
part is the ``l0_coeff`` buffer (saved with checkpoints, so a resume is exact), multiplied after each
step by ``r ** L0_GAIN`` with ``r = clamp(L0 / k, 1/2, 2)``; the step's penalty uses ``l0_coeff * r``.

The decoder rows are kept at unit norm (the base class's projection and renormalisation). An L0
penalty, unlike L1, does not need it against shrinkage, but JumpReLU is invariant to scaling a latent's
encoder row, bias and threshold together while dividing its decoder row; pinning the decoder removes
that freedom and makes pre-activations, thresholds and ``eps`` read in input-norm units. The
``threshold`` buffer mirrors ``theta`` after every optimiser step (:meth:`JumpReLUSAE.normalize_decoder`,
the trainer's post-step hook), so inference (``pre > threshold``) and saved models match training.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from sae.models.base import SparseAutoencoder, StepOutput, register
from sae.models.config import SAEConfig

BANDWIDTH = 0.05
"""``eps``: width of the rectangle kernel, in scaled input units (pre-activations of rows of mean norm sqrt(d))."""
THRESHOLD_SPEED = 10.0
"""``theta = exp(THRESHOLD_SPEED * log_threshold_scaled)``: log-thresholds move up to this many times Adam's step."""
L0_GAIN = 0.02
"""Controller, integral part: ``l0_coeff`` changes by at most 2 ** L0_GAIN (~1.4%) per step (an e-fold in ~70 steps)."""
L0_COEFF_RANGE = (1e-8, 1e4)
"""Bounds on ``l0_coeff`` (the controller never drives it to zero or to infinity)."""
MIN_THRESHOLD = 1e-4
"""Smallest starting threshold (thresholds are learned in log space, so they must be positive)."""
INIT_BLOCK = 1 << 24
"""Pre-activation entries computed at once by :meth:`JumpReLUSAE.init_from_sample` (64 MB of float32)."""


def rectangle_band(pre: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
    """The rectangle kernel ``1{|pre - theta| < eps / 2}`` (the STE's support) in ``pre``'s dtype."""
    return ((pre - theta).abs() < eps / 2).to(pre.dtype)


class JumpReLUFn(torch.autograd.Function):
    """``pre * H(pre - theta)``; gradients ``H(pre - theta)`` for ``pre``, the rectangle STE for ``theta``."""

    @staticmethod
    def forward(ctx: Any, pre: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return pre * (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        pre, theta = ctx.saved_tensors
        g_pre = grad * (pre > theta).to(grad.dtype)
        g_theta = -(theta / ctx.eps) * (grad * rectangle_band(pre, theta, ctx.eps)).sum(0)
        return g_pre, g_theta, None


class StepFn(torch.autograd.Function):
    """``H(pre - theta)`` as 0/1; no gradient for ``pre``, the rectangle STE for ``theta`` (the L0 penalty's)."""

    @staticmethod
    def forward(ctx: Any, pre: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        pre, theta = ctx.saved_tensors
        g_theta = -(grad * rectangle_band(pre, theta, ctx.eps)).sum(0) / ctx.eps
        return torch.zeros_like(pre), g_theta, None


@register("jumprelu")
class JumpReLUSAE(SparseAutoencoder):
    """JumpReLU with learned per-latent thresholds; dense training on FVU + adaptive L0 penalty (target L0 = k)."""

    bandwidth: ClassVar[float] = BANDWIDTH
    """``eps`` of the straight-through estimators (a subclass may change it; it only matters while training)."""
    batch_statistic_buffers = ("l0_coeff",)
    log_threshold_scaled: nn.Parameter
    """Parameter: ``log(theta) / THRESHOLD_SPEED`` per latent (read :attr:`theta` or ``threshold`` instead)."""
    l0_coeff: torch.Tensor
    """Buffer: the L0 penalty's weight (on the FVU scale), adapted every step towards mean L0 = k."""

    def __init__(self, cfg: SAEConfig, *, seed: int = 0, device: str | torch.device = "cpu"):
        super().__init__(cfg, seed=seed, device=device)
        theta = self._default_threshold(cfg)
        self.log_threshold_scaled = nn.Parameter(torch.full((cfg.n_latents,), theta, device=device).log() / THRESHOLD_SPEED)
        self.register_buffer("l0_coeff", torch.tensor(theta * theta / cfg.d_in, device=device))
        self._sync_threshold()

    @staticmethod
    def _default_threshold(cfg: SAEConfig) -> float:
        """The threshold giving L0 = k at construction for unit-variance isotropic inputs (the encoder rows
        have norm ``enc_init_norm``); :meth:`init_from_sample` replaces it with quantiles of real rows."""
        z = float(torch.special.ndtri(torch.tensor(1.0 - cfg.k / cfg.n_latents, dtype=torch.float64)))
        return max(MIN_THRESHOLD, cfg.enc_init_norm * z)

    @property
    def theta(self) -> torch.Tensor:
        """The thresholds ``exp(THRESHOLD_SPEED * log_threshold_scaled)`` (differentiable)."""
        return (THRESHOLD_SPEED * self.log_threshold_scaled).exp()

    # ------------------------------------------------------------------ training
    def forward_train(self, x: torch.Tensor, dead_mask: torch.Tensor | None = None) -> StepOutput:
        """FVU + lambda * L0 on a batch already multiplied by ``scale`` (``dead_mask`` is ignored: no AuxK).

        Updates ``l0_coeff`` from this batch's L0 (the next step sees the new value).
        """
        eps = self.bandwidth
        theta = self.theta
        pre = F.linear(x - self.b_dec.detach(), self.W_enc, self.b_enc).float()  # float32 even under bf16 autocast
        z = JumpReLUFn.apply(pre, theta, eps)
        f = self._fvu(x, z @ self.W_dec + self.b_dec)
        l0 = StepFn.apply(pre, theta, eps).sum(1).mean()
        ratio = (l0.detach().float() / self.cfg.k).clamp(0.5, 2.0)
        loss = f + (self.l0_coeff * ratio) * l0  # a new tensor: autograd keeps no reference to the buffer updated next
        self._adapt_l0_coeff(ratio)
        fired = (z.detach() > 0).any(0).nonzero().squeeze(1)
        return StepOutput(loss, f.detach(), torch.zeros((), device=x.device), float(l0.detach()), fired)

    @torch.no_grad()
    def _adapt_l0_coeff(self, ratio: torch.Tensor) -> None:
        """Integral part of the controller: raise the penalty while L0 > k, lower it while L0 < k.

        Data-parallel ranks each follow their own batches' L0 (``DistributedTrainer`` syncs only ``threshold``)."""
        self.l0_coeff.mul_(ratio.pow(L0_GAIN)).clamp_(*L0_COEFF_RANGE)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """After every optimiser step: unit-norm decoder rows, and ``threshold`` refreshed from the learned thresholds."""
        super().normalize_decoder()
        self._sync_threshold()

    @torch.no_grad()
    def _sync_threshold(self) -> None:
        """``threshold`` (what inference reads) := :attr:`theta`."""
        self.threshold.copy_(self.theta)

    # ------------------------------------------------------------------ thresholds
    @torch.no_grad()
    def init_from_sample(self, x_raw: torch.Tensor) -> None:
        """Start each latent's threshold where it fires on ``k / n`` of the rows (mean L0 = k on ``x_raw``).

        Also starts ``l0_coeff`` at the FVU cost of dropping one activation at a typical threshold
        (``mean(theta^2)`` over the sample's mean squared distance to its mean): the balance point of
        the two threshold gradients, so the controller only has to correct it.
        """
        if not len(x_raw):
            return
        xs = x_raw.to(self.W_enc) * self.scale - self.b_dec
        rows, n = len(xs), self.cfg.n_latents
        above = min(rows - 1, max(1, round(rows * self.cfg.k / n)))  # rows each latent fires on
        theta = torch.empty(n, device=xs.device)
        block = max(1, INIT_BLOCK // rows)
        for a in range(0, n, block):
            pre = torch.addmm(self.b_enc[a : a + block], xs, self.W_enc[a : a + block].t())
            theta[a : a + block] = pre.topk(above + 1, dim=0).values[-1]  # exactly `above` rows lie strictly above
        theta.clamp_(min=MIN_THRESHOLD)
        self.log_threshold_scaled.copy_(theta.log() / THRESHOLD_SPEED)
        spread = (xs - xs.mean(0)).pow(2).sum(1).mean().clamp_min(1e-12)
        self.l0_coeff.fill_(float(theta.pow(2).mean() / spread))
        self.l0_coeff.clamp_(*L0_COEFF_RANGE)
        self._sync_threshold()

    @torch.no_grad()
    def calibrate_thresholds(self, x_raw: torch.Tensor) -> None:
        """No refit: the thresholds are learned jointly with the dictionary (the controller holds L0 near k);
        only the ``threshold`` mirror is refreshed."""
        self._sync_threshold()

    # ------------------------------------------------------------------ inference
    def gate(self, pre: torch.Tensor) -> torch.Tensor:
        """JumpReLU: a latent is active where its pre-activation exceeds its learned threshold."""
        return pre > self.threshold

    @torch.no_grad()
    def folded(self) -> SparseAutoencoder:
        """The base folding (thresholds are unchanged by it) plus the learned log-thresholds and the controller."""
        out = super().folded()
        assert isinstance(out, JumpReLUSAE), "folded() builds the same class"
        out.log_threshold_scaled.copy_(self.log_threshold_scaled)
        out.l0_coeff.copy_(self.l0_coeff)
        out._sync_threshold()
        return out
