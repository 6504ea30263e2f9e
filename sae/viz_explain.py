"""The explanation figure: one finding on one page (query -> plan -> hits -> the main features' evidence).

Kept apart from :mod:`sae.viz` (the single-panel figures) because it composes their parts: the contribution bars,
the thumbnails and the enriched-terms panel, in the same style and colours."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import pandas as pd

from sae.viz import STYLE, _contribution_bars, _enriched_panel, _short, _text, _thumb, _wrap

if TYPE_CHECKING:
    from sae.views import FeatureCard


def main_features(result, n: int = 3) -> list[int]:
    """The features an explanation shows evidence for: each plan group's strongest member, required groups
    first, then NOT groups, at most ``n``."""
    groups = sorted(result.plan.groups(), key=lambda g: g[0].negated)
    return [max(g, key=lambda c: c.weight).feature for g in groups][:n]


def _plan_rows(plan) -> list[tuple[str, str, str]]:
    """(operator, text, kind) per plan group and per metadata filter: how the plan panel reads (groups AND-ed,
    OR between a group's features, NOT for excluded groups, soft groups only add to the score)."""
    rows = []
    for i, g in enumerate(plan.groups()):
        kind = "not" if g[0].negated else ("and" if g[0].required else "soft")
        op = {"not": "AND NOT", "and": "AND", "soft": "+ soft"}[kind] if i else {"not": "NOT", "and": "", "soft": "soft"}[kind]
        names = [f"#{c.feature} {_short(c.label, 44 if len(g) > 1 else 160)}" for c in g[:3]] + ([f"{len(g) - 3} more"] if len(g) > 3 else [])
        phrase = f"{g[0].phrase!r}:  " if g[0].phrase else ""
        rows.append((op, phrase + "  OR  ".join(names), kind))
    rows += [("WHERE" if i == 0 else "AND", f"{col} {op} {v!r}", "filter") for i, (col, op, v) in enumerate(plan.filters)]
    return rows or [("", "(no concepts: a dense ranking by embedding similarity)", "soft")]


_PLAN_BOX = {"and": ("#e8effb", "#4363d8"), "not": ("#fde9ea", "#e6194b"), "soft": ("#f0f0f0", "#8c8c8c"), "filter": ("#fff5e0", "#9a6324")}
PLAN_WRAP, PLAN_LINE_IN, PLAN_GAP = 96, 0.125, 1.1
"""Plan panel: characters per line, inches per 7 pt line, gap between boxes in lines (its height follows the plan)."""


def _plan_height(plan) -> float:
    """Inches the plan panel needs (its rows' lines, the gaps between them and the panel heading)."""
    rows = _plan_rows(plan)
    return 0.4 + PLAN_LINE_IN * (sum(_wrap(t, PLAN_WRAP, 3).count("\n") + 1 for _, t, _ in rows) + PLAN_GAP * len(rows))


def _plan_panel(ax, plan) -> None:
    """The plan as rows of boxed groups with their operator (AND / AND NOT / OR inside a box)."""
    rows = [(op, _wrap(text, PLAN_WRAP, 3), kind) for op, text, kind in _plan_rows(plan)]
    heights = [t.count("\n") + 1 for _, t, _ in rows]
    ax.set_ylim(sum(heights) + PLAN_GAP * len(rows), 0)
    ax.set_axis_off()
    trans, y = ax.get_yaxis_transform(), PLAN_GAP / 2
    for (op, text, kind), h in zip(rows, heights):
        fc, ec = _PLAN_BOX[kind]
        if op:
            ax.text(0.0, y + h / 2, op, transform=trans, ha="left", va="center", fontsize=7, weight="bold", color=ec)
        ax.text(0.1, y + h / 2, text, transform=trans, ha="left", va="center", fontsize=7,
                bbox={"boxstyle": "round,pad=0.3", "fc": fc, "ec": ec, "lw": 0.6})
        y += h + PLAN_GAP


def _hits_panel(sub, result, hits: pd.DataFrame, images) -> None:
    """The top hits: thumbnails with rank, score and id when images are given, else the contribution bars."""
    ids = hits["id"] if "id" in hits else hits["row"]
    if images is not None and len(images):
        grid = sub.add_gridspec(1, max(len(hits), 6))
        for i in range(min(len(images), len(hits))):
            caption = f"#{hits['rank'].iloc[i]}  {hits['score'].iloc[i]:.3f}\n{_short(ids.iloc[i], 16)}"
            _thumb(sub.add_subplot(grid[0, i]), images[i], _text(caption))
        return
    ax = sub.add_subplot()
    handles = _contribution_bars(ax, result, hits, [f"#{r}  {_short(i, 24)}" for r, i in zip(hits["rank"], ids)])
    ax.legend(handles=handles, frameon=False, fontsize=6.5, loc="upper left", bbox_to_anchor=(1.02, 1.0))


def _evidence_panel(sub, result, cards: Sequence[FeatureCard]) -> None:
    """One term-share panel per main feature (NOT marked), a shared legend under them."""
    negated = {c.feature for c in result.plan.concepts if c.negated}
    handles: list = []
    for ax, card in zip(sub.subplots(1, len(cards), squeeze=False)[0], cards):
        handles = _enriched_panel(ax, card, 4, 20, legend=False) or handles
        name = f"{'NOT ' if card.feature in negated else ''}#{card.feature} {card.label}"
        ax.set_title(_wrap(name, 24, 3) + _text(f"\nfires on {card.stats.get('rate', 0):.1%} of items"), fontsize=7, loc="left")
    if handles:
        sub.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False, fontsize=7)


def explanation_figure(result, cards: Sequence[FeatureCard] = (), images=None, n_hits: int = 6):
    """One finding on one page: (a) the query's plan (concept groups AND-ed, OR inside a group, NOT groups
    excluded), (b) the top hits (thumbnails with their score when ``images`` is given, else each hit's score split
    into the groups' contributions), (c) the evidence of the main features: their top enriched terms, the share
    where the feature fires against all items. ``result``: a :class:`~sae.search.index.SearchResult`; ``cards``:
    the :func:`sae.views.feature_card` of the features to explain (e.g. :func:`main_features`; three at most)."""
    hits = result.hits.head(n_hits)
    cards = list(cards)[:3]
    heights = [_plan_height(result.plan), 1.7 if images is not None and len(images) else 0.75 + 0.26 * len(hits)]
    if cards:
        heights.append(2.5)
    with plt.rc_context(STYLE):
        fig = plt.figure(figsize=(7.0, 0.35 + sum(heights)), layout="constrained")
        parts = fig.subfigures(len(heights), 1, height_ratios=heights, squeeze=False)[:, 0]
        strict = "" if result.strict else " (partial matches: no item shows every required concept)"
        titles = [f"a  plan ({result.plan.planner}): concept groups are AND-ed; the features inside a group OR-ed",
                  f"b  top {len(hits)} hits, by score{strict}",
                  "c  evidence of the main features: share of items with each term, where the feature fires vs all items"]
        for part, title in zip(parts, titles):
            part.suptitle(_wrap(title, 110, 2), fontsize=8, x=0.0, ha="left", weight="bold")
        _plan_panel(parts[0].add_subplot(), result.plan)
        _hits_panel(parts[1], result, hits, images)
        if cards:
            _evidence_panel(parts[2], result, cards)
        fig.suptitle(_wrap(f"query {result.plan.query!r}", 90, 2), fontsize=9, x=0.01, ha="left")
    return fig
