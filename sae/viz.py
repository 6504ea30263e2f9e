"""Publication figures (matplotlib); each function returns a Figure, ``save_figure`` exports it.

One style (:data:`STYLE`), the shared colours of :mod:`sae.views` (a slice has its FailureExplorer colour), constrained
layouts: no text overlaps another or leaves the figure, long labels are wrapped, thumbnails stay >= 0.8 inch wide, and
the exported PDF / SVG keep their text editable (TrueType fonts, ``<text>`` elements)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import to_rgba
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import Bbox

from sae.views import ALL_ITEMS_COLOR, CONCEPT_PALETTE, FAILING, FAILING_COLOR, FIRES_COLOR, PASSING, slice_points, slice_title, status_colors

STYLE: Any = {  # matplotlib types rc keys as Literals; this is a plain rc dict
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "axes.spines.top": False, "axes.spines.right": False,
    "pdf.fonttype": 42, "svg.fonttype": "none",  # editable text: TrueType in PDF (not Type 3), <text> elements in SVG (not paths)
}


def save_figure(fig, stem: str | Path, formats: Sequence[str] = ("png", "pdf", "svg"), dpi: int = 300) -> list[Path]:
    """Write ``stem.<fmt>`` for each format; returns the paths. Saved inside :data:`STYLE`: the PDF / SVG font types
    are read when the file is written, so saving outside it would embed Type 3 glyphs and SVG paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(f".{fmt}") for fmt in formats]
    with plt.rc_context(STYLE):
        for path in paths:
            fig.savefig(path, dpi=dpi, bbox_inches="tight", pad_inches=0.05)
    return paths


def pareto_figure(df: pd.DataFrame, x: str = "l0", y: str = "fvu"):
    """FVU against L0, one line per (arch, n_latents), the Pareto front highlighted (legend beside the axes)."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5.4, 3.2), layout="constrained")
        for (arch, n), group in df.sort_values(x).groupby(["arch", "n_latents"]):
            ax.plot(group[x], group[y], marker="o", ms=4, lw=1.2, label=_text(f"{arch}, n={n:,}"))
        if "pareto" in df:
            front = df[df["pareto"]].sort_values(x)
            ax.plot(front[x], front[y], ls="--", color="0.3", lw=0.8, label="Pareto front")
        ax.set(xlabel="L0 (active latents per row)", ylabel="held-out FVU", title="Reconstruction vs sparsity")
        ax.legend(frameon=False, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return fig


def _text(s: object) -> str:
    """Dataset text made safe for matplotlib ('$' would start mathtext)."""
    return str(s).replace("$", r"\$")


def _wrap(s: object, width: int, max_lines: int | None = None) -> str:
    """``s`` wrapped to ``width`` characters per line (each paragraph on its own), at most ``max_lines``
    lines (the last one then ends with an ellipsis), made safe for matplotlib."""
    lines: list[str] = []
    for para in str(s).split("\n"):
        lines += textwrap.wrap(para, width, break_on_hyphens=False) or [""]
    if max_lines is not None and len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: width - 1].rstrip() + "…"
    return _text("\n".join(lines))


def _short(s: object, width: int) -> str:
    """``s`` cut to ``width`` characters with an ellipsis (for names inside a longer line)."""
    return str(s) if len(str(s)) <= width else str(s)[: width - 1].rstrip() + "…"


def _thumb(ax, image, title: str = "") -> None:
    """One thumbnail without axes; ``title`` (already safe text) is its caption."""
    ax.imshow(image, cmap="gray" if getattr(image, "ndim", 2) == 2 else None)
    ax.set(xticks=[], yticks=[])
    ax.spines[:].set_visible(False)
    if title:
        ax.set_title(title, fontsize=7, pad=3)


def _heading(result) -> str:
    """The query, its plan in one line per group, and whether the hits are partial matches."""
    plan, partial = result.plan, "" if result.strict else "\npartial matches: no item shows every required concept"
    return _wrap(f"query {plan.query!r}  ({plan.planner} plan)", 100, 2) + "\n" + _wrap(plan.summary(40) + partial, 110, 4)


def _contribution_bars(ax, result, hits: pd.DataFrame, labels: Sequence[str]) -> list:
    """One bar per hit stacked from its plan groups' signed contributions (NOT groups hatched, left of 0): they sum
    to the score, marked and written at the bar's end. Returns the legend handles (group names in full)."""
    y = np.arange(len(hits))
    pos, neg = np.zeros(len(hits)), np.zeros(len(hits))
    handles = []
    for i, c in enumerate(result.contributions):
        v = hits[c.column].to_numpy(float)
        handles.append(ax.barh(y, v, left=np.where(v >= 0, pos, neg), height=0.68, color=CONCEPT_PALETTE[i % len(CONCEPT_PALETTE)],
                               hatch="////" if c.negated else None, edgecolor="white", lw=0.5, label=_wrap(c.display(), 52, 3)))
        pos, neg = pos + np.clip(v, 0, None), neg + np.clip(v, None, 0)
    score = hits["score"].to_numpy(float)
    if not result.contributions:  # a dense ranking: the score alone
        handles.append(ax.barh(y, score, height=0.68, color=ALL_ITEMS_COLOR, label="score (no concept plan)"))
        pos = np.maximum(score, 0)
    handles += ax.plot(score, y, ls="none", marker="|", ms=9, mew=1.5, color="k", label="score")
    for yi, end, sc in zip(y, np.maximum(pos, score), score):
        ax.annotate(f"{sc:.3f}", (end, yi), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
    low, high = min(float(neg.min(initial=0.0)), float(score.min(initial=0.0)), 0.0), max(float(pos.max(initial=0.0)), 1e-6)
    ax.set(xlim=(low - 0.02 * (high - low), high + 0.28 * (high - low)), ylim=(len(hits) - 0.5, -0.5))
    ax.axvline(0, color="0.3", lw=0.6)
    ax.set_yticks(y, [_text(t) for t in labels], fontsize=7)
    ax.set_xlabel("contribution to the score (stacked; sums to it)", fontsize=8)
    return handles


def query_figure(result, images=None, n: int = 8):
    """Query panel: the query and its plan, the top hits (thumbnails when given, four to a row, with their
    score) and each hit's score split into its plan groups' signed contributions (one stacked bar per hit)."""
    hits = result.hits.head(n)
    n_img = 0 if images is None else min(len(images), len(hits))
    rows = -(-n_img // 4)
    with plt.rc_context(STYLE):
        fig = plt.figure(figsize=(7.0, 2.0 + 1.05 * rows if n_img else 3.6), layout="constrained")
        if n_img:
            outer = fig.add_gridspec(1, 2, width_ratios=[4.4, 3.0])
            thumbs = outer[0].subgridspec(rows, 4)
            for i in range(n_img):
                _thumb(fig.add_subplot(thumbs[i // 4, i % 4]), images[i], f"#{hits['rank'].iloc[i]}  {hits['score'].iloc[i]:.3f}")
            ax = fig.add_subplot(outer[1])
            labels = [f"#{r}" for r in hits["rank"]]
        else:
            ax = fig.add_subplot()
            ids = hits["id"] if "id" in hits else hits["row"]
            labels = [f"#{r}  {_short(i, 24)}" for r, i in zip(hits["rank"], ids)]
        handles = _contribution_bars(ax, result, hits, labels)
        fig.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False, fontsize=7)
        fig.suptitle(_heading(result), fontsize=8, x=0.01, ha="left")
    return fig


def _slice_heading(report, s) -> str:
    """A slice's name and verdict: the held-out numbers when validated, every reason when not."""
    st = s.stats
    verdict = (f"validated on held-out items: {st.holdout_members} members, failure rate {st.holdout_failure_rate:.0%} vs "
               f"{report.signal.rate:.0%} overall (lift {st.holdout_lift:.2f}, q {st.holdout_q:.3g})") if st.validated else f"not validated: {st.why_not}"
    return _wrap(f"slice {s.id}: {s.name}", 90, 2) + "\n" + _wrap(verdict, 100, 3)


def _rate_bars(ax, report, s, color: str) -> None:
    """Failure rate of all items, of the slice's discovery and held-out members (Wilson interval), labelled."""
    st = s.stats
    rates = [report.signal.rate, st.discovery_failure_rate, st.holdout_failure_rate]
    names = [f"all items\nn={len(report.signal.failed)}", f"slice\n(discovery)\nn={st.discovery_members}",
             f"slice\n(held-out)\nn={st.holdout_members}"]
    x = np.arange(3)
    ax.bar(x, rates, color=[ALL_ITEMS_COLOR, to_rgba(color, 0.55), color], width=0.7)  # discovery lighter
    tops = list(rates)
    lo, hi = st.holdout.rate_low, st.holdout.rate_high
    if lo is not None and hi is not None:
        ax.errorbar([2], [rates[2]], yerr=[[rates[2] - lo], [hi - rates[2]]], color="k", capsize=3, lw=1)
        tops[2] = max(rates[2], hi)
    for xi, r, top in zip(x, rates, tops):
        ax.annotate(f"{r:.0%}", (xi, top), xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, names, fontsize=7)
    ax.set(ylim=(0, 1.15), yticks=[0, 0.25, 0.5, 0.75, 1.0], ylabel="failure rate")


def slice_figure(report, slice_id: int, images=None):
    """Slice panel: name and validation, prototypes, failure rate in discovery and held-out items vs the base
    rate (the slice's bars in its map colour)."""
    s = next(x for x in report.slices if x.id == slice_id)
    n_img = 0 if images is None else min(len(images), 4)
    color = status_colors(report).get(slice_title(s), FAILING_COLOR)
    with plt.rc_context(STYLE):
        fig = plt.figure(figsize=(6.4, 3.0), layout="constrained")
        grid = fig.add_gridspec(1, n_img + 1, width_ratios=[1.0] * n_img + [2.2])
        for i in range(n_img):
            _thumb(fig.add_subplot(grid[0, i]), images[i], f"prototype {i + 1}")
        _rate_bars(fig.add_subplot(grid[0, n_img]), report, s, color)
        fig.suptitle(_slice_heading(report, s), fontsize=8, x=0.01, ha="left")
    return fig


_OFFSETS = [(0.0, 0.0)] + [(r * float(np.cos(a)), r * float(np.sin(a))) for r in (11, 18, 26, 36, 48, 62, 80)
                           for a in np.deg2rad(np.arange(0, 360, 30))]
"""Label offsets (points) tried in turn: on the anchor, then rings of growing radius."""


def _anchor(xy: np.ndarray, radius: float) -> np.ndarray:
    """The member point with the most members within ``radius`` (on a point of the slice, not between its clusters)."""
    pts = xy if len(xy) <= 600 else xy[np.linspace(0, len(xy) - 1, 600).astype(int)]
    d = np.linalg.norm(pts[:, None, :] - pts[None, :, :], axis=-1)
    return pts[int(np.argmax((d < radius).sum(1)))]


def _place_labels(ax, anchors: Sequence[np.ndarray], texts: Sequence[str], colors: Sequence[str]) -> None:
    """Label each anchor (data coordinates) at the nearest offset where the label stays inside the axes and
    clear of the labels placed before it (a leader line joins a moved label to its anchor)."""
    fig = ax.get_figure()
    fig.draw_without_rendering()  # the final layout: pixel positions are those of the drawn figure
    frame, px = ax.get_window_extent(), fig.dpi / 72
    placed: list[Bbox] = []
    for (x, y), text, color in zip(anchors, texts, colors):
        probe = ax.text(0, 0, text, fontsize=8, weight="bold")
        size = probe.get_window_extent()
        probe.remove()
        w, h = size.width + 6 * px, size.height + 4 * px  # the label's rounded box and a margin
        ax_px, ay_px = ax.transData.transform((x, y))
        boxes = [(d, Bbox.from_bounds(ax_px + d[0] * px - w / 2, ay_px + d[1] * px - h / 2, w, h)) for d in _OFFSETS]
        free = [(d, b) for d, b in boxes if frame.contains(b.x0, b.y0) and frame.contains(b.x1, b.y1) and not any(b.overlaps(o) for o in placed)]
        (dx, dy), box = (free or boxes)[0]  # no free spot (a crowded map): on the anchor
        placed.append(box)
        ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha="center", va="center", fontsize=8, weight="bold",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": color, "lw": 0.8, "alpha": 0.9}, in_layout=False,
                    arrowprops={"arrowstyle": "-", "lw": 0.6, "color": color} if (dx, dy) != (0.0, 0.0) else None)


def concept_map_figure(report):
    """The 2-D concept map: passing items light grey, failing items dark grey, each validated slice's failing
    members in its colour (the FailureExplorer's, :func:`sae.views.status_colors`) and labelled by its id."""
    if report.map is None:
        raise ValueError("the report has no map: run the audit with with_map=True (CLI: --map)")
    xy = report.map[["x", "y"]].to_numpy()
    points = slice_points(report).to_numpy()
    colors = status_colors(report)
    titles = [t for t in colors if t not in (PASSING, FAILING) and (points == t).any()]
    names = {slice_title(s): _wrap(slice_title(s, 200), 30, 4) for s in report.slices}  # the legend names slices in full
    legend_lines = 2 + sum(names[t].count("\n") + 1 for t in titles)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(6.4, max(4.2, 1.2 + 0.16 * legend_lines)), layout="constrained")
        for t, size in [(PASSING, 2), (FAILING, 3)] + [(t, 6) for t in titles]:
            ax.scatter(*xy[points == t].T, s=size, c=colors[t], lw=0, label=names.get(t, t), rasterized=True)
        ax.set(xticks=[], yticks=[], title="Concept map (UMAP of SAE presences)")
        ax.spines[:].set_visible(False)
        ax.legend(frameon=False, fontsize=7, markerscale=2.5, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        radius = 0.06 * float(np.ptp(xy, axis=0).max() or 1.0)
        anchors = [_anchor(xy[points == t], radius) for t in titles]
        _place_labels(ax, anchors, [t.split(":")[0].replace("slice ", "") for t in titles], [colors[t] for t in titles])
    return fig


def _histogram(ax, card) -> None:
    """The feature's activations where it fires, with its q90 (presence 1) marked; legend above the axes."""
    if len(card.activations):
        ax.hist(card.activations, bins=40, color=FIRES_COLOR)
        ax.axvline(card.stats.get("q90", 0), color="k", ls="--", lw=0.8, label="q90 (presence 1)")
        ax.legend(frameon=False, fontsize=7, loc="lower left", bbox_to_anchor=(0.0, 1.0), borderaxespad=0.1)
    ax.set(xlabel="activation (active items)", ylabel="items")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # item counts: whole numbers


def _enriched_panel(ax, card, n: int = 5, wrap: int = 24, legend: bool = True) -> list:
    """A feature's top significant terms: the share of the items where it fires carrying each term (colour)
    against the share of all items (grey), both written at the bar. Returns the legend handles."""
    enr = card.enriched.head(n)
    ax.set_xlabel("share of items", fontsize=8)
    if not len(enr):
        ax.text(0.5, 0.5, "no significant terms", ha="center", va="center", transform=ax.transAxes, fontsize=7, color="0.4")
        ax.set(xticks=[], yticks=[])
        return []
    y = np.arange(len(enr))
    active, base = enr["active_frac"].to_numpy(float), enr["base_frac"].to_numpy(float)
    handles = [ax.barh(y, active, height=0.72, color=FIRES_COLOR, label="where it fires"),
               ax.barh(y, base, height=0.34, color=ALL_ITEMS_COLOR, label="all items")]
    for yi, a, b in zip(y, active, base):
        ax.annotate(f"{a:.0%} vs {b:.0%}", (max(a, b), yi), xytext=(3, 0), textcoords="offset points", va="center", fontsize=6)
    ax.set_yticks(y, [_wrap(t, wrap, 2) for t in enr["text"]], fontsize=6.5)
    ax.set(ylim=(len(enr) - 0.5, -0.5), xlim=(0, max(float(active.max()), float(base.max())) + 0.6))
    ax.set_xticks([0, 0.5, 1.0], ["0", "50%", "100%"])
    if legend:
        ax.legend(handles=handles, frameon=False, fontsize=7, ncols=2, loc="lower left", bbox_to_anchor=(0.0, 1.0), borderaxespad=0.1)
    return handles


def feature_figure(card, score: str = "", images=None):
    """Feature panel from a :class:`sae.views.FeatureCard` (what the FeatureBrowser card shows): label, score, top
    items (thumbnails when given, with their activation), activation histogram, the significant enriched terms."""
    n_img = 0 if images is None else min(len(images), 6)
    with plt.rc_context(STYLE):
        fig = plt.figure(figsize=(7.0, 4.1 if n_img else 2.8), layout="constrained")
        outer = fig.add_gridspec(2 if n_img else 1, 1, height_ratios=[1.0, 1.5] if n_img else None)
        if n_img:
            cells = outer[0].subgridspec(1, 6)  # six columns whatever the count: thumbnails keep their size
            for i in range(n_img):
                _thumb(fig.add_subplot(cells[0, i]), images[i], f"{card.top['activation'].iloc[i]:.2f}")
        bottom = outer[-1].subgridspec(1, 2, width_ratios=[1.0, 1.2])
        _histogram(fig.add_subplot(bottom[0, 0]), card)
        _enriched_panel(fig.add_subplot(bottom[0, 1]), card, 5, 26)
        title = f"feature {card.feature}: {card.label}" + (f"  ({score})" if score else "")
        fig.suptitle(_wrap(title, 100, 2) + _text(f"\nfires on {card.stats.get('rate', 0):.1%} of items"), fontsize=8, x=0.01, ha="left")
    return fig
