"""Where a store lives: local folders (atomic create by rename) or any fsspec URL zarr accepts."""

from __future__ import annotations

import os
from pathlib import Path

from sae._io import partial_path, remove_stale_partials, replace_dir

__all__ = ["is_local", "local_path", "partial_path", "remove_stale_partials", "replace_dir"]


def is_local(url: str | os.PathLike) -> bool:
    """True for plain paths and ``file://`` URLs, where atomic rename is available."""
    text = os.fspath(url)
    return "://" not in text or text.startswith("file://")


def local_path(url: str | os.PathLike) -> Path:
    """The filesystem path of a local URL."""
    text = os.fspath(url)
    return Path(text[len("file://"):] if text.startswith("file://") else text)
