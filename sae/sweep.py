"""Sweeps over dictionary size x k: one run per setting, a results table and an FVU-vs-L0 Pareto figure."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from sae.models import SAEConfig
from sae.pipeline import run_name, train_run
from sae.run import SAES_DIR, Run, Workspace
from sae.train import TrainConfig


def pareto_front(df: pd.DataFrame, x: str = "l0", y: str = "fvu") -> pd.Series:
    """True for rows no other row beats on both ``x`` and ``y`` (lower is better for both)."""
    flags = []
    for _, row in df.iterrows():
        dominated = ((df[x] <= row[x]) & (df[y] <= row[y]) & ((df[x] < row[x]) | (df[y] < row[y]))).any()
        flags.append(not dominated)
    return pd.Series(flags, index=df.index)


def runs_table(runs) -> pd.DataFrame:
    """One row per evaluated run (architecture, size, FVU, L0, ...), Pareto flags included."""
    rows = []
    for run in runs:
        m, cfg = run.metrics(), run.config.get("sae", run.config)
        rec, spars = m.get("reconstruction", {}), m.get("sparsity", {})
        if rec.get("fvu") is None:
            continue
        rows.append({"run": run.name, "arch": cfg.get("arch"), "n_latents": cfg.get("n_latents"), "k": cfg.get("k"),
                     "fvu": rec.get("fvu"), "r2": rec.get("r2"), "l0": rec.get("l0"), "dead_frac": spars.get("dead_frac"),
                     "train_s": m.get("seconds", {}).get("train")})
    df = pd.DataFrame(rows, columns=["run", "arch", "n_latents", "k", "fvu", "r2", "l0", "dead_frac", "train_s"])
    df["pareto"] = pareto_front(df) if len(df) else pd.Series(dtype=bool)
    return df


def sweep(ws: Workspace, configs: Sequence[tuple[SAEConfig, TrainConfig]], *, progress: bool = True, figure: bool = True) -> pd.DataFrame:
    """Train (and encode, evaluate) every configuration; returns one row per run, Pareto flags included.

    A configuration whose run (same default name: same settings) is already trained, encoded and
    evaluated on this version of the store is reused, so re-running a sweep trains only what is
    missing or stale; a stale one is retrained in its place."""
    runs = [_current_run(ws, sae_cfg, train_cfg) or train_run(ws, sae_cfg, train_cfg, overwrite=True, progress=progress)
            for sae_cfg, train_cfg in configs]
    df = runs_table(runs)
    out = ws.path / SAES_DIR
    df.to_csv(out / "sweep.csv", index=False)
    if figure:
        from sae.viz import pareto_figure, save_figure

        save_figure(pareto_figure(df), out / "pareto", formats=("png", "pdf"))
    return df


def _current_run(ws: Workspace, sae_cfg: SAEConfig, train_cfg: TrainConfig) -> Run | None:
    """The run of this configuration when it exists and its model, codes and metrics are current."""
    path = ws.path / SAES_DIR / run_name(sae_cfg, train_cfg)
    if not (path / "config.json").exists():
        return None
    run = Run(ws, path)
    status = run.status()
    return run if all(status[k] == "ok" for k in ("model", "codes", "metrics")) else None
