"""The workspace store: embeddings, ids, metadata and previews in one Zarr v3 group.

Rows are committed by a single write of the root attributes (``n_rows`` and ``fingerprint``), so a
reader never sees a half-appended batch; a new local store is built in a hidden sibling folder and
renamed into place, so an interrupted create leaves nothing that opens.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import html
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
import zarr

from sae.errors import (
    DimensionMismatchError,
    DuplicateIdError,
    IncompleteStoreError,
    MetadataError,
    NonFiniteError,
    SchemaVersionError,
    StoreError,
    UnknownColumnError,
    preview_list,
)
from sae.store import location, schema
from sae.store.stream import BatchStream

_MAX_RECORDED_DROPS = 1000


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _as_text_array(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    return np.asarray([str(v) for v in values], dtype=object)


class Store:
    """A workspace store on a local path or any fsspec URL zarr accepts (``memory://``, ``s3://`` ...).

    Create one with :meth:`create` (a context manager that commits on success), open one with
    :meth:`open`. Arrays may physically hold more rows than ``n_rows`` after an interrupted append;
    everything here reads only the committed rows.
    """

    def __init__(self, url: str, group: zarr.Group, *, writable: bool, final_path: Path | None = None):
        self.url = url
        self._group = group
        self._writable = writable
        self._final_path = final_path  # set while a local store is being built in a partial folder
        self._txn_depth = 0
        self._pending_rows = 0
        self._pending_digests: list[bytes] = []
        self._pending_drops: list[str] = []
        self._id_set: set[str] | None = None
        self._ids_cache: np.ndarray | None = None

    # ------------------------------------------------------------------ create / open
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
    ) -> "Store":
        """Start a new store; use as ``with Store.create(...) as store: store.append(...)``.

        Nothing is visible at ``url`` until the ``with`` block exits cleanly. ``compressor`` is
        ``None`` (fastest streaming) or ``"zstd"`` for the embeddings; other arrays always use zstd.
        """
        url = os.fspath(url)
        if dtype not in schema.EMBEDDING_DTYPES:
            raise StoreError(f"embedding dtype must be one of {schema.EMBEDDING_DTYPES}, got {dtype!r}")
        if int(dim) <= 0:
            raise StoreError(f"embedding dimension must be positive, got {dim}")
        chunk_rows = int(chunk_rows or schema.default_chunk_rows(dim, dtype))
        final_path = None
        if location.is_local(url):
            final_path = location.local_path(url).absolute()
            if final_path.exists() and not overwrite:
                raise StoreError(f"{final_path} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
            location.remove_stale_partials(final_path)
            final_path.parent.mkdir(parents=True, exist_ok=True)
            build_at = str(location.partial_path(final_path))
        else:
            if not overwrite and _exists(url):
                raise StoreError(f"{url} already exists; pass overwrite=True to replace it")
            build_at = url
        group = zarr.open_group(build_at, mode="w", zarr_format=3)
        enc = {"name": encoder} if isinstance(encoder, str) else (encoder or {"name": "unknown"})
        group.attrs.update(
            {
                "sae_workbench": "store",
                "schema_version": schema.SCHEMA_VERSION,
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
        )
        compressors = _compressors(compressor)
        group.create_array(
            schema.EMBEDDINGS, shape=(0, dim), chunks=(chunk_rows, dim), dtype=dtype, compressors=compressors
        )
        group.create_array(schema.IDS, shape=(0,), chunks=(chunk_rows,), dtype=str)
        store = cls(url, group, writable=True, final_path=final_path)
        store._creating = True
        return store

    @classmethod
    def open(cls, url: str | os.PathLike, mode: str = "r") -> "Store":
        """Open a committed store; ``mode="a"`` allows appends. Refuses newer schemas and unfinished creates."""
        url = os.fspath(url)
        if mode not in ("r", "a"):
            raise StoreError(f"mode must be 'r' or 'a', got {mode!r}")
        if location.is_local(url) and not location.local_path(url).exists():
            raise StoreError(f"no store at {url}")
        try:
            group = zarr.open_group(url, mode="r" if mode == "r" else "r+", zarr_format=3)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
            raise StoreError(f"no store at {url}: {exc}") from exc
        attrs = group.attrs.asdict()
        if attrs.get("sae_workbench") != "store":
            raise StoreError(f"{url} is a Zarr group but not an sae-workbench store (no 'sae_workbench' attribute)")
        version = int(attrs.get("schema_version", -1))
        if version > schema.SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{url} has schema_version {version}, newer than this sae-workbench understands "
                f"({schema.SCHEMA_VERSION}); upgrade with `pip install -U sae-workbench`"
            )
        if not attrs.get("complete", False):
            raise IncompleteStoreError(
                f"{url} was never completed (an interrupted create); delete it and ingest again"
            )
        return cls(url, group, writable=(mode == "a"))

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if getattr(self, "_creating", False):
            if exc_type is None:
                self._finish_create()
            else:
                self._abort_create()

    def _finish_create(self) -> None:
        self._commit()
        self._group.attrs.update({"complete": True})
        self._creating = False
        if self._final_path is not None:
            built = location.local_path(self._group.store.root)
            location.replace_dir(built, self._final_path)
            self._group = zarr.open_group(str(self._final_path), mode="r+", zarr_format=3)
            self._final_path = None

    def _abort_create(self) -> None:
        self._creating = False
        if self._final_path is not None:
            shutil.rmtree(location.local_path(self._group.store.root), ignore_errors=True)

    # ------------------------------------------------------------------ properties
    @property
    def attrs(self) -> dict:
        return self._group.attrs.asdict()

    @property
    def n_rows(self) -> int:
        return int(self._group.attrs["n_rows"])

    def __len__(self) -> int:
        return self.n_rows

    @property
    def dim(self) -> int:
        return int(self._group.attrs["dim"])

    @property
    def dtype(self) -> str:
        return str(self._group.attrs["dtype"])

    @property
    def chunk_rows(self) -> int:
        return int(self._group.attrs["chunk_rows"])

    @property
    def fingerprint(self) -> str:
        """Content hash of ids and embeddings; every derived artifact records it."""
        return str(self._group.attrs["fingerprint"])

    @property
    def columns(self) -> dict[str, str]:
        """Metadata columns and their kinds (str / int / float / bool)."""
        return dict(self._group.attrs.get("columns", {}))

    @property
    def encoder(self) -> dict:
        return dict(self._group.attrs.get("encoder", {}))

    @property
    def provenance(self) -> dict:
        return dict(self._group.attrs.get("provenance", {}))

    @property
    def embeddings(self) -> zarr.Array:
        """The raw zarr array (may be longer than ``n_rows``: slice with ``[:store.n_rows]``)."""
        return self._group[schema.EMBEDDINGS]

    @property
    def has_image_previews(self) -> bool:
        return self._committed_member(schema.PREVIEW_IMAGES)

    @property
    def has_text_previews(self) -> bool:
        return self._committed_member(schema.PREVIEW_TEXT)

    def _committed_member(self, name: str) -> bool:
        return name in self._group.attrs.get("previews", []) and _member(self._group, name) is not None

    # ------------------------------------------------------------------ reading
    def ids(self) -> np.ndarray:
        """All committed row ids as an object array (cached)."""
        if self._ids_cache is None or len(self._ids_cache) != self.n_rows:
            self._ids_cache = np.asarray(self._group[schema.IDS][: self.n_rows], dtype=object)
        return self._ids_cache

    def rows_for_ids(self, ids: Sequence[str]) -> np.ndarray:
        """Row numbers of the given ids; raises naming the ids that are not in the store."""
        index = pd.Index(self.ids())
        rows = index.get_indexer(list(ids))
        if (rows < 0).any():
            missing = [i for i, r in zip(ids, rows) if r < 0]
            raise StoreError(f"{len(missing)} ids are not in the store: {preview_list(missing)}")
        return rows

    def read_embeddings(self, rows: slice | Sequence[int] | np.ndarray | None = None, dtype=np.float32) -> np.ndarray:
        """Embeddings for a slice or a list of row numbers (sorted reads, original order returned)."""
        arr = self.embeddings
        if rows is None:
            rows = slice(0, self.n_rows)
        if isinstance(rows, slice):
            start, stop, step = rows.indices(self.n_rows)
            return np.asarray(arr[start:stop:step] if step != 1 else arr[start:stop], dtype=dtype)
        return _take_rows(arr, self._check_rows(rows), dtype)

    def _check_rows(self, rows) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.n_rows):
            raise StoreError(f"row numbers must be in [0, {self.n_rows}); got min {rows.min()}, max {rows.max()}")
        return rows

    def meta(self, columns: Sequence[str] | None = None, rows=None) -> pd.DataFrame:
        """Metadata as a DataFrame with an ``id`` column first, one row per store row (or per ``rows``)."""
        available = self.columns
        columns = list(available) if columns is None else list(columns)
        unknown = [c for c in columns if c not in available]
        if unknown:
            raise UnknownColumnError(
                f"unknown metadata column(s) {unknown}; available: {sorted(available) or 'none'}"
            )
        sel = self._selection(rows)
        data = {"id": self._read_1d(schema.IDS, sel)}
        for name in columns:
            values = self._read_1d(f"{schema.META}/{name}", sel)
            data[name] = values.astype(object) if available[name] == "str" else values
        return pd.DataFrame(data)

    def column(self, name: str, rows=None) -> np.ndarray:
        """One metadata column as a NumPy array."""
        return self.meta([name], rows=rows)[name].to_numpy()

    def _selection(self, rows):
        if rows is None:
            return slice(0, self.n_rows)
        if isinstance(rows, slice):
            return slice(*rows.indices(self.n_rows))
        return self._check_rows(rows)

    def _read_1d(self, name: str, sel) -> np.ndarray:
        arr = self._group[name]
        if isinstance(sel, slice):
            values = arr[sel]
        else:
            order = np.argsort(sel, kind="stable")
            values = np.empty(len(sel), dtype=object if arr.dtype.kind in "OTU" else arr.dtype)
            if len(sel):
                values[order] = arr.get_coordinate_selection(sel[order])
        return np.asarray(values, dtype=object) if np.asarray(values).dtype.kind in "OTU" else np.asarray(values)

    def previews(self, rows) -> np.ndarray:
        """Image thumbnails (uint8, N x H x W[ x 3]) for the given rows."""
        if not self.has_image_previews:
            raise StoreError("this store has no image previews")
        return _take_rows(self._group[schema.PREVIEW_IMAGES], self._check_rows(rows), np.uint8)

    def texts(self, rows) -> np.ndarray:
        """Text previews for the given rows."""
        if not self.has_text_previews:
            raise StoreError("this store has no text previews")
        return self._read_1d(schema.PREVIEW_TEXT, self._check_rows(rows))

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
        dtype=np.float32,
        shuffle_window: int = 4,
        prefetch: int = 2,
    ) -> Iterator[np.ndarray] | Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream embedding batches; each committed row (in ``rows``/``shard``) appears once per epoch.

        ``shuffle=True`` permutes the chunk order and the rows inside a window of ``shuffle_window``
        chunks (seeded by ``seed`` and ``epoch``); ``shard=(rank, world)`` keeps every world-th chunk.
        With ``with_rows=True`` each item is ``(row_numbers, batch)``.
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
        )
        for row_numbers, batch in stream:
            yield (row_numbers, batch) if with_rows else batch

    # ------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def transaction(self) -> Iterator["Store"]:
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
        if self._txn_depth == 0 and not getattr(self, "_creating", False):
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
        batch = _validate_batch(self, embeddings, ids, meta, images, texts, drop_nonfinite)
        if batch["n"]:
            self._write_batch(batch)
        if self._txn_depth == 0 and not getattr(self, "_creating", False):
            self._commit()
        return batch["n"]

    def _require_writable(self) -> None:
        if not self._writable:
            raise StoreError(f"{self.url} is open read-only; use Store.open(url, mode='a') to append")

    def existing_ids(self) -> set[str]:
        """Committed plus pending ids, for duplicate checks (built once, then kept up to date)."""
        if self._id_set is None:
            total = self.n_rows + self._pending_rows
            self._id_set = set(np.asarray(self._group[schema.IDS][:total], dtype=object).tolist())
        return self._id_set

    def _write_batch(self, batch: dict) -> None:
        start = self.n_rows + self._pending_rows
        stop = start + batch["n"]
        if self._pending_rows == 0:  # first write since the last commit
            self._trim_to_committed()
        self._ensure_layout(batch)
        with ThreadPoolExecutor(max_workers=1) as pool:
            digest = pool.submit(_batch_digest, batch["arrays"])  # overlaps with the writes below
            for name, values in batch["arrays"].items():
                arr = self._group[name]
                arr.resize((stop, *arr.shape[1:]))
                arr[start:stop] = values
            self._pending_digests.append(digest.result())
        self._pending_rows += batch["n"]
        self._pending_drops.extend(batch["dropped"])
        self.existing_ids().update(batch["arrays"][schema.IDS].tolist())
        self._ids_cache = None

    def _trim_to_committed(self) -> None:
        """Cut arrays back to the committed length (left over from an interrupted append)."""
        n = self.n_rows
        for name in self._row_arrays():
            arr = self._group[name]
            if arr.shape[0] != n:
                arr.resize((n, *arr.shape[1:]))

    def _row_arrays(self) -> list[str]:
        names = [schema.EMBEDDINGS, schema.IDS]
        names += [f"{schema.META}/{c}" for c in self.columns]
        names += [p for p in (schema.PREVIEW_IMAGES, schema.PREVIEW_TEXT) if _member(self._group, p) is not None]
        return names

    def _ensure_layout(self, batch: dict) -> None:
        """Create metadata / preview arrays on the first batch; later batches must match them."""
        committed = self.columns
        if self.n_rows + self._pending_rows == 0 and not committed:
            _drop_orphans(self._group, expected=set(batch["kinds"]))
            for name, kind in batch["kinds"].items():
                self._group.create_array(
                    f"{schema.META}/{name}", shape=(0,), chunks=(self.chunk_rows,), dtype=schema.stored_dtype(kind)
                )
            self._group.attrs.update({"columns": batch["kinds"], "_pending_columns": True})
        else:
            _check_same_columns(committed, batch["kinds"])
        for name in (schema.PREVIEW_IMAGES, schema.PREVIEW_TEXT):
            self._ensure_preview(name, batch["arrays"].get(name))

    def _ensure_preview(self, name: str, values: np.ndarray | None) -> None:
        existing = _member(self._group, name)
        has_rows = self.n_rows + self._pending_rows > 0
        declared = name in self._group.attrs.get("previews", [])
        if values is None:
            if declared and has_rows:
                raise MetadataError(f"this store has {name}; every appended batch must provide them too")
            return
        if has_rows and not declared:
            raise MetadataError(f"this store has no {name}; they must be given from the first batch on")
        if existing is None:
            if name == schema.PREVIEW_IMAGES:
                chunks = (min(self.chunk_rows, 1024), *values.shape[1:])
                self._group.create_array(name, shape=(0, *values.shape[1:]), chunks=chunks, dtype="uint8")
            else:
                self._group.create_array(name, shape=(0,), chunks=(self.chunk_rows,), dtype=str)
            self._group.attrs.update({"previews": sorted({*self._group.attrs.get("previews", []), name})})
        elif values.shape[1:] != existing.shape[1:]:
            raise MetadataError(f"{name} have shape {existing.shape[1:]} in the store, got {values.shape[1:]}")

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
        self._pending_rows, self._pending_digests, self._pending_drops = 0, [], []
        self._id_set = None
        self._ids_cache = None

    def update_provenance(self, **entries: Any) -> None:
        """Merge entries into the provenance attribute (e.g. the importer's source)."""
        self._require_writable()
        self._group.attrs.update({"provenance": {**self.provenance, **entries}})

    # ------------------------------------------------------------------ summaries
    def validate(self) -> list[str]:
        """Check internal consistency; returns a list of problems (empty when the store is sound)."""
        problems = []
        n = self.n_rows
        for name in self._row_arrays():
            if _member(self._group, name) is None:
                problems.append(f"missing array {name}")
            elif self._group[name].shape[0] < n:
                problems.append(f"{name} has {self._group[name].shape[0]} rows, fewer than the committed {n}")
        if self.embeddings.shape[1:] != (self.dim,):
            problems.append(f"embeddings have width {self.embeddings.shape[1:]}, attrs say {self.dim}")
        ids = self.ids()
        if len(pd.unique(ids)) != len(ids):
            problems.append("duplicate ids")
        return problems

    def summary(self) -> dict[str, Any]:
        """Plain-data summary for ``sae info`` and ``_repr_html_``."""
        previews = []
        if self.has_image_previews:
            previews.append(f"images {tuple(self._group[schema.PREVIEW_IMAGES].shape[1:])}")
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
            "schema_version": int(self._group.attrs["schema_version"]),
            "provenance": self.provenance,
        }

    def __repr__(self) -> str:
        return f"Store({self.url!r}, rows={self.n_rows}, dim={self.dim}, dtype={self.dtype}, columns={list(self.columns)})"

    def _repr_html_(self) -> str:
        s = self.summary()
        rows = "".join(
            f"<tr><th style='text-align:left'>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
            for k, v in s.items()
            if k != "provenance"
        )
        return f"<div><b>sae-workbench store</b><table>{rows}</table></div>"


# ---------------------------------------------------------------------- helpers
def _take_rows(arr: zarr.Array, rows: np.ndarray, dtype) -> np.ndarray:
    """Rows of an N x ... array in the requested order, read in sorted order (one pass over the chunks)."""
    order = np.argsort(rows, kind="stable")
    out = np.empty((len(rows), *arr.shape[1:]), dtype=dtype)
    if len(rows):
        out[order] = arr.get_orthogonal_selection((rows[order],) + (slice(None),) * (arr.ndim - 1))
    return out


def _exists(url: str) -> bool:
    try:
        zarr.open_group(url, mode="r", zarr_format=3)
        return True
    except Exception:  # noqa: BLE001 - any failure to open means "nothing usable there"
        return False


def _compressors(name: str | None):
    if name is None or name == "none":
        return None
    if name == "zstd":
        return zarr.codecs.ZstdCodec(level=3)
    raise StoreError(f"unknown compressor {name!r}; use None or 'zstd'")


def _member(group: zarr.Group, name: str):
    try:
        return group[name]
    except KeyError:
        return None


def _drop_orphans(group: zarr.Group, expected: set[str]) -> None:
    """Remove metadata arrays left by an interrupted first append that never committed."""
    meta = _member(group, schema.META)
    if meta is None:
        return
    for name in list(meta.array_keys()):
        if name not in expected:
            del meta[name]


def _check_same_columns(committed: dict[str, str], given: dict[str, str]) -> None:
    missing = sorted(set(committed) - set(given))
    extra = sorted(set(given) - set(committed))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing columns {missing}")
        if extra:
            parts.append(f"unknown columns {extra}")
        raise UnknownColumnError(
            f"metadata does not match the store: {'; '.join(parts)}; the store's columns are {sorted(committed)}"
        )
    changed = {c: (committed[c], given[c]) for c in committed if committed[c] != given[c]}
    for col, (old, new) in changed.items():
        if not (old == "float" and new == "int"):  # ints widen losslessly into a float column
            raise MetadataError(f"metadata column {col!r} is {old} in the store but {new} in this batch")


def _validate_batch(store: Store, embeddings, ids, meta, images, texts, drop_nonfinite: bool) -> dict:
    """Check one batch against the store and return the arrays to write (nothing is written here)."""
    emb = np.asarray(embeddings)
    if emb.ndim != 2:
        raise DimensionMismatchError(f"embeddings must be a 2-D array (rows x dim), got shape {emb.shape}")
    if emb.shape[1] != store.dim:
        raise DimensionMismatchError(f"embeddings have dimension {emb.shape[1]}, the store has {store.dim}")
    if not np.issubdtype(emb.dtype, np.number) or np.issubdtype(emb.dtype, np.complexfloating):
        raise StoreError(f"embeddings must be real numbers, got dtype {emb.dtype}")
    n = emb.shape[0]
    start = store.n_rows + store._pending_rows
    ids_arr = _as_text_array(ids) if ids is not None else np.asarray([f"row{start + i:09d}" for i in range(n)], dtype=object)
    _check_lengths(n, ids=ids_arr, meta=meta, images=images, texts=texts)
    with np.errstate(over="ignore", invalid="ignore"):
        stored = emb.astype(store.dtype, copy=False)  # finiteness is checked after the cast: fp16 overflows to inf
    finite = np.isfinite(stored).all(axis=1)
    dropped: list[str] = []
    if not finite.all():
        bad = ids_arr[~finite]
        if not drop_nonfinite:
            raise NonFiniteError(
                f"{len(bad)} rows have NaN or Inf embeddings (after casting to {store.dtype}), first ids: "
                f"{preview_list(bad, 10)}; fix them or pass drop_nonfinite=True (CLI: --drop-nonfinite) to drop "
                f"them and record it in the provenance"
            )
        dropped = bad.tolist()
    keep = finite if dropped else slice(None)
    ids_arr = ids_arr[keep]
    _check_unique(store, ids_arr)
    arrays: dict[str, np.ndarray] = {schema.EMBEDDINGS: np.ascontiguousarray(stored[keep]), schema.IDS: ids_arr}
    kinds = _meta_arrays(meta, keep, arrays)
    if images is not None:
        arrays[schema.PREVIEW_IMAGES] = _image_array(images)[keep]
    if texts is not None:
        arrays[schema.PREVIEW_TEXT] = _as_text_array(texts)[keep]
    return {"n": len(ids_arr), "arrays": arrays, "kinds": kinds, "dropped": dropped}


def _batch_digest(arrays: dict[str, np.ndarray]) -> bytes:
    """Hash of one batch's ids and embedding bytes (hashlib releases the GIL on large buffers)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update("\x00".join(arrays[schema.IDS].tolist()).encode())
    digest.update(arrays[schema.EMBEDDINGS].data)
    return digest.digest()


def _check_lengths(n: int, **parts) -> None:
    for name, value in parts.items():
        if value is not None and len(value) != n:
            raise MetadataError(f"{name} has {len(value)} rows but embeddings have {n}")


def _check_unique(store: Store, ids_arr: np.ndarray) -> None:
    uniq, counts = np.unique(ids_arr.astype(str), return_counts=True)
    if (counts > 1).any():
        raise DuplicateIdError(f"duplicate ids within the batch: {preview_list(uniq[counts > 1])}")
    if store.n_rows + store._pending_rows:
        existing = store.existing_ids()
        clash = [i for i in ids_arr.tolist() if i in existing]
        if clash:
            raise DuplicateIdError(f"{len(clash)} ids are already in the store: {preview_list(clash)}")


def _meta_arrays(meta: pd.DataFrame | None, keep, arrays: dict) -> dict[str, str]:
    if meta is None:
        return {}
    if not isinstance(meta, pd.DataFrame):
        raise MetadataError(f"metadata must be a pandas DataFrame, got {type(meta).__name__}")
    kinds = {}
    for name in meta.columns:
        if not isinstance(name, str) or not name or "/" in name or name.startswith("_"):
            raise MetadataError(f"invalid metadata column name {name!r}: use a non-empty string without '/' or leading '_'")
        kind = schema.column_kind(meta[name])
        values = schema.column_values(meta[name].reset_index(drop=True), kind)
        kinds[name] = kind
        arrays[f"{schema.META}/{name}"] = values[keep]
    return kinds


def _image_array(images) -> np.ndarray:
    arr = np.asarray(images)
    if arr.dtype != np.uint8:
        raise MetadataError(f"image previews must be uint8, got {arr.dtype}")
    if arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[3] not in (3, 4)):
        raise MetadataError(f"image previews must be N x H x W or N x H x W x 3, got shape {arr.shape}")
    return arr
