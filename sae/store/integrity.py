"""Nothing read from a store is silently wrong: damaged attributes, missing chunks and corrupt chunks are errors.

- :func:`check_root_attrs` refuses a root ``zarr.json`` whose attributes are not what this version
  wrote (a ``schema_version`` that is not a whole number, ``n_rows`` that is not a count, ...).
- :class:`ChunkIndex` lists each row-aligned array's chunk keys once per committed length and names
  every chunk that should exist for ``n_rows`` but does not (zarr would read it as fill values:
  zero embeddings, empty ids). Stores written since the ``integrity`` attribute exists write every
  chunk, fill-valued or not, so a missing chunk always means damage; in older stores only the ``ids``
  chunks are held to that (a chunk of ids is never all empty strings).
- :func:`reading` turns a chunk that fails to decode (a crc32c mismatch in checksummed stores, a
  truncated or garbled file in any) into :class:`CorruptChunkError` naming the array and chunk.
- :func:`disk_errors` turns an ``OSError`` while writing (a full disk above all) into a
  :class:`~sae.errors.StoreError` that says so; the write path guarantees the store is as before.
- :func:`remove_partial_files` deletes the ``*.partial`` temporaries zarr leaves when a writer is
  killed mid-chunk (called only while holding the store's write lock).
"""

from __future__ import annotations

import errno
import itertools
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
import zarr
from zarr.core.sync import sync

from sae import _zarr
from sae.errors import IncompleteStoreError, SaeError, SchemaVersionError, StoreError
from sae.store.arrays import member
from sae.store.schema import COLUMN_KINDS, EMBEDDING_DTYPES, IDS, SCHEMA_VERSION

REPAIR = "the store is damaged: ingest it again (or restore it from a backup)"


class CorruptChunkError(StoreError):
    """A stored chunk cannot be decoded or fails its checksum; ``problem`` says which, without the advice."""

    def __init__(self, message: str, problem: str = "") -> None:
        super().__init__(message)
        self.problem = problem or message


# ---------------------------------------------------------------------- root attributes
def _count(value: Any) -> TypeGuard[int]:
    """A JSON whole number (not a bool, not a float such as 1.0)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_root_attrs(url: str, attrs: Mapping[str, Any]) -> None:
    """Refuse attributes this version did not write: a bad schema version, an unfinished create, bad sizes."""
    if attrs.get("sae_workbench") != "store":
        raise StoreError(f"{url} is a Zarr group but not an sae-workbench store (no 'sae_workbench' attribute)")
    version = attrs.get("schema_version")
    if not _count(version) or version < 1:
        raise StoreError(f"{url} has an invalid schema_version {version!r} in its zarr.json (a whole number from 1 "
                         f"to {SCHEMA_VERSION} is expected); {REPAIR}")
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{url} has schema_version {version}, newer than this sae-workbench understands "
            f"({SCHEMA_VERSION}); upgrade with `pip install -U sae-workbench`"
        )
    if not attrs.get("complete", False):
        raise IncompleteStoreError(f"{url} was never completed (an interrupted create); delete it and ingest again")
    bad = _bad_attrs(attrs)
    if bad:
        raise StoreError(f"{url} has invalid attributes in its zarr.json: {'; '.join(bad)}; {REPAIR}")


def _bad_attrs(attrs: Mapping[str, Any]) -> list[str]:
    """What is wrong with the size, dtype and column attributes (empty when they are sound)."""
    bad = []
    for key, least in (("n_rows", 0), ("dim", 1), ("chunk_rows", 1)):
        value = attrs.get(key)
        if not _count(value) or value < least:
            bad.append(f"{key} is {value!r}, expected a whole number >= {least}")
    if attrs.get("dtype") not in EMBEDDING_DTYPES:
        bad.append(f"dtype is {attrs.get('dtype')!r}, expected one of {EMBEDDING_DTYPES}")
    if not isinstance(attrs.get("fingerprint"), str):
        bad.append(f"fingerprint is {attrs.get('fingerprint')!r}, expected a hex string")
    columns = attrs.get("columns", {})
    if not isinstance(columns, dict) or any(kind not in COLUMN_KINDS for kind in columns.values()):
        bad.append(f"columns is {columns!r}, expected a mapping of column name to one of {COLUMN_KINDS}")
    return bad


def strict_chunks(attrs: Mapping[str, Any]) -> bool:
    """Whether every chunk of every array was written (stores with the ``integrity`` attribute)."""
    integrity = attrs.get("integrity")
    return isinstance(integrity, dict) and bool(integrity.get("all_chunks"))


# ---------------------------------------------------------------------- missing chunks
def _chunk_keys(arr: zarr.Array) -> set[str]:
    """Keys of the chunks stored for ``arr``, relative to the array (one listing)."""
    prefix = arr.store_path.path.rstrip("/") + "/"

    async def collect() -> list[str]:
        """Every key under the array's prefix."""
        return [key async for key in arr.store_path.store.list_prefix(prefix)]

    return {key[len(prefix):] if key.startswith(prefix) else key for key in sync(collect())}


def missing_chunks(arr: zarr.Array, n_rows: int) -> list[int]:
    """Row-chunk numbers below ``n_rows`` with at least one chunk key absent from storage."""
    step = arr.chunks[0]
    n_row_chunks = math.ceil(n_rows / step) if n_rows else 0
    if n_row_chunks == 0:
        return []
    present = _chunk_keys(arr)
    others = [range(math.ceil(s / c)) for s, c in zip(arr.shape[1:], arr.chunks[1:], strict=True)]
    missing = []
    for i in range(n_row_chunks):
        if any(arr.metadata.encode_chunk_key((i, *rest)) not in present for rest in itertools.product(*others)):
            missing.append(i)
    return missing


def chunk_rows_text(i: int, step: int, n_rows: int) -> str:
    """``chunk 3 (rows 192-255)``: a chunk and the committed rows it holds."""
    return f"chunk {i} (rows {i * step}-{min((i + 1) * step, n_rows) - 1})"


class ChunkIndex:
    """Problems of each row-aligned array (too short, chunks missing), found once per committed length."""

    def __init__(self) -> None:
        self._problems: dict[tuple[str, int], list[str]] = {}

    def clear(self) -> None:
        """Forget every listing (after a write, or after re-opening the group)."""
        self._problems.clear()

    def problems(self, group: zarr.Group, name: str, n_rows: int) -> list[str]:
        """What is wrong with array ``name`` for ``n_rows`` committed rows (cached; empty when sound)."""
        key = (name, n_rows)
        if key not in self._problems:
            self._problems[key] = _array_problems(group, name, n_rows)
        return self._problems[key]

    def require(self, url: str, group: zarr.Group, name: str, n_rows: int) -> None:
        """Raise :class:`~sae.errors.IncompleteStoreError` naming what is missing from array ``name``."""
        problems = self.problems(group, name, n_rows)
        if problems:
            raise IncompleteStoreError(f"{url}: {'; '.join(problems)}; {REPAIR}")


def _array_problems(group: zarr.Group, name: str, n_rows: int) -> list[str]:
    """Shape and chunk problems of one array (see :class:`ChunkIndex`)."""
    arr = member(group, name)
    if not isinstance(arr, zarr.Array):
        return [f"array {name} is missing"]
    if arr.shape[0] < n_rows:
        return [f"{name} holds {arr.shape[0]} rows but the store says n_rows={n_rows}"]
    if not strict_chunks(_zarr.attrs(group)) and name != IDS:
        return []
    missing = missing_chunks(arr, n_rows)
    if not missing:
        return []
    shown = ", ".join(chunk_rows_text(i, arr.chunks[0], n_rows) for i in missing[:3])
    more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
    return [f"{name} is missing {shown}{more} (of {math.ceil(n_rows / arr.chunks[0])} chunks)"]


# ---------------------------------------------------------------------- corrupt chunks
def _chunks_of(rows: slice | np.ndarray, step: int) -> list[int]:
    """Row-chunk numbers a selection touches, in order."""
    if isinstance(rows, slice):
        start, stop = rows.start or 0, rows.stop or 0
        return list(range(start // step, math.ceil(stop / step))) if stop > start else []
    return sorted({int(r) // step for r in np.asarray(rows).reshape(-1).tolist()})


def first_bad_chunk(arr: zarr.Array, rows: slice | np.ndarray) -> tuple[int, Exception] | None:
    """The first chunk of the selection that fails to decode, with its error (None when all decode)."""
    step = arr.chunks[0]
    for i in _chunks_of(rows, step):
        try:
            arr[i * step : (i + 1) * step]  # decodes the whole chunk
        except (SaeError, MemoryError):
            raise
        except Exception as exc:
            return i, exc
    return None


def corrupt_problem(name: str, i: int, step: int, n_rows: int, exc: BaseException) -> str:
    """``<name> chunk i (rows a-b) is corrupt: <why>``."""
    why = ("its crc32c checksum does not match (the bytes on disk changed)" if "checksum" in str(exc).lower()
           else f"it cannot be decoded ({type(exc).__name__}: {exc})")
    return f"{name} {chunk_rows_text(i, step, n_rows)} is corrupt: {why}"


@contextmanager
def reading(url: str, arr: zarr.Array, name: str, rows: slice | np.ndarray, n_rows: int) -> Iterator[None]:
    """Turn a failed decode inside the block into :class:`CorruptChunkError` naming the first bad chunk."""
    try:
        yield
    except (SaeError, MemoryError):
        raise
    except Exception as exc:
        found = first_bad_chunk(arr, rows)
        if found is None:  # every chunk decodes on its own: not a damaged chunk, keep the original error
            raise
        problem = corrupt_problem(name, found[0], arr.chunks[0], n_rows, found[1])
        raise CorruptChunkError(f"{url}: {problem}; {REPAIR}", problem) from exc


def scan_chunks(group: zarr.Group, name: str, n_rows: int) -> list[str]:
    """Decode every committed chunk of one array (``validate(deep=True)``); one line per corrupt chunk."""
    arr = _zarr.array(group, name)
    step, problems = arr.chunks[0], []
    for i in range(math.ceil(n_rows / step) if n_rows else 0):
        found = first_bad_chunk(arr, slice(i * step, min((i + 1) * step, n_rows)))
        if found is not None:
            problems.append(corrupt_problem(name, i, step, n_rows, found[1]))
    return problems


# ---------------------------------------------------------------------- writing
@contextmanager
def disk_errors(url: str) -> Iterator[None]:
    """Turn an ``OSError`` while writing ``url`` into a StoreError; a full disk is named as such."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            what = "the disk is full" if exc.errno == errno.ENOSPC else "the disk quota is exceeded"
            raise StoreError(f"{what} while writing {url} ({exc.filename or exc}); nothing was committed and the store "
                             "is as it was before: free some space and run the command again") from exc
        raise StoreError(f"cannot write {url}: {exc.strerror or exc} ({exc.filename or type(exc).__name__}); "
                         "nothing was committed and the store is as it was before") from exc


def remove_partial_files(root: Path) -> int:
    """Delete ``*.partial`` files zarr left inside a local store when a writer died mid-write; returns how many."""
    removed = 0
    for leftover in root.rglob("*.partial"):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)
            removed += 1
    return removed
