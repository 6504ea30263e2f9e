"""Encode a store into ``codes.zarr`` on a Dask cluster: the same folder, bit for bit, as ``sae.codes.encode_store``.

Three task waves, each over independent ranges, so nothing is ever gathered in one process:

1. **encode** row blocks (a multiple of ``batch_size`` rows, so every SAE batch holds exactly the
   rows the single-process path batches together): each task reads its rows from the store, writes
   its CSR part to ``_parts/`` inside the folder being built and returns its per-feature counts;
2. **assemble** the parts into ``rows/ptr``, ``rows/latent``, ``rows/value``: each task owns whole
   Zarr chunks of the outputs, so no two processes ever write one chunk;
3. **index**: each task owns a chunk-aligned range of the inverted index's entries, gathers the
   features overlapping it from the CSR codes (:func:`sae.codes.gather_features`, the single-process
   code), writes its range and returns the statistics of the features starting in it.

The folder is built next to its destination and renamed into place when complete.
"""

from __future__ import annotations

import copy
import math
import os
import shutil
from pathlib import Path

import numpy as np
import torch
import zarr

from sae import _zarr
from sae._io import atomic_path
from sae._progress import tqdm
from sae.codes.layout import CHUNK as _CHUNK
from sae.codes.layout import _block_stats, building_codes, codes_attrs, gather_features
from sae.codes.reader import STAT_NAMES, Codes
from sae.compute import DaskConfig, dask_client, n_workers, task_threads
from sae.models import SparseAutoencoder
from sae.store import Store

_ENTRY_BYTES = 40
"""Bytes per inverted-index entry while an index task sorts (the single-process estimate)."""


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def encode_block_rows(n_rows: int, dim: int, batch_size: int, worker_bytes: int, workers: int, tasks_per_worker: int) -> int:
    """Rows per encode task: a multiple of ``batch_size`` that fits a quarter of a worker's memory and spreads over the workers."""
    fit = max(batch_size, (worker_bytes // 4) // max(1, dim * 4 + 512))
    spread = _round_up(max(1, -(-n_rows // max(1, workers * tasks_per_worker))), batch_size)
    return max(batch_size, min(fit // batch_size * batch_size, spread))


def _encode_task(url: str, model: SparseAutoencoder, parts: str, i: int, r0: int, r1: int, batch_size: int, threads: int):
    """Encode rows r0:r1 in batches aligned with the single-process path; write the CSR part; return counts."""
    task_threads(threads)
    store = Store.open(url)
    n = model.cfg.n_latents
    ptrs, lats, vals = [np.zeros(1, np.int64)], [], []
    total = 0
    counts = np.zeros(n, np.int64)
    for b0 in range(r0, r1, batch_size):
        x = store.read_embeddings(slice(b0, min(r1, b0 + batch_size)))
        v, idx = model.encode(torch.from_numpy(x))
        csr = model.to_csr(v, idx)
        ptrs.append(total + csr.indptr[1:].astype(np.int64))
        lats.append(csr.indices.astype(np.int32))
        vals.append(csr.data.astype(np.float32))
        counts += np.bincount(csr.indices, minlength=n)
        total += csr.nnz
    for name, arr in (("ptr", np.concatenate(ptrs)), ("latent", np.concatenate(lats)), ("value", np.concatenate(vals))):
        with atomic_path(Path(parts) / f"{i:07d}-{name}.npy") as tmp:
            np.save(tmp, arr)
    return i, total, counts


def _assemble_task(build: str, parts: str, c0: int, c1: int, entry_off: np.ndarray, row_off: np.ndarray, nnz: int, n_rows: int, chunk: int) -> int:
    """Write output chunks c0:c1 of rows/latent, rows/value (entries) and rows/ptr (rows + 1)."""
    group = zarr.open_group(build, mode="r+", zarr_format=3)
    a, b = c0 * chunk, min(c1 * chunk, nnz)
    if b > a:
        for name in ("latent", "value"):
            out = []
            for i in range(int(np.searchsorted(entry_off, a, "right")) - 1, int(np.searchsorted(entry_off, b, "left"))):
                part = np.load(Path(parts) / f"{i:07d}-{name}.npy", mmap_mode="r")
                lo, hi = max(a, int(entry_off[i])), min(b, int(entry_off[i + 1]))
                if hi > lo:
                    out.append(np.asarray(part[lo - entry_off[i] : hi - entry_off[i]]))
            _zarr.array(group, f"rows/{name}")[a:b] = np.concatenate(out)
    a, b = c0 * chunk, min(c1 * chunk, n_rows + 1)
    if b > a:
        out, last = [], min(b, n_rows)
        if last > a:
            for i in range(int(np.searchsorted(row_off, a, "right")) - 1, int(np.searchsorted(row_off, last, "left"))):
                ptr = np.load(Path(parts) / f"{i:07d}-ptr.npy", mmap_mode="r")  # local offsets of rows row_off[i]..row_off[i+1]
                lo, hi = max(a, int(row_off[i])), min(last, int(row_off[i + 1]))
                if hi > lo:
                    out.append(entry_off[i] + np.asarray(ptr[lo - row_off[i] : hi - row_off[i]]))
        if b == n_rows + 1:
            out.append(np.array([nnz], np.int64))
        _zarr.array(group, "rows/ptr")[a:b] = np.concatenate(out)
    return c1 - c0


def _index_task(build: str, a: int, b: int, fptr: np.ndarray, n_rows: int) -> tuple[int, int, dict[str, np.ndarray]]:
    """Write inverted-index entries a:b (chunk-aligned) and return the stats of the features that start there."""
    group = zarr.open_group(build, mode="r+", zarr_format=3)
    f0 = int(np.searchsorted(fptr, a, "right")) - 1  # the feature holding entry a
    f1 = int(np.searchsorted(fptr, b, "left"))  # features starting before b
    rows, vals = gather_features(group["rows/ptr"], group["rows/latent"], group["rows/value"], n_rows, f0, f1)
    base = int(fptr[f0])
    _zarr.array(group, "features/row")[a:b] = rows[a - base : b - base]
    _zarr.array(group, "features/value")[a:b] = vals[a - base : b - base]
    fs = int(np.searchsorted(fptr[:-1], a, "left"))  # first feature whose entries start at or after a
    fe = int(np.searchsorted(fptr[:-1], b, "left"))
    stats = {name: np.zeros(len(fptr) - 1, np.float64) for name in STAT_NAMES}
    if fe > fs:
        _block_stats(stats, vals[int(fptr[fs]) - base :], fptr, fs, fe, n_rows)
    return fs, fe, {k: v[fs:fe] for k, v in stats.items()}


def encode_store_dask(
    store: Store,
    model: SparseAutoencoder,
    dest: str | os.PathLike,
    *,
    compute: DaskConfig | None = None,
    client=None,
    sae_id: str = "",
    model_digest: str = "",
    batch_size: int = 8192,
    progress: bool = True,
    chunk_entries: int = _CHUNK,
) -> Codes:
    """Encode every row of ``store`` into ``dest`` on a Dask cluster; identical to ``sae.codes.encode_store``.

    ``compute`` says which cluster (a LocalCluster by default) and the memory budget; ``client``
    reuses an open ``distributed.Client``. The store must be readable by every worker (a shared
    filesystem or object storage when the scheduler is remote). ``chunk_entries``: Zarr chunk length
    of the 1-D arrays (tasks own whole chunks; tests make it small to exercise many chunks).
    """
    from distributed import as_completed

    compute = compute or DaskConfig()
    n, n_rows = model.cfg.n_latents, store.n_rows
    with building_codes(store, model, dest) as (group, build), dask_client(compute, client) as c:
        parts = build / "_parts"
        parts.mkdir()
        workers = n_workers(c)
        block = encode_block_rows(n_rows, store.dim, batch_size, compute.worker_budget_bytes, workers, compute.tasks_per_worker)
        shipped = model if model.W_enc.device.type == "cpu" else copy.deepcopy(model).cpu()
        model_f = c.scatter(shipped.eval(), broadcast=True)
        starts = list(range(0, n_rows, block))
        futs = [c.submit(_encode_task, store.url, model_f, str(parts), i, r0, min(n_rows, r0 + block), batch_size,
                         compute.threads_per_worker, pure=False) for i, r0 in enumerate(starts)]
        nnz_of = np.zeros(len(starts), np.int64)
        counts = np.zeros(n, np.int64)
        bar = tqdm(total=n_rows, desc="encode codes (dask)", unit="rows", disable=not progress)
        for fut in as_completed(futs):
            i, nnz_i, counts_i = fut.result()
            nnz_of[i] = nnz_i
            counts += counts_i
            bar.update(min(n_rows, starts[i] + block) - starts[i])
            fut.release()
        bar.close()
        entry_off = np.concatenate([[0], np.cumsum(nnz_of)]).astype(np.int64)
        row_off = np.array(starts + [n_rows], np.int64)
        nnz = int(entry_off[-1])
        chunk = int(chunk_entries)
        group.create_array("rows/ptr", shape=(n_rows + 1,), chunks=(chunk,), dtype="int64")
        group.create_array("rows/latent", shape=(nnz,), chunks=(chunk,), dtype="int32")
        group.create_array("rows/value", shape=(nnz,), chunks=(chunk,), dtype="float32")
        n_chunks = max(-(-nnz // chunk), -(-(n_rows + 1) // chunk))
        per = max(1, math.ceil(n_chunks / (workers * compute.tasks_per_worker)))
        futs = [c.submit(_assemble_task, str(build), str(parts), c0, min(n_chunks, c0 + per), entry_off, row_off, nnz, n_rows, chunk, pure=False)
                for c0 in range(0, n_chunks, per)]
        c.gather(futs)
        shutil.rmtree(parts)
        _build_index_dask(c, group, str(build), counts, n_rows, compute, workers, progress, chunk)
        group.attrs.update(codes_attrs(store, model, sae_id, nnz, model_digest))
    return Codes.open(dest, store=store)


def index_ranges(nnz: int, worker_bytes: int, workers: int, chunk: int = _CHUNK) -> list[tuple[int, int]]:
    """Chunk-aligned entry ranges of the inverted index, one per task: each fits a worker's memory,
    and there are at least as many as workers. Every task scans the CSR codes once."""
    if nnz == 0:
        return []
    fit = max(chunk, (worker_bytes // _ENTRY_BYTES) // chunk * chunk)
    spread = _round_up(-(-nnz // workers), chunk)
    size = min(fit, spread)
    return [(a, min(nnz, a + size)) for a in range(0, nnz, size)]


def _build_index_dask(c, group: zarr.Group, build: str, counts: np.ndarray, n_rows: int, compute: DaskConfig, workers: int, progress: bool,
                      chunk: int = _CHUNK) -> None:
    """Inverted index and statistics: entry-range tasks, results identical to ``sae.codes.build._build_index``."""
    n = len(counts)
    fptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    group.create_array("features/ptr", data=fptr, chunks=(min(len(fptr), _CHUNK),))
    group.create_array("features/row", shape=(int(fptr[-1]),), chunks=(chunk,), dtype="int64")
    group.create_array("features/value", shape=(int(fptr[-1]),), chunks=(chunk,), dtype="float32")
    stats = {name: np.zeros(n, np.float64) for name in STAT_NAMES}
    ranges = index_ranges(int(fptr[-1]), compute.worker_budget_bytes, workers, chunk)
    fptr_f = c.scatter(fptr, broadcast=True)
    futs = [c.submit(_index_task, build, a, b, fptr_f, n_rows, pure=False) for a, b in ranges]
    for fut in tqdm(futs, desc="index features (dask)", disable=not progress or len(futs) <= 1):
        fs, fe, part = fut.result()
        for name, values in part.items():
            stats[name][fs:fe] = values
    for name, values in stats.items():
        group.create_array(f"stats/{name}", data=values.astype(np.float32 if name != "count" else np.int64), chunks=(n,))
