"""What a new store looks like on disk: its root attributes, codecs, and where it is built.

New stores record ``integrity = {"all_chunks": true, "checksums": "crc32c" | null}``: every chunk is
written even when it equals the fill value (so a missing chunk always means damage, see
:mod:`sae.store.integrity`) and, unless turned off, every chunk ends in a crc32c checksum (so a flipped
bit is an error, not a wrong number). ``fingerprint_scheme`` 2 means each committed batch's digest
covers its metadata and previews as well as its ids and embeddings (see :mod:`sae.store.digest`).
Stores written before either attribute existed keep working, with the older guarantees.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.core.array_spec import ArrayConfigParams

from sae.errors import StoreError
from sae.store.digest import FINGERPRINT_SCHEME, initial_fingerprint
from sae.store.location import is_local, local_path, partial_path, remove_stale_partials
from sae.store.schema import SCHEMA_VERSION

WRITE_CONFIG: ArrayConfigParams = {"write_empty_chunks": True}
"""Runtime config of every array write: chunks equal to the fill value are stored too."""


def now() -> str:
    """UTC time to the second, ISO 8601 (``created`` / ``modified`` attributes)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def build_location(url: str, overwrite: bool) -> tuple[str, Path | None]:
    """Where to build a new store, and the local path to rename it to (None for remote URLs, built in place)."""
    if is_local(url):
        final_path = local_path(url).absolute()
        if final_path.exists() and not overwrite:
            raise StoreError(f"{final_path} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
        remove_stale_partials(final_path)
        final_path.parent.mkdir(parents=True, exist_ok=True)
        return str(partial_path(final_path)), final_path
    if not overwrite and exists(url):
        raise StoreError(f"{url} already exists; pass overwrite=True to replace it")
    return url, None


def exists(url: str) -> bool:
    """Whether a Zarr v3 group opens at ``url``."""
    try:
        zarr.open_group(url, mode="r", zarr_format=3)
        return True
    except Exception:
        return False


def initial_attrs(dim: int, dtype: str, chunk_rows: int, encoder: dict | str | None, provenance: dict | None,
                  checksums: bool) -> dict[str, Any]:
    """Root attributes of an empty, not yet complete store; the fingerprint starts from ``dim`` and ``dtype``."""
    enc = {"name": encoder} if isinstance(encoder, str) else (encoder or {"name": "unknown"})
    return {
        "sae_workbench": "store",
        "schema_version": SCHEMA_VERSION,
        "complete": False,
        "n_rows": 0,
        "dim": int(dim),
        "dtype": dtype,
        "chunk_rows": chunk_rows,
        "columns": {},
        "encoder": enc,
        "provenance": {"created": now(), **(provenance or {})},
        "fingerprint": initial_fingerprint(dim, dtype),
        "fingerprint_scheme": FINGERPRINT_SCHEME,
        "integrity": {"all_chunks": True, "checksums": "crc32c" if checksums else None},
    }


def checksummed(attrs: Mapping[str, Any]) -> bool:
    """Whether this store's arrays end their chunks in a crc32c checksum."""
    integrity = attrs.get("integrity")
    return isinstance(integrity, dict) and integrity.get("checksums") == "crc32c"


def embedding_compressors(name: str | None, checksums: bool) -> Any:
    """The embeddings' codecs: nothing (fastest streaming) or zstd level 3, then the checksum when on."""
    if name is None or name == "none":
        codecs: tuple[Any, ...] = ()
    elif name == "zstd":
        codecs = (ZstdCodec(level=3),)
    else:
        raise StoreError(f"unknown compressor {name!r}; use None or 'zstd'")
    codecs += (Crc32cCodec(),) if checksums else ()
    return codecs or None


def array_compressors(attrs: Mapping[str, Any]) -> Any:
    """Codecs of ids, metadata and previews: zarr's default zstd, then the checksum in checksummed stores."""
    return (ZstdCodec(), Crc32cCodec()) if checksummed(attrs) else "auto"
