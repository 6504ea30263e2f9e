"""scikit-learn style front end: ``SAE(...).fit(X).transform(X)`` returns sparse codes."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator

from sae.errors import SaeError
from sae.models import SAEConfig, SparseAutoencoder
from sae.models.io import load_sae, save_sae
from sae.store import Store
from sae.train import TrainConfig, Trainer
from sae.train.plan import default_n_latents, training_rows

SAE_OPTIONS = ("l1_coeff", "aux_k", "aux_coeff", "normalize_input", "bdec_init", "enc_init_norm", "row_cap", "level_sizes", "level_ks")
"""The :class:`SAEConfig` fields the estimator takes as keyword parameters (None: the config's default)."""


class SAE(BaseEstimator):
    """A sparse autoencoder estimator; parameters in ``__init__``, learned state ends in ``_``.

    ``X`` is an (N, d) array or a :class:`~sae.store.Store` (streamed when larger than the memory
    budget). ``transform`` returns SciPy CSR codes (N x n_latents), ``inverse_transform`` maps codes
    back to embeddings. Every ``__init__`` parameter is stored unchanged under its own name, so
    ``get_params`` / ``set_params`` / ``sklearn.base.clone`` work; the :class:`SAEConfig` options
    (``l1_coeff``, ``aux_k``, ...) default to None, meaning the config's own default.
    """

    def __init__(self, arch: str = "topk", n_latents: int | None = None, k: int = 32, *, batch_size: int | None = None,
                 epochs: float | None = None, lr: float | None = None, seed: int = 0, device: str = "cpu",
                 holdout_frac: float = 0.0, progress: bool = True, l1_coeff: float | None = None,
                 aux_k: int | None = None, aux_coeff: float | None = None, normalize_input: bool | None = None,
                 bdec_init: str | None = None, enc_init_norm: float | None = None, row_cap: int | None = None,
                 level_sizes: tuple[int, ...] | None = None, level_ks: tuple[int, ...] | None = None):
        self.arch, self.n_latents, self.k = arch, n_latents, k
        self.batch_size, self.epochs, self.lr, self.seed, self.device = batch_size, epochs, lr, seed, device
        self.holdout_frac, self.progress = holdout_frac, progress
        self.l1_coeff, self.aux_k, self.aux_coeff, self.normalize_input = l1_coeff, aux_k, aux_coeff, normalize_input
        self.bdec_init, self.enc_init_norm, self.row_cap = bdec_init, enc_init_norm, row_cap
        self.level_sizes, self.level_ks = level_sizes, level_ks

    def _sae_options(self) -> dict[str, Any]:
        """The SAEConfig options that were set (None leaves the config's default)."""
        opts = {name: getattr(self, name) for name in SAE_OPTIONS if getattr(self, name) is not None}
        for name in ("level_sizes", "level_ks"):
            if name in opts:
                opts[name] = tuple(opts[name])
        return opts

    def _configs(self, d_in: int, n_rows: int) -> tuple[SAEConfig, TrainConfig]:
        """The SAE and training configurations these parameters describe, for ``n_rows`` inputs of width ``d_in``
        (``n_latents``, ``batch_size`` and the schedule left None are chosen from the data: :mod:`sae.train.plan`)."""
        n_latents = self.n_latents or default_n_latents(training_rows(n_rows, self.holdout_frac), d_in, self.k)
        sae_cfg = SAEConfig(d_in=d_in, n_latents=n_latents, k=self.k, arch=self.arch, **self._sae_options())
        train_cfg = TrainConfig(batch_size=self.batch_size, epochs=self.epochs, lr=self.lr, seed=self.seed,
                                device=self.device, holdout_frac=self.holdout_frac)
        return sae_cfg, train_cfg

    def fit(self, X, y=None) -> SAE:
        """Train on ``X`` (an (N, d) array or a Store); ``y`` is ignored (sklearn API)."""
        n_rows, d_in = (X.n_rows, X.dim) if isinstance(X, Store) else np.asarray(X).shape
        sae_cfg, train_cfg = self._configs(d_in, n_rows)
        trainer = Trainer(sae_cfg, train_cfg, progress=self.progress)
        self.model_ = trainer.fit(X)
        self.cfg_, self.train_cfg_ = sae_cfg, trainer.cfg
        self.history_ = trainer.state_.log
        return self

    def _require_fitted(self) -> SparseAutoencoder:
        """The fitted module, or a clear error before ``fit`` / ``load``."""
        if not hasattr(self, "model_"):
            raise SaeError("this SAE is not fitted yet; call fit() or SAE.load()")
        return self.model_

    def transform(self, X, batch_size: int = 8192) -> sp.csr_matrix:
        """Sparse codes of ``X`` as a CSR matrix (N x n_latents), encoded ``batch_size`` rows at a time."""
        model = self._require_fitted()
        parts = []
        if isinstance(X, Store):
            batches = X.iter_batches(batch_size)
        else:
            batches = (np.asarray(X[i : i + batch_size], np.float32) for i in range(0, len(X), batch_size))
        for x in batches:
            vals, idx = model.encode(torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(model.W_enc.device))
            parts.append(model.to_csr(vals, idx))
        return sp.vstack(parts).tocsr() if parts else sp.csr_matrix((0, model.cfg.n_latents))

    def fit_transform(self, X, y=None) -> sp.csr_matrix:
        """:meth:`fit`, then :meth:`transform` of the same ``X``."""
        return self.fit(X).transform(X)

    def inverse_transform(self, codes) -> np.ndarray:
        """Embeddings reconstructed from codes (any SciPy sparse or dense N x n_latents matrix)."""
        model = self._require_fitted()
        codes = sp.csr_matrix(codes)
        if codes.shape[1] != model.cfg.n_latents:
            raise SaeError(f"codes have {codes.shape[1]} columns, the SAE has {model.cfg.n_latents} latents")
        dense = torch.from_numpy(codes.toarray().astype(np.float32)).to(model.W_dec.device)
        return ((dense @ model.W_dec + model.b_dec) / model.scale).detach().cpu().numpy()

    def save(self, folder: str | os.PathLike) -> None:
        """Write the fitted model as a run folder (model.safetensors + config.json with the training config)."""
        save_sae(self._require_fitted(), folder, {"train": self.train_cfg_.to_dict()})

    @classmethod
    def load(cls, folder: str | os.PathLike, device: str = "cpu") -> SAE:
        """A fitted estimator from a saved run folder; its parameters mirror the saved SAE config."""
        model, doc = load_sae(folder, device=device)
        options = {name: getattr(model.cfg, name) for name in SAE_OPTIONS}
        est = cls(arch=model.cfg.arch, n_latents=model.cfg.n_latents, k=model.cfg.k, device=device, **options)
        est.model_, est.cfg_ = model, model.cfg
        est.train_cfg_ = TrainConfig.from_dict(doc.get("train", {}))
        return est

    def __repr__(self) -> str:
        """Architecture, sizes and whether the estimator is fitted (not sklearn's parameter listing)."""
        fitted = "fitted" if hasattr(self, "model_") else "not fitted"
        return f"SAE(arch={self.arch!r}, n_latents={self.n_latents}, k={self.k}; {fitted})"
