"""``sae search``: a text query becomes a plan over labeled concepts; prints the plan and the top hits."""

from __future__ import annotations

from sae.errors import SaeError


def add_search_parser(sub) -> None:
    p = sub.add_parser("search", help="search a labeled workspace with a text query; prints the plan and the top hits")
    p.add_argument("workspace")
    p.add_argument("query")
    p.add_argument("--run", help="SAE run name (default: the latest)")
    p.add_argument("--labels", help="which labels to match (default: the most recent), e.g. metadata")
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--where", nargs="*", default=[], metavar="COL=VALUE", help="metadata filters, e.g. orientation=axial")
    p.set_defaults(func=cmd_search)


def cmd_search(args) -> int:
    import pandas as pd

    from sae.runs import SAERun
    from sae.search.searcher import Searcher
    from sae.workspace import Workspace

    run = SAERun.find(Workspace(args.workspace), args.run)
    searcher = Searcher(run, args.labels)
    plan = searcher.plan(args.query)
    for item in args.where:
        col, sep, value = item.partition("!=") if "!=" in item else item.partition("=")
        if not sep or not col:
            raise SaeError(f"--where takes COL=VALUE or COL!=VALUE (got {item!r})")
        plan = plan.where(col, "!=" if sep == "!=" else "==", value)
    print(plan)
    res = searcher.search(plan, top=args.top)
    for note in res.notes:
        print(f"note: {note}")
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.max_colwidth", 40):
        print(res.hits.drop(columns=["row"]).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0
