"""Publication figures (matplotlib); each function returns a Figure, ``save_figure`` exports it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from sae.views import FAILING, PASSING, slice_points

STYLE: Any = {  # matplotlib types rc keys as Literals; this is a plain rc dict
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "pdf.fonttype": 42,  # editable text in PDF
    "svg.fonttype": "none",  # editable text in SVG
}


def save_figure(fig, stem: str | Path, formats: Sequence[str] = ("png", "pdf", "svg"), dpi: int = 300) -> list[Path]:
    """Write ``stem.<fmt>`` for each format; returns the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        paths.append(path)
    return paths


def pareto_figure(df: pd.DataFrame, x: str = "l0", y: str = "fvu"):
    """FVU against L0, one line per (arch, n_latents), the Pareto front highlighted."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(4.2, 3.2))
        for (arch, n), group in df.sort_values(x).groupby(["arch", "n_latents"]):
            ax.plot(group[x], group[y], marker="o", ms=4, lw=1.2, label=f"{arch}, n={n:,}")
        if "pareto" in df:
            front = df[df["pareto"]].sort_values(x)
            ax.plot(front[x], front[y], ls="--", color="0.3", lw=0.8, label="Pareto front")
        ax.set_xlabel("L0 (active latents per row)")
        ax.set_ylabel("held-out FVU")
        ax.set_title("Reconstruction vs sparsity")
        ax.legend(frameon=False, fontsize=7)
        fig.tight_layout()
    return fig


def _text(s: object) -> str:
    """Dataset text made safe for matplotlib ('$' would start mathtext)."""
    return str(s).replace("$", r"\$")


def _thumb(ax, image, title: str = "") -> None:
    ax.imshow(image, cmap="gray" if getattr(image, "ndim", 2) == 2 else None)
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    if title:
        ax.set_title(_text(title), fontsize=7)


def query_figure(result, images=None, n: int = 8):
    """Query panel: the query and its plan, the top hits (thumbnails when given) and each hit's concept contributions."""
    import numpy as np

    hits = result.hits.head(n)
    with plt.rc_context(STYLE):
        fig = plt.figure(figsize=(7.0, 3.6 if images is not None else 2.8))
        grid = fig.add_gridspec(2 if images is not None else 1, max(len(hits), 1), height_ratios=[1, 1.1] if images is not None else None)
        if images is not None:
            for i, img in enumerate(images[: len(hits)]):
                _thumb(fig.add_subplot(grid[0, i]), img, f"#{i + 1}  {hits['score'].iloc[i]:.2f}")
        ax = fig.add_subplot(grid[-1, :])
        bottom_pos = np.zeros(len(hits))
        bottom_neg = np.zeros(len(hits))
        for c in result.contributions:
            v = hits[c.column].to_numpy(float)
            pos = v >= 0
            base = np.where(pos, bottom_pos, bottom_neg)
            ax.bar(np.arange(len(hits)) + 1, v, bottom=base, label=_text(c.display()[:48]))
            bottom_pos += np.where(pos, v, 0)
            bottom_neg += np.where(pos, 0, v)
        ax.set_xlabel("rank")
        ax.set_ylabel("contribution to score")
        ax.legend(frameon=False, fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.suptitle(_text(f"{result.plan.query!r}\n{result.plan.summary(36)}"), fontsize=8, x=0.02, ha="left")
        fig.tight_layout()
    return fig


def slice_figure(report, slice_id: int, images=None):
    """Slice panel: name and validation, prototypes, failure rate in discovery and held-out items vs the base rate."""
    s = next(x for x in report.slices if x.id == slice_id)
    st = s.stats
    n_img = 0 if images is None else len(images)
    with plt.rc_context(STYLE):
        fig = plt.figure(figsize=(6.0, 2.6))
        grid = fig.add_gridspec(1, n_img + 2)
        for i in range(n_img):
            _thumb(fig.add_subplot(grid[0, i]), images[i], "prototype")
        ax = fig.add_subplot(grid[0, n_img:])
        rates = [report.signal.rate, st.discovery_failure_rate, st.holdout_failure_rate]
        ax.bar(["all items", "slice (discovery)", "slice (held-out)"], rates, color=["0.7", "tab:orange", "tab:red"])
        lo, hi = st.holdout.rate_low, st.holdout.rate_high
        if lo is not None and hi is not None:
            ax.errorbar([2], [rates[2]], yerr=[[rates[2] - lo], [hi - rates[2]]], color="k", capsize=3, lw=1)
        ax.set_ylim(0, 1)
        ax.set_ylabel("failure rate")
        verdict = "validated" if st.validated else f"not validated: {st.why_not[:60]}"
        ax.set_title(_text(f"slice {s.id}: {s.name[:60]}\n{verdict}"), fontsize=8)
        fig.tight_layout()
    return fig


def concept_map_figure(report):
    """The 2-D concept map: passing items grey, failures red, each validated slice's failing members in its own colour."""
    import numpy as np

    if report.map is None:
        raise ValueError("the report has no map: run the audit with with_map=True (CLI: --map)")
    xy = report.map[["x", "y"]].to_numpy()
    failed = report.signal.failed
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(4.6, 4.0))
        ax.scatter(*xy[~failed].T, s=2, c="0.8", lw=0, label="passing", rasterized=True)
        ax.scatter(*xy[failed].T, s=3, c="0.3", lw=0, alpha=0.5, label="failing", rasterized=True)
        points = slice_points(report)
        for title in [t for t in points.unique() if t not in (PASSING, FAILING)]:
            rows = np.flatnonzero(points.to_numpy() == title)
            ax.scatter(*xy[rows].T, s=5, lw=0, label=_text(title), rasterized=True)
            cx, cy = np.median(xy[rows], axis=0)
            ax.annotate(title.split(":")[0].replace("slice ", ""), (cx, cy), fontsize=8, weight="bold")
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_visible(False)
        ax.set_title("Concept map (UMAP of SAE presences)")
        ax.legend(frameon=False, fontsize=6, markerscale=3, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
    return fig


def feature_figure(card, score: str = "", images=None):
    """Feature panel from a :class:`sae.views.FeatureCard` (what the FeatureBrowser card shows): label and
    score, top items (thumbnails when given), activation histogram, the significant enriched terms."""
    n_img = 0 if images is None else min(len(images), 6)
    with plt.rc_context(STYLE):
        fig = plt.figure(figsize=(7.0, 3.4))
        grid = fig.add_gridspec(2, max(n_img, 2), height_ratios=[1, 1.2])
        for i in range(n_img):
            _thumb(fig.add_subplot(grid[0, i]), images[i], f"{card.top['activation'].iloc[i]:.2f}")
        half = max(n_img, 2) // 2
        ax = fig.add_subplot(grid[1, :half])
        if len(card.activations):
            ax.hist(card.activations, bins=40, color="tab:blue")
            ax.axvline(card.stats.get("q90", 0), color="k", ls="--", lw=0.8, label="q90 (presence 1)")
            ax.legend(frameon=False, fontsize=6)
        ax.set_xlabel("activation (active items)")
        ax.set_ylabel("items")
        ax2 = fig.add_subplot(grid[1, half:])
        enr = card.enriched.head(5)
        if len(enr):
            y = range(len(enr))
            ax2.barh(list(y), enr["active_frac"], color="tab:orange", label="where it fires")
            ax2.barh(list(y), enr["base_frac"], color="0.6", height=0.4, label="all items")
            ax2.set_yticks(list(y), [_text(t[:28]) for t in enr["text"]], fontsize=6)
            ax2.invert_yaxis()
            ax2.legend(frameon=False, fontsize=6)
        ax2.set_xlabel("share of items (significant terms)")
        title = f"feature {card.feature}: {card.label}" + (f"  ({score})" if score else "")
        fig.suptitle(_text(f"{title}\nfires on {card.stats.get('rate', 0):.1%} of items"), fontsize=8, x=0.02, ha="left")
        fig.tight_layout()
    return fig
