"""Codes: a store encoded by an SAE (``codes.zarr``: CSR codes, per-feature statistics, inverted index).

- :func:`encode_store` (:mod:`sae.codes.build`) writes the folder; :func:`encode_store_dask`
  (:mod:`sae.codes.encode_dask`) writes the same folder, bit for bit, on a Dask cluster;
- :class:`Codes` (:mod:`sae.codes.reader`) reads it;
- :class:`Postings` (:mod:`sae.codes.postings`) is the one in-memory inverted index.
"""

from sae.codes.build import encode_store
from sae.codes.layout import building_codes, codes_attrs, gather_features
from sae.codes.postings import Postings
from sae.codes.reader import SCHEMA_VERSION, STAT_NAMES, Codes

__all__ = [
    "SCHEMA_VERSION",
    "STAT_NAMES",
    "Codes",
    "Postings",
    "building_codes",
    "codes_attrs",
    "encode_store",
    "encode_store_dask",
    "gather_features",
]


def __getattr__(name: str):
    if name == "encode_store_dask":  # lazy: it imports dask.distributed
        from sae.codes.encode_dask import encode_store_dask

        return encode_store_dask
    raise AttributeError(name)
