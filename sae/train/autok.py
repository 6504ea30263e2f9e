"""Pick k on the elbow of held-out FVU against L0, with short TopK runs on a sample of the store.

A k far above the data's true number of concepts per row splits each concept into several
near-copies (measured: k=32 against a true ~7.5 split parents into 4-7 copies); a k below it cannot
reconstruct. FVU falls fast while k is below the true L0 and slowly after, so the elbow of FVU
against log2(k) (the point farthest below the chord joining the first and last points, as in the
"kneedle" method) is a data-driven k. Each candidate trains a short fixed schedule on the same rows;
the curve is returned so the choice can be checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from sae._progress import tqdm
from sae.errors import SaeError
from sae.models import SAEConfig
from sae.store import Store
from sae.train.config import TrainConfig
from sae.train.trainer import Trainer

CANDIDATE_KS = (2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class KChoice:
    """The chosen k and the curve it was read from (one row per candidate: k, fvu, l0)."""

    k: int
    curve: pd.DataFrame
    rows: int
    steps: int

    def note(self) -> str:
        points = ", ".join(f"k={r.k}: {r.fvu:.3f}" for r in self.curve.itertuples())
        return f"auto-k: k={self.k} at the elbow of held-out FVU vs k ({points}; {self.rows:,} rows, {self.steps} steps each)"

    def _repr_html_(self) -> str:
        return f"<p><b>k = {self.k}</b> (elbow of held-out FVU vs k)</p>" + self.curve.to_html(index=False, float_format=lambda v: f"{v:.4f}")


def elbow(ks: Sequence[int], fvus: Sequence[float]) -> int:
    """The k farthest below the chord from the first to the last point of (log2 k, FVU), both scaled to [0, 1].

    A curve with no bend (a straight line, or a rise) gives the first k whose FVU is within 5% of the
    curve's range of the last one's."""
    x = np.log2(np.asarray(ks, np.float64))
    y = np.asarray(fvus, np.float64)
    if len(x) < 3:
        raise SaeError("the elbow needs at least three values of k")
    xs = (x - x[0]) / max(1e-12, x[-1] - x[0])
    span = y[0] - y[-1]
    if span <= 0:
        return int(ks[0])
    ys = (y - y[-1]) / span  # 1 at the first point, 0 at the last
    gap = (1 - xs) - ys  # the chord minus the curve: positive below the chord
    if gap.max() <= 0.02:
        return int(ks[int(np.flatnonzero(ys <= 0.05)[0])])
    return int(ks[int(np.argmax(gap))])


def choose_k(source: Store | np.ndarray, n_latents: int, ks: Sequence[int] = CANDIDATE_KS, *, max_rows: int = 20_000,
             steps: int = 500, seed: int = 0, rows: slice | None = None, progress: bool = True) -> KChoice:
    """Train a short TopK SAE per candidate k on up to ``max_rows`` of ``rows`` (default all; pass the
    training rows so the run's held-out rows stay unseen), a tenth of them held out, and pick the elbow."""
    ks = sorted({int(k) for k in ks if 0 < k < n_latents})
    if len(ks) < 3:
        raise SaeError(f"--auto-k needs at least three candidate k below n_latents={n_latents}")
    x = _sample(source, max_rows, seed, rows)
    d = x.shape[1]
    n_hold = max(1, len(x) // 10)
    fit, hold = x[:-n_hold], torch.from_numpy(x[-n_hold:])
    results: list[dict[str, float]] = []
    for k in tqdm(ks, desc="auto-k", unit="k", disable=not progress):
        cfg = TrainConfig(max_steps=steps, holdout_frac=0.0, seed=seed, stop_on_plateau=False)
        model = Trainer(SAEConfig(d_in=d, n_latents=n_latents, k=k), cfg, progress=False).fit(fit)
        with torch.no_grad():
            vals, idx = model.encode(hold)
            x_hat = model.decode_codes(vals, idx)
            fvu = float((hold - x_hat).pow(2).sum() / (hold - hold.mean(0)).pow(2).sum())
        results.append({"k": k, "fvu": fvu, "l0": float((vals > 0).sum(1).float().mean())})
    curve = pd.DataFrame(results)
    return KChoice(elbow(curve["k"].tolist(), curve["fvu"].tolist()), curve, len(x), steps)


def _sample(source: Store | np.ndarray, max_rows: int, seed: int, rows: slice | None) -> np.ndarray:
    """Up to ``max_rows`` of ``rows`` in random order (a store is read in sorted row order)."""
    n = source.n_rows if isinstance(source, Store) else len(source)
    start, stop, _ = (rows or slice(0, n)).indices(n)
    rng = np.random.default_rng(seed)
    take = start + np.sort(rng.choice(stop - start, size=min(stop - start, max_rows), replace=False))
    x = source.read_embeddings(take) if isinstance(source, Store) else np.asarray(source, np.float32)[take]
    return np.ascontiguousarray(x[rng.permutation(len(x))], dtype=np.float32)
