"""``sae train``, ``sae sweep``, ``sae encode``, ``sae evaluate``: the run pipeline from the command line."""

from __future__ import annotations

from sae.cli.common import configs, dask_config, print_metrics


def cmd_train(args) -> int:
    from sae.pipeline import train_run
    from sae.run import Workspace
    from sae.train.ddp import launched_by_torchrun

    notes: list[str] = []
    if args.auto_k:
        notes.append(_auto_k(args))
    sae_cfg, train_cfg, latent_notes = configs(args, k=args.k)
    notes += latent_notes
    evaluate = not args.no_eval
    if launched_by_torchrun():  # torchrun: DistributedDataParallel, rank 0 encodes and evaluates
        from sae.pipeline import train_run_ddp

        run = train_run_ddp(Workspace(args.workspace), sae_cfg, train_cfg, name=args.name, resume=args.resume, compute=dask_config(args),
                            evaluate=evaluate)
        if run is None:
            return 0
    else:
        run = train_run(Workspace(args.workspace), sae_cfg, train_cfg, name=args.name, resume=args.resume, overwrite=args.overwrite,
                        compute=dask_config(args), evaluate=evaluate, notes=notes)
    _print_stop(run)
    if evaluate:
        print_metrics(run)
    else:
        print(f"SAE {run.name} trained and encoded (evaluation skipped: run `sae evaluate {args.workspace} --run {run.name}`)")
    return 0


def _auto_k(args) -> str:
    """Pick k with :func:`sae.train.autok.choose_k` (on the training rows), print the curve and set ``args.k``."""
    from sae.run import Workspace
    from sae.train.autok import choose_k
    from sae.train.plan import default_n_latents, training_rows

    store = Workspace(args.workspace).open_store()
    n_train = training_rows(store.n_rows, args.holdout)
    n = args.n or default_n_latents(n_train, store.dim)
    choice = choose_k(store, n, seed=args.seed, rows=slice(0, n_train))
    print(choice.curve.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(choice.note(), flush=True)
    args.k = choice.k
    return choice.note()


def _print_stop(run) -> None:
    cfg = run.config
    print(f"trained {cfg.get('steps', 0):,} steps: {cfg.get('stopped', 'step cap')}")


def cmd_sweep(args) -> int:
    from sae.run import Workspace
    from sae.sweep import sweep

    ws = Workspace(args.workspace)
    grid = [(n, k) for n in args.ns for k in args.ks]
    df = sweep(ws, [configs(args, n, k, announce=False)[:2] for n, k in grid])
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
    evaluate_run(run, targets=args.targets, quick=args.quick)
    print_metrics(run)
    return 0
