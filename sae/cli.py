"""The ``sae`` command: a thin layer over the Python API (each subcommand calls one function)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

from sae.errors import SaeError


def _add_ingest(sub) -> None:
    p = sub.add_parser("ingest", help="import embeddings (npy, parquet incl. SAIL format, hdf5, image folder) into a workspace")
    p.add_argument("source", help=".npy / .parquet / .h5 file, or a folder of images")
    p.add_argument("workspace", help="workspace folder (the store goes to WORKSPACE/store.zarr)")
    p.add_argument("--format", choices=["npy", "parquet", "hdf5", "images"], help="default: from the suffix")
    p.add_argument("--meta", help="metadata table (.csv/.tsv/.parquet) aligned with the rows")
    p.add_argument("--id-column", help="column holding row ids (default: id, image_id, path, ... if present)")
    p.add_argument("--embedding-column", default="embedding", help="parquet: vector column (raw bytes or lists)")
    p.add_argument("--dataset", default="embeddings", help="hdf5: the 2-D dataset")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="embedding dtype in the store")
    p.add_argument("--append", action="store_true", help="append to the existing store (one atomic transaction)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    p.add_argument("--drop-nonfinite", action="store_true", help="drop NaN/Inf rows (recorded in provenance) instead of failing")
    p.add_argument("--encoder", help="name of the model that produced the embeddings (recorded)")
    p.add_argument("--image-size", type=int, default=224, help="images: EfficientNet-Lite0 input size")
    p.add_argument("--thumb-size", type=int, default=64, help="images: thumbnail size stored as previews")


def cmd_ingest(args) -> int:
    from sae.store import importers
    from sae.workspace import Workspace

    ws = Workspace(args.workspace)
    fmt = args.format or importers.guess_format(args.source)
    opts = importers.IngestOptions(
        dest=str(ws.store_path), dtype=args.dtype, append=args.append, overwrite=args.overwrite,
        drop_nonfinite=args.drop_nonfinite, encoder=args.encoder,
    )
    t0 = time.perf_counter()
    if fmt == "npy":
        store = importers.from_numpy(args.source, opts, meta=args.meta, id_column=args.id_column)
    elif fmt == "parquet":
        store = importers.from_parquet(args.source, opts, embedding_column=args.embedding_column, id_column=args.id_column)
    elif fmt == "hdf5":
        store = importers.from_hdf5(args.source, opts, dataset=args.dataset, meta=args.meta)
    else:
        from sae.encoders import EfficientNetLite0Encoder

        enc = EfficientNetLite0Encoder(image_size=args.image_size)
        store = importers.from_image_folder(args.source, opts, encoder=enc, thumbnail_size=args.thumb_size, meta=args.meta, id_column=args.id_column)
    print(f"ingested {args.source} -> {ws.store_path} in {time.perf_counter() - t0:.1f} s")
    print_info(ws)
    dropped = store.provenance.get("dropped_nonfinite")
    if dropped:
        print(f"dropped {dropped['count']} non-finite rows (recorded in provenance)")
    return 0


def print_info(ws) -> None:
    """Human-readable summary of a workspace."""
    import pandas as pd

    info = ws.info()
    s = info["store"]
    print(f"workspace  {info['workspace']}")
    print(f"rows       {s['rows']:,}")
    print(f"embeddings {s['dim']}-d {s['dtype']} (chunks of {s['chunk_rows']:,} rows), encoder {json.dumps(s['encoder'])}")
    print(f"previews   {', '.join(s['previews']) or 'none'}")
    print(f"fingerprint {s['fingerprint']}  schema v{s['schema_version']}")
    prov = s["provenance"]
    print(f"provenance dataset={prov.get('dataset', prov.get('source', '?'))} created={prov.get('created', '?')}")
    if s["columns"]:
        print("metadata columns:")
        store = ws.open_store()
        for name, kind in s["columns"].items():
            values = pd.Series(store.column(name))
            if kind in ("str", "bool") and values.nunique() <= 24:
                counts = values.value_counts()
                shown = ", ".join(f"{k} {v:,}" for k, v in counts.head(8).items())
                more = f", ... ({len(counts)} values)" if len(counts) > 8 else ""
                print(f"  {name:<16} {kind:<5} {shown}{more}")
            elif kind in ("int", "float"):
                print(f"  {name:<16} {kind:<5} min {values.min():.4g}, mean {values.mean():.4g}, max {values.max():.4g}")
            else:
                print(f"  {name:<16} {kind:<5} {values.nunique():,} distinct values")
    print(f"SAEs       {len(info['saes'])}" + "".join(f"\n  {json.dumps(r)}" for r in info["saes"]))


def cmd_info(args) -> int:
    from sae.workspace import Workspace

    ws = Workspace(args.workspace)
    if args.json:
        print(json.dumps(ws.info(), indent=2, default=str))
    else:
        print_info(ws)
    return 0


def cmd_demo(args) -> int:
    from sae.demo import run_demo

    run_demo(Path(args.workspace), small=args.small, rebuild=args.rebuild)
    return 0


def cmd_planted(args) -> int:
    from sae.datasets.planted import PlantedConfig, make_planted
    from sae.workspace import Workspace

    ws = Workspace(args.workspace)
    cfg = PlantedConfig(n_rows=args.rows, dim=args.dim, n_concepts=args.concepts, dtype=args.dtype, seed=args.seed)
    t0 = time.perf_counter()
    _, truth = make_planted(ws.store_path, cfg, overwrite=args.overwrite)
    truth.save(ws.path / "truth.npz")
    print(f"planted {cfg.n_rows:,} x {cfg.dim} ({cfg.n_concepts} concepts) in {time.perf_counter() - t0:.1f} s; truth in {ws.path / 'truth.npz'}")
    print_info(ws)
    return 0


def _add_sae_args(p) -> None:
    p.add_argument("workspace")
    p.add_argument("--arch", choices=["topk", "batchtopk", "matryoshka", "relu"], default="topk")
    p.add_argument("--n", type=int, default=4096, help="dictionary size (number of latents)")
    p.add_argument("--k", type=int, default=32, help="active latents per row")
    p.add_argument("--epochs", type=float, default=10.0)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--lr", type=float, default=None, help="default 2e-4 / sqrt(n / 2^14)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--l1", type=float, default=5.0, help="relu: L1 coefficient")
    p.add_argument("--aux-k", type=int, default=None, help="AuxK latents (default d/2; 0 disables)")
    p.add_argument("--holdout", type=float, default=0.1, help="share of rows (the tail) held out for evaluation")
    p.add_argument("--memory-budget-gb", type=float, default=2.0, help="train in memory below this size, else stream from Zarr")
    p.add_argument("--device", default="cpu")
    p.add_argument("--checkpoint-every", type=int, default=0)
    _add_dask_args(p)


def _add_dask_args(p) -> None:
    """``--dask [ADDRESS]`` and ``--workers N``: run the data-parallel stages on a Dask cluster."""
    p.add_argument("--dask", nargs="?", const="local", metavar="ADDRESS",
                   help="run encoding/indexing (and audit counts) on Dask: a LocalCluster, or the scheduler at ADDRESS")
    p.add_argument("--workers", type=int, default=2, help="--dask without ADDRESS: LocalCluster worker processes")


def dask_config(args, memory_budget_gb: float | None = None):
    """The DaskConfig the ``--dask`` / ``--workers`` / ``--memory-budget-gb`` options describe (None without --dask)."""
    if getattr(args, "dask", None) is None:
        return None
    from sae.distributed import DaskConfig

    budget = memory_budget_gb if memory_budget_gb is not None else getattr(args, "memory_budget_gb", None)
    return DaskConfig(address=None if args.dask == "local" else args.dask, n_workers=args.workers,
                      **({"memory_budget_gb": budget} if budget else {}))


def _configs(args, n: int | None = None, k: int | None = None):
    from sae.models import SAEConfig
    from sae.train import TrainConfig
    from sae.workspace import Workspace

    store = Workspace(args.workspace).open_store()
    sae_cfg = SAEConfig(d_in=store.dim, n_latents=n or args.n, k=k or args.k, arch=args.arch, l1_coeff=args.l1, aux_k=args.aux_k)
    train_cfg = TrainConfig(batch_size=args.batch_size, epochs=args.epochs, lr=args.lr, seed=args.seed, holdout_frac=args.holdout,
                            memory_budget_gb=args.memory_budget_gb, device=args.device, checkpoint_every=args.checkpoint_every)
    return sae_cfg, train_cfg


def cmd_train(args) -> int:
    from sae.distributed.ddp import launched_by_torchrun
    from sae.runs import train_run
    from sae.workspace import Workspace

    sae_cfg, train_cfg = _configs(args)
    if launched_by_torchrun():  # torchrun: DistributedDataParallel, rank 0 encodes and evaluates
        from sae.distributed.ddp import train_run_ddp

        run = train_run_ddp(Workspace(args.workspace), sae_cfg, train_cfg, name=args.name, resume=args.resume, compute=dask_config(args))
        if run is None:
            return 0
    else:
        run = train_run(Workspace(args.workspace), sae_cfg, train_cfg, name=args.name, resume=args.resume, compute=dask_config(args))
    print_metrics(run)
    return 0


def print_metrics(run) -> None:
    m = run.metrics()
    rec, sp_ = m.get("reconstruction", {}), m.get("sparsity", {})
    print(f"SAE {run.name}: held-out R2 {rec.get('r2', float('nan')):.4f} (FVU {rec.get('fvu', float('nan')):.4f}), "
          f"L0 {rec.get('l0', float('nan')):.1f}, dead {sp_.get('dead_frac', float('nan')):.1%}, dense {sp_.get('dense_frac', float('nan')):.1%}")
    for p in m.get("probes", []):
        if p["probe"] in ("dense", "sae_top10"):
            print(f"  probe {p['target']:<14} {p['probe']:<10} balanced acc {p['balanced_accuracy']:.3f} ({p['ratio_to_dense']:.0%} of dense)")
    if "fingerprint_fidelity@10" in m:
        print(f"  fingerprint retrieval fidelity@10 {m['fingerprint_fidelity@10']:.3f}")
    if m.get("monosemanticity"):
        print(f"  monosemanticity (mean over features) {m['monosemanticity']['mean']:.3f}")
    if "ground_truth_recovery" in m:
        print(f"  ground-truth recovery (mean max cosine) {m['ground_truth_recovery']:.3f}")
    print(f"  run folder {run.path}")


def cmd_sweep(args) -> int:
    from sae.sweep import sweep
    from sae.workspace import Workspace

    ws = Workspace(args.workspace)
    grid = [(n, k) for n in args.ns for k in args.ks]
    df = sweep(ws, [_configs(args, n, k) for n, k in grid])
    print(df.to_string(index=False))
    return 0


def cmd_encode(args) -> int:
    from sae.codes import encode_store
    from sae.runs import CODES, SAERun
    from sae.workspace import Workspace

    ws = Workspace(args.workspace)
    run = SAERun.find(ws, args.run)
    store = ws.open_store()
    run.check_store(store)
    codes = encode_store(store, run.model, run.path / CODES, sae_id=run.name, memory_budget_gb=args.memory_budget_gb, compute=dask_config(args))
    print(f"encoded {codes.n_rows:,} rows into {codes.path} (mean L0 {codes.nnz / max(1, codes.n_rows):.1f})")
    return 0


def cmd_evaluate(args) -> int:
    from sae.runs import SAERun, evaluate_run
    from sae.workspace import Workspace

    ws = Workspace(args.workspace)
    run = SAERun.find(ws, args.run)
    df = evaluate_run(ws, run, targets=args.targets)
    print(df.to_string(index=False))
    print_metrics(run)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sae", description="sae-workbench: an interpretable concept space over stored embeddings")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="build the MNI152 demo workspace and run every stage on it")
    p.add_argument("--workspace", default="artifacts/demo")
    p.add_argument("--small", action="store_true", help="a few hundred images (seconds), for tests")
    p.add_argument("--rebuild", action="store_true", help="ignore the cached demo store")
    p.set_defaults(func=cmd_demo)
    _add_ingest(sub)
    sub.choices["ingest"].set_defaults(func=cmd_ingest)
    p = sub.add_parser("info", help="summarise a workspace (rows, dims, columns, previews, SAEs)")
    p.add_argument("workspace")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("train", help="train an SAE on a workspace, encode the store and evaluate")
    _add_sae_args(p)
    p.add_argument("--name", help="run folder name under saes/ (default ARCH-nN-kK-sSEED)")
    p.add_argument("--resume", action="store_true", help="continue from the run's checkpoint (same configuration)")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("sweep", help="train a grid of dictionary sizes x k; prints the results and writes the Pareto figure")
    _add_sae_args(p)
    p.add_argument("--ns", type=int, nargs="+", default=[1024, 4096])
    p.add_argument("--ks", type=int, nargs="+", default=[8, 16, 32, 64])
    p.set_defaults(func=cmd_sweep)
    p = sub.add_parser("encode", help="(re-)encode the store with a trained SAE into codes.zarr")
    p.add_argument("workspace")
    p.add_argument("--run", help="SAE run name (default: the latest)")
    p.add_argument("--memory-budget-gb", type=float, default=1.0, help="memory for the inverted index (with --dask: for the whole cluster)")
    _add_dask_args(p)
    p.set_defaults(func=cmd_encode)
    p = sub.add_parser("evaluate", help="compute every metric of an SAE run, write metrics.json and print them")
    p.add_argument("workspace")
    p.add_argument("--run", help="SAE run name (default: the latest)")
    p.add_argument("--targets", nargs="+", help="metadata columns for probes and monosemanticity (default: categorical ones)")
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("planted", help="generate a planted ground-truth workspace")
    p.add_argument("workspace")
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--concepts", type=int, default=2048)
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_planted)
    from sae.cli_label import add_label_parser

    add_label_parser(sub)
    from sae.cli_search import add_search_parser
    from sae.cli_audit import add_audit_parser, add_figures_parser

    add_search_parser(sub)
    add_audit_parser(sub)
    add_figures_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SaeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
