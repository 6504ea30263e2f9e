"""``sae train``, ``sae sweep``, ``sae encode``, ``sae evaluate``: the run pipeline from the command line."""

from __future__ import annotations

from sae.cli.common import configs, dask_config, print_metrics


def cmd_train(args) -> int:
    from sae.pipeline import train_run
    from sae.run import Workspace
    from sae.train.ddp import launched_by_torchrun

    sae_cfg, train_cfg = configs(args)
    if launched_by_torchrun():  # torchrun: DistributedDataParallel, rank 0 encodes and evaluates
        from sae.pipeline import train_run_ddp

        run = train_run_ddp(Workspace(args.workspace), sae_cfg, train_cfg, name=args.name, resume=args.resume, compute=dask_config(args))
        if run is None:
            return 0
    else:
        run = train_run(Workspace(args.workspace), sae_cfg, train_cfg, name=args.name, resume=args.resume, overwrite=args.overwrite,
                        compute=dask_config(args))
    print_metrics(run)
    return 0


def cmd_sweep(args) -> int:
    from sae.run import Workspace
    from sae.sweep import sweep

    ws = Workspace(args.workspace)
    grid = [(n, k) for n in args.ns for k in args.ks]
    df = sweep(ws, [configs(args, n, k) for n, k in grid])
    print(df.to_string(index=False))
    return 0


def cmd_encode(args) -> int:
    from sae.pipeline import encode_run
    from sae.run import Run

    run = Run.open(args.workspace, args.run)
    codes = encode_run(run, memory_budget_gb=args.memory_budget_gb, compute=dask_config(args))
    print(f"encoded {codes.n_rows:,} rows into {codes.path} (mean L0 {codes.nnz / max(1, codes.n_rows):.1f})")
    return 0


def cmd_evaluate(args) -> int:
    from sae.pipeline import evaluate_run
    from sae.run import Run, Workspace

    ws = Workspace(args.workspace)
    run = Run.find(ws, args.run)
    df = evaluate_run(run, targets=args.targets)
    print(df.to_string(index=False))
    print_metrics(run)
    return 0
