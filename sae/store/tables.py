"""Metadata tables (CSV, TSV, Parquet) read without rewriting what they say.

pandas' defaults rewrite identifiers: ids ``00000, 00001`` become the numbers ``0, 1``, a volume
``0012`` becomes ``12`` and an empty id becomes the text ``"nan"``. Here a CSV/TSV is read as text
first, then each column is converted on its own:

- the id column (``id_column``, else the first of :data:`ID_COLUMN_GUESSES` present) stays text
  exactly as written: no value is treated as missing, ``NA`` is the id ``"NA"``;
- another column becomes numbers only when every value round-trips as a number without losing
  anything: a value with a leading zero (``0012``, ``-007``) or an integer too long for int64 keeps
  the whole column as text (it is an identifier, not a quantity); ``True``/``False`` columns are bool;
- in those other columns pandas' usual missing-value markers (empty, ``NA``, ``nan``, ``null`` ...)
  are missing values, as before: NaN in float columns, refused in text columns (see
  :func:`sae.store.schema.column_values`).

:func:`split_ids` refuses a missing or blank id with the row numbers named.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import overload

import numpy as np
import pandas as pd

from sae.errors import MetadataError, UnknownColumnError, preview_list

ID_COLUMN_GUESSES = ("id", "image_id", "item_id", "uid", "image_path", "path", "filename", "file")

NA_TOKENS = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
                       "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"})
"""Text pandas reads as a missing value by default (applied to every column but the id column)."""

_BOOL = {"True": True, "TRUE": True, "true": True, "False": False, "FALSE": False, "false": False}
_INT = re.compile(r"^\s*[+-]?\d+\s*$")
_LEADING_ZERO = re.compile(r"^\s*[+-]?0\d")
_INT64 = 2**63


def guess_id_column(columns: Iterable[str], id_column: str | None = None) -> str | None:
    """The id column: ``id_column`` when given, else the first common id name present, else None."""
    names = list(columns)
    if id_column is not None:
        return id_column if id_column in names else None
    return next((c for c in ID_COLUMN_GUESSES if c in names), None)


def read_table(path: str | os.PathLike, id_column: str | None = None) -> pd.DataFrame:
    """Read a metadata table from CSV, TSV or Parquet (chosen by suffix); CSV/TSV as described above."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv", ".tsv", ".txt"):
        raise MetadataError(f"metadata table {path} must be .csv, .tsv or .parquet")
    if not path.is_file():
        raise MetadataError(f"metadata table {path} does not exist" if not path.exists() else f"metadata table {path} is not a file")
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        raw = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False, na_filter=False)
    except MetadataError:
        raise
    except Exception as exc:  # pandas / pyarrow parser errors, a truncated file, bad encoding
        raise MetadataError(f"cannot read metadata table {path}: {type(exc).__name__}: {exc}") from exc
    keep = guess_id_column(raw.columns, id_column)
    return pd.DataFrame({c: raw[c] if c == keep else infer_column(raw[c]) for c in raw.columns}, index=raw.index)


def infer_column(text: pd.Series) -> pd.Series:
    """A text column as bool, int or float when every value round-trips (see the module docstring), else text."""
    missing = text.isin(NA_TOKENS).to_numpy()
    present = text[~missing]
    if len(present) == 0:
        return pd.Series(np.full(len(text), np.nan), index=text.index, name=text.name)
    if not missing.any() and present.isin(_BOOL).all():
        return text.map(_BOOL).astype(bool)
    if present.str.match(_LEADING_ZERO).any():
        return _as_text(text, missing)
    if present.str.match(_INT).all():
        ints = [int(v) for v in present]
        if max(abs(v) for v in ints) >= _INT64:
            return _as_text(text, missing)  # too long for int64: an identifier
        if not missing.any():
            return pd.Series(np.asarray(ints, dtype=np.int64), index=text.index, name=text.name)
    numbers = pd.to_numeric(present.str.strip(), errors="coerce")
    if numbers.notna().all():
        out = np.full(len(text), np.nan)
        out[~missing] = numbers.to_numpy(dtype=np.float64)
        return pd.Series(out, index=text.index, name=text.name)
    return _as_text(text, missing)


def _as_text(text: pd.Series, missing: np.ndarray) -> pd.Series:
    """Text as written, with pandas' missing-value markers as missing (refused later in text columns)."""
    values = text.to_numpy(dtype=object).copy()
    values[missing] = None
    return pd.Series(values, index=text.index, name=text.name)


@overload
def split_ids(meta: None, id_column: str | None) -> tuple[None, None]: ...
@overload
def split_ids(meta: pd.DataFrame, id_column: str | None) -> tuple[list[str] | None, pd.DataFrame]: ...
def split_ids(meta: pd.DataFrame | None, id_column: str | None) -> tuple[list[str] | None, pd.DataFrame | None]:
    """Take the id column out of a metadata table (explicit name, else a common name, else none).

    A missing, empty or blank id is refused, naming its rows (data rows counted from 0).
    """
    if meta is None:
        return None, None
    if id_column is not None and id_column not in meta.columns:
        raise UnknownColumnError(f"id column {id_column!r} not in the metadata; available: {list(meta.columns)}")
    column = guess_id_column(meta.columns, id_column)
    if column is None:
        return None, meta
    values = meta[column]
    blank = values.isna().to_numpy() | np.asarray([isinstance(v, str) and not v.strip() for v in values], dtype=bool)
    if blank.any():
        rows = np.flatnonzero(blank).tolist()
        raise MetadataError(f"id column {column!r} has {len(rows)} missing or blank ids, at rows {preview_list(rows, 10)} "
                            "(data rows counted from 0); give every row an id")
    return values.astype(str).tolist(), meta.drop(columns=[column])
