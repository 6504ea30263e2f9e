"""SAE configuration: one frozen dataclass for every architecture, validated on creation.

The architecture name is checked against the registry (:mod:`sae.models.base`); the architecture's
class adds its own checks (``validate_config``) and says which levels ``config.json`` records.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any

from sae.errors import SaeError
from sae.models.base import get_architecture

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class SAEConfig:
    """Architecture and sizes of a sparse autoencoder (saved as ``config.json`` next to the weights)."""

    d_in: int
    """Embedding width."""
    n_latents: int = 4096
    """Dictionary size."""
    arch: str = "topk"
    """A registered architecture (``sae.models.ARCHS``). ``topk``: exactly k per row. ``batchtopk``: k per
    row on average over a batch while training, a learned threshold (true JumpReLU: values below are
    zeroed, kept values are never shifted) at inference. ``matryoshka``: nested prefix dictionaries,
    each group with its own batch-top-k, every prefix trained to reconstruct on its own. ``relu``:
    ReLU + L1 penalty weighted by decoder norms. ``jumprelu``: learned per-latent thresholds, dense
    training on FVU + an L0 penalty whose weight adapts so that the mean L0 stays near k."""
    k: int = 32
    """Active latents per row (topk, batchtopk; matryoshka: the sum of ``level_ks``)."""
    level_sizes: tuple[int, ...] = ()
    """Matryoshka group sizes (sum = n_latents). Default: n/16, 3n/16, 12n/16."""
    level_ks: tuple[int, ...] = ()
    """Matryoshka active latents per group (sum = k). Default: k/4, k/4, k/2."""
    l1_coeff: float = 5.0
    """ReLU SAE: weight of the decoder-norm-weighted L1 penalty (on the FVU scale)."""
    aux_k: int | None = None
    """AuxK: dead latents used to model the residual (default d_in // 2); 0 disables AuxK."""
    aux_coeff: float = 1 / 32
    normalize_input: bool = True
    """Scale inputs so their mean norm is sqrt(d_in); the scale is folded into the weights at save."""
    bdec_init: str = "median"
    """Decoder bias initialisation from a data sample: ``median`` (geometric), ``mean`` or ``zero``."""
    enc_init_norm: float = 0.7
    """Norm of the encoder rows at initialisation (the decoder rows start as the same unit directions)."""
    row_cap: int = 4
    """BatchTopK / Matryoshka: a row keeps at most ``row_cap * k`` latents per group while training."""

    def __post_init__(self) -> None:
        arch = get_architecture(self.arch)  # SaeError naming the registered architectures
        if self.d_in <= 0 or self.n_latents <= 0:
            raise SaeError(f"d_in and n_latents must be positive, got {self.d_in}, {self.n_latents}")
        if self.bdec_init not in ("median", "mean", "zero"):
            raise SaeError(f"bdec_init must be median, mean or zero, got {self.bdec_init!r}")
        arch.validate_config(self)

    def levels(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Matryoshka group sizes and per-group k (defaults derived from n_latents and k)."""
        if self.level_sizes:
            return tuple(self.level_sizes), tuple(self.level_ks)
        n, k = self.n_latents, self.k
        sizes = (n // 16, 3 * n // 16, n - n // 16 - 3 * n // 16)
        k1 = max(1, k // 4)
        ks = (k1, k1, k - 2 * k1)
        return sizes, ks

    @property
    def aux_k_effective(self) -> int:
        """AuxK's k: ``aux_k``, or d_in // 2 when unset."""
        return self.d_in // 2 if self.aux_k is None else int(self.aux_k)

    def to_dict(self) -> dict[str, Any]:
        """The ``config.json`` document (with the architecture's resolved levels and the schema version)."""
        d = asdict(self)
        sizes, ks = get_architecture(self.arch).config_levels(self)
        d["level_sizes"], d["level_ks"] = list(sizes), list(ks)
        return {"schema_version": SCHEMA_VERSION, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SAEConfig:
        """Read a ``config.json`` document, ignoring fields this version does not know."""
        version = int(d.get("schema_version", 1))
        if version > SCHEMA_VERSION:
            raise SaeError(f"SAE config has schema_version {version}, newer than this sae-workbench ({SCHEMA_VERSION}); upgrade")
        known = set(cls.__dataclass_fields__)
        kw = {k: v for k, v in d.items() if k in known}
        kw["level_sizes"] = tuple(kw.get("level_sizes", ()))
        kw["level_ks"] = tuple(kw.get("level_ks", ()))
        return cls(**kw)

    def with_(self, **changes: Any) -> SAEConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON."""
        return json.dumps(self.to_dict(), indent=2)
