"""``sae audit``: which concepts explain a failure signal, validated failure slices, a look-alike queue."""

from __future__ import annotations

from sae.cli.common import add_dask_args, dask_config, finite_float, fraction, non_negative_int, positive_int, probability


def add_audit_parser(sub) -> None:
    p = sub.add_parser("audit", help="explain a failure signal with concepts and validated, named failure slices")
    p.add_argument("workspace")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--failure", metavar="COLUMN", help="a boolean (or numeric, with --threshold) metadata column")
    src.add_argument("--probe", metavar="TARGET", help="failures = items a cross-validated probe for this column misclassifies")
    p.add_argument("--threshold", type=finite_float, help="numeric column: failure = value above it (or below, with --below)")
    p.add_argument("--below", action="store_true")
    p.add_argument("--run", help="SAE run name (default: the latest)")
    p.add_argument("--labels", help="which labels name the concepts (default: the most recent)")
    p.add_argument("--name", help="report folder name under saes/<run>/audits/ (default: the column)")
    p.add_argument("--pool-column", help="boolean column: items that may enter the look-alike queue (default: passing items)")
    p.add_argument("--min-slice-size", type=positive_int, default=20)
    p.add_argument("--exclude-column", action="append", default=[], metavar="COLUMN",
                   help="a metadata column never tested as a cause (repeatable; the failure column, its restatements and the "
                        "group key always are excluded)")
    p.add_argument("--alpha", type=probability, default=0.05, help="FDR level (0 < alpha < 1)")
    p.add_argument("--min-ratio", type=fraction, default=0.2,
                   help="a concept shows on an item only at this share of its 90th-percentile activation (0: every activation)")
    p.add_argument("--queue-size", type=non_negative_int, default=50, help="look-alikes queued per slice (0: none)")
    p.add_argument("--map", action="store_true", help="also compute the 2-D UMAP concept map (cached)")
    p.add_argument("--llm-model", help="name and summarise the slices with this LLM too (or SAE_LLM_MODEL)")
    p.add_argument("--base-url", help="OpenAI-compatible server URL for --llm-model (or OPENAI_BASE_URL)")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY")

    add_dask_args(p)
    p.set_defaults(func=cmd_audit)


def print_report(report, n: int = 10) -> None:
    import pandas as pd

    print(report.summary())
    t = report.slice_table()
    cols = ["slice", "name"] + (["llm_name"] if (t["llm_name"] != "").any() else []) + [
        "validated", "cluster_size", "holdout_members", "holdout_failure_rate", "holdout_q", "refines", "why_not"]
    show = t[cols]
    with pd.option_context("display.width", 220, "display.max_colwidth", 60, "display.max_columns", 20):
        print(show.head(n).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
        c = report.significant_concepts(n)[["feature", "label", "n_active", "failure_rate_active", "failure_rate_inactive", "ci_low", "ci_high", "q"]]
        print("concepts that explain the failures (risk difference 95% CI, BH q):")
        print(c.to_string(index=False, float_format=lambda v: f"{v:.3g}"))


def cmd_audit(args) -> int:
    from sae.audit import AuditConfig
    from sae.audit.report import audit_run
    from sae.run import Run, Workspace

    run = Run.find(Workspace(args.workspace), args.run)
    cfg = AuditConfig(alpha=args.alpha, min_slice_size=args.min_slice_size, queue_size=args.queue_size,
                      min_ratio=args.min_ratio)
    llm = None
    if args.llm_model:
        from sae.llm import LLMClient, LLMConfig

        llm = LLMClient(LLMConfig(model=args.llm_model, base_url=args.base_url, api_key_env=args.api_key_env))
    report = audit_run(run, failure=args.failure, threshold=args.threshold, above=not args.below, probe=args.probe,
                       labeler=args.labels, config=cfg, pool_column=args.pool_column, with_map=args.map, name=args.name, llm=llm,
                       compute=dask_config(args), exclude_columns=args.exclude_column)
    print_report(report)
    print(f"written to {report.path} (concepts.parquet, slices.parquet, members.parquet, queue.csv"
          f"{', map.parquet' if args.map else ''}, report.json)")
    return 0


def add_figures_parser(sub) -> None:
    p = sub.add_parser("figures", help="write the standard figure set (feature, query, slice panels, concept map)")
    p.add_argument("workspace")
    p.add_argument("--run", help="SAE run name (default: the latest)")
    p.add_argument("--out", help="folder (default: WORKSPACE/figures)")
    p.add_argument("--features", type=non_negative_int, default=4, help="feature panels for the N best-scored labels")
    p.add_argument("--query", help="the query panel's query (default: the best label's first term)")
    p.add_argument("--failure", help="also audit this column and draw its validated slices and the concept map")
    p.add_argument("--formats", nargs="+", default=["png", "pdf", "svg"], choices=["png", "pdf", "svg"])
    p.add_argument("--dpi", type=positive_int, default=200)
    p.set_defaults(func=cmd_figures)


def cmd_figures(args) -> int:
    from pathlib import Path

    from sae.figures import write_figures
    from sae.run import Run, Workspace

    ws = Workspace(args.workspace)
    run = Run.find(ws, args.run)
    out = Path(args.out) if args.out else ws.path / "figures"
    files = write_figures(run, out, n_features=args.features, query=args.query, failure=args.failure, formats=args.formats, dpi=args.dpi)
    for f in files:
        print(f)
    print(f"{len(files)} files in {out}")
    return 0
