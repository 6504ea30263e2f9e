"""Encode a store with an SAE into ``codes.zarr`` (layout in :mod:`sae.codes.layout`), in one process.

Everything is streamed: rows in store batches, the index in feature blocks sized to the memory
budget. :mod:`sae.codes.encode_dask` writes the same folder, bit for bit, on a Dask cluster.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import zarr

from sae._progress import tqdm
from sae.codes.layout import CHUNK, _block_stats, building_codes, codes_attrs, gather_features
from sae.codes.reader import STAT_NAMES, Codes
from sae.compute import MEMORY_BUDGET_GB, batch_rows
from sae.models import SparseAutoencoder
from sae.store import Store
from sae.store.stream import READ_BYTES, read_bytes_within


def _new_array(group: zarr.Group, name: str, dtype, shape=(0,)) -> zarr.Array:
    return group.create_array(name, shape=shape, chunks=(CHUNK,), dtype=dtype)


def _append(arr: zarr.Array, values: np.ndarray) -> None:
    start = arr.shape[0]
    arr.resize((start + len(values),))
    arr[start:] = values


def encode_batches(model: SparseAutoencoder, store: Store, batch_size: int, device: str, progress: bool,
                   read_bytes: int = READ_BYTES):
    """Yield the CSR codes of consecutive store batches (streamed, in row order; reads of ``read_bytes``)."""
    bar = tqdm(total=store.n_rows, desc="encode codes", unit="rows", disable=not progress)
    with bar:
        for x in store.iter_batches(batch_size, read_bytes=read_bytes):
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
    model_digest: str = "",
    batch_size: int = 8192,
    memory_budget_gb: float = MEMORY_BUDGET_GB,
    device: str = "cpu",
    progress: bool = True,
    compute=None,
) -> Codes:
    """Encode every row of ``store`` into ``dest`` (a ``codes.zarr`` folder) and index it.

    ``compute``: a :class:`sae.compute.DaskConfig` runs the encoding and the index on a Dask
    cluster (a LocalCluster by default) with the same result, bit for bit; its ``cluster_memory_gb``
    bounds the cluster's tasks. ``memory_budget_gb`` bounds this process (the index blocks being sorted).
    """
    if compute is not None:
        from sae.codes.encode_dask import encode_store_dask  # the Dask twin, beside this module

        return encode_store_dask(store, model, dest, compute=compute, sae_id=sae_id, batch_size=batch_size, progress=progress,
                                 model_digest=model_digest)
    n = model.cfg.n_latents
    batch_size = batch_rows(memory_budget_gb, store.dim + n, batch_size)
    with building_codes(store, model, dest) as (group, _):
        ptr, lat, val = (_new_array(group, f"rows/{k}", t) for k, t in (("ptr", "int64"), ("latent", "int32"), ("value", "float32")))
        _append(ptr, np.zeros(1, np.int64))
        total, counts = 0, np.zeros(n, np.int64)
        for csr in encode_batches(model.eval(), store, batch_size, device, progress, read_bytes=read_bytes_within(memory_budget_gb)):
            _append(ptr, total + csr.indptr[1:].astype(np.int64))
            _append(lat, csr.indices.astype(np.int32))
            _append(val, csr.data.astype(np.float32))
            counts += np.bincount(csr.indices, minlength=n)
            total += csr.nnz
        _build_index(group, counts, store.n_rows, memory_budget_gb, progress)
        group.attrs.update(codes_attrs(store, model, sae_id, total, model_digest))
    return Codes.open(dest, store=store)


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
    group.create_array("features/ptr", data=fptr, chunks=(min(len(fptr), CHUNK),))
    f_row = group.create_array("features/row", shape=(int(fptr[-1]),), chunks=(CHUNK,), dtype="int64")
    f_val = group.create_array("features/value", shape=(int(fptr[-1]),), chunks=(CHUNK,), dtype="float32")
    stats = {name: np.zeros(n, np.float64) for name in STAT_NAMES}
    budget = max(1, int(memory_budget_gb * 2**30 / 2 / 40))  # half the budget for the block being sorted, ~40 bytes an entry
    # the other half for one scan range of the CSR codes (~24 bytes an entry: latent, value, row, mask)
    l0 = max(1.0, float(fptr[-1]) / max(1, n_rows))
    scan_rows = int(min(1 << 18, max(1024, memory_budget_gb * 2**30 / 2 / (24 * l0))))
    rows_ptr, rows_lat, rows_val = group["rows/ptr"], group["rows/latent"], group["rows/value"]
    blocks = _feature_blocks(counts, budget)
    for f0, f1 in tqdm(blocks, desc="index features", disable=not progress or len(blocks) == 1):
        rows, vals = gather_features(rows_ptr, rows_lat, rows_val, n_rows, f0, f1, scan_rows)
        a, b = int(fptr[f0]), int(fptr[f1])
        if b > a:
            f_row[a:b] = rows
            f_val[a:b] = vals
        _block_stats(stats, vals, fptr, f0, f1, n_rows)
    for name, values in stats.items():
        group.create_array(f"stats/{name}", data=values.astype(np.float32 if name != "count" else np.int64), chunks=(n,))
