"""The shared sparse autoencoder module and the registry of architectures.

Every architecture is a subclass of :class:`SparseAutoencoder` registered under the name that
``SAEConfig.arch`` (and ``config.json``) uses::

    @register("myarch")
    class MyArch(SparseAutoencoder):
        def _train_selector(self): ...
        def gate(self, pre): ...

``SparseAutoencoder(cfg)`` builds the registered class for ``cfg.arch``, so callers never name the
subclass. Adding an architecture touches one file: its module defines and registers the class.

Weights: ``W_enc`` (n x d), ``b_enc`` (n), ``W_dec`` (n x d, unit-norm rows unless the architecture
says otherwise), ``b_dec`` (d). Inputs are multiplied by ``scale`` (mean norm sqrt(d) on the training
data) before encoding; :meth:`SparseAutoencoder.folded` returns an equivalent module with the scale
folded into the weights. The ``threshold`` buffer (JumpReLU thresholds) exists for every architecture
so every saved model has the same tensors; architectures without thresholds leave it at zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from sae.errors import DimensionMismatchError, SaeError
from sae.models.sparse import Selector, SparseEncode, decode, topk_selector

if TYPE_CHECKING:
    from sae.models.config import SAEConfig

_REGISTRY: dict[str, type[SparseAutoencoder]] = {}
"""Architecture name -> class, in registration order (the order of ``ARCHS``)."""

_A = TypeVar("_A", bound="type[SparseAutoencoder]")


def register(name: str) -> Callable[[_A], _A]:
    """Class decorator: register an architecture under ``name`` (the value of ``SAEConfig.arch``)."""

    def decorate(cls: _A) -> _A:
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not cls:
            raise SaeError(f"architecture {name!r} is already registered (by {existing.__module__}.{existing.__qualname__})")
        cls.arch_name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def unregister(name: str) -> None:
    """Remove a registered architecture (for tests and plugins that register temporary ones)."""
    _REGISTRY.pop(name, None)


def registered_archs() -> tuple[str, ...]:
    """Names of the registered architectures, in registration order."""
    return tuple(_REGISTRY)


def get_architecture(name: str) -> type[SparseAutoencoder]:
    """The class registered under ``name``; a :class:`SaeError` naming the registered ones otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise SaeError(f"unknown architecture {name!r}; choose one of {registered_archs()}") from None


def __getattr__(name: str) -> Any:
    """``ARCHS`` is computed on access so that it always lists every registered architecture."""
    if name == "ARCHS":
        return registered_archs()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    """Base of every architecture; ``SparseAutoencoder(cfg)`` builds the class registered for ``cfg.arch``.

    The default training forward is the k-sparse one (a selection rule picks latents from the
    pre-activations, gradients flow only through them, AuxK models the residual with dead latents);
    subclasses choose the rule (:meth:`_train_selector`), the reconstruction loss (:meth:`_recon_losses`),
    an optional extra loss (:meth:`extra_loss`) and what they learn from the codes (:meth:`_observe_train_codes`).
    Inference goes through :meth:`select_codes` (by default: keep every latent :meth:`gate` lets through).
    """

    arch_name: ClassVar[str] = ""
    """The registered name (set by :func:`register`)."""
    unit_norm_decoder: ClassVar[bool] = True
    """Whether decoder rows are kept at unit norm (gradient projection + renormalisation every step)."""
    batch_statistic_buffers: ClassVar[tuple[str, ...]] = ()
    """Buffers that training updates from each batch's statistics (BatchTopK's thresholds, JumpReLU's L0
    controller): data-parallel ranks average them after every step so they stay identical."""
    scale: torch.Tensor
    """Buffer: the input scale (inputs are multiplied by it before encoding; 1 once folded)."""
    threshold: torch.Tensor
    """Buffer: per-latent JumpReLU thresholds (zero for architectures that do not learn them)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> SparseAutoencoder:
        """Dispatch ``SparseAutoencoder(cfg, ...)`` to the class registered for ``cfg.arch``."""
        if cls is SparseAutoencoder:
            cfg = args[0] if args else kwargs.get("cfg")
            if cfg is None:
                raise TypeError("SparseAutoencoder() needs an SAEConfig")
            cls = get_architecture(cfg.arch)
        return super().__new__(cls)

    def __init__(self, cfg: SAEConfig, *, seed: int = 0, device: str | torch.device = "cpu"):
        super().__init__()
        if cfg.arch != self.arch_name:
            raise SaeError(f"{type(self).__name__} is the {self.arch_name!r} architecture, the config says {cfg.arch!r}")
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
        self.fvu_denominator: Callable[[torch.Tensor], torch.Tensor] | None = None
        """Optional ``x -> denominator`` for the training FVUs (set by data-parallel training)."""

    # ------------------------------------------------------------------ configuration hooks
    @classmethod
    def validate_config(cls, cfg: SAEConfig) -> None:
        """Architecture-specific checks of a new :class:`SAEConfig` (raise :class:`SaeError`).

        The default requires ``0 < k < n_latents``: every k-sparse architecture needs it.
        """
        if not 0 < cfg.k < cfg.n_latents:
            raise SaeError(f"k must satisfy 0 < k < n_latents ({cfg.n_latents}), got k={cfg.k}")

    @classmethod
    def config_levels(cls, cfg: SAEConfig) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The (level_sizes, level_ks) written to ``config.json``: empty unless the architecture is nested."""
        return (), ()

    def _fvu(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        return fvu(x, x_hat, None if self.fvu_denominator is None else self.fvu_denominator(x))

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`DimensionMismatchError` unless ``x`` is a B x d_in batch."""
        if x.ndim != 2 or x.shape[1] != self.cfg.d_in:
            raise DimensionMismatchError(f"SAE expects inputs of width {self.cfg.d_in}, got shape {tuple(x.shape)}")

    # ------------------------------------------------------------------ training forward (k-sparse default)
    def _train_selector(self) -> Selector:
        """The training-time selection rule: pre-activations -> (indices, optional keep mask)."""
        raise NotImplementedError(f"{type(self).__name__} defines no training selection rule")

    def forward_train(self, x: torch.Tensor, dead_mask: torch.Tensor | None = None) -> StepOutput:
        """Loss on a batch already multiplied by ``scale`` (may update thresholds, see :meth:`_observe_train_codes`)."""
        aux, n_dead = self._aux_selector(dead_mask)
        # the encoder sees x - b_dec; b_dec still learns through the decoder
        selector = self._train_selector()
        vals, idx, aux_vals, aux_idx = SparseEncode.apply(x - self.b_dec.detach(), self.W_enc, self.b_enc, selector, aux, dead_mask)
        recon_loss, full_fvu = self._recon_losses(x, vals, idx)
        aux_loss = self._aux_loss(x, vals, idx, aux_vals, aux_idx, n_dead)
        loss = recon_loss + self.cfg.aux_coeff * aux_loss
        extra = self.extra_loss(x, vals, idx)
        if extra is not None:
            loss = loss + extra
        active = vals > 0
        self._observe_train_codes(vals, idx)
        return StepOutput(loss, full_fvu.detach(), aux_loss.detach(), float(active.sum()) / x.shape[0], idx[active])

    def _recon_losses(self, x: torch.Tensor, vals: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss to optimise, FVU of the full reconstruction); the same FVU unless the architecture is nested."""
        f = self._fvu(x, decode(vals, idx, self.W_dec, self.b_dec))
        return f, f

    def extra_loss(self, x: torch.Tensor, vals: torch.Tensor, idx: torch.Tensor) -> torch.Tensor | None:
        """A term added to the training loss (a sparsity penalty, say); None adds nothing."""
        return None

    def _observe_train_codes(self, vals: torch.Tensor, idx: torch.Tensor) -> None:
        """Learn from the batch's selected codes after the loss (BatchTopK: the inference thresholds)."""

    # ------------------------------------------------------------------ AuxK helpers
    def _aux_selector(self, dead_mask: torch.Tensor | None) -> tuple[Selector | None, int]:
        """AuxK's selection over dead latents (None when AuxK is off or nothing is dead) and the dead count."""
        n_dead = int(dead_mask.sum()) if dead_mask is not None else 0
        k_aux = min(self.cfg.aux_k_effective, n_dead)  # never more than there are dead latents
        return (topk_selector(k_aux) if k_aux > 0 else None), n_dead

    def _aux_loss(self, x: torch.Tensor, vals: torch.Tensor, idx: torch.Tensor, aux_vals: torch.Tensor,
                  aux_idx: torch.Tensor, n_dead: int) -> torch.Tensor:
        """FVU of the dead latents' model of the (detached) residual, damped when few latents are dead."""
        aux_loss = torch.zeros((), device=x.device)
        if aux_idx.shape[1]:
            residual = (x - decode(vals, idx, self.W_dec, self.b_dec)).detach()
            e_hat = decode(aux_vals, aux_idx, self.W_dec, None)
            aux_loss = self._fvu(residual, e_hat) * min(1.0, n_dead / max(1, self.cfg.aux_k_effective))
        return aux_loss

    # ------------------------------------------------------------------ thresholds
    @torch.no_grad()
    def init_from_sample(self, x_raw: torch.Tensor) -> None:
        """Architecture-specific initialisation from raw training rows, after ``scale`` and ``b_dec``
        are set from them (JumpReLU starts its thresholds at the target L0); nothing by default."""

    @torch.no_grad()
    def calibrate_thresholds(self, x_raw: torch.Tensor) -> None:
        """Fit the inference thresholds on raw rows after training; nothing to do by default."""

    # ------------------------------------------------------------------ decoder constraint
    @torch.no_grad()
    def project_decoder_grad(self) -> None:
        """Remove the gradient component parallel to each (unit) decoder row."""
        if self.unit_norm_decoder and self.W_dec.grad is not None:
            g = self.W_dec.grad
            g -= (g * self.W_dec).sum(1, keepdim=True) * self.W_dec

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale decoder rows to unit norm (architectures with a unit-norm decoder)."""
        if self.unit_norm_decoder:
            self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations of raw (unscaled) inputs."""
        self.check_input(x)
        return torch.addmm(self.b_enc, x * self.scale - self.b_dec, self.W_enc.t())

    @torch.no_grad()
    def encode(self, x: torch.Tensor, max_active: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse codes of raw inputs as (values, indices), B x m, zero-padded where inactive.

        The architecture's :meth:`select_codes` decides which latents are kept. Rows are padded to the
        batch's largest L0, or cut to ``max_active`` when given (fixed-k architectures return k).
        """
        return self.select_codes(self.pre_acts(x), max_active)

    def select_codes(self, pre: torch.Tensor, max_active: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference selection on pre-activations: every latent :meth:`gate` passes, at its raw value."""
        gate = self.gate(pre)
        m = max(1, int(gate.sum(1).max())) if len(pre) else 1
        if max_active:
            m = min(m, int(max_active))
        vals, idx = torch.where(gate, pre, torch.zeros_like(pre)).topk(min(m, self.cfg.n_latents), dim=1)
        return vals, idx

    def gate(self, pre: torch.Tensor) -> torch.Tensor:
        """Boolean B x n mask of the latents active at inference."""
        raise NotImplementedError(f"{type(self).__name__} defines no inference gate")

    @torch.no_grad()
    def decode_codes(self, vals: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Reconstruction in raw input units."""
        return decode(vals, idx, self.W_dec, self.b_dec) / self.scale

    @torch.no_grad()
    def folded(self) -> SparseAutoencoder:
        """An equivalent module with ``scale`` folded into the weights (scale = 1): what is saved."""
        out = type(self)(self.cfg, device=self.W_enc.device)
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
