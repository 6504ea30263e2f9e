"""The workspace store: embeddings, ids, metadata and previews in one Zarr v3 group.

This module holds :class:`Store` and its read path (open, properties, row / metadata / preview
reads, streaming, summaries). The write path (create, append, transactions, commit) is the
:class:`~sae.store.writer.StoreWriter` mixin and batch validation lives in :mod:`sae.store.validate`.
Readers only ever look at the committed rows (``n_rows``), so they never see a half-appended batch,
and never a damaged one: every read first checks that the array holds every chunk ``n_rows`` needs
(listed once per array, see :mod:`sae.store.integrity`) and names a chunk that fails to decode.
"""

from __future__ import annotations

import html
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Self, overload

import numpy as np
import pandas as pd
import zarr
from numpy.typing import DTypeLike

from sae import _zarr
from sae.errors import SaeError, StoreError, UnknownColumnError, preview_list
from sae.store.arrays import member, row_arrays
from sae.store.integrity import ChunkIndex, CorruptChunkError, check_root_attrs, reading, scan_chunks
from sae.store.location import is_local, local_path
from sae.store.schema import EMBEDDINGS, IDS, META, PREVIEW_IMAGES, PREVIEW_TEXT
from sae.store.stream import READ_BYTES, BatchStream
from sae.store.writer import StoreWriter

Rows = slice | Sequence[int] | np.ndarray | None
"""A row selection: a slice, row numbers (any order, repeats allowed), or None for every committed row."""


class Store(StoreWriter):
    """A workspace store on a local path or any fsspec URL zarr accepts (``memory://``, ``s3://`` ...).

    Create one with :meth:`create` (a context manager that commits on success), open one with
    :meth:`open`. Arrays may physically hold more rows than ``n_rows`` after an interrupted append;
    everything here reads only the committed rows.
    """

    def __init__(self, url: str, group: zarr.Group, *, writable: bool, final_path: Path | None = None) -> None:
        self.url = url
        self._group = group
        self._ids_cache: np.ndarray | None = None
        self._chunks = ChunkIndex()
        self._init_write_state(writable=writable, final_path=final_path)

    @classmethod
    def open(cls, url: str | os.PathLike, mode: str = "r") -> Self:
        """Open a committed store; ``mode="a"`` allows appends. Refuses newer schemas and unfinished creates."""
        url = os.fspath(url)
        if mode not in ("r", "a"):
            raise StoreError(f"mode must be 'r' or 'a', got {mode!r}")
        if is_local(url) and not local_path(url).exists():
            raise StoreError(f"no store at {url}")
        try:
            group = zarr.open_group(url, mode="r" if mode == "r" else "r+", zarr_format=3)
            attrs: dict[str, Any] = group.attrs.asdict()
        except (FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
            raise StoreError(f"no store at {url}: {exc}") from exc
        except SaeError:
            raise
        except Exception as exc:  # unreadable or garbled zarr.json
            raise StoreError(f"{url} cannot be opened: its zarr.json is damaged ({type(exc).__name__}: {exc}); "
                             "ingest it again (or restore it from a backup)") from exc
        check_root_attrs(url, attrs)
        return cls(url, group, writable=(mode == "a"))

    # ------------------------------------------------------------------ properties
    @property
    def attrs(self) -> dict:
        """A copy of all root attributes."""
        return self._group.attrs.asdict()

    @property
    def n_rows(self) -> int:
        """Committed rows (the arrays may physically hold more after an interrupted append)."""
        return int(_zarr.attrs(self._group)["n_rows"])

    def __len__(self) -> int:
        """Committed rows, as ``n_rows``."""
        return self.n_rows

    @property
    def dim(self) -> int:
        """Embedding width."""
        return int(_zarr.attrs(self._group)["dim"])

    @property
    def dtype(self) -> str:
        """Stored embedding dtype (``float16`` or ``float32``)."""
        return str(self._group.attrs["dtype"])

    @property
    def chunk_rows(self) -> int:
        """Rows per chunk of every row-aligned array."""
        return int(_zarr.attrs(self._group)["chunk_rows"])

    @property
    def fingerprint(self) -> str:
        """Content hash of ids and embeddings; every derived artifact records it."""
        return str(self._group.attrs["fingerprint"])

    @property
    def columns(self) -> dict[str, str]:
        """Metadata columns and their kinds (str / int / float / bool)."""
        return dict(_zarr.attrs(self._group).get("columns", {}))

    @property
    def encoder(self) -> dict:
        """What produced the embeddings (at least ``name``)."""
        return dict(_zarr.attrs(self._group).get("encoder", {}))

    @property
    def provenance(self) -> dict:
        """Where the rows came from: creation time, importer source, dropped non-finite rows."""
        return dict(_zarr.attrs(self._group).get("provenance", {}))

    @property
    def embeddings(self) -> zarr.Array:
        """The raw zarr array (may be longer than ``n_rows``: slice with ``[:store.n_rows]``).

        Raises :class:`~sae.errors.IncompleteStoreError` when a chunk of the committed rows is missing.
        """
        return self._checked(EMBEDDINGS)

    def _checked(self, name: str) -> zarr.Array:
        """Array ``name`` once it is known to hold every chunk of the committed rows (checked once per length)."""
        self._chunks.require(self.url, self._group, name, self.n_rows)
        return _zarr.array(self._group, name)

    @property
    def has_image_previews(self) -> bool:
        """Whether committed rows carry image thumbnails."""
        return self._committed_member(PREVIEW_IMAGES)

    @property
    def has_text_previews(self) -> bool:
        """Whether committed rows carry text previews."""
        return self._committed_member(PREVIEW_TEXT)

    def _committed_member(self, name: str) -> bool:
        """A preview counts once it is declared in the attributes and its array exists."""
        return name in _zarr.attrs(self._group).get("previews", []) and member(self._group, name) is not None

    # ------------------------------------------------------------------ reading
    def ids(self) -> np.ndarray:
        """All committed row ids as an object array (cached)."""
        if self._ids_cache is None or len(self._ids_cache) != self.n_rows:
            arr, sel = self._checked(IDS), slice(0, self.n_rows)
            with reading(self.url, arr, IDS, sel, self.n_rows):
                self._ids_cache = np.asarray(arr[sel], dtype=object)
        return self._ids_cache

    def rows_for_ids(self, ids: Sequence[str]) -> np.ndarray:
        """Row numbers of the given ids; raises naming the ids that are not in the store."""
        ids = list(ids)
        rows = pd.Index(self.ids()).get_indexer(ids)
        if (rows < 0).any():
            missing = [i for i, r in zip(ids, rows, strict=True) if r < 0]
            raise StoreError(f"{len(missing)} ids are not in the store: {preview_list(missing)}")
        return rows

    def read_embeddings(self, rows: Rows = None, dtype: DTypeLike = np.float32) -> np.ndarray:
        """Embeddings for a slice or a list of row numbers (sorted reads, original order returned)."""
        arr = self.embeddings
        if rows is None:
            rows = slice(0, self.n_rows)
        if isinstance(rows, slice):
            start, stop, step = rows.indices(self.n_rows)
            with reading(self.url, arr, EMBEDDINGS, slice(start, max(start, stop)) if step == 1 else slice(0, self.n_rows), self.n_rows):
                return np.asarray(arr[start:stop:step] if step != 1 else arr[start:stop], dtype=dtype)
        checked = self._check_rows(rows)
        with reading(self.url, arr, EMBEDDINGS, checked, self.n_rows):
            return _take_rows(arr, checked, dtype)

    def _check_rows(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Row numbers as a flat int64 array; refuses any outside the committed rows."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.n_rows):
            raise StoreError(f"row numbers must be in [0, {self.n_rows}); got min {rows.min()}, max {rows.max()}")
        return rows

    def meta(self, columns: Sequence[str] | None = None, rows: Rows = None) -> pd.DataFrame:
        """Metadata as a DataFrame with an ``id`` column first, one row per store row (or per ``rows``)."""
        available = self.columns
        columns = list(available) if columns is None else list(columns)
        unknown = [c for c in columns if c not in available]
        if unknown:
            raise UnknownColumnError(
                f"unknown metadata column(s) {unknown}; available: {sorted(available) or 'none'}"
            )
        sel = self._selection(rows)
        data = {"id": self._read_1d(IDS, sel)}
        for name in columns:
            values = self._read_1d(f"{META}/{name}", sel)
            data[name] = values.astype(object) if available[name] == "str" else values
        return pd.DataFrame(data)

    def column(self, name: str, rows: Rows = None) -> np.ndarray:
        """One metadata column as a NumPy array."""
        return self.meta([name], rows=rows)[name].to_numpy()

    def _selection(self, rows: Rows) -> slice | np.ndarray:
        """A selection clipped to the committed rows: a slice stays a slice, row numbers are checked."""
        if rows is None:
            return slice(0, self.n_rows)
        if isinstance(rows, slice):
            return slice(*rows.indices(self.n_rows))
        return self._check_rows(rows)

    def _read_1d(self, name: str, sel: slice | np.ndarray) -> np.ndarray:
        """One 1-D array at a selection, in the selection's order (strings as an object array)."""
        arr = self._checked(name)
        values: np.ndarray
        with reading(self.url, arr, name, sel, self.n_rows):
            if isinstance(sel, slice):
                values = np.asarray(arr[sel])
            else:
                order = np.argsort(sel, kind="stable")
                values = np.empty(len(sel), dtype=object if arr.dtype.kind in "OTU" else arr.dtype)
                if len(sel):
                    values[order] = arr.get_coordinate_selection(sel[order])
        return np.asarray(values, dtype=object) if np.asarray(values).dtype.kind in "OTU" else np.asarray(values)

    def previews(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Image thumbnails (uint8, N x H x W[ x 3]) for the given rows."""
        if not self.has_image_previews:
            raise StoreError("this store has no image previews")
        arr, checked = self._checked(PREVIEW_IMAGES), self._check_rows(rows)
        with reading(self.url, arr, PREVIEW_IMAGES, checked, self.n_rows):
            return _take_rows(arr, checked, np.uint8)

    def texts(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Text previews for the given rows."""
        if not self.has_text_previews:
            raise StoreError("this store has no text previews")
        return self._read_1d(PREVIEW_TEXT, self._check_rows(rows))

    @overload
    def iter_batches(self, batch_size: int = ..., *, shuffle: bool = ..., seed: int = ..., epoch: int = ..., rows: slice | None = ...,
                     shard: tuple[int, int] | None = ..., drop_last: bool = ..., with_rows: Literal[False] = ..., dtype: DTypeLike | None = ...,
                     shuffle_window: int = ..., prefetch: int = ..., read_bytes: int = ...) -> Iterator[np.ndarray]: ...

    @overload
    def iter_batches(self, batch_size: int = ..., *, shuffle: bool = ..., seed: int = ..., epoch: int = ..., rows: slice | None = ...,
                     shard: tuple[int, int] | None = ..., drop_last: bool = ..., with_rows: Literal[True], dtype: DTypeLike | None = ...,
                     shuffle_window: int = ..., prefetch: int = ..., read_bytes: int = ...) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...

    @overload
    def iter_batches(self, batch_size: int = ..., *, shuffle: bool = ..., seed: int = ..., epoch: int = ..., rows: slice | None = ...,
                     shard: tuple[int, int] | None = ..., drop_last: bool = ..., with_rows: bool, dtype: DTypeLike | None = ...,
                     shuffle_window: int = ..., prefetch: int = ...,
                     read_bytes: int = ...) -> Iterator[np.ndarray] | Iterator[tuple[np.ndarray, np.ndarray]]: ...

    def iter_batches(
        self,
        batch_size: int = 4096,
        *,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
        rows: slice | None = None,
        shard: tuple[int, int] | None = None,
        drop_last: bool = False,
        with_rows: bool = False,
        dtype: DTypeLike | None = np.float32,
        shuffle_window: int = 4,
        prefetch: int = 2,
        read_bytes: int = READ_BYTES,
    ) -> Iterator[np.ndarray] | Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream embedding batches; each committed row (in ``rows``/``shard``) appears once per epoch.

        ``shuffle=True`` permutes the chunk order and the rows inside a window of ``shuffle_window``
        chunks (seeded by ``seed`` and ``epoch``); ``shard=(rank, world)`` keeps every world-th chunk.
        With ``with_rows=True`` each item is ``(row_numbers, batch)``; ``dtype=None`` keeps the stored dtype.
        """
        stream = BatchStream(
            self.embeddings,
            n_rows=self.n_rows,
            chunk_rows=self.chunk_rows,
            batch_size=batch_size,
            shuffle=shuffle,
            seed=seed,
            epoch=epoch,
            rows=rows,
            shard=shard,
            drop_last=drop_last,
            dtype=dtype,
            shuffle_window=shuffle_window,
            prefetch=prefetch,
            read_bytes=read_bytes,
        )
        with reading(self.url, stream.array, EMBEDDINGS, slice(stream.start, stream.stop), self.n_rows):
            for row_numbers, batch in stream:
                yield (row_numbers, batch) if with_rows else batch

    # ------------------------------------------------------------------ summaries
    def validate(self, deep: bool = False) -> list[str]:
        """Check internal consistency; returns a list of problems (empty when the store is sound).

        Always: every row-aligned array is there, long enough, with every chunk of the committed rows,
        and ids are unique (reads the ids). ``deep=True`` also decodes every chunk of every array, so
        a corrupt chunk (a crc32c mismatch in checksummed stores) is reported too; it reads the whole store.
        """
        problems = self.structure_problems()
        if not self._chunks.problems(self._group, IDS, self.n_rows):
            try:
                ids = self.ids()
                problems += ["duplicate ids"] if len(pd.unique(ids)) != len(ids) else []
            except CorruptChunkError as exc:
                problems.append(exc.problem)
        if deep:
            for name in row_arrays(self._group):
                if not self._chunks.problems(self._group, name, self.n_rows):
                    problems += [p for p in scan_chunks(self._group, name, self.n_rows) if p not in problems]
        return problems

    def structure_problems(self) -> list[str]:
        """Cheap checks (attributes and chunk listings only): missing arrays, short arrays, missing chunks, width."""
        problems = []
        for name in row_arrays(self._group):
            problems += self._chunks.problems(self._group, name, self.n_rows)
        emb = _zarr.array_or_none(self._group, EMBEDDINGS)
        if emb is not None and emb.shape[1:] != (self.dim,):
            problems.append(f"embeddings have width {emb.shape[1:]}, attrs say {self.dim}")
        return problems

    def summary(self) -> dict[str, Any]:
        """Plain-data summary for ``sae info`` and ``_repr_html_``."""
        previews = []
        if self.has_image_previews:
            previews.append(f"images {tuple(_zarr.array(self._group, PREVIEW_IMAGES).shape[1:])}")
        if self.has_text_previews:
            previews.append("text")
        return {
            "url": self.url,
            "rows": self.n_rows,
            "dim": self.dim,
            "dtype": self.dtype,
            "chunk_rows": self.chunk_rows,
            "columns": self.columns,
            "previews": previews,
            "encoder": self.encoder,
            "fingerprint": self.fingerprint,
            "schema_version": int(_zarr.attrs(self._group)["schema_version"]),
            "provenance": self.provenance,
            "problems": self.structure_problems(),
        }

    def __repr__(self) -> str:
        """One line: url, rows, dim, dtype and columns."""
        return f"Store({self.url!r}, rows={self.n_rows}, dim={self.dim}, dtype={self.dtype}, columns={list(self.columns)})"

    def _repr_html_(self) -> str:
        """The summary (without provenance) as an HTML table, for notebooks."""
        s = self.summary()
        rows = "".join(
            f"<tr><th style='text-align:left'>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
            for k, v in s.items()
            if k != "provenance"
        )
        return f"<div><b>sae-workbench store</b><table>{rows}</table></div>"


# ---------------------------------------------------------------------- helpers
def _take_rows(arr: zarr.Array, rows: np.ndarray, dtype: DTypeLike) -> np.ndarray:
    """Rows of an N x ... array in the requested order, read in sorted order (one pass over the chunks)."""
    order = np.argsort(rows, kind="stable")
    out = np.empty((len(rows), *arr.shape[1:]), dtype=dtype)
    if len(rows):
        out[order] = arr.get_orthogonal_selection((rows[order],) + (slice(None),) * (arr.ndim - 1))
    return out
