"""sae-workbench: sparse autoencoders over stored foundation-model embeddings.

Stored embeddings in, an interpretable concept space out. Start with :class:`sae.store.Store`.
"""

from sae.store import Store

__all__ = ["Store", "__version__"]
__version__ = "0.1.0"
