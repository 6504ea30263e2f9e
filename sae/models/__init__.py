"""SAE architectures (TopK, BatchTopK, Matryoshka-BatchTopK, ReLU + L1) and their save/load."""

from sae.models.autoencoder import SparseAutoencoder
from sae.models.config import ARCHS, SAEConfig

__all__ = ["ARCHS", "SAEConfig", "SparseAutoencoder"]
