"""Importers: NumPy, Parquet (incl. SAIL's embedding-bytes format), HDF5 and image folders.

Every importer streams its source in row batches into :class:`~sae.store.Store`, so sources larger
than memory work, and writes inside one create (or one append transaction): an interrupted import
leaves either the old store or nothing, and so does a source with no rows. Sources are opened by
:mod:`sae.store.sources` (a damaged file is one error naming it) and metadata tables are read by
:mod:`sae.store.tables` (ids and identifier-like columns stay the text they are in the file).
"""

from __future__ import annotations

import ast
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sae._progress import tqdm
from sae.errors import MetadataError, StoreError, UnknownColumnError
from sae.store.sources import any_colour, load_images, load_npy, open_hdf5, open_parquet, parquet_batches
from sae.store.store import Store
from sae.store.tables import ID_COLUMN_GUESSES, read_table, split_ids

__all__ = ["ID_COLUMN_GUESSES", "IMPORTERS", "IngestOptions", "RowBatch", "from_hdf5", "from_image_folder", "from_numpy",
           "from_parquet", "guess_format", "ingest_batches", "read_table", "split_ids"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")


@dataclass(frozen=True)
class IngestOptions:
    """Where and how imported rows are written."""

    dest: str
    dtype: str = "float32"
    """Embedding dtype in the store: float32 or float16 (half the disk, same streaming code)."""
    append: bool = False
    """Append to an existing store (one transaction) instead of creating a new one."""
    overwrite: bool = False
    drop_nonfinite: bool = False
    """Drop rows with NaN/Inf embeddings and record them in provenance, instead of refusing the import."""
    batch_rows: int = 65536
    chunk_rows: int | None = None
    compressor: str | None = None
    checksums: bool = True
    """End every chunk of a new store in a crc32c checksum (a damaged chunk is an error, not wrong numbers)."""
    encoder: str | dict | None = None
    progress: bool = True
    text_column: str | None = None
    """A metadata column holding each row's text (a report): stored as the text previews, not as metadata,
    so labels can be made from its phrases and hits show it."""
    group_key: str | None = None
    """The metadata column grouping rows (patient, study, volume): recorded in provenance; labels never name it,
    evidence caps items per group, and held-out splits keep groups whole."""


@dataclass
class RowBatch:
    """One batch on its way into the store."""

    embeddings: np.ndarray
    ids: Sequence[str] | None = None
    meta: pd.DataFrame | None = None
    images: np.ndarray | None = None
    texts: Sequence[str] | None = None


def ingest_batches(batches: Iterable[RowBatch], dim: int, total: int | None, opts: IngestOptions, provenance: dict) -> Store:
    """Write batches into a new store (or append to one) atomically; returns the opened store.

    The store's write lock is held throughout (a second writer is refused at once). A source that
    yields no rows (or only non-finite ones, dropped) is refused inside the create / transaction, so
    nothing is written and an existing store stays as it was.
    """
    written = dropped = 0
    ctx: AbstractContextManager[Any]
    if opts.append:
        store = Store.open(opts.dest, mode="a")
        ctx = store.transaction()
    else:
        if opts.group_key:
            provenance = {**provenance, "group_key": opts.group_key}
        store = Store.create(
            opts.dest, dim, dtype=opts.dtype, encoder=opts.encoder, provenance=provenance,
            chunk_rows=opts.chunk_rows, compressor=opts.compressor, overwrite=opts.overwrite, checksums=opts.checksums,
        )
        ctx = store
    with ctx, tqdm(total=total, unit="rows", desc="ingest", disable=not opts.progress) as bar:  # the lock first, then the bar
        for b in batches:
            b = _with_text_column(b, opts)
            n = store.append(b.embeddings, b.ids, b.meta, images=b.images, texts=b.texts, drop_nonfinite=opts.drop_nonfinite)
            written += n
            dropped += len(b.embeddings) - n
            bar.update(len(b.embeddings))
        if written == 0:
            why = "the source had no rows to import" if dropped == 0 else f"all {dropped} rows were non-finite and dropped"
            kept = "the store is unchanged" if opts.append or opts.overwrite else "no store was written"
            raise StoreError(f"{why}; nothing was imported ({kept})")
        if opts.append:
            store.update_provenance(appended=[*store.provenance.get("appended", []), provenance])
    return Store.open(store.url, mode="r")


def _with_text_column(b: RowBatch, opts: IngestOptions) -> RowBatch:
    """The batch with ``opts.text_column`` moved from its metadata to its text previews, the group key checked."""
    cols = list(b.meta.columns) if b.meta is not None else []
    for flag, name in (("--text-column", opts.text_column), ("--group-key", opts.group_key)):
        if name is not None and name not in cols:
            raise MetadataError(f"{flag} {name}: no such metadata column (columns: {', '.join(cols) or 'none; give --meta'})")
    if opts.text_column is None or b.meta is None:
        return b
    texts = b.meta[opts.text_column].fillna("").astype(str).tolist()
    return RowBatch(b.embeddings, b.ids, b.meta.drop(columns=[opts.text_column]), b.images, texts)


def _slices(n: int, step: int) -> Iterator[slice]:
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


# ---------------------------------------------------------------------- NumPy
def from_numpy(
    embeddings: str | os.PathLike | np.ndarray,
    opts: IngestOptions,
    *,
    meta: pd.DataFrame | str | os.PathLike | None = None,
    ids: Sequence[str] | None = None,
    id_column: str | None = None,
) -> Store:
    """Import a ``.npy`` file (memory-mapped, streamed) or an in-memory array plus an optional table."""
    source = str(embeddings) if not isinstance(embeddings, np.ndarray) else "array"
    arr = load_npy(embeddings) if not isinstance(embeddings, np.ndarray) else embeddings
    if arr.ndim != 2:
        raise StoreError(f"embeddings must be 2-D (rows x dim), got shape {arr.shape} from {source}")
    table = read_table(meta, id_column) if isinstance(meta, (str, os.PathLike)) else meta
    table_ids, table = split_ids(table, id_column)
    ids = list(ids) if ids is not None else table_ids
    for name, part in (("ids", ids), ("metadata", table)):
        if part is not None and len(part) != len(arr):
            raise MetadataError(f"{name} has {len(part)} rows but the embeddings have {len(arr)}")

    def batches() -> Iterator[RowBatch]:
        for sl in _slices(len(arr), opts.batch_rows):
            yield RowBatch(
                np.asarray(arr[sl]),
                ids[sl] if ids is not None else None,
                table.iloc[sl].reset_index(drop=True) if table is not None else None,
            )

    prov = {"source": source, "format": "numpy", "meta": str(meta) if isinstance(meta, (str, os.PathLike)) else None}
    return ingest_batches(batches(), arr.shape[1], len(arr), opts, prov)


# ---------------------------------------------------------------------- Parquet
def _parse_shape(value) -> tuple[int, ...]:
    if isinstance(value, str):
        value = ast.literal_eval(value.strip())
    return tuple(int(v) for v in np.asarray(value).reshape(-1))


def decode_embedding_column(table: pd.DataFrame, column: str) -> np.ndarray:
    """Decode an embedding column: raw bytes (SAIL: with shape/dtype columns) or list-like vectors."""
    values = table[column]
    if len(values) == 0:
        return np.zeros((0, 0), np.float32)
    first = values.iloc[0]
    if isinstance(first, (bytes, bytearray, memoryview)):
        dtypes = table[f"{column}_dtype"] if f"{column}_dtype" in table else pd.Series(["float32"] * len(table))
        shapes = table.get(f"{column}_shape", None)
        rows = []
        for i, (raw, dt) in enumerate(zip(values, dtypes, strict=True)):
            vec = np.frombuffer(bytes(raw), dtype=np.dtype(str(dt)))
            if shapes is not None and int(np.prod(_parse_shape(shapes.iloc[i]))) != vec.size:
                raise StoreError(f"row {i}: {column} holds {vec.size} values but {column}_shape says {shapes.iloc[i]}")
            rows.append(vec.reshape(-1))
        return _stack(rows, column)
    return _stack([np.asarray(v, dtype=np.float64).reshape(-1) for v in values], column)


def _stack(rows: list[np.ndarray], column: str) -> np.ndarray:
    sizes = {r.size for r in rows}
    if len(sizes) != 1:
        raise StoreError(f"column {column!r} holds vectors of different lengths {sorted(sizes)[:5]}")
    return np.stack(rows).astype(np.float32, copy=False)


def from_parquet(
    path: str | os.PathLike,
    opts: IngestOptions,
    *,
    embedding_column: str = "embedding",
    id_column: str | None = None,
    meta_columns: Sequence[str] | None = None,
) -> Store:
    """Import a Parquet file, streamed by row group; SAIL's format (raw bytes + shape/dtype) included."""
    pf = open_parquet(path)
    names = pf.schema_arrow.names
    if embedding_column not in names:
        raise UnknownColumnError(f"embedding column {embedding_column!r} not in {path}; available: {names}")
    aux = {f"{embedding_column}_shape", f"{embedding_column}_dtype", embedding_column}
    keep = [c for c in names if c not in aux] if meta_columns is None else list(meta_columns)
    unknown = [c for c in keep if c not in names]
    if unknown:
        raise UnknownColumnError(f"columns {unknown} not in {path}; available: {names}")
    if id_column is not None and id_column not in names:
        raise UnknownColumnError(f"id column {id_column!r} not in {path}; available: {names}")
    columns = list(dict.fromkeys(keep + ([id_column] if id_column else [])))
    dim = _parquet_dim(pf, path, embedding_column)

    def batches() -> Iterator[RowBatch]:
        for df in parquet_batches(pf, path, min(opts.batch_rows, 16384)):
            emb = decode_embedding_column(df, embedding_column)
            ids, meta = split_ids(df[columns], id_column)
            yield RowBatch(emb, ids, meta if meta is not None and len(meta.columns) else None)

    prov = {"source": str(path), "format": "parquet", "embedding_column": embedding_column}
    return ingest_batches(batches(), dim, pf.metadata.num_rows, opts, prov)


def _parquet_dim(pf, path: str | os.PathLike, column: str) -> int:
    """Embedding width from the first row; a file without rows has nothing to import."""
    for df in parquet_batches(pf, path, 1):
        if len(df):
            return decode_embedding_column(df, column).shape[1]
    raise StoreError(f"the Parquet file {path} has no rows; nothing was imported")


# ---------------------------------------------------------------------- HDF5
def from_hdf5(
    path: str | os.PathLike,
    opts: IngestOptions,
    *,
    dataset: str = "embeddings",
    ids_dataset: str | None = "ids",
    meta_group: str | None = "meta",
    meta: pd.DataFrame | str | os.PathLike | None = None,
) -> Store:
    """Import an HDF5 file: a 2-D dataset, optional ids dataset and a group of 1-D metadata datasets."""
    with open_hdf5(path) as f:
        if dataset not in f:
            raise UnknownColumnError(f"dataset {dataset!r} not in {path}; available: {list(f.keys())}")
        ds = f[dataset]
        if ds.ndim != 2:
            raise StoreError(f"dataset {dataset!r} must be 2-D, got shape {ds.shape}")
        n, dim = ds.shape
        ids = _h5_strings(f[ids_dataset][:]) if ids_dataset and ids_dataset in f else None
        table = read_table(meta) if isinstance(meta, (str, os.PathLike)) else meta
        if table is None and meta_group and meta_group in f:
            table = pd.DataFrame({k: _h5_column(f[meta_group][k][:]) for k in f[meta_group]})
        if ids is None:
            ids, table = split_ids(table, None)

        def batches() -> Iterator[RowBatch]:
            for sl in _slices(n, opts.batch_rows):
                yield RowBatch(
                    ds[sl], ids[sl] if ids is not None else None,
                    table.iloc[sl].reset_index(drop=True) if table is not None else None,
                )

        prov = {"source": str(path), "format": "hdf5", "dataset": dataset}
        return ingest_batches(batches(), dim, n, opts, prov)


def _h5_strings(values: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _h5_column(values: np.ndarray):
    return _h5_strings(values) if values.dtype.kind in "SOU" else values


# ---------------------------------------------------------------------- image folders
def find_images(folder: str | os.PathLike) -> list[Path]:
    """All image files under ``folder``, sorted for determinism."""
    folder = Path(folder)
    if not folder.is_dir():
        raise StoreError(f"{folder} is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise StoreError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    return files


def from_image_folder(
    folder: str | os.PathLike,
    opts: IngestOptions,
    *,
    encoder=None,
    thumbnail_size: int = 64,
    meta: pd.DataFrame | str | os.PathLike | None = None,
    id_column: str | None = None,
) -> Store:
    """Embed every image under ``folder`` with ``encoder`` (default EfficientNet-Lite0) and store thumbnails.

    Ids are paths relative to ``folder``; the parent folder name becomes the ``label`` column; an
    optional table (joined on the id column) adds metadata. A folder of greyscale images keeps 2-D
    thumbnails; one with any colour image reads every image as RGB. A file that does not decode is
    an error naming it (checked from the headers before any encoding, decoded batch by batch).
    """
    from sae.encoders import EfficientNetLite0Encoder, thumbnail

    folder = Path(folder)
    files = find_images(folder)
    colour = any_colour(files)
    encoder = encoder or EfficientNetLite0Encoder()
    ids = [p.relative_to(folder).as_posix() for p in files]
    base = pd.DataFrame({"label": [p.parent.name if p.parent != folder else "" for p in files]})
    table = _join_table(ids, base, meta, id_column)

    def batches() -> Iterator[RowBatch]:
        for sl in _slices(len(files), min(opts.batch_rows, 256)):
            images = load_images(files[sl], colour)
            emb = encoder.encode(images, progress=False)
            thumbs = np.stack([thumbnail(im, thumbnail_size) for im in images])
            yield RowBatch(emb, ids[sl], table.iloc[sl].reset_index(drop=True), images=thumbs)

    o = opts if opts.encoder else IngestOptions(**{**opts.__dict__, "encoder": encoder.describe()})
    prov = {"source": str(folder), "format": "images", "n_files": len(files)}
    return ingest_batches(batches(), encoder.dim, len(files), o, prov)


def _join_table(ids: list[str], base: pd.DataFrame, meta, id_column: str | None) -> pd.DataFrame:
    if meta is None:
        return base
    table = read_table(meta, id_column) if isinstance(meta, (str, os.PathLike)) else meta
    table_ids, table = split_ids(table, id_column)
    if table_ids is None:
        raise MetadataError("the image metadata table needs an id column (relative image path) to join on")
    table = table.set_axis(table_ids, axis=0)
    missing = [i for i in ids if i not in table.index]
    if missing:
        raise MetadataError(f"{len(missing)} images have no row in the metadata table: {missing[:5]}")
    return pd.concat([base, table.loc[ids].reset_index(drop=True)], axis=1)


IMPORTERS: dict[str, Callable[..., Store]] = {
    "npy": from_numpy,
    "parquet": from_parquet,
    "hdf5": from_hdf5,
    "images": from_image_folder,
}


def guess_format(source: str | os.PathLike) -> str:
    """Importer name from a path: a folder is images, else by suffix."""
    path = Path(source)
    if path.is_dir():
        return "images"
    suffix = path.suffix.lower()
    for fmt, suffixes in {"npy": (".npy",), "parquet": (".parquet", ".pq"), "hdf5": (".h5", ".hdf5", ".hdf")}.items():
        if suffix in suffixes:
            return fmt
    raise StoreError(f"cannot tell the format of {source}; pass --format npy|parquet|hdf5|images")
