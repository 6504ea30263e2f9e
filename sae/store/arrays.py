"""Lookups of the arrays in a store's Zarr group, shared by the read path and the write path.

Previews and metadata arrays are optional members, so both sides need the same "is it there" lookup
and the same list of row-aligned arrays (the ones that grow with every append and are trimmed back
to ``n_rows`` after an interrupted one).
"""

from __future__ import annotations

import zarr

from sae import _zarr
from sae.store.schema import EMBEDDINGS, IDS, META, PREVIEW_IMAGES, PREVIEW_TEXT


def member(group: zarr.Group, name: str) -> zarr.Array | zarr.Group | None:
    """The array or subgroup at ``name``, or None when the store does not hold it."""
    try:
        return group[name]
    except KeyError:
        return None


def row_arrays(group: zarr.Group) -> list[str]:
    """Paths of every array with one entry per row: embeddings, ids, declared metadata, present previews."""
    names = [EMBEDDINGS, IDS]
    names += [f"{META}/{c}" for c in _zarr.attrs(group).get("columns", {})]
    names += [p for p in (PREVIEW_IMAGES, PREVIEW_TEXT) if member(group, p) is not None]
    return names


def drop_orphan_meta(group: zarr.Group, expected: set[str]) -> None:
    """Remove metadata arrays left by an interrupted first append that never committed."""
    meta = _zarr.group_or_none(group, META)
    if meta is None:
        return
    for name in list(meta.array_keys()):
        if name not in expected:
            del meta[name]
