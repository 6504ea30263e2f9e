"""The Zarr workspace store: schema, create/open/validate, append, streaming, importers."""

from sae.store.store import Store

__all__ = ["Store"]
