"""The ``sae`` command: a thin layer over the Python API (each subcommand calls one function).

One module per group of commands (``store``, ``train``, ``label``, ``search``, ``audit``, ``demo``);
this one builds the parser, checks the names a user gives (``--run``, ``--name``: one plain folder
name each) and turns every :class:`~sae.errors.SaeError` and every refused option into an
``error:`` line with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from sae._io import safe_name
from sae.cli import audit as audit_cmds
from sae.cli import label as label_cmds
from sae.cli import llm as llm_cmds
from sae.cli import search as search_cmds
from sae.cli import store as store_cmds
from sae.cli import train as train_cmds
from sae.cli.common import add_dask_args, add_memory_arg, add_sae_args, non_negative_int, positive_int
from sae.errors import SaeError

NAMED_OPTIONS = {"run": "--run", "name": "--name"}
"""Options holding a run or report name: each becomes a folder name, so it must be one plain path component."""


def cmd_demo(args) -> int:
    from sae.cli.demo import run_demo

    run_demo(Path(args.workspace), small=args.small, rebuild=args.rebuild)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sae", description="sae-workbench: an interpretable concept space over stored embeddings")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="build the MNI152 demo workspace and run every stage on it")
    p.add_argument("--workspace", default="artifacts/demo")
    p.add_argument("--small", action="store_true", help="a few hundred images (seconds), for tests")
    p.add_argument("--rebuild", action="store_true", help="ignore the cached demo store")
    p.set_defaults(func=cmd_demo)
    store_cmds._add_ingest(sub)
    sub.choices["ingest"].set_defaults(func=store_cmds.cmd_ingest)
    p = sub.add_parser("info", help="summarise a workspace (rows, dims, columns, previews, SAEs)")
    p.add_argument("workspace")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=store_cmds.cmd_info)
    p = sub.add_parser("train", help="train an SAE on a workspace, encode the store and evaluate")
    add_sae_args(p)
    p.add_argument("--name", help="run folder name under saes/ (default ARCH-nN-kK-sSEED)")
    p.add_argument("--resume", action="store_true", help="continue from the run's checkpoint (same configuration)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing run of this name (its codes, labels, hand edits and audits are removed when the new run is ready)")
    p.add_argument("--no-eval", action="store_true", help="skip the (bounded) evaluation after training; run `sae evaluate` later")
    p.add_argument("--auto-k", action="store_true",
                   help="first pick k on the elbow of held-out FVU vs k (short TopK runs on up to 20,000 rows, k = 2..64)")
    p.set_defaults(func=train_cmds.cmd_train)
    p = sub.add_parser("sweep", help="train a grid of dictionary sizes x k; prints the results and writes the Pareto figure")
    add_sae_args(p)
    p.add_argument("--ns", type=positive_int, nargs="+", default=[1024, 4096])
    p.add_argument("--ks", type=positive_int, nargs="+", default=[8, 16, 32, 64])
    p.set_defaults(func=train_cmds.cmd_sweep)
    p = sub.add_parser("encode", help="(re-)encode the store with a trained SAE into codes.zarr")
    p.add_argument("workspace")
    p.add_argument("--run", help="SAE run name (default: the latest)")
    add_memory_arg(p)
    add_dask_args(p)
    p.set_defaults(func=train_cmds.cmd_encode)
    p = sub.add_parser("evaluate", help="compute every metric of an SAE run, write metrics.json and print them")
    p.add_argument("workspace")
    p.add_argument("--run", help="SAE run name (default: the latest)")
    p.add_argument("--targets", nargs="+", help="metadata columns for probes and monosemanticity (default: categorical ones)")
    p.add_argument("--quick", action="store_true", help="the bounded evaluation `sae train` runs (20,000 held-out rows, 5,000-row probe sample)")
    p.set_defaults(func=train_cmds.cmd_evaluate)
    p = sub.add_parser("planted", help="generate a planted ground-truth workspace")
    p.add_argument("workspace")
    p.add_argument("--rows", type=positive_int, default=100_000)
    p.add_argument("--dim", type=positive_int, default=768)
    p.add_argument("--concepts", type=positive_int, default=2048)
    p.add_argument("--hierarchy", action="store_true",
                   help="parents with children sharing 60%% of their direction (1,024 concepts, true L0 ~7.6; --concepts is ignored)")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=store_cmds.cmd_planted)
    label_cmds.add_label_parser(sub)
    search_cmds.add_search_parser(sub)
    audit_cmds.add_audit_parser(sub)
    audit_cmds.add_figures_parser(sub)
    llm_cmds.add_llm_parser(sub)
    return parser


def check_names(args: argparse.Namespace) -> None:
    """Refuse a ``--run`` / ``--name`` that is not one plain folder name, before anything is read or written."""
    for attr, option in NAMED_OPTIONS.items():
        value = getattr(args, attr, None)
        if value is not None:
            safe_name(value, option)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``sae`` command; 0 on success, 2 (and an ``error:`` line on stderr) on bad input."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse printed its usage and ``error:`` line (or --help); return, do not exit
        return 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 2
    try:
        check_names(args)
        return int(args.func(args) or 0)
    except SaeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
