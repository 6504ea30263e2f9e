"""Validation of one appended batch: shapes, dtypes, finiteness, id uniqueness, metadata and previews.

Nothing is written here. :func:`validate_batch` runs every check before the writer touches the store
and returns a :class:`Batch` holding the arrays exactly as they will be stored, so a rejected batch
never leaves a partial write behind.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sae.errors import (
    DimensionMismatchError,
    DuplicateIdError,
    MetadataError,
    NonFiniteError,
    StoreError,
    UnknownColumnError,
    preview_list,
)
from sae.store.schema import EMBEDDINGS, IDS, META, PREVIEW_IMAGES, PREVIEW_TEXT, column_kind, column_values


@dataclass(frozen=True, eq=False)
class Batch:
    """One validated batch in stored form, with rows that had NaN/Inf embeddings already removed.

    Every array has one entry per kept row, in the caller's row order. ``eq=False``: comparing
    batches would compare arrays element-wise, which is never what is wanted.
    """

    embeddings: np.ndarray
    """Rows x dim, cast to the store's dtype, C-contiguous, every value finite."""

    ids: np.ndarray
    """Row ids as an object array of str; unique within the batch and not yet in the store."""

    meta: dict[str, np.ndarray]
    """Metadata column name -> values in stored form (str columns as object arrays), in the caller's column order."""

    kinds: dict[str, str]
    """Metadata column name -> kind (``str`` / ``int`` / ``float`` / ``bool``); empty when no metadata was given."""

    images: np.ndarray | None
    """uint8 image previews (N x H x W or N x H x W x 3|4), or None when the batch has none."""

    texts: np.ndarray | None
    """Text previews as an object array of str, or None when the batch has none."""

    dropped: tuple[str, ...]
    """Ids of the rows dropped for non-finite embeddings (only ever non-empty with ``drop_nonfinite=True``)."""

    @property
    def n(self) -> int:
        """Number of rows to write (after dropping)."""
        return len(self.ids)

    def preview(self, name: str) -> np.ndarray | None:
        """The preview array for a store path (``PREVIEW_IMAGES`` or ``PREVIEW_TEXT``), or None."""
        return {PREVIEW_IMAGES: self.images, PREVIEW_TEXT: self.texts}[name]

    def arrays(self) -> dict[str, np.ndarray]:
        """Store path -> values for every array this batch writes, in write order (embeddings, ids, meta, previews)."""
        arrays = {EMBEDDINGS: self.embeddings, IDS: self.ids}
        arrays.update({f"{META}/{name}": values for name, values in self.meta.items()})
        if self.images is not None:
            arrays[PREVIEW_IMAGES] = self.images
        if self.texts is not None:
            arrays[PREVIEW_TEXT] = self.texts
        return arrays


def validate_batch(
    embeddings: np.ndarray,
    ids: Sequence[str] | None,
    meta: pd.DataFrame | None,
    images: np.ndarray | None,
    texts: Sequence[str] | None,
    *,
    dim: int,
    dtype: str,
    start_row: int,
    existing_ids: Callable[[], set[str]],
    drop_nonfinite: bool,
) -> Batch:
    """Check one batch against a store of width ``dim`` and embedding ``dtype``; return what to write.

    ``start_row`` is the row number the batch would start at (committed plus pending rows): it names
    rows without ids (``row000000042``) and, when non-zero, makes ``existing_ids()`` (the store's ids,
    possibly expensive to build) part of the duplicate check.
    """
    emb = np.asarray(embeddings)
    if emb.ndim != 2:
        raise DimensionMismatchError(f"embeddings must be a 2-D array (rows x dim), got shape {emb.shape}")
    if emb.shape[1] != dim:
        raise DimensionMismatchError(f"embeddings have dimension {emb.shape[1]}, the store has {dim}")
    if not np.issubdtype(emb.dtype, np.number) or np.issubdtype(emb.dtype, np.complexfloating):
        raise StoreError(f"embeddings must be real numbers, got dtype {emb.dtype}")
    n = emb.shape[0]
    ids_arr = _as_text_array(ids) if ids is not None else np.asarray([f"row{start_row + i:09d}" for i in range(n)], dtype=object)
    _check_lengths(n, ids=ids_arr, meta=meta, images=images, texts=texts)
    with np.errstate(over="ignore", invalid="ignore"):
        stored = emb.astype(dtype, copy=False)  # finiteness is checked after the cast: fp16 overflows to inf
    finite, dropped = _finite_rows(stored, ids_arr, dtype, drop_nonfinite)
    keep = finite if dropped else slice(None)
    ids_arr = ids_arr[keep]
    _check_unique(ids_arr, existing_ids if start_row else None)
    kinds, meta_arrays = _meta_arrays(meta, keep)
    return Batch(
        embeddings=np.ascontiguousarray(stored[keep]),
        ids=ids_arr,
        meta=meta_arrays,
        kinds=kinds,
        images=_image_array(images)[keep] if images is not None else None,
        texts=_as_text_array(texts)[keep] if texts is not None else None,
        dropped=tuple(dropped),
    )


def _finite_rows(stored: np.ndarray, ids_arr: np.ndarray, dtype: str, drop_nonfinite: bool) -> tuple[np.ndarray, list[str]]:
    """Mask of rows whose stored embedding is all finite, and the ids of the others (refused unless dropped)."""
    finite = np.isfinite(stored).all(axis=1)
    dropped: list[str] = []
    if not finite.all():
        bad = ids_arr[~finite]
        if not drop_nonfinite:
            raise NonFiniteError(
                f"{len(bad)} rows have NaN or Inf embeddings (after casting to {dtype}), first ids: "
                f"{preview_list(bad, 10)}; fix them or pass drop_nonfinite=True (CLI: --drop-nonfinite) to drop "
                f"them and record it in the provenance"
            )
        dropped = bad.tolist()
    return finite, dropped


def check_same_columns(committed: dict[str, str], given: dict[str, str]) -> None:
    """A later batch must have exactly the store's columns, with the same kinds (an int may fill a float column)."""
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


def _as_text_array(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Any sequence as an object array of Python str (how ids and text previews are held)."""
    return np.asarray([str(v) for v in values], dtype=object)


def _check_lengths(n: int, **parts: Any) -> None:
    """Every given part (ids, meta, images, texts) must have one entry per embedding row."""
    for name, value in parts.items():
        if value is not None and len(value) != n:
            raise MetadataError(f"{name} has {len(value)} rows but embeddings have {n}")


def _check_unique(ids_arr: np.ndarray, existing_ids: Callable[[], set[str]] | None) -> None:
    """Refuse ids repeated within the batch, then (when the store has rows) ids already in it."""
    uniq, counts = np.unique(ids_arr.astype(str), return_counts=True)
    if (counts > 1).any():
        raise DuplicateIdError(f"duplicate ids within the batch: {preview_list(uniq[counts > 1])}")
    if existing_ids is not None:
        existing = existing_ids()
        clash = [i for i in ids_arr.tolist() if i in existing]
        if clash:
            raise DuplicateIdError(f"{len(clash)} ids are already in the store: {preview_list(clash)}")


def _meta_arrays(meta: pd.DataFrame | None, keep: np.ndarray | slice) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """Kinds and stored values of each metadata column, restricted to the kept rows."""
    if meta is None:
        return {}, {}
    if not isinstance(meta, pd.DataFrame):
        raise MetadataError(f"metadata must be a pandas DataFrame, got {type(meta).__name__}")
    kinds: dict[str, str] = {}
    arrays: dict[str, np.ndarray] = {}
    for name in meta.columns:
        if not isinstance(name, str) or not name or "/" in name or name.startswith("_"):
            raise MetadataError(f"invalid metadata column name {name!r}: use a non-empty string without '/' or leading '_'")
        kind = column_kind(meta[name])
        kinds[name] = kind
        arrays[name] = column_values(meta[name].reset_index(drop=True), kind)[keep]
    return kinds, arrays


def _image_array(images: Any) -> np.ndarray:
    """Image previews as a uint8 array of N x H x W (grey) or N x H x W x 3|4 (colour)."""
    arr = np.asarray(images)
    if arr.dtype != np.uint8:
        raise MetadataError(f"image previews must be uint8, got {arr.dtype}")
    if arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[3] not in (3, 4)):
        raise MetadataError(f"image previews must be N x H x W or N x H x W x 3, got shape {arr.shape}")
    return arr
