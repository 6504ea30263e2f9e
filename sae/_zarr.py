"""Typed lookups into Zarr v3 groups, shared by the store and the codes.

zarr types a group member as ``Array | Group`` and every attribute as JSON; our schemas fix which
paths are arrays and what shape each attribute has, so these helpers state that once.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import zarr
from zarr.storage import LocalStore

from sae.errors import SaeError


def attrs(node: zarr.Group | zarr.Array) -> Mapping[str, Any]:
    """A node's attributes for reading (the live mapping, not a copy); the schema gives each value its type."""
    return node.attrs


def array(group: zarr.Group, name: str) -> zarr.Array:
    """The array at ``name`` (a KeyError when absent, as ``group[name]``); a subgroup there is refused."""
    node = group[name]
    if not isinstance(node, zarr.Array):
        raise SaeError(f"{name!r} is a Zarr group where an array belongs")
    return node


def local_root(group: zarr.Group) -> Path:
    """The folder of a group opened from a local path."""
    store = group.store
    if not isinstance(store, LocalStore):
        raise SaeError(f"expected a group on a local folder, got {type(store).__name__}")
    return store.root


def array_or_none(group: zarr.Group, name: str) -> zarr.Array | None:
    """The array at ``name``, or None when the group does not hold it; a subgroup there is refused."""
    try:
        return array(group, name)
    except KeyError:
        return None


def group_or_none(group: zarr.Group, name: str) -> zarr.Group | None:
    """The subgroup at ``name``, or None when the group does not hold it; an array there is refused."""
    try:
        node = group[name]
    except KeyError:
        return None
    if not isinstance(node, zarr.Group):
        raise SaeError(f"{name!r} is a Zarr array where a group belongs")
    return node
