"""Encode a store with an SAE into ``codes.zarr``: sparse codes, per-feature statistics, inverted index.

Layout (Zarr v3 group):

- ``rows/ptr`` (N+1 int64), ``rows/latent`` (nnz int32), ``rows/value`` (nnz float32): CSR codes,
  variable length per row (BatchTopK / ReLU rows differ in L0);
- ``features/ptr`` (n+1 int64), ``features/row`` (nnz int64), ``features/value`` (nnz float32):
  the inverted index, each feature's rows sorted by activation, strongest first;
- ``stats/<name>`` (n): count, rate, mean (over active rows), max, q50, q90, q99.

Everything is streamed: rows in store batches, the index in feature blocks sized to a memory budget.
The folder is built next to its destination and renamed into place when complete.
"""

from __future__ import annotations

import html
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import zarr
from tqdm.auto import tqdm

from sae.errors import DimensionMismatchError, SaeError, StaleArtifactError
from sae.models import SparseAutoencoder
from sae.store import Store, location

SCHEMA_VERSION = 1
STAT_NAMES = ("count", "rate", "mean", "max", "q50", "q90", "q99")
_CHUNK = 1 << 20


def _new_array(group: zarr.Group, name: str, dtype, shape=(0,)) -> zarr.Array:
    return group.create_array(name, shape=shape, chunks=(_CHUNK,), dtype=dtype)


def _append(arr: zarr.Array, values: np.ndarray) -> None:
    start = arr.shape[0]
    arr.resize((start + len(values),))
    arr[start:] = values


def encode_batches(model: SparseAutoencoder, store: Store, batch_size: int, device: str, progress: bool):
    """Yield the CSR codes of consecutive store batches (streamed, in row order)."""
    bar = tqdm(total=store.n_rows, desc="encode codes", unit="rows", disable=not progress)
    with bar:
        for x in store.iter_batches(batch_size):
            vals, idx = model.encode(torch.from_numpy(x).to(device))
            csr = model.to_csr(vals, idx)
            bar.update(len(x))
            yield csr


def encode_store(
    store: Store,
    model: SparseAutoencoder,
    dest: str | os.PathLike,
    *,
    sae_id: str = "",
    batch_size: int = 8192,
    memory_budget_gb: float = 1.0,
    device: str = "cpu",
    progress: bool = True,
    compute=None,
) -> "Codes":
    """Encode every row of ``store`` into ``dest`` (a ``codes.zarr`` folder) and index it.

    ``compute``: a :class:`sae.distributed.DaskConfig` runs the encoding and the index on a Dask
    cluster (a LocalCluster by default) with the same result, bit for bit; its ``memory_budget_gb``
    then replaces ``memory_budget_gb``.
    """
    if compute is not None:
        from sae.distributed.encode import encode_store_dask

        return encode_store_dask(store, model, dest, compute=compute, sae_id=sae_id, batch_size=batch_size, progress=progress)
    n = model.cfg.n_latents
    with building_codes(store, model, dest) as (group, _):
        ptr, lat, val = (_new_array(group, f"rows/{k}", t) for k, t in (("ptr", "int64"), ("latent", "int32"), ("value", "float32")))
        _append(ptr, np.zeros(1, np.int64))
        total, counts = 0, np.zeros(n, np.int64)
        for csr in encode_batches(model.eval(), store, batch_size, device, progress):
            _append(ptr, total + csr.indptr[1:].astype(np.int64))
            _append(lat, csr.indices.astype(np.int32))
            _append(val, csr.data.astype(np.float32))
            counts += np.bincount(csr.indices, minlength=n)
            total += csr.nnz
        _build_index(group, counts, store.n_rows, memory_budget_gb, progress)
        group.attrs.update(codes_attrs(store, model, sae_id, total))
    return Codes.open(dest, store=store)


@contextmanager
def building_codes(store: Store, model: SparseAutoencoder, dest: str | os.PathLike):
    """Check the SAE fits the store, open ``dest``'s hidden build folder as a Zarr group and yield
    ``(group, build_path)``; on success rename it into place, on any error remove it (never half-written)."""
    if store.dim != model.cfg.d_in:
        raise DimensionMismatchError(f"the SAE expects {model.cfg.d_in}-d inputs but the store holds {store.dim}-d embeddings")
    dest = Path(dest).absolute()
    location.remove_stale_partials(dest)
    build = location.partial_path(dest)
    group = zarr.open_group(str(build), mode="w", zarr_format=3)
    try:
        yield group, build
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    location.replace_dir(build, dest)


def codes_attrs(store: Store, model: SparseAutoencoder, sae_id: str, nnz: int) -> dict:
    """The attributes a finished ``codes.zarr`` carries (what ``Codes.open`` checks)."""
    return {"sae_workbench": "codes", "schema_version": SCHEMA_VERSION, "store_fingerprint": store.fingerprint,
            "sae": sae_id, "n_rows": store.n_rows, "n_latents": model.cfg.n_latents, "nnz": int(nnz), "arch": model.cfg.arch}


def _feature_blocks(counts: np.ndarray, budget_entries: int) -> list[tuple[int, int]]:
    """Split features into contiguous blocks whose entries fit the memory budget."""
    blocks, start, acc = [], 0, 0
    for f, c in enumerate(counts):
        if acc and acc + c > budget_entries:
            blocks.append((start, f))
            start, acc = f, 0
        acc += int(c)
    blocks.append((start, len(counts)))
    return blocks


def _build_index(group: zarr.Group, counts: np.ndarray, n_rows: int, memory_budget_gb: float, progress: bool) -> None:
    """Inverted index and statistics, one pass over the CSR codes per feature block."""
    n = len(counts)
    fptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    group.create_array("features/ptr", data=fptr, chunks=(min(len(fptr), _CHUNK),))
    f_row = group.create_array("features/row", shape=(int(fptr[-1]),), chunks=(_CHUNK,), dtype="int64")
    f_val = group.create_array("features/value", shape=(int(fptr[-1]),), chunks=(_CHUNK,), dtype="float32")
    stats = {name: np.zeros(n, np.float64) for name in STAT_NAMES}
    budget = max(1, int(memory_budget_gb * 2**30 / 40))  # ~40 bytes per entry while sorting
    rows_ptr, rows_lat, rows_val = group["rows/ptr"], group["rows/latent"], group["rows/value"]
    blocks = _feature_blocks(counts, budget)
    for f0, f1 in tqdm(blocks, desc="index features", disable=not progress or len(blocks) == 1):
        rows, vals = gather_features(rows_ptr, rows_lat, rows_val, n_rows, f0, f1)
        a, b = int(fptr[f0]), int(fptr[f1])
        if b > a:
            f_row[a:b] = rows
            f_val[a:b] = vals
        _block_stats(stats, vals, fptr, f0, f1, n_rows)
    for name, values in stats.items():
        group.create_array(f"stats/{name}", data=values.astype(np.float32 if name != "count" else np.int64), chunks=(n,))


def gather_features(rows_ptr, rows_lat, rows_val, n_rows: int, f0: int, f1: int) -> tuple[np.ndarray, np.ndarray]:
    """Posting entries (rows, values) of features ``f0:f1``, one scan of the CSR codes.

    Ordered by feature, then strongest first; equal values keep row order (a stable sort), so the
    result does not depend on how the features were split into blocks (the Dask path relies on it).
    """
    lat_parts, row_parts, val_parts = [], [], []
    for r0 in range(0, n_rows, 1 << 18):
        r1 = min(n_rows, r0 + (1 << 18))
        p = np.asarray(rows_ptr[r0 : r1 + 1])
        lat = np.asarray(rows_lat[int(p[0]) : int(p[-1])])
        keep = (lat >= f0) & (lat < f1)
        rows = np.repeat(np.arange(r0, r1, dtype=np.int64), np.diff(p))
        lat_parts.append(lat[keep])
        row_parts.append(rows[keep])
        val_parts.append(np.asarray(rows_val[int(p[0]) : int(p[-1])])[keep])
    lat, rows, vals = (np.concatenate(x) for x in (lat_parts, row_parts, val_parts))
    order = np.lexsort((-vals, lat))  # by feature, then strongest first
    return rows[order], vals[order]


def _block_stats(stats: dict, vals: np.ndarray, fptr: np.ndarray, f0: int, f1: int, n_rows: int) -> None:
    base = int(fptr[f0])
    for f in range(f0, f1):
        v = vals[int(fptr[f]) - base : int(fptr[f + 1]) - base]  # sorted descending
        c = len(v)
        stats["count"][f] = c
        stats["rate"][f] = c / max(1, n_rows)
        if c:
            stats["mean"][f] = float(v.mean())
            stats["max"][f] = float(v[0])
            for q in (50, 90, 99):
                stats[f"q{q}"][f] = float(np.quantile(v, q / 100))


class Codes:
    """Read access to a ``codes.zarr`` folder."""

    def __init__(self, path: Path, group: zarr.Group):
        self.path = path
        self._group = group
        attrs = group.attrs.asdict()
        self.n_rows = int(attrs["n_rows"])
        self.n_latents = int(attrs["n_latents"])
        self.nnz = int(attrs["nnz"])
        self.store_fingerprint = str(attrs["store_fingerprint"])
        self._fptr = np.asarray(group["features/ptr"][:])
        self._rptr: np.ndarray | None = None
        self._arrays: dict[str, zarr.Array] = {}

    def _array(self, name: str) -> zarr.Array:
        """An array of the group, opened once (opening parses its metadata: too slow per feature)."""
        if name not in self._arrays:
            self._arrays[name] = self._group[name]
        return self._arrays[name]

    @classmethod
    def open(cls, path: str | os.PathLike, store: Store | None = None) -> "Codes":
        """Open codes; with ``store`` refuse codes computed from another version of it."""
        path = Path(path)
        if not (path / "zarr.json").exists():
            raise SaeError(f"no codes at {path}; run `sae encode` (or `sae train`, which encodes) first")
        group = zarr.open_group(str(path), mode="r", zarr_format=3)
        if group.attrs.get("sae_workbench") != "codes":
            raise SaeError(f"{path} is not a codes folder")
        if int(group.attrs.get("schema_version", 1)) > SCHEMA_VERSION:
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
            self._rptr = np.asarray(self._group["rows/ptr"][:])
        return self._rptr

    def stats(self) -> pd.DataFrame:
        """Per-feature statistics, one row per latent."""
        df = pd.DataFrame({name: np.asarray(self._group[f"stats/{name}"][:]) for name in STAT_NAMES})
        df.index.name = "feature"
        return df

    def _check_feature(self, feature: int) -> int:
        if not 0 <= int(feature) < self.n_latents:
            raise SaeError(f"unknown feature {feature}: this SAE has features 0..{self.n_latents - 1}")
        return int(feature)

    def feature_rows(self, feature: int, top: int | None = None) -> tuple[np.ndarray, np.ndarray]:
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
            (np.asarray(self._group["rows/value"][:]), np.asarray(self._group["rows/latent"][:]), self.row_ptr),
            shape=(self.n_rows, self.n_latents),
        )

    def l0(self) -> np.ndarray:
        return np.diff(self.row_ptr)

    def _repr_html_(self) -> str:
        s = self.stats()
        alive = int((s["count"] > 0).sum())
        return (f"<div><b>codes</b> {html.escape(str(self.path))}: {self.n_rows:,} rows x {self.n_latents:,} features, "
                f"mean L0 {self.nnz / max(1, self.n_rows):.1f}, {alive:,} features fire</div>")
