"""SAE architectures (TopK, BatchTopK, Matryoshka-BatchTopK, ReLU + L1, JumpReLU), their registry and save/load.

``SparseAutoencoder(cfg)`` builds the class registered for ``cfg.arch``; ``ARCHS`` lists the
registered names (always current: it is read from the registry on access).
"""

from typing import Any

from sae.models.base import SparseAutoencoder, get_architecture, register, registered_archs
from sae.models.config import SAEConfig

# importing a module registers its architecture; this order is the order of ARCHS
# isort: off
from sae.models import topk  # noqa: F401
from sae.models import batchtopk  # noqa: F401
from sae.models import matryoshka  # noqa: F401
from sae.models import relu  # noqa: F401
from sae.models import jumprelu  # noqa: F401
# isort: on

__all__ = ["ARCHS", "SAEConfig", "SparseAutoencoder", "get_architecture", "register", "registered_archs"]


def __getattr__(name: str) -> Any:
    """``ARCHS``: the registered architecture names, in registration order."""
    if name == "ARCHS":
        return registered_archs()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
