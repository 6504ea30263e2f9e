"""Constants and small pure helpers of the store schema: versions, column kinds, chunk sizing."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sae.errors import MetadataError

SCHEMA_VERSION = 1
"""Bumped whenever the on-disk layout changes incompatibly; readers refuse newer stores."""

EMBEDDINGS = "embeddings"
IDS = "ids"
META = "meta"
PREVIEW_IMAGES = "previews/images"
PREVIEW_TEXT = "previews/text"

EMBEDDING_DTYPES = ("float16", "float32")
COLUMN_KINDS = ("str", "int", "float", "bool")
_KIND_DTYPE = {"int": np.dtype("int64"), "float": np.dtype("float64"), "bool": np.dtype("bool")}

TARGET_CHUNK_BYTES = 16 * 2**20


def default_chunk_rows(dim: int, dtype: str) -> int:
    """Rows per chunk so one embedding chunk is about 16 MiB (a power of two, 1,024..65,536)."""
    rows = TARGET_CHUNK_BYTES // max(1, dim * np.dtype(dtype).itemsize)
    rows = 1 << int(np.floor(np.log2(max(rows, 1))))
    return int(min(max(rows, 1024), 65536))


def column_kind(series: pd.Series) -> str:
    """Map a pandas column to one of the four stored kinds (str / int / float / bool)."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    if isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(dtype) or dtype == np.dtype(object):
        return "str"
    raise MetadataError(
        f"metadata column {series.name!r} has dtype {dtype}, which the store cannot hold; "
        f"convert it to str, int, float or bool first"
    )


def column_values(series: pd.Series, kind: str) -> np.ndarray:
    """Convert a column to the stored NumPy representation, refusing missing values except float NaN."""
    if kind == "float":
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    missing = series.isna().to_numpy()
    if missing.any():
        first = np.flatnonzero(missing)[:5].tolist()
        raise MetadataError(
            f"metadata column {series.name!r} ({kind}) has {int(missing.sum())} missing values "
            f"(first at rows {first}); fill them explicitly (missing values are only allowed in float columns)"
        )
    if kind == "str":
        return series.astype(str).to_numpy(dtype=object)
    try:
        return series.to_numpy(dtype=_KIND_DTYPE[kind])
    except (TypeError, ValueError) as exc:
        raise MetadataError(f"metadata column {series.name!r} cannot be stored as {kind}: {exc}") from exc


def stored_dtype(kind: str):
    """The zarr dtype used to hold a column kind."""
    return str if kind == "str" else _KIND_DTYPE[kind]
