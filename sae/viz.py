"""Publication figures (matplotlib); each function returns a Figure, ``save_figure`` exports it."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

STYLE = {
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
