"""Read access to a ``codes.zarr`` folder (layout in :mod:`sae.codes.build`)."""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import zarr

from sae import _zarr
from sae.errors import SaeError, StaleArtifactError
from sae.store import Store

SCHEMA_VERSION = 1
STAT_NAMES = ("count", "rate", "mean", "max", "q50", "q90", "q99")


def check_feature(feature: int, n_latents: int) -> int:
    """``feature`` as an int, or an error naming the valid range (every reader of the codes checks with it)."""
    if not 0 <= int(feature) < n_latents:
        raise SaeError(f"unknown feature {feature}: this SAE has features 0..{n_latents - 1}")
    return int(feature)


class Codes:
    """Read access to a ``codes.zarr`` folder."""

    def __init__(self, path: Path, group: zarr.Group):
        self.path = path
        self._group = group
        attrs: dict[str, Any] = group.attrs.asdict()
        self.n_rows = int(attrs["n_rows"])
        self.n_latents = int(attrs["n_latents"])
        self.nnz = int(attrs["nnz"])
        self.store_fingerprint = str(attrs["store_fingerprint"])
        self.model_digest = str(attrs.get("model_digest", ""))
        """Digest of the model that encoded these codes ("" for codes written before it was recorded)."""
        self._fptr = np.asarray(_zarr.array(group, "features/ptr")[:])
        self._rptr: np.ndarray | None = None
        self._arrays: dict[str, zarr.Array] = {}

    def _array(self, name: str) -> zarr.Array:
        """An array of the group, opened once (opening parses its metadata: too slow per feature)."""
        if name not in self._arrays:
            self._arrays[name] = _zarr.array(self._group, name)
        return self._arrays[name]

    @classmethod
    def open(cls, path: str | os.PathLike, store: Store | None = None) -> Codes:
        """Open codes; with ``store`` refuse codes computed from another version of it."""
        path = Path(path)
        if not (path / "zarr.json").exists():
            raise SaeError(f"no codes at {path}; run `sae encode` (or `sae train`, which encodes) first")
        group = zarr.open_group(str(path), mode="r", zarr_format=3)
        if group.attrs.get("sae_workbench") != "codes":
            raise SaeError(f"{path} is not a codes folder")
        if int(_zarr.attrs(group).get("schema_version", 1)) > SCHEMA_VERSION:
            raise SaeError(f"{path} was written by a newer sae-workbench; upgrade")
        codes = cls(path, group)
        if store is not None:
            codes.check_store(store)
        return codes

    def check_store(self, store: Store) -> None:
        if store.fingerprint != self.store_fingerprint:
            raise StaleArtifactError(
                f"{self.path} was computed from a different version of the store (fingerprint {self.store_fingerprint}, "
                f"store now {store.fingerprint}); re-encode with `sae encode`"
            )

    @property
    def row_ptr(self) -> np.ndarray:
        if self._rptr is None:
            self._rptr = np.asarray(_zarr.array(self._group, "rows/ptr")[:])
        return self._rptr

    def stats(self) -> pd.DataFrame:
        """Per-feature statistics, one row per latent."""
        df = pd.DataFrame({name: np.asarray(_zarr.array(self._group, f"stats/{name}")[:]) for name in STAT_NAMES})
        df.index.name = "feature"
        return df

    def _check_feature(self, feature: int) -> int:
        return check_feature(feature, self.n_latents)

    def read_feature(self, feature: int, top: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Rows where ``feature`` fires and its values, strongest first (``top`` limits the count)."""
        f = self._check_feature(feature)
        a, b = int(self._fptr[f]), int(self._fptr[f + 1])
        if top is not None:
            b = min(b, a + int(top))
        if b <= a:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        return np.asarray(self._array("features/row")[a:b]), np.asarray(self._array("features/value")[a:b])

    def feature_index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The whole inverted index in memory: (ptr, rows, values); feature f owns ptr[f]:ptr[f+1]."""
        return self._fptr, np.asarray(self._array("features/row")[:]), np.asarray(self._array("features/value")[:])

    def rows(self, rows: Sequence[int] | np.ndarray) -> sp.csr_matrix:
        """CSR codes of the given rows (in the given order)."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.n_rows):
            raise SaeError(f"row numbers must be in [0, {self.n_rows})")
        ptr = self.row_ptr
        starts, stops = ptr[rows], ptr[rows + 1]
        lat_arr, val_arr = self._array("rows/latent"), self._array("rows/value")
        sel = np.concatenate([np.arange(a, b) for a, b in zip(starts, stops)]) if len(rows) else np.zeros(0, np.int64)
        order = np.argsort(sel, kind="stable")
        lat = np.empty(len(sel), np.int32)
        val = np.empty(len(sel), np.float32)
        if len(sel):
            lat[order] = lat_arr.get_coordinate_selection(sel[order])
            val[order] = val_arr.get_coordinate_selection(sel[order])
        indptr = np.concatenate([[0], np.cumsum(stops - starts)])
        return sp.csr_matrix((val, lat, indptr), shape=(len(rows), self.n_latents))

    def to_csr(self) -> sp.csr_matrix:
        """All codes as one CSR matrix (N x n)."""
        return sp.csr_matrix(
            (np.asarray(_zarr.array(self._group, "rows/value")[:]), np.asarray(_zarr.array(self._group, "rows/latent")[:]), self.row_ptr),
            shape=(self.n_rows, self.n_latents),
        )

    def l0(self) -> np.ndarray:
        return np.diff(self.row_ptr)

    def _repr_html_(self) -> str:
        s = self.stats()
        alive = int((s["count"] > 0).sum())
        return (f"<div><b>codes</b> {html.escape(str(self.path))}: {self.n_rows:,} rows x {self.n_latents:,} features, "
                f"mean L0 {self.nnz / max(1, self.n_rows):.1f}, {alive:,} features fire</div>")
