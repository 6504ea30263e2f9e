"""The write path of :class:`~sae.store.store.Store`: create, append, transactions, commit, rollback.

Appended rows are written into the arrays first and become visible only when :meth:`StoreWriter._commit`
writes ``n_rows`` and ``fingerprint`` in one root-attribute update, so a reader never sees a
half-appended batch; the extra physical rows an interrupted append leaves are trimmed by the next
append. A new local store is built in a hidden sibling folder and renamed into place when the
``with Store.create(...)`` block exits, so an interrupted create leaves nothing that opens (the
importers refuse a source without rows inside that block, so it never replaces an old store).

Every write holds the store's :class:`~sae.store.locking.WriteLock`: a create from ``Store.create``
to the end of its block, an append transaction from start to commit, an attribute rewrite for its
write. A second writer is refused at once with :class:`~sae.errors.LockedError`; a writer that takes
the lock first re-reads the committed state (another process may have appended since it opened) and
removes the ``*.partial`` files a killed writer left. An ``OSError`` while writing (a full disk) is a
:class:`~sae.errors.StoreError` saying so, after the pending rows were rolled back.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import pandas as pd
import zarr

from sae import _zarr
from sae.errors import MetadataError, StoreError
from sae.store.arrays import drop_orphan_meta, row_arrays
from sae.store.digest import batch_digest, chain
from sae.store.integrity import ChunkIndex, check_root_attrs, disk_errors, remove_partial_files
from sae.store.layout import WRITE_CONFIG, array_compressors, build_location, embedding_compressors, initial_attrs, now
from sae.store.location import is_local, local_path, replace_dir
from sae.store.locking import WriteLock
from sae.store.schema import EMBEDDING_DTYPES, EMBEDDINGS, IDS, META, PREVIEW_IMAGES, PREVIEW_TEXT, default_chunk_rows, stored_dtype
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
        _chunks: ChunkIndex
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
        self._pending_provenance: dict[str, Any] = {}
        self._id_set: set[str] | None = None
        self._lock = WriteLock(self.url, local_path(self.url).absolute() if is_local(self.url) else None)

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
        checksums: bool = True,
    ) -> Self:
        """Start a new store; use as ``with Store.create(...) as store: store.append(...)``.

        Nothing is visible at ``url`` until the ``with`` block exits cleanly. ``compressor`` is
        ``None`` (fastest streaming) or ``"zstd"`` for the embeddings; other arrays always use zstd.
        ``checksums`` ends every chunk in a crc32c checksum, so a damaged chunk is an error on read.
        The store's write lock is held from here to the end of the block (another writer: LockedError).
        """
        url = os.fspath(url)
        if dtype not in EMBEDDING_DTYPES:
            raise StoreError(f"embedding dtype must be one of {EMBEDDING_DTYPES}, got {dtype!r}")
        if int(dim) <= 0:
            raise StoreError(f"embedding dimension must be positive, got {dim}")
        chunk_rows = int(chunk_rows or default_chunk_rows(dim, dtype))
        compressors = embedding_compressors(compressor, checksums)
        lock = WriteLock(url, local_path(url).absolute() if is_local(url) else None)
        lock.acquire()
        build_at, final_path = None, None
        try:
            with disk_errors(url):
                build_at, final_path = build_location(url, overwrite)
                group = zarr.open_group(build_at, mode="w", zarr_format=3)
                group.attrs.update(initial_attrs(dim, dtype, chunk_rows, encoder, provenance, checksums))
                group.create_array(EMBEDDINGS, shape=(0, dim), chunks=(chunk_rows, dim), dtype=dtype, compressors=compressors)
                group.create_array(IDS, shape=(0,), chunks=(chunk_rows,), dtype=str, compressors=array_compressors(group.attrs))
        except BaseException:
            if build_at is not None and final_path is not None:
                shutil.rmtree(local_path(build_at), ignore_errors=True)
            lock.release()
            raise
        store = cls(url, group, writable=True, final_path=final_path)
        store._lock, store._creating = lock, True
        return store

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        """Closing a create block publishes the store on success and discards it on an exception; the lock goes."""
        if not self._creating:
            return
        try:
            if exc_type is None:
                self._finish_create()
            else:
                self._abort_create()
        except BaseException:
            self._abort_create()
            raise
        finally:
            self._lock.release()

    def _finish_create(self) -> None:
        """Commit, mark complete, then (local stores) rename the partial folder into place."""
        with disk_errors(self.url):
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

    # ------------------------------------------------------------------ lock
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the write lock for the block; the outermost hold outside a create re-reads the committed state."""
        if self._lock.acquire():
            try:
                if not self._creating:
                    self._refresh()
            except BaseException:
                self._lock.release()
                raise
        try:
            yield
        finally:
            self._lock.release()

    def _refresh(self) -> None:
        """Re-open the group (another writer may have committed since), forget caches, remove dead writers' temporaries."""
        try:
            group = zarr.open_group(self.url, mode="r+", zarr_format=3)
        except Exception as exc:
            raise StoreError(f"{self.url} cannot be opened for writing any more: {exc}") from exc
        check_root_attrs(self.url, group.attrs.asdict())
        self._group, self._id_set, self._ids_cache = group, None, None
        self._chunks.clear()
        if is_local(self.url):
            remove_partial_files(local_path(self.url))

    # ------------------------------------------------------------------ append
    @contextlib.contextmanager
    def transaction(self) -> Iterator[Self]:
        """Group several appends into one commit: readers see all of them or none; the write lock is held throughout."""
        self._require_writable()
        with self._locked():
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
                try:
                    self._commit()
                except BaseException:
                    self._rollback()
                    raise

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

        Outside :meth:`transaction` (and outside a create block) the rows are committed at once, as a
        transaction of their own (the write lock is held for it).
        """
        self._require_writable()
        if self._txn_depth == 0 and not self._creating:
            with self.transaction():
                return self.append(embeddings, ids, meta, images=images, texts=texts, drop_nonfinite=drop_nonfinite)
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
            with disk_errors(self.url):
                self._write_batch(batch)
        self._pending_drops.extend(batch.dropped)
        return batch.n

    def _require_writable(self) -> None:
        """Refuse writes through a store opened read-only."""
        if not self._writable:
            raise StoreError(f"{self.url} is open read-only; use Store.open(url, mode='a') to append")

    def existing_ids(self) -> set[str]:
        """Committed plus pending ids, for duplicate checks (built once, then kept up to date)."""
        if self._id_set is None:
            if self.n_rows:
                self._chunks.require(self.url, self._group, IDS, self.n_rows)
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
            digest = pool.submit(batch_digest, batch)  # overlaps with the writes below
            for name, values in batch.arrays().items():
                arr = _zarr.array(self._group, name).with_config(WRITE_CONFIG)
                arr.resize((stop, *arr.shape[1:]))
                arr[start:stop] = values
            self._pending_digests.append(digest.result())
        self._pending_rows += batch.n
        self.existing_ids().update(batch.ids.tolist())
        self._ids_cache = None
        self._chunks.clear()

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
            drop_orphan_meta(self._group, expected=set(batch.kinds))
            for name, kind in batch.kinds.items():
                self._group.create_array(f"{META}/{name}", shape=(0,), chunks=(self.chunk_rows,), dtype=stored_dtype(kind),
                                         compressors=array_compressors(self._group.attrs))
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
            codecs = array_compressors(self._group.attrs)
            if name == PREVIEW_IMAGES:
                chunks = (min(self.chunk_rows, 1024), *values.shape[1:])
                self._group.create_array(name, shape=(0, *values.shape[1:]), chunks=chunks, dtype="uint8", compressors=codecs)
            else:
                self._group.create_array(name, shape=(0,), chunks=(self.chunk_rows,), dtype=str, compressors=codecs)
            self._group.attrs.update({"previews": sorted({*_zarr.attrs(self._group).get("previews", []), name})})
        elif values.shape[1:] != existing.shape[1:]:
            raise MetadataError(f"{name} have shape {existing.shape[1:]} in the store, got {values.shape[1:]}")

    # ------------------------------------------------------------------ commit / rollback
    def _commit(self) -> None:
        """Publish pending rows, drops and provenance entries with one attribute write (the atomic step)."""
        pending = self._pending_rows or self._pending_drops or self._pending_provenance
        if not pending and not self._group.attrs.get("_pending_columns"):
            return
        fp = chain(self.fingerprint, self._pending_digests)
        update: dict[str, Any] = {"n_rows": self.n_rows + self._pending_rows, "fingerprint": fp, "_pending_columns": False}
        prov = {**self.provenance, **self._pending_provenance}
        if self._pending_provenance:
            update["provenance"] = prov
        if self._pending_drops:
            dropped = prov.get("dropped_nonfinite", {"count": 0, "ids": []})
            dropped["count"] += len(self._pending_drops)
            dropped["ids"] = (dropped["ids"] + self._pending_drops)[:_MAX_RECORDED_DROPS]
            prov["dropped_nonfinite"] = dropped
            update["provenance"] = prov
        if self._pending_rows:
            update["modified"] = now()
        with disk_errors(self.url):
            self._group.attrs.update(update)
        self._pending_rows, self._pending_digests, self._pending_drops, self._pending_provenance = 0, [], [], {}
        self._chunks.clear()

    def _rollback(self) -> None:
        """Forget pending rows (their bytes stay in the arrays, beyond ``n_rows``, until the next append trims them)."""
        self._pending_rows, self._pending_digests, self._pending_drops, self._pending_provenance = 0, [], [], {}
        self._id_set = None
        self._ids_cache = None
        self._chunks.clear()

    def update_provenance(self, **entries: Any) -> None:
        """Merge entries into the provenance attribute (e.g. the importer's source).

        Inside a transaction or create block the entries are committed with its rows (and rolled
        back with them); outside one they are written at once, under the write lock.
        """
        self._require_writable()
        if self._txn_depth or self._creating:
            self._pending_provenance.update(entries)
            return
        with self.transaction():
            self._pending_provenance.update(entries)

