"""The write path of :class:`~sae.store.store.Store`: create, append, transactions, commit, rollback.

Appended rows are written into the arrays first and become visible only when :meth:`StoreWriter._commit`
writes ``n_rows`` and ``fingerprint`` in one root-attribute update, so a reader never sees a
half-appended batch; the extra physical rows an interrupted append leaves are trimmed by the next
append. A new local store is built in a hidden sibling folder and renamed into place when the
``with Store.create(...)`` block exits, so an interrupted create leaves nothing that opens.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import os
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import pandas as pd
import zarr
from zarr.codecs import ZstdCodec

from sae import _zarr
from sae.errors import MetadataError, StoreError
from sae.store.arrays import row_arrays
from sae.store.location import is_local, local_path, partial_path, remove_stale_partials, replace_dir
from sae.store.schema import (
    EMBEDDING_DTYPES,
    EMBEDDINGS,
    IDS,
    META,
    PREVIEW_IMAGES,
    PREVIEW_TEXT,
    SCHEMA_VERSION,
    default_chunk_rows,
    stored_dtype,
)
from sae.store.validate import Batch, check_same_columns, validate_batch

_MAX_RECORDED_DROPS = 1000
"""At most this many dropped non-finite ids are listed in the provenance (the count is always exact)."""


class StoreWriter:
    """Mixin holding the write path and the uncommitted state of :class:`~sae.store.store.Store`.

    Pending rows (written but not yet committed), their content digests and the ids dropped for
    non-finite embeddings live here until :meth:`_commit` publishes them or :meth:`_rollback` forgets
    them. The reading side (``n_rows``, ``columns``, ``fingerprint`` ...) comes from ``Store``.
    """

    if TYPE_CHECKING:  # provided by Store, the reading side

        url: str
        _group: zarr.Group
        _ids_cache: np.ndarray | None

        def __init__(self, url: str, group: zarr.Group, *, writable: bool, final_path: Path | None = None) -> None: ...

        @property
        def n_rows(self) -> int: ...

        @property
        def dim(self) -> int: ...

        @property
        def dtype(self) -> str: ...

        @property
        def chunk_rows(self) -> int: ...

        @property
        def fingerprint(self) -> str: ...

        @property
        def columns(self) -> dict[str, str]: ...

        @property
        def provenance(self) -> dict: ...

    def _init_write_state(self, *, writable: bool, final_path: Path | None) -> None:
        """Start with nothing pending; ``final_path`` is set while a local store is built in a partial folder."""
        self._writable = writable
        self._final_path = final_path
        self._creating = False
        self._txn_depth = 0
        self._pending_rows = 0
        self._pending_digests: list[bytes] = []
        self._pending_drops: list[str] = []
        self._id_set: set[str] | None = None

    # ------------------------------------------------------------------ create
    @classmethod
    def create(
        cls,
        url: str | os.PathLike,
        dim: int,
        *,
        dtype: str = "float32",
        encoder: dict | str | None = None,
        provenance: dict | None = None,
        chunk_rows: int | None = None,
        compressor: str | None = None,
        overwrite: bool = False,
    ) -> Self:
        """Start a new store; use as ``with Store.create(...) as store: store.append(...)``.

        Nothing is visible at ``url`` until the ``with`` block exits cleanly. ``compressor`` is
        ``None`` (fastest streaming) or ``"zstd"`` for the embeddings; other arrays always use zstd.
        """
        url = os.fspath(url)
        if dtype not in EMBEDDING_DTYPES:
            raise StoreError(f"embedding dtype must be one of {EMBEDDING_DTYPES}, got {dtype!r}")
        if int(dim) <= 0:
            raise StoreError(f"embedding dimension must be positive, got {dim}")
        chunk_rows = int(chunk_rows or default_chunk_rows(dim, dtype))
        build_at, final_path = _build_location(url, overwrite)
        group = zarr.open_group(build_at, mode="w", zarr_format=3)
        group.attrs.update(_initial_attrs(dim, dtype, chunk_rows, encoder, provenance))
        compressors = _compressors(compressor)
        group.create_array(EMBEDDINGS, shape=(0, dim), chunks=(chunk_rows, dim), dtype=dtype, compressors=compressors)
        group.create_array(IDS, shape=(0,), chunks=(chunk_rows,), dtype=str)
        store = cls(url, group, writable=True, final_path=final_path)
        store._creating = True
        return store

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        """Closing a create block publishes the store on success and discards it on an exception."""
        if self._creating:
            if exc_type is None:
                self._finish_create()
            else:
                self._abort_create()

    def _finish_create(self) -> None:
        """Commit, mark complete, then (local stores) rename the partial folder into place."""
        self._commit()
        self._group.attrs.update({"complete": True})
        self._creating = False
        if self._final_path is not None:
            built = local_path(_zarr.local_root(self._group))
            replace_dir(built, self._final_path)
            self._group = zarr.open_group(str(self._final_path), mode="r+", zarr_format=3)
            self._final_path = None

    def _abort_create(self) -> None:
        """Forget a failed create; a local partial folder is removed (a remote URL keeps the incomplete group)."""
        self._creating = False
        if self._final_path is not None:
            shutil.rmtree(local_path(_zarr.local_root(self._group)), ignore_errors=True)

    # ------------------------------------------------------------------ append
    @contextlib.contextmanager
    def transaction(self) -> Iterator[Self]:
        """Group several appends into one commit: readers see all of them or none."""
        self._require_writable()
        self._txn_depth += 1
        try:
            yield self
        except BaseException:
            self._txn_depth -= 1
            if self._txn_depth == 0:
                self._rollback()
            raise
        self._txn_depth -= 1
        if self._txn_depth == 0 and not self._creating:
            self._commit()

    def append(
        self,
        embeddings: np.ndarray,
        ids: Sequence[str] | None = None,
        meta: pd.DataFrame | None = None,
        *,
        images: np.ndarray | None = None,
        texts: Sequence[str] | None = None,
        drop_nonfinite: bool = False,
    ) -> int:
        """Validate and append rows; returns how many were written (after any dropped non-finite rows).

        Outside :meth:`transaction` (and outside a create block) the rows are committed at once.
        """
        self._require_writable()
        batch = validate_batch(
            embeddings,
            ids,
            meta,
            images,
            texts,
            dim=self.dim,
            dtype=self.dtype,
            start_row=self.n_rows + self._pending_rows,
            existing_ids=self.existing_ids,
            drop_nonfinite=drop_nonfinite,
        )
        if batch.n:
            self._write_batch(batch)
        if self._txn_depth == 0 and not self._creating:
            self._commit()
        return batch.n

    def _require_writable(self) -> None:
        """Refuse writes through a store opened read-only."""
        if not self._writable:
            raise StoreError(f"{self.url} is open read-only; use Store.open(url, mode='a') to append")

    def existing_ids(self) -> set[str]:
        """Committed plus pending ids, for duplicate checks (built once, then kept up to date)."""
        if self._id_set is None:
            total = self.n_rows + self._pending_rows
            self._id_set = set(np.asarray(_zarr.array(self._group, IDS)[:total], dtype=object).tolist())
        return self._id_set

    def _write_batch(self, batch: Batch) -> None:
        """Write a validated batch after the pending rows; it stays invisible until :meth:`_commit`."""
        start = self.n_rows + self._pending_rows
        stop = start + batch.n
        if self._pending_rows == 0:  # first write since the last commit
            self._trim_to_committed()
        self._ensure_layout(batch)
        with ThreadPoolExecutor(max_workers=1) as pool:
            digest = pool.submit(_batch_digest, batch)  # overlaps with the writes below
            for name, values in batch.arrays().items():
                arr = _zarr.array(self._group, name)
                arr.resize((stop, *arr.shape[1:]))
                arr[start:stop] = values
            self._pending_digests.append(digest.result())
        self._pending_rows += batch.n
        self._pending_drops.extend(batch.dropped)
        self.existing_ids().update(batch.ids.tolist())
        self._ids_cache = None

    def _trim_to_committed(self) -> None:
        """Cut arrays back to the committed length (left over from an interrupted append)."""
        n = self.n_rows
        for name in row_arrays(self._group):
            arr = _zarr.array(self._group, name)
            if arr.shape[0] != n:
                arr.resize((n, *arr.shape[1:]))

    # ------------------------------------------------------------------ layout
    def _ensure_layout(self, batch: Batch) -> None:
        """Create metadata / preview arrays on the first batch; later batches must match them."""
        committed = self.columns
        if self.n_rows + self._pending_rows == 0 and not committed:
            _drop_orphans(self._group, expected=set(batch.kinds))
            for name, kind in batch.kinds.items():
                self._group.create_array(f"{META}/{name}", shape=(0,), chunks=(self.chunk_rows,), dtype=stored_dtype(kind))
            self._group.attrs.update({"columns": batch.kinds, "_pending_columns": True})
        else:
            check_same_columns(committed, batch.kinds)
        for name in (PREVIEW_IMAGES, PREVIEW_TEXT):
            self._ensure_preview(name, batch.preview(name))

    def _ensure_preview(self, name: str, values: np.ndarray | None) -> None:
        """Create a preview array with the first batch that has previews; refuse them appearing or vanishing later."""
        existing = _zarr.array_or_none(self._group, name)
        has_rows = self.n_rows + self._pending_rows > 0
        declared = name in _zarr.attrs(self._group).get("previews", [])
        if values is None:
            if declared and has_rows:
                raise MetadataError(f"this store has {name}; every appended batch must provide them too")
            return
        if has_rows and not declared:
            raise MetadataError(f"this store has no {name}; they must be given from the first batch on")
        if existing is None:
            if name == PREVIEW_IMAGES:
                chunks = (min(self.chunk_rows, 1024), *values.shape[1:])
                self._group.create_array(name, shape=(0, *values.shape[1:]), chunks=chunks, dtype="uint8")
            else:
                self._group.create_array(name, shape=(0,), chunks=(self.chunk_rows,), dtype=str)
            self._group.attrs.update({"previews": sorted({*_zarr.attrs(self._group).get("previews", []), name})})
        elif values.shape[1:] != existing.shape[1:]:
            raise MetadataError(f"{name} have shape {existing.shape[1:]} in the store, got {values.shape[1:]}")

    # ------------------------------------------------------------------ commit / rollback
    def _commit(self) -> None:
        """Publish pending rows with one attribute write (the atomic step)."""
        if not self._pending_rows and not self._pending_drops and not self._group.attrs.get("_pending_columns"):
            return
        fp = self.fingerprint
        for digest in self._pending_digests:
            fp = hashlib.blake2b(bytes.fromhex(fp) + digest, digest_size=16).hexdigest()
        update: dict[str, Any] = {"n_rows": self.n_rows + self._pending_rows, "fingerprint": fp, "_pending_columns": False}
        if self._pending_drops:
            prov = self.provenance
            dropped = prov.get("dropped_nonfinite", {"count": 0, "ids": []})
            dropped["count"] += len(self._pending_drops)
            dropped["ids"] = (dropped["ids"] + self._pending_drops)[:_MAX_RECORDED_DROPS]
            prov["dropped_nonfinite"] = dropped
            update["provenance"] = prov
        if self._pending_rows:
            update["modified"] = _now()
        self._group.attrs.update(update)
        self._pending_rows, self._pending_digests, self._pending_drops = 0, [], []

    def _rollback(self) -> None:
        """Forget pending rows (their bytes stay in the arrays, beyond ``n_rows``, until the next append trims them)."""
        self._pending_rows, self._pending_digests, self._pending_drops = 0, [], []
        self._id_set = None
        self._ids_cache = None

    def update_provenance(self, **entries: Any) -> None:
        """Merge entries into the provenance attribute (e.g. the importer's source)."""
        self._require_writable()
        self._group.attrs.update({"provenance": {**self.provenance, **entries}})


# ---------------------------------------------------------------------- helpers
def _now() -> str:
    """UTC time to the second, ISO 8601 (``created`` / ``modified`` attributes)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _build_location(url: str, overwrite: bool) -> tuple[str, Path | None]:
    """Where to build a new store, and the local path to rename it to (None for remote URLs, built in place)."""
    if is_local(url):
        final_path = local_path(url).absolute()
        if final_path.exists() and not overwrite:
            raise StoreError(f"{final_path} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
        remove_stale_partials(final_path)
        final_path.parent.mkdir(parents=True, exist_ok=True)
        return str(partial_path(final_path)), final_path
    if not overwrite and _exists(url):
        raise StoreError(f"{url} already exists; pass overwrite=True to replace it")
    return url, None


def _initial_attrs(dim: int, dtype: str, chunk_rows: int, encoder: dict | str | None, provenance: dict | None) -> dict[str, Any]:
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
        "provenance": {"created": _now(), **(provenance or {})},
        "fingerprint": hashlib.blake2b(f"{dim}:{dtype}".encode(), digest_size=16).hexdigest(),
    }


def _exists(url: str) -> bool:
    """Whether a Zarr v3 group opens at ``url``."""
    try:
        zarr.open_group(url, mode="r", zarr_format=3)
        return True
    except Exception:
        return False


def _compressors(name: str | None) -> ZstdCodec | None:
    """The embeddings' compressor: None (fastest streaming) or zstd level 3."""
    if name is None or name == "none":
        return None
    if name == "zstd":
        return ZstdCodec(level=3)
    raise StoreError(f"unknown compressor {name!r}; use None or 'zstd'")


def _drop_orphans(group: zarr.Group, expected: set[str]) -> None:
    """Remove metadata arrays left by an interrupted first append that never committed."""
    meta = _zarr.group_or_none(group, META)
    if meta is None:
        return
    for name in list(meta.array_keys()):
        if name not in expected:
            del meta[name]


def _batch_digest(batch: Batch) -> bytes:
    """Hash of one batch's ids and embedding bytes; commits chain these into the fingerprint.

    Runs in a worker thread while the batch is written (hashlib releases the GIL on large buffers).
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update("\x00".join(batch.ids.tolist()).encode())
    digest.update(batch.embeddings.data)
    return digest.digest()
