"""``sae search``: text and/or example items become a plan over labeled concepts; prints the plan and the top hits.

``--top N|all`` sets how many hits (or groups) come back, ``--output PATH.csv`` writes them as a CSV
file (atomically), and ``--mode concept|hybrid|dense`` picks the ranking: the concept plan (the
default), the plan fused with dense text-query similarity, or plain query-embedding cosine.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from sae.cli.common import positive_int
from sae.errors import SaeError

MODES = ("concept", "hybrid", "dense")
"""Rankings ``--mode`` offers: :data:`sae.search.searcher.MODES` (not imported here: the CLI starts without torch)."""
SHOWN_WITH_ALL = 20
"""Rows printed to the terminal with ``--top all`` (``--output`` writes every one)."""


def top_arg(text: str) -> int | str:
    """An argparse ``type=`` for ``--top``: a positive integer, or ``all`` (every ranked item)."""
    if text.strip().lower() == "all":
        return "all"
    try:
        return int(positive_int(text))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1 or 'all' (got {text!r})") from None


def add_search_parser(sub) -> None:
    p = sub.add_parser("search", help="search a labeled workspace by text and/or example items; prints the plan and the top hits")
    p.add_argument("workspace")
    p.add_argument("query", nargs="?", default="", help='e.g. "sagittal slices with motion artifact but no bias field"')
    p.add_argument("--run", help="SAE run name (default: the latest)")
    p.add_argument("--labels", help="which labels to match (default: the most recent), e.g. metadata")
    p.add_argument("--like", nargs="+", metavar="ITEM", help="example item ids (or row numbers): query by example, "
                   'or a composed query with the text ("like this one, but with a motion artifact")')
    p.add_argument("--top", type=top_arg, default=10, metavar="N|all",
                   help=f"hits (or groups) to return (default 10); all: every ranked item (the terminal shows {SHOWN_WITH_ALL})")
    p.add_argument("--output", metavar="PATH.csv", help="also write the hits (or groups) as CSV: id, rank, score, one column per "
                   "plan group, dense (hybrid mode), then the metadata columns")
    p.add_argument("--mode", choices=MODES, default="concept",
                   help="concept: rank by the plan (default); hybrid: the plan fused with dense text-query similarity "
                        "(stores whose encoder embeds text); dense: plain query-embedding cosine")
    p.add_argument("--where", nargs="*", default=[], metavar="COL=VALUE", help="metadata filters, e.g. orientation=axial")
    p.add_argument("--groups", choices=["max", "mean"], help="rank the store's groups (volume, study, patient) by max or mean pooling")
    p.add_argument("--dense", action="store_true", help="with --like: show the dense-embedding neighbours and their overlap too")
    p.add_argument("--planner", choices=["embedding", "llm"], default="embedding")
    p.add_argument("--model", help="LLM planner: model name (or SAE_LLM_MODEL)")
    p.add_argument("--base-url", help="LLM planner: OpenAI-compatible server URL (or OPENAI_BASE_URL)")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="LLM planner: environment variable holding the key")
    p.add_argument("--response-format", default="json_object", choices=["json_object", "json_schema", "json_object+schema", "none"])
    p.set_defaults(func=cmd_search)


def _items(values: list[str] | None) -> list[int | str] | None:
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


def output_path(text: str | None) -> Path | None:
    """The ``--output`` file, checked before any work: not a folder, and in a folder that exists."""
    if text is None:
        return None
    path = Path(text).expanduser()
    if path.is_dir() or text.endswith((os.sep, "/")):
        raise SaeError(f"--output {text}: that names a folder; give a file name, e.g. {path / 'hits.csv'}")
    if not path.parent.is_dir():
        raise SaeError(f"--output {text}: the folder {path.parent} does not exist (create it first)")
    return path


def hits_table(hits, contributions=()) -> Any:
    """The CSV columns of ``hits``: id, rank, score, each plan group by its display name, ``dense``
    (hybrid mode), then the metadata without its ``meta.`` prefix (kept where the bare name is taken)."""
    from sae.search.index import META_PREFIX

    names = {c: c for c in ("id", "rank", "score") if c in hits.columns}
    names.update({c.column: c.display() for c in contributions if c.column in hits.columns})
    if "dense" in hits.columns:
        names["dense"] = "dense"
    taken = set(names.values())
    for col in hits.columns:
        if col.startswith(META_PREFIX):
            bare = col[len(META_PREFIX):]
            names[col] = col if bare in taken else bare
            taken.add(names[col])
    return hits[list(names)].rename(columns=names)


def write_csv(path: Path, frame, what: str = "hits") -> None:
    """Write ``frame`` to ``path`` atomically (never half-written) and say so."""
    from sae._io import atomic_write_text

    try:
        atomic_write_text(path, frame.to_csv(index=False))
    except OSError as exc:
        raise SaeError(f"--output {path}: cannot write it ({exc.strerror or exc})") from None
    print(f"wrote {len(frame):,} {what} to {path}")


def _show(frame, contributions=(), limit: int | None = None) -> None:
    """Print hits (or ranked groups) with display headers; an empty table says so instead of printing pandas' repr.
    With ``limit``, only the first ``limit`` rows are printed, and the rest counted."""
    import pandas as pd

    from sae.search.index import display_columns

    if frame.empty:
        print("no hits")
        return
    shown = frame if limit is None else frame.head(limit)
    with pd.option_context("display.width", 250, "display.max_columns", 40, "display.max_colwidth", 40):
        print(display_columns(shown, list(contributions), short=True).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if len(shown) < len(frame):
        print(f"(showing the first {len(shown)} of {len(frame):,} rows)")
    if contributions:
        print("concept columns: the contribution of each plan group (#feature of its best label; see the plan above)")


def _searcher(args):
    from sae.run import Run, Workspace
    from sae.search.searcher import Searcher

    searcher = Searcher(Run.find(Workspace(args.workspace), args.run), args.labels)
    if args.planner == "llm":
        from sae.llm import LLMClient, LLMConfig
        from sae.search.llm_planner import LLMPlanner

        cfg = LLMConfig(model=args.model, base_url=args.base_url, api_key_env=args.api_key_env, response_format=args.response_format)
        searcher.planner = LLMPlanner(searcher.planner, LLMClient(cfg))
    return searcher


def _plan(searcher, args, like):
    """The plan to run: the planner's (text, examples or both), or for ``--mode dense`` the query with
    the filters only (dense ranking needs no concepts, so a query the planner refuses still runs)."""
    if args.mode == "dense":
        from sae.search.plan import QueryPlan

        plan = _filters(QueryPlan(query=args.query or "", planner="dense"), args.where)
        where = " WHERE " + " AND ".join(f"{c} {op} {v!r}" for c, op, v in plan.filters) if plan.filters else ""
        print(f"dense query-embedding search for {plan.query!r}{where}")
        return plan
    plan = _filters(searcher.plan(args.query or None, like=like), args.where)
    text = str(plan)
    print(text)
    for note in plan.notes:
        if note not in text:
            print(f"  note: {note}")
    return plan


def cmd_search(args) -> int:
    out = output_path(args.output)
    searcher = _searcher(args)
    like = _items(args.like)
    if not args.query and like is None:
        raise SaeError("give a text query, example items (--like ITEM ...), or both")
    top = int(searcher.store.n_rows) if args.top == "all" else int(args.top)
    limit = SHOWN_WITH_ALL if args.top == "all" else None
    if args.groups:
        if args.mode != "concept":
            raise SaeError(f"--groups pools the concept plan's item scores; --mode {args.mode} ranks items only (drop one of them)")
        plan = _plan(searcher, args, like)
        print(f"groups ({searcher.group_key}) by {args.groups} pooling of item scores:")
        groups = searcher.search_groups(plan, pool=args.groups, top=top)
        _show(groups, limit=limit)
        if out is not None:
            write_csv(out, groups, "groups")
        return 0
    plan = _plan(searcher, args, like)
    res = searcher.search(plan, top=top, like=like, mode=args.mode)
    for note in res.notes:
        print(f"note: {note}")
    _show(res.hits.drop(columns=["row"]), res.contributions, limit=limit)
    if out is not None:
        write_csv(out, hits_table(res.hits, res.contributions))
    if args.dense and like is not None:
        cmp = searcher.compare_example(like, top=top)
        print(f"dense-embedding neighbours (overlap with the sparse fingerprint's top {top}: {cmp.overlap:.0%}):")
        _show(cmp.dense.drop(columns=["row"]), limit=limit)
    return 0
