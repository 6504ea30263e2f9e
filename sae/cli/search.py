"""``sae search``: text and/or example items become a plan over labeled concepts; prints the plan and the top hits."""

from __future__ import annotations

from sae.cli.common import positive_int
from sae.errors import SaeError


def add_search_parser(sub) -> None:
    p = sub.add_parser("search", help="search a labeled workspace by text and/or example items; prints the plan and the top hits")
    p.add_argument("workspace")
    p.add_argument("query", nargs="?", default="", help='e.g. "sagittal slices with motion artifact but no bias field"')
    p.add_argument("--run", help="SAE run name (default: the latest)")
    p.add_argument("--labels", help="which labels to match (default: the most recent), e.g. metadata")
    p.add_argument("--like", nargs="+", metavar="ITEM", help="example item ids (or row numbers): query by example, "
                   'or a composed query with the text ("like this one, but with a motion artifact")')
    p.add_argument("--top", type=positive_int, default=10, help="hits (or groups) to show")
    p.add_argument("--where", nargs="*", default=[], metavar="COL=VALUE", help="metadata filters, e.g. orientation=axial")
    p.add_argument("--groups", choices=["max", "mean"], help="rank the store's groups (volume, study, patient) by max or mean pooling")
    p.add_argument("--dense", action="store_true", help="with --like: show the dense-embedding neighbours and their overlap too")
    p.add_argument("--planner", choices=["embedding", "llm"], default="embedding")
    p.add_argument("--model", help="LLM planner: model name (or SAE_LLM_MODEL)")
    p.add_argument("--base-url", help="LLM planner: OpenAI-compatible server URL (or OPENAI_BASE_URL)")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="LLM planner: environment variable holding the key")
    p.add_argument("--response-format", default="json_object", choices=["json_object", "json_schema", "json_object+schema", "none"])
    p.set_defaults(func=cmd_search)


def _items(values: list[str] | None):
    if not values:
        return None
    return [int(v) if v.isdigit() else v for v in values]


def _filters(plan, where: list[str]):
    for item in where:
        col, sep, value = item.partition("!=") if "!=" in item else item.partition("=")
        if not sep or not col:
            raise SaeError(f"--where takes COL=VALUE or COL!=VALUE (got {item!r})")
        plan = plan.where(col, "!=" if sep == "!=" else "==", value)
    return plan


def _show(frame, contributions=()) -> None:
    """Print hits (or ranked groups) with display headers; an empty table says so instead of printing pandas' repr."""
    import pandas as pd

    from sae.search.index import display_columns

    if frame.empty:
        print("no hits")
        return
    with pd.option_context("display.width", 250, "display.max_columns", 40, "display.max_colwidth", 40):
        print(display_columns(frame, list(contributions), short=True).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if contributions:
        print("concept columns: the contribution of each plan group (#feature of its best label; see the plan above)")


def cmd_search(args) -> int:
    from sae.run import Run, Workspace
    from sae.search.searcher import Searcher

    run = Run.find(Workspace(args.workspace), args.run)
    searcher = Searcher(run, args.labels)
    if args.planner == "llm":
        from sae.llm import LLMClient, LLMConfig
        from sae.search.llm_planner import LLMPlanner

        cfg = LLMConfig(model=args.model, base_url=args.base_url, api_key_env=args.api_key_env, response_format=args.response_format)
        searcher.planner = LLMPlanner(searcher.planner, LLMClient(cfg))
    like = _items(args.like)
    if not args.query and like is None:
        raise SaeError("give a text query, example items (--like ITEM ...), or both")
    plan = _filters(searcher.plan(args.query or None, like=like), args.where)
    print(plan)
    if args.groups:
        print(f"groups ({searcher.group_key}) by {args.groups} pooling of item scores:")
        _show(searcher.search_groups(plan, pool=args.groups, top=args.top))
        return 0
    res = searcher.search(plan, top=args.top, like=like)
    for note in res.notes:
        print(f"note: {note}")
    _show(res.hits.drop(columns=["row"]), res.contributions)
    if args.dense and like is not None:
        cmp = searcher.compare_example(like, top=args.top)
        print(f"dense-embedding neighbours (overlap with the sparse fingerprint's top {args.top}: {cmp.overlap:.0%}):")
        _show(cmp.dense.drop(columns=["row"]))
    return 0
