"""A 2-D map of the concept space (UMAP over calibrated presences, cosine), cached on disk."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from sae._io import atomic_path


def concept_map(index, codes, *, sample: int = 20_000, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1,
                cache_dir: str | Path | None = None, key: str = "", block: int = 50_000) -> pd.DataFrame:
    """(row, x, y) for every row: UMAP fitted on a seeded sample of at most ``sample`` rows, the rest transformed.

    The result is cached under ``cache_dir`` by ``key`` (e.g. the store fingerprint and SAE name) and
    the settings, so widgets and figures reopen it instantly. ``block``: rows per UMAP transform call
    (``sae.audit.dask.concept_map_dask`` transforms the same blocks in parallel).
    """
    path = map_cache_path(index, cache_dir, key=key, sample=sample, seed=seed, n_neighbors=n_neighbors, min_dist=min_dist)
    if path is not None and path.exists():
        return pd.read_parquet(path)
    n = index.n_rows
    reducer, fit_rows, xy = fit_sample(index, codes, sample=sample, seed=seed, n_neighbors=n_neighbors, min_dist=min_dist)
    for rows in transform_blocks(n, fit_rows, block):
        xy[rows] = reducer.transform(index.presences(codes, rows))
    out = pd.DataFrame({"row": np.arange(n), "x": xy[:, 0], "y": xy[:, 1]})
    if path is not None:
        _write_cache(out, path)
    return out


TRANSFORM_BLOCK = 50_000
"""Rows per UMAP transform call (a block's result depends on the block, so every path uses the same blocks)."""


def map_cache_path(index, cache_dir, *, key: str, sample: int, seed: int, n_neighbors: int, min_dist: float) -> Path | None:
    """Where the map for these settings is cached (None without ``cache_dir``)."""
    if cache_dir is None:
        return None
    settings = {"key": key, "sample": sample, "seed": seed, "n_neighbors": n_neighbors, "min_dist": min_dist, "n": index.n_rows}
    digest = hashlib.blake2b(json.dumps(settings, sort_keys=True).encode(), digest_size=8).hexdigest()
    return Path(cache_dir) / f"map-{digest}.parquet"


def fit_sample(index, codes, *, sample: int, seed: int, n_neighbors: int, min_dist: float):
    """(fitted reducer, the seeded sample of rows it was fitted on, xy with those rows filled)."""
    import umap

    rng = np.random.default_rng(seed)
    n = index.n_rows
    fit_rows = np.sort(rng.choice(n, sample, replace=False)) if n > sample else np.arange(n)
    reducer = umap.UMAP(n_neighbors=min(n_neighbors, len(fit_rows) - 1), min_dist=min_dist, metric="cosine", random_state=seed)
    xy = np.zeros((n, 2), np.float32)
    xy[fit_rows] = reducer.fit_transform(index.presences(codes, fit_rows))
    return reducer, fit_rows, xy


def transform_blocks(n: int, fit_rows: np.ndarray, block: int = TRANSFORM_BLOCK) -> list[np.ndarray]:
    """The rows outside the sample, in the blocks every path transforms them in."""
    rest = np.setdiff1d(np.arange(n), fit_rows)
    return [rest[start : start + block] for start in range(0, len(rest), block)]


def _write_cache(out: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        out.to_parquet(tmp)
