"""The ``codes.zarr`` layout and the pieces both encoders (single process, Dask) share.

Layout (Zarr v3 group):

- ``rows/ptr`` (N+1 int64), ``rows/latent`` (nnz int32), ``rows/value`` (nnz float32): CSR codes,
  variable length per row (BatchTopK / ReLU rows differ in L0);
- ``features/ptr`` (n+1 int64), ``features/row`` (nnz int64), ``features/value`` (nnz float32):
  the inverted index, each feature's rows sorted by activation, strongest first;
- ``stats/<name>`` (n): count, rate, mean (over active rows), max, q50, q90, q99.

The folder is built next to its destination and renamed into place when complete
(:func:`building_codes`).
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import zarr

from sae._io import partial_path, remove_stale_partials, replace_dir
from sae.codes.reader import SCHEMA_VERSION
from sae.errors import DimensionMismatchError
from sae.models import SparseAutoencoder
from sae.store import Store

CHUNK = 1 << 20
"""Entries per Zarr chunk of the codes and the index."""


@contextmanager
def building_codes(store: Store, model: SparseAutoencoder, dest: str | os.PathLike):
    """Check the SAE fits the store, open ``dest``'s hidden build folder as a Zarr group and yield
    ``(group, build_path)``; on success rename it into place, on any error remove it (never half-written)."""
    if store.dim != model.cfg.d_in:
        raise DimensionMismatchError(f"the SAE expects {model.cfg.d_in}-d inputs but the store holds {store.dim}-d embeddings")
    dest = Path(dest).absolute()
    remove_stale_partials(dest)
    build = partial_path(dest)
    group = zarr.open_group(str(build), mode="w", zarr_format=3)
    try:
        yield group, build
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    replace_dir(build, dest)


def codes_attrs(store: Store, model: SparseAutoencoder, sae_id: str, nnz: int, model_digest: str = "") -> dict:
    """The attributes a finished ``codes.zarr`` carries (what ``Codes.open`` and ``Run.codes`` check):
    the store fingerprint and the digest of the model that encoded it."""
    return {"sae_workbench": "codes", "schema_version": SCHEMA_VERSION, "store_fingerprint": store.fingerprint,
            "sae": sae_id, "n_rows": store.n_rows, "n_latents": model.cfg.n_latents, "nnz": int(nnz), "arch": model.cfg.arch,
            "model_digest": model_digest}


def gather_features(rows_ptr, rows_lat, rows_val, n_rows: int, f0: int, f1: int, scan_rows: int = 1 << 18) -> tuple[np.ndarray, np.ndarray]:
    """Posting entries (rows, values) of features ``f0:f1``, one scan of the CSR codes, ``scan_rows`` rows at a time.

    Ordered by feature, then strongest first; equal values keep row order (a stable sort), so the
    result does not depend on how the features were split into blocks or the scan into row ranges
    (the Dask path relies on it).
    """
    lat_parts, row_parts, val_parts = [], [], []
    scan_rows = max(1, int(scan_rows))
    for r0 in range(0, n_rows, scan_rows):
        r1 = min(n_rows, r0 + scan_rows)
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
