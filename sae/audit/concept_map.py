"""A 2-D map of the concept space (UMAP over calibrated presences, cosine), cached on disk."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd


def concept_map(index, codes, *, sample: int = 20_000, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1,
                cache_dir: str | Path | None = None, key: str = "") -> pd.DataFrame:
    """(row, x, y) for every row: UMAP fitted on a seeded sample of at most ``sample`` rows, the rest transformed.

    The result is cached under ``cache_dir`` by ``key`` (e.g. the store fingerprint and SAE name) and
    the settings, so widgets and figures reopen it instantly.
    """
    settings = {"key": key, "sample": sample, "seed": seed, "n_neighbors": n_neighbors, "min_dist": min_dist, "n": index.n_rows}
    path = None
    if cache_dir is not None:
        digest = hashlib.blake2b(json.dumps(settings, sort_keys=True).encode(), digest_size=8).hexdigest()
        path = Path(cache_dir) / f"map-{digest}.parquet"
        if path.exists():
            return pd.read_parquet(path)
    import umap

    rng = np.random.default_rng(seed)
    n = index.n_rows
    fit_rows = np.sort(rng.choice(n, sample, replace=False)) if n > sample else np.arange(n)
    reducer = umap.UMAP(n_neighbors=min(n_neighbors, len(fit_rows) - 1), min_dist=min_dist, metric="cosine", random_state=seed)
    xy = np.zeros((n, 2), np.float32)
    xy[fit_rows] = reducer.fit_transform(index.presences(codes, fit_rows))
    rest = np.setdiff1d(np.arange(n), fit_rows)
    for start in range(0, len(rest), 50_000):
        block = rest[start : start + 50_000]
        xy[block] = reducer.transform(index.presences(codes, block))
    out = pd.DataFrame({"row": np.arange(n), "x": xy[:, 0], "y": xy[:, 1]})
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        out.to_parquet(tmp)
        tmp.replace(path)
    return out
