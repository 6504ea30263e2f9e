"""Helpers every ``sae`` subcommand shares: printers of workspace, run and metrics summaries, shared
options, and the ``type=`` checkers of numeric options (a bad value is an ``error:`` line naming the
option and its valid range, before any work starts)."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable

from sae.compute import MEMORY_BUDGET_GB
from sae.errors import SaeError


def _checked(kind: type, ok: Callable[[float], bool], rule: str) -> Callable[[str], float]:
    """An argparse ``type=``: parse ``kind`` (int or float) and keep it only when ``ok``; else say ``rule``."""
    noun = "an integer" if kind is int else "a number"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {noun} {rule} (got {text!r})") from None
        if not (math.isfinite(value) and ok(value)):
            raise argparse.ArgumentTypeError(f"must be {noun} {rule} (got {text!r})")
        return value

    parse.__name__ = rule  # argparse names the type in some messages
    return parse


positive_int = _checked(int, lambda v: v > 0, ">= 1")
non_negative_int = _checked(int, lambda v: v >= 0, ">= 0")
positive_float = _checked(float, lambda v: v > 0, "> 0")
non_negative_float = _checked(float, lambda v: v >= 0, ">= 0")
finite_float = _checked(float, lambda v: True, "other than nan or inf")
probability = _checked(float, lambda v: 0 < v < 1, "strictly between 0 and 1")
fraction = _checked(float, lambda v: 0 <= v < 1, "in [0, 1)")


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
    print(f"group key  {prov.get('group_key') or 'none'}")
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
    print(f"SAEs       {len(info['saes'])}")
    for r in info["saes"]:
        parts = {k: v for k, v in r.items() if k in ("run", "arch", "n_latents", "k")}
        print(f"  {json.dumps(parts)}  " + ", ".join(f"{k} {r[k] if r[k] in ('ok', 'missing') else 'STALE'}"
                                                     for k in ("model", "codes", "metrics", "labels") if k in r))
        for k in ("model", "codes", "metrics", "labels"):
            if str(r.get(k, "")).startswith("stale"):
                print(f"    warning: {r['run']} {k} is {r[k]}")


def print_metrics(run) -> None:
    """The run's headline metrics, each beside its random-SAE baseline (and raw-dimension / dense probes)."""
    from sae.assess import headline_table

    m = run.metrics()
    rec, sp_ = m.get("reconstruction", {}), m.get("sparsity", {})
    print(f"SAE {run.name}: held-out R2 {rec.get('r2', float('nan')):.4f} (FVU {rec.get('fvu', float('nan')):.4f}), "
          f"L0 {rec.get('l0', float('nan')):.1f}, dead {sp_.get('dead_frac', float('nan')):.1%}, dense {sp_.get('dense_frac', float('nan')):.1%}")
    table = headline_table(m).dropna(axis=1, how="all")
    if len(table):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-"))
    ev_, secs = m.get("evaluation", {}), m.get("seconds", {})
    if ev_:
        share = f", {secs['evaluate_share_of_train']:.0%} of the training time" if "evaluate_share_of_train" in secs else ""
        print(f"  evaluation: {ev_.get('mode')} ({ev_.get('reconstruction_rows', 0):,} held-out rows, {ev_.get('sample_rows', 0):,}-row probe sample; "
              f"{ev_.get('seconds', 0):.1f} s{share})" + ("; `sae evaluate` runs the full one" if ev_.get("mode") == "quick" else ""))
    print(f"  run folder {run.path}")


def add_sae_args(p) -> None:
    p.add_argument("workspace")
    from sae.models import ARCHS

    p.add_argument("--arch", choices=list(ARCHS), default="topk")
    p.add_argument("--n", type=positive_int, default=None, help="dictionary size (default: about one latent per 8 rows, 128..4,096)")
    p.add_argument("--k", type=positive_int, default=32, help="active latents per row (see --auto-k)")
    p.add_argument("--epochs", type=positive_float, default=None, help="fixed passes over the rows (default: an automatic schedule)")
    p.add_argument("--steps", type=positive_int, default=None, help="fixed optimizer steps (default: up to 6,000, stopped on a plateau)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="default: 4*sqrt(rows) as a power of two, 256..4,096")
    p.add_argument("--no-plateau-stop", action="store_true", help="train the whole schedule (no stop when the validation FVU plateaus)")
    p.add_argument("--lr", type=positive_float, default=None, help="default 2e-4 / sqrt(n / 2^14)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--l1", type=non_negative_float, default=5.0, help="relu: L1 coefficient")
    p.add_argument("--aux-k", type=non_negative_int, default=None, help="AuxK latents (default d/2; 0 disables)")
    p.add_argument("--holdout", type=fraction, default=0.1, help="share of rows (the tail) held out for evaluation")
    add_memory_arg(p)
    p.add_argument("--device", default="cpu")
    p.add_argument("--checkpoint-every", type=non_negative_int, default=0)
    add_dask_args(p)


def add_memory_arg(p) -> None:
    """``--memory-budget-gb``: per process, per stage (one meaning everywhere, see :mod:`sae.compute`)."""
    p.add_argument("--memory-budget-gb", type=positive_float, default=MEMORY_BUDGET_GB,
                   help=f"memory each stage may use in this process (training rows in memory, index blocks; default {MEMORY_BUDGET_GB:g})")


def add_dask_args(p) -> None:
    """``--dask [ADDRESS]``, ``--workers N``, ``--cluster-memory-gb``: run the data-parallel stages on a Dask cluster."""
    p.add_argument("--dask", nargs="?", const="local", metavar="ADDRESS",
                   help="run encoding/indexing (and audit counts) on Dask: a LocalCluster, or the scheduler at ADDRESS")
    p.add_argument("--workers", type=positive_int, default=2, help="--dask without ADDRESS: LocalCluster worker processes")
    p.add_argument("--cluster-memory-gb", type=positive_float, default=None, help="--dask: memory for the tasks of the whole cluster (default 4)")


def dask_config(args):
    """The DaskConfig the ``--dask`` / ``--workers`` / ``--cluster-memory-gb`` options describe (None without --dask)."""
    if getattr(args, "dask", None) is None:
        return None
    from sae.compute import DaskConfig

    budget = getattr(args, "cluster_memory_gb", None)
    return DaskConfig(address=None if args.dask == "local" else args.dask, n_workers=args.workers,
                      **({"cluster_memory_gb": budget} if budget is not None else {}))


def check_device(device: str) -> str:
    """``--device`` as given when torch knows it and this machine has it; else a :class:`SaeError` saying so."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise SaeError(f"--device {device!r} is not a torch device; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SaeError(f"--device {device}: this machine has no CUDA device (torch {torch.__version__}); use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise SaeError(f"--device {device}: this machine has CUDA devices 0..{torch.cuda.device_count() - 1}")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise SaeError(f"--device {device}: MPS is not available here; use --device cpu")
    return device


def configs(args, n: int | None = None, k: int | None = None, *, announce: bool = True):
    """The SAE and training configs the options describe; automatic choices are printed once (``announce``)."""
    from sae.models import SAEConfig
    from sae.run import Workspace
    from sae.train import TrainConfig
    from sae.train.plan import default_n_latents, latents_note, plan_schedule, training_rows

    store = Workspace(args.workspace).open_store()
    k = k or args.k
    n_train = training_rows(store.n_rows, args.holdout)
    n_latents = n or args.n or default_n_latents(n_train, store.dim, k)
    notes = [] if (n or args.n) else [latents_note(n_latents, n_train, store.dim)]
    sae_cfg = SAEConfig(d_in=store.dim, n_latents=n_latents, k=k, arch=args.arch, l1_coeff=args.l1, aux_k=args.aux_k)
    train_cfg = TrainConfig(batch_size=args.batch_size, epochs=args.epochs, max_steps=args.steps, lr=args.lr, seed=args.seed,
                            holdout_frac=args.holdout, stop_on_plateau=False if args.no_plateau_stop else None,
                            memory_budget_gb=args.memory_budget_gb, device=check_device(args.device), checkpoint_every=args.checkpoint_every)
    notes += plan_schedule(train_cfg, n_train, n_latents).notes
    if announce and notes:
        print("plan: " + "; ".join(notes), flush=True)
    return sae_cfg, train_cfg, notes
