"""Scale benchmark: every stage at 1e6 x 1024 (planted data) on this machine, distributed vs single process.

Stages (each in a fresh process, so wall time and peak memory belong to that stage alone):

- ``ingest``: the planted generator streams 1e6 float16 rows (plus metadata) into a Store;
- ``train_1p`` / ``train_ddp``: one epoch of a TopK SAE (n=4096, k=32, batch 4096), the single-process
  Trainer vs DistributedDataParallel with 2 ranks (torchrun, gloo);
- ``encode_1p`` / ``encode_dask``: encode + statistics + inverted index, single process vs a Dask
  LocalCluster with 2 workers (the Dask codes are checked bit for bit against the single-process ones);
- ``audit_1p`` / ``audit_dask``: failure enrichment (single process vs Dask) and slice discovery on the
  planted ``failure`` column;
- ``map_1p`` / ``map_dask``: the UMAP concept map (fit on a 20,000-row sample, transform every other
  row), single process vs the blocks transformed on Dask workers.

Peak RSS is sampled every 0.2 s over the stage's whole process tree (the stage process, its Dask
workers or its torchrun ranks) and summed; each process's own ``ru_maxrss`` is reported too.

    python benchmarks/scale.py                       # 1e6 x 1024, about 20-30 min on 2 cores
    python benchmarks/scale.py --rows 100000         # quicker
    python benchmarks/scale.py --stages encode_1p encode_dask   # re-run some stages (others kept from scale.json)

Results: ``artifacts/benchmarks/scale.json`` and ``scale.md`` (rewritten after every stage); data in
``artifacts/bench-scale-1e6/`` (gitignored).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "artifacts" / "benchmarks"
STAGES = ["ingest", "train_1p", "train_ddp", "encode_1p", "encode_dask", "audit_1p", "audit_dask", "map_1p", "map_dask"]


# ------------------------------------------------------------------------------------------ stages
def _ws(args):
    from sae.run import Workspace

    return Workspace(args.workspace)


def _sae_cfg(args):
    from sae.models import SAEConfig

    return SAEConfig(d_in=args.dim, n_latents=args.n, k=args.k, arch="topk")


def _train_cfg(args):
    from sae.train import TrainConfig

    return TrainConfig(batch_size=args.batch_size, epochs=1, holdout_frac=0.01, memory_budget_gb=args.train_budget_gb, seed=0, log_every=20)


def stage_ingest(args) -> dict:
    from sae.datasets.planted import PlantedConfig, make_planted

    ws = _ws(args)
    ws.path.mkdir(parents=True, exist_ok=True)
    cfg = PlantedConfig(n_rows=args.rows, dim=args.dim, n_concepts=2048, dtype="float16")
    t0 = time.perf_counter()
    store, truth = make_planted(ws.store_path, cfg, overwrite=True, progress=True)
    wall = time.perf_counter() - t0
    truth.save(ws.path / "truth.npz")
    size = sum(f.stat().st_size for f in ws.store_path.rglob("*") if f.is_file())
    return {"wall_s": wall, "rows_per_s": args.rows / wall, "store_gb": size / 2**30, "chunk_rows": store.chunk_rows,
            "note": "planted generator -> Store.append, block by block"}


def _train_result(trainer, wall: float) -> dict:
    st = trainer.state_
    last = st.log[-1] if st.log else {}
    return {"wall_s": wall, "steps": st.step, "samples": st.samples, "samples_per_s": st.samples / wall, "final_fvu": last.get("fvu"),
            "step_s_median": float(sorted(trainer.step_times_)[len(trainer.step_times_) // 2]) if trainer.step_times_ else None}


def stage_train_1p(args) -> dict:
    from sae.train import Trainer

    ws = _ws(args)
    store = ws.open_store()
    trainer = Trainer(_sae_cfg(args), _train_cfg(args), run_dir=ws.path / "saes" / "single", progress=True)
    t0 = time.perf_counter()
    trainer.fit(store)
    return {**_train_result(trainer, time.perf_counter() - t0), "in_memory": trainer.in_memory_, "threads": __import__("torch").get_num_threads()}


def stage_train_ddp(args) -> dict | None:
    import torch

    from sae.train.ddp import DistributedTrainer, process_group

    ws = _ws(args)
    store = ws.open_store()
    with process_group("cpu"):
        trainer = DistributedTrainer(_sae_cfg(args), _train_cfg(args), run_dir=ws.path / "saes" / "ddp", progress=True)
        t0 = time.perf_counter()
        trainer.fit(store)
        wall = time.perf_counter() - t0
        import torch.distributed as dist

        peaks = [None] * trainer.world
        dist.all_gather_object(peaks, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    if trainer.rank != 0:
        return None
    return {**_train_result(trainer, wall), "world_size": trainer.world, "threads_per_rank": torch.get_num_threads(),
            "rank_peak_rss_gb": peaks}


def _timed_index(module, name: str, box: dict):
    """Wrap ``module.name`` (the index builder) to time it inside the encode call."""
    inner = getattr(module, name)

    def wrapper(*a, **kw):
        t0 = time.perf_counter()
        try:
            return inner(*a, **kw)
        finally:
            box["index_s"] = time.perf_counter() - t0

    setattr(module, name, wrapper)


def stage_encode_1p(args) -> dict:
    import sae.codes.build as codes_mod
    from sae.models.io import load_sae

    ws = _ws(args)
    store = ws.open_store()
    model, _ = load_sae(ws.path / "saes" / "single")
    box: dict = {}
    _timed_index(codes_mod, "_build_index", box)
    t0 = time.perf_counter()
    codes = codes_mod.encode_store(store, model, ws.path / "saes" / "single" / "codes.zarr", batch_size=8192,
                                   memory_budget_gb=args.index_budget_gb, progress=True)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "encode_s": wall - box["index_s"], "index_s": box["index_s"], "nnz": codes.nnz,
            "memory_budget_gb": args.index_budget_gb, "threads": __import__("torch").get_num_threads()}


def _same_codes(a_path: Path, b_path: Path) -> bool:
    import numpy as np
    import zarr

    from sae.codes import STAT_NAMES

    a, b = zarr.open_group(str(a_path), mode="r"), zarr.open_group(str(b_path), mode="r")
    for name in ["rows/ptr", "rows/latent", "rows/value", "features/ptr", "features/row", "features/value"] + [f"stats/{s}" for s in STAT_NAMES]:
        x, y = a[name], b[name]
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        for s in range(0, x.shape[0], 1 << 24):
            if not np.array_equal(x[s : s + (1 << 24)], y[s : s + (1 << 24)]):
                return False
    return True


def stage_encode_dask(args) -> dict:
    import sae.codes.encode_dask as enc_mod
    from sae.compute import DaskConfig, dask_client, workers_peak_rss_gb
    from sae.models.io import load_sae

    ws = _ws(args)
    store = ws.open_store()
    model, _ = load_sae(ws.path / "saes" / "single")
    cfg = DaskConfig(n_workers=args.workers, cluster_memory_gb=args.dask_budget_gb)
    box: dict = {}
    _timed_index(enc_mod, "_build_index_dask", box)
    t_start = time.perf_counter()
    with dask_client(cfg) as client:
        cluster_s = time.perf_counter() - t_start
        t0 = time.perf_counter()
        codes = enc_mod.encode_store_dask(store, model, ws.path / "saes" / "single" / "codes-dask.zarr", compute=cfg, client=client,
                                          batch_size=8192, progress=True)
        wall = time.perf_counter() - t0
        worker_peaks = workers_peak_rss_gb(client)
    t1 = time.perf_counter()
    same = _same_codes(ws.path / "saes" / "single" / "codes.zarr", codes.path) if (ws.path / "saes" / "single" / "codes.zarr").exists() else None
    return {"wall_s": wall, "encode_s": wall - box["index_s"], "index_s": box["index_s"], "cluster_start_s": cluster_s, "nnz": codes.nnz,
            "workers": args.workers, "memory_budget_gb": args.dask_budget_gb, "workers_peak_rss_gb_sum": worker_peaks,
            "identical_to_single_process": same, "compare_s": time.perf_counter() - t1}


def _audit_common(args):
    from sae.codes import Codes

    ws = _ws(args)
    store = ws.open_store()
    codes = Codes.open(ws.path / "saes" / "single" / "codes.zarr", store=store)
    failed = store.column("failure").astype(bool)
    return ws, store, codes, failed


def _slices(index, failed, labels) -> tuple[float, int, int]:
    from sae.audit.discovery import discover
    from sae.audit.slices import AuditConfig, split_rows
    from sae.audit.validate import validate

    cfg = AuditConfig()
    t0 = time.perf_counter()
    disc, hold = split_rows(index.n_rows, None, cfg.holdout_frac, cfg.seed)
    slices, _ = discover(index, failed, labels, disc, cfg)
    validate(index, failed, slices, disc, hold, cfg)
    return time.perf_counter() - t0, len(slices), sum(bool(s.stats.validated) for s in slices)


def stage_audit_1p(args) -> dict:
    from sae.audit.enrichment import concept_enrichment
    from sae.search.index import ConceptIndex

    ws, store, codes, failed = _audit_common(args)
    labels = {f: f"feature {f}" for f in range(codes.n_latents)}
    t0 = time.perf_counter()
    index = ConceptIndex(codes)
    t1 = time.perf_counter()
    table = concept_enrichment(index, failed, labels)
    t2 = time.perf_counter()
    table.to_pickle(ws.path / "enrichment-1p.pkl")
    slices_s, n_slices, n_valid = _slices(index, failed, labels)
    return {"wall_s": (t2 - t0) + slices_s, "index_load_s": t1 - t0, "enrichment_s": t2 - t1, "slices_s": slices_s, "slices": n_slices,
            "validated_slices": n_valid, "enriched_q05": int((table["q"] < 0.05).sum())}


def stage_audit_dask(args) -> dict:
    from sae.audit.dask import concept_enrichment_dask
    from sae.compute import DaskConfig, dask_client, workers_peak_rss_gb
    from sae.search.index import ConceptIndex

    ws, store, codes, failed = _audit_common(args)
    labels = {f: f"feature {f}" for f in range(codes.n_latents)}
    cfg = DaskConfig(n_workers=args.workers, cluster_memory_gb=args.dask_budget_gb)
    with dask_client(cfg) as client:
        t0 = time.perf_counter()
        table = concept_enrichment_dask(codes, failed, labels, compute=cfg, client=client)
        t1 = time.perf_counter()
        worker_peaks = workers_peak_rss_gb(client)
    same = _same_as_reference(ws.path / "enrichment-1p.pkl", table)
    t2 = time.perf_counter()
    index = ConceptIndex(codes)  # slice discovery works on the posting lists in memory (failing items only)
    t3 = time.perf_counter()
    slices_s, n_slices, n_valid = _slices(index, failed, labels)
    return {"wall_s": (t1 - t0) + (t3 - t2) + slices_s, "enrichment_s": t1 - t0, "index_load_s": t3 - t2, "slices_s": slices_s,
            "slices": n_slices, "validated_slices": n_valid, "enriched_q05": int((table["q"] < 0.05).sum()),
            "workers_peak_rss_gb_sum": worker_peaks, "identical_to_single_process": same}


def _same_as_reference(ref: Path, frame) -> bool | None:
    """Whether ``frame`` equals the single-process stage's saved result exactly (None when it was not run)."""
    import pandas as pd

    if not ref.exists():
        return None
    saved = pd.read_pickle(ref) if ref.suffix == ".pkl" else pd.read_parquet(ref)
    try:
        pd.testing.assert_frame_equal(saved, frame, check_exact=True)
    except AssertionError:
        return False
    return True


def _map_setup(args):
    from sae.search.index import ConceptIndex

    ws, store, codes, failed = _audit_common(args)
    t0 = time.perf_counter()
    index = ConceptIndex(codes)
    return ws, codes, index, time.perf_counter() - t0


def stage_map_1p(args) -> dict:
    from sae.audit.concept_map import concept_map

    ws, codes, index, load_s = _map_setup(args)
    t0 = time.perf_counter()
    out = concept_map(index, codes, sample=args.map_sample, seed=0)
    wall = time.perf_counter() - t0
    out.to_parquet(ws.path / "map-1p.parquet")
    return {"wall_s": wall, "index_load_s": load_s, "sample": args.map_sample, "rows": int(len(out))}


def stage_map_dask(args) -> dict:
    from sae.audit.dask import concept_map_dask
    from sae.compute import DaskConfig, dask_client, workers_peak_rss_gb

    ws, codes, index, load_s = _map_setup(args)
    cfg = DaskConfig(n_workers=args.workers, cluster_memory_gb=args.dask_budget_gb)
    with dask_client(cfg) as client:
        t0 = time.perf_counter()
        out = concept_map_dask(index, codes, sample=args.map_sample, seed=0, compute=cfg, client=client)
        wall = time.perf_counter() - t0
        worker_peaks = workers_peak_rss_gb(client)
    same = _same_as_reference(ws.path / "map-1p.parquet", out)
    return {"wall_s": wall, "index_load_s": load_s, "sample": args.map_sample, "rows": int(len(out)), "workers_peak_rss_gb_sum": worker_peaks,
            "identical_to_single_process": same}


# ------------------------------------------------------------------------------------------ orchestration
class TreeSampler:
    """Peak of the summed RSS of a process and all its descendants, sampled in a thread."""

    def __init__(self, pid: int, every: float = 0.2):
        import psutil

        self.proc = psutil.Process(pid)
        self.every = every
        self.peak = 0
        self.peak_procs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.proc] + self.proc.children(recursive=True)
                total = 0
                for p in procs:
                    with contextlib.suppress(psutil.Error):
                        total += p.memory_info().rss
                if total > self.peak:
                    self.peak, self.peak_procs = total, len(procs)
            except psutil.Error:
                pass
            self._stop.wait(self.every)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak / 2**30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_stage(name: str, args, timeout: float) -> dict:
    result_file = Path(args.workspace) / f"stage-{name}.json"
    result_file.unlink(missing_ok=True)
    common = ["--workspace", str(args.workspace), "--rows", str(args.rows), "--dim", str(args.dim), "--latents", str(args.n), "--k", str(args.k),
              "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--dask-budget-gb", str(args.dask_budget_gb),
              "--index-budget-gb", str(args.index_budget_gb), "--train-budget-gb", str(args.train_budget_gb), "--map-sample", str(args.map_sample),
              "--run-stage", name]
    if name == "train_ddp":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(args.workers), "--master_addr", "127.0.0.1",
               "--master_port", str(_free_port()), str(Path(__file__).resolve()), *common]
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), *common]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    sampler = TreeSampler(proc.pid)
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = "timeout"
    peak = sampler.stop()
    out = json.loads(result_file.read_text()) if result_file.exists() else {"error": f"exit {rc}"}
    out.update({"process_wall_s": time.perf_counter() - t0, "peak_rss_gb_tree": peak, "exit": rc})
    return out


def write_report(results: dict, args) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": "scale", "rows": args.rows, "dim": args.dim, "sae": {"arch": "topk", "n_latents": args.n, "k": args.k},
           "batch_size": args.batch_size, "workers": args.workers, "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
           "python": platform.python_version()}, "stages": results}
    (OUT / f"{args.name}.json").write_text(json.dumps(doc, indent=2, default=float))

    def g(stage: str, key: str, fmt: str = "{:.1f}") -> str:
        v = results.get(stage, {}).get(key)
        return fmt.format(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else ("-" if v is None else str(v))

    def ratio(a: str, b: str, key: str = "wall_s") -> str:
        x, y = results.get(a, {}).get(key), results.get(b, {}).get(key)
        return f"{x / y:.2f}x" if isinstance(x, (int, float)) and isinstance(y, (int, float)) and y > 0 else "-"

    lines = [f"# Scale benchmark: {args.rows:,} x {args.dim} planted rows (float16), TopK SAE n={args.n} k={args.k}, {os.cpu_count()} CPU cores", "",
             "Each stage runs in a fresh process; peak RSS is the summed resident memory of the stage's process tree "
             "(driver + Dask workers, or all torchrun ranks), sampled every 0.2 s.", "",
             "| stage | engine | wall s | speed-up vs 1 process | peak RSS GB (all processes) | details |", "|---|---|---|---|---|---|"]
    rows = [
        ("ingest", "ingest", "1 process", "-", f"{g('ingest', 'rows_per_s', '{:,.0f}')} rows/s; store {g('ingest', 'store_gb', '{:.2f}')} GB"),
        ("train one epoch", "train_1p", f"1 process ({g('train_1p', 'threads', '{}')} threads)", "1.00x",
         f"{g('train_1p', 'samples_per_s', '{:,.0f}')} samples/s, {g('train_1p', 'steps', '{}')} steps, final FVU {g('train_1p', 'final_fvu', '{:.3f}')}"),
        ("train one epoch", "train_ddp", f"DDP {args.workers} ranks (gloo, 1 thread each)", ratio("train_1p", "train_ddp"),
         f"{g('train_ddp', 'samples_per_s', '{:,.0f}')} samples/s, {g('train_ddp', 'steps', '{}')} steps, final FVU {g('train_ddp', 'final_fvu', '{:.3f}')}"),
        ("encode", "encode_1p", "1 process", "1.00x", f"nnz {g('encode_1p', 'nnz', '{:,}')}"),
        ("encode", "encode_dask", f"Dask {args.workers} workers", ratio("encode_1p", "encode_dask", "encode_s"),
         f"identical codes: {g('encode_dask', 'identical_to_single_process', '{}')}; cluster start {g('encode_dask', 'cluster_start_s')} s (not included)"),
        ("index + stats", "encode_1p", "1 process", "1.00x", f"budget {g('encode_1p', 'memory_budget_gb')} GB"),
        ("index + stats", "encode_dask", f"Dask {args.workers} workers", ratio("encode_1p", "encode_dask", "index_s"),
         f"budget {g('encode_dask', 'memory_budget_gb')} GB (cluster)"),
        ("audit: enrichment", "audit_1p", "1 process", "1.00x", f"index load {g('audit_1p', 'index_load_s')} s (not included)"),
        ("audit: enrichment", "audit_dask", f"Dask {args.workers} workers", ratio("audit_1p", "audit_dask", "enrichment_s"),
         f"identical table: {g('audit_dask', 'identical_to_single_process', '{}')}; straight from codes.zarr"),
        ("audit: slice discovery", "audit_1p", "1 process", "-",
         f"{g('audit_1p', 'slices', '{}')} slices, {g('audit_1p', 'validated_slices', '{}')} validated"),
        ("audit: concept map (UMAP)", "map_1p", "1 process", "1.00x", f"fit on {g('map_1p', 'sample', '{:,}')} rows, transform the rest in 50,000-row blocks"),
        ("audit: concept map (UMAP)", "map_dask", f"Dask {args.workers} workers", ratio("map_1p", "map_dask"),
         f"identical map: {g('map_dask', 'identical_to_single_process', '{}')}; fit in the driver, blocks transformed on workers"),
    ]
    for label, stage, engine, speed, details in rows:
        key = {"encode": "encode_s", "index + stats": "index_s", "audit: enrichment": "enrichment_s", "audit: slice discovery": "slices_s"}.get(label, "wall_s")
        lines.append(f"| {label} | {engine} | {g(stage, key)} | {speed} | {g(stage, 'peak_rss_gb_tree', '{:.2f}')} | {details} |")
    lines += ["", "Peak RSS of encode and index is one figure (one process does both); audit peaks include loading the index for slice discovery.",
              f"Dask memory budget {args.dask_budget_gb} GB for the cluster "
              f"({args.dask_budget_gb / args.workers:.1f} GB per worker, plus 1 GB baseline in its limit); "
              f"single-process index budget {args.index_budget_gb} GB; training streams from Zarr with a {args.train_budget_gb} GB budget."]
    (OUT / f"{args.name}.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", type=Path, default=ROOT / "artifacts" / "bench-scale-1e6")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--latents", dest="n", type=int, default=4096)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--workers", type=int, default=2, help="Dask workers and DDP ranks")
    ap.add_argument("--dask-budget-gb", type=float, default=4.0)
    ap.add_argument("--index-budget-gb", type=float, default=1.0)
    ap.add_argument("--train-budget-gb", type=float, default=2.0)
    ap.add_argument("--map-sample", type=int, default=20_000, help="UMAP fit sample of the concept-map stages")
    ap.add_argument("--stages", nargs="+", default=STAGES, choices=STAGES)
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per stage")
    ap.add_argument("--name", default="scale", help="results go to artifacts/benchmarks/NAME.json and NAME.md")
    ap.add_argument("--run-stage", choices=STAGES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run_stage:  # inside a stage process
        result = globals()[f"stage_{args.run_stage}"](args)
        if result is not None:
            result["ru_maxrss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
            (Path(args.workspace) / f"stage-{args.run_stage}.json").write_text(json.dumps(result, indent=2, default=float))
        return
    args.workspace.mkdir(parents=True, exist_ok=True)
    previous = OUT / f"{args.name}.json"
    results = {}
    if previous.exists():
        doc = json.loads(previous.read_text())
        if doc.get("rows") == args.rows and doc.get("dim") == args.dim:
            results = doc.get("stages", {})
    for name in [s for s in STAGES if s in args.stages]:
        print(f"=== stage {name}", flush=True)
        results[name] = run_stage(name, args, args.timeout)
        print(json.dumps(results[name], indent=1, default=float), flush=True)
        write_report(results, args)
    print((OUT / f"{args.name}.md").read_text())


if __name__ == "__main__":
    main()
