"""The audit's data-parallel parts on a Dask cluster: failure-enrichment counts and the UMAP concept map.

- Enrichment: per row block of ``codes.zarr``, how many items each feature fires on and how many of
  them fail; the blocks' integer counts are summed and the table is built by the single-process
  :func:`sae.audit.enrichment.enrichment_table` (identical result).
- Concept map: UMAP is fitted on the seeded sample in this process (as the single-process path
  does), then the other rows are transformed on the workers in the same blocks the single-process
  path uses (identical result: UMAP's transform is seeded and depends only on its block).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from sae import _zarr
from sae.audit.concept_map import _write_cache, fit_sample, map_cache_path, transform_blocks
from sae.audit.enrichment import enrichment_table
from sae.codes import Codes
from sae.compute import DaskConfig, dask_client, n_workers, task_threads


def _count_task(path: str, r0: int, r1: int, failed: np.ndarray, within: np.ndarray | None, n: int,
                firm: tuple[np.ndarray, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per feature, over rows r0:r1 (``within``: only the flagged ones): items where it fires and failing ones among
    them; ``firm`` = (scale per feature, min ratio): only activations / scale >= min ratio, computed as the index does."""
    group = zarr.open_group(path, mode="r", zarr_format=3)
    p = np.asarray(_zarr.array(group, "rows/ptr")[r0 : r1 + 1])
    lat = np.asarray(_zarr.array(group, "rows/latent")[int(p[0]) : int(p[-1])])
    local = np.repeat(np.arange(r1 - r0), np.diff(p))
    keep = within[local] if within is not None else np.ones(len(lat), bool)
    if firm is not None:
        val = np.asarray(_zarr.array(group, "rows/value")[int(p[0]) : int(p[-1])])
        keep &= (val / firm[0][lat]).astype(np.float32) >= np.float32(firm[1])
    lat, local = lat[keep], local[keep]
    n_active = np.bincount(lat, minlength=n).astype(np.int64)
    n_fail = np.bincount(lat, weights=failed[local], minlength=n).astype(np.int64)
    return n_active, n_fail


def _row_blocks(n_rows: int, nnz: int, compute: DaskConfig, workers: int) -> list[tuple[int, int]]:
    per_row = 24 * max(1.0, nnz / max(1, n_rows)) + 16  # latent + row number + weight per entry, flags per row
    fit = max(1024, int(compute.worker_budget_bytes // 4 / per_row))
    spread = max(1024, -(-n_rows // (workers * compute.tasks_per_worker)))
    size = min(fit, spread)
    return [(a, min(n_rows, a + size)) for a in range(0, n_rows, size)]


def count_active_dask(codes: Codes, flag: np.ndarray, within: np.ndarray | None = None, *, compute: DaskConfig | None = None,
                      client=None, firm: tuple[np.ndarray, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``ConceptIndex.count_active`` on a Dask cluster, straight from ``codes.zarr`` (no index in memory);
    ``firm`` = (scale per feature, min ratio): count only firm activations (:mod:`sae.audit.firm`)."""
    flag = np.asarray(flag, bool)
    mask = None
    if within is not None:
        mask = np.zeros(codes.n_rows, bool)
        mask[within] = True
    compute = compute or DaskConfig()
    n_active = np.zeros(codes.n_latents, np.int64)
    n_fail = np.zeros(codes.n_latents, np.int64)
    with dask_client(compute, client) as c:
        blocks = _row_blocks(codes.n_rows, codes.nnz, compute, n_workers(c))
        futs = [c.submit(_count_task, str(codes.path), a, b, flag[a:b], None if mask is None else mask[a:b], codes.n_latents, firm,
                         pure=False) for a, b in blocks]
        for fut in futs:
            a_, f_ = fut.result()
            n_active += a_
            n_fail += f_
    return n_active, n_fail


def concept_enrichment_dask(codes: Codes, failed: np.ndarray, labels: dict[int, str] | None = None, rows: np.ndarray | None = None,
                            min_active: int = 5, *, compute: DaskConfig | None = None, client=None, index=None) -> pd.DataFrame:
    """:func:`sae.audit.enrichment.concept_enrichment` with the counts computed on a Dask cluster (identical table);
    ``index``: the audit's (firm) index whose reading of "fires" the counts follow (:mod:`sae.audit.firm`)."""
    failed = np.asarray(failed, bool)
    min_ratio = float(getattr(index, "min_ratio", 0.0))
    firm = (np.asarray(index.scale, np.float64), min_ratio) if index is not None and min_ratio > 0 else None
    n_active, n_fail = count_active_dask(codes, failed, rows, compute=compute, client=client, firm=firm)
    N = codes.n_rows if rows is None else len(rows)
    F = int(failed.sum() if rows is None else failed[rows].sum())
    return enrichment_table(n_active, n_fail, N, F, labels, min_active)


def _transform_task(reducer, path: str, block: np.ndarray, scale: np.ndarray, threads: int) -> np.ndarray:
    from sae.search.index import presences

    task_threads(threads)
    return reducer.transform(presences(Codes.open(path), block, scale))


def concept_map_dask(index, codes: Codes, *, sample: int = 20_000, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1,
                     cache_dir: str | Path | None = None, key: str = "", block: int = 50_000, compute: DaskConfig | None = None,
                     client=None) -> pd.DataFrame:
    """:func:`sae.audit.concept_map.concept_map` with the out-of-sample rows transformed on a Dask cluster (same result, same cache)."""
    path = map_cache_path(index, cache_dir, key=key, sample=sample, seed=seed, n_neighbors=n_neighbors, min_dist=min_dist)
    if path is not None and path.exists():
        return pd.read_parquet(path)
    compute = compute or DaskConfig()
    n = index.n_rows
    reducer, fit_rows, xy = fit_sample(index, codes, sample=sample, seed=seed, n_neighbors=n_neighbors, min_dist=min_dist)
    blocks = transform_blocks(n, fit_rows, block)
    if blocks:
        with dask_client(compute, client) as c:
            reducer_f = c.scatter(reducer, broadcast=True)
            scale_f = c.scatter(np.asarray(index.scale), broadcast=True)
            futs = [c.submit(_transform_task, reducer_f, str(codes.path), rows, scale_f, compute.threads_per_worker, pure=False) for rows in blocks]
            for rows, fut in zip(blocks, futs):
                xy[rows] = fut.result()
    out = pd.DataFrame({"row": np.arange(n), "x": xy[:, 0], "y": xy[:, 1]})
    if path is not None:
        _write_cache(out, path)
    return out
