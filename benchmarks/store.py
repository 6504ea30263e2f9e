"""Store benchmark: ingest and streaming of N x D float16 rows from a NumPy memmap.

Each number is a ratio to a plain-NumPy baseline run in the same process (these machines are
noisy): ingest vs copying the memmap into a new .npy file in the same batches, streaming vs
``np.load(mmap_mode="r")`` + slicing into float32 batches.

    python benchmarks/store.py                 # 1e6 x 1024 (about 2 GiB per copy on disk)
    python benchmarks/store.py --rows 100000   # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sae.store import Store, importers
from sae.store.importers import IngestOptions

OUT = Path(__file__).resolve().parents[1] / "artifacts" / "benchmarks"


def make_source(path: Path, rows: int, dim: int, block: int = 65536) -> None:
    """A float16 .npy written block by block (never all in memory)."""
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(rows, dim))
    rng = np.random.default_rng(0)
    for start in range(0, rows, block):
        stop = min(rows, start + block)
        arr[start:stop] = rng.standard_normal((stop - start, dim), dtype=np.float32)
    arr.flush()
    del arr


def baseline_ingest(src: Path, dst: Path, batch: int) -> float:
    t0 = time.perf_counter()
    x = np.load(src, mmap_mode="r")
    out = np.lib.format.open_memmap(dst, mode="w+", dtype=x.dtype, shape=x.shape)
    for start in range(0, len(x), batch):
        out[start : start + batch] = x[start : start + batch]
    out.flush()
    del out
    return time.perf_counter() - t0


def our_ingest(src: Path, dest: Path, batch: int) -> float:
    t0 = time.perf_counter()
    importers.from_numpy(src, IngestOptions(dest=str(dest), dtype="float16", batch_rows=batch, progress=False, overwrite=True))
    return time.perf_counter() - t0


def baseline_stream(src: Path, batch: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    x = np.load(src, mmap_mode="r")
    total = 0.0
    for start in range(0, len(x), batch):
        b = np.asarray(x[start : start + batch], dtype=np.float32)
        total += float(b[0, 0])
    return time.perf_counter() - t0, total


def our_stream(store: Store, batch: int, shuffle: bool) -> tuple[float, float]:
    t0 = time.perf_counter()
    total = 0.0
    for b in store.iter_batches(batch, shuffle=shuffle, seed=0):
        total += float(b[0, 0])
    return time.perf_counter() - t0, total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--ingest-batch", type=int, default=65536)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir on the same disk as artifacts/)")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="sae-bench-store-", dir=OUT.parent))
    work.mkdir(parents=True, exist_ok=True)
    try:
        src = work / "src.npy"
        t0 = time.perf_counter()
        make_source(src, args.rows, args.dim)
        print(f"source {args.rows:,} x {args.dim} float16 written in {time.perf_counter() - t0:.1f} s", flush=True)
        res = {"ingest_baseline_s": [], "ingest_ours_s": [], "stream_baseline_s": [], "stream_seq_s": [], "stream_shuffled_s": []}
        for r in range(args.repeats):
            res["ingest_baseline_s"].append(baseline_ingest(src, work / "copy.npy", args.ingest_batch))
            res["ingest_ours_s"].append(our_ingest(src, work / "store.zarr", args.ingest_batch))
            store = Store.open(work / "store.zarr")
            res["stream_baseline_s"].append(baseline_stream(src, args.batch)[0])
            res["stream_seq_s"].append(our_stream(store, args.batch, shuffle=False)[0])
            res["stream_shuffled_s"].append(our_stream(store, args.batch, shuffle=True)[0])
            print(f"repeat {r}: " + ", ".join(f"{k}={v[-1]:.2f}" for k, v in res.items()), flush=True)
        best = {k: min(v) for k, v in res.items()}
        rate = lambda s: args.rows / s
        summary = {
            "rows": args.rows, "dim": args.dim, "dtype": "float16", "batch": args.batch, "repeats": args.repeats,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "best_seconds": best,
            "rows_per_s": {k.removesuffix("_s"): rate(v) for k, v in best.items()},
            "ratios": {
                "ingest_vs_npy_copy": best["ingest_baseline_s"] / best["ingest_ours_s"],
                "stream_sequential_vs_np_load": best["stream_baseline_s"] / best["stream_seq_s"],
                "stream_shuffled_vs_np_load": best["stream_baseline_s"] / best["stream_shuffled_s"],
            },
            "all_seconds": res,
            "store_chunk_rows": Store.open(work / "store.zarr").chunk_rows,
        }
        write_results(summary)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write_results(s: dict) -> None:
    (OUT / "store.json").write_text(json.dumps(s, indent=2))
    r, rps = s["ratios"], s["rows_per_s"]
    lines = [
        f"# Store benchmark: {s['rows']:,} x {s['dim']} float16, batch {s['batch']} (best of {s['repeats']})",
        "",
        "| operation | ours rows/s | baseline rows/s | ratio (ours / baseline) |",
        "|---|---|---|---|",
        f"| ingest from .npy memmap (baseline: copy into a new .npy) | {rps['ingest_ours']:,.0f} | {rps['ingest_baseline']:,.0f} "
        f"| {r['ingest_vs_npy_copy']:.2f}x |",
        f"| stream sequential, float32 batches (baseline: np.load mmap + slicing) | {rps['stream_seq']:,.0f} | {rps['stream_baseline']:,.0f} "
        f"| {r['stream_sequential_vs_np_load']:.2f}x |",
        f"| stream shuffled by chunk (same baseline) | {rps['stream_shuffled']:,.0f} | {rps['stream_baseline']:,.0f} "
        f"| {r['stream_shuffled_vs_np_load']:.2f}x |",
        "",
        "Goal: streaming >= 0.5x the raw baseline.",
    ]
    (OUT / "store.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
