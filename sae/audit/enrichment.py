"""Which concepts explain the failures: failure rate where each feature fires vs where it does not.

Per feature: items where it fires (``n_active``) and how many of them fail, the two failure rates,
their difference with a Newcombe hybrid-score 95% interval (Wilson intervals combined: good at small
counts and rates near 0 or 1), the lift, a one-sided Fisher exact test of over-representation
(hypergeometric) and Benjamini-Hochberg q-values over every tested feature. Counts come from the
posting lists, so the cost follows the number of non-zeros, not items x features.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import hypergeom

from sae.interpret.enrichment import bh_qvalues

Z95 = 1.959963984540054


def wilson(k: np.ndarray, n: np.ndarray, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of k successes in n trials (n may be 0: then [0, 1])."""
    k, n = np.asarray(k, np.float64), np.asarray(n, np.float64)
    safe = np.maximum(n, 1)
    p = k / safe
    denom = 1 + z**2 / safe
    centre = (p + z**2 / (2 * safe)) / denom
    half = z * np.sqrt(p * (1 - p) / safe + z**2 / (4 * safe**2)) / denom
    lo, hi = np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)
    return np.where(n > 0, lo, 0.0), np.where(n > 0, hi, 1.0)


def newcombe(k1, n1, k2, n2, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """Newcombe's hybrid score interval for the difference of two proportions k1/n1 - k2/n2."""
    p1, p2 = np.asarray(k1) / np.maximum(n1, 1), np.asarray(k2) / np.maximum(n2, 1)
    l1, u1 = wilson(k1, n1, z)
    l2, u2 = wilson(k2, n2, z)
    d = p1 - p2
    return d - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def concept_enrichment(index, failed: np.ndarray, labels: dict[int, str] | None = None, rows: np.ndarray | None = None,
                       min_active: int = 5) -> pd.DataFrame:
    """One row per feature firing on at least ``min_active`` items, most significant first."""
    n_active, n_fail = index.count_active(failed, rows)
    N = index.n_rows if rows is None else len(rows)
    F = int(failed.sum() if rows is None else failed[rows].sum())
    return enrichment_table(n_active, n_fail, N, F, labels, min_active)


def enrichment_table(n_active: np.ndarray, n_fail: np.ndarray, N: int, F: int, labels: dict[int, str] | None = None,
                     min_active: int = 5) -> pd.DataFrame:
    """The enrichment table from per-feature counts: items where each feature fires (``n_active``) and
    how many of them fail (``n_fail``), out of ``N`` items of which ``F`` fail."""
    tested = np.flatnonzero(n_active >= min_active)
    na, nf = n_active[tested].astype(np.float64), n_fail[tested].astype(np.float64)
    ni, fi = N - na, F - nf
    rate_a, rate_i = nf / np.maximum(na, 1), fi / np.maximum(ni, 1)
    lo, hi = newcombe(nf, na, fi, ni)
    p = np.ones(len(tested))
    over = nf > na * F / max(N, 1)
    p[over] = hypergeom.sf(nf[over] - 1, N, F, na[over])
    q = bh_qvalues(p)[0] if len(p) else p
    df = pd.DataFrame({
        "feature": tested.astype(np.int64),
        "label": [(labels or {}).get(int(f), "") for f in tested],
        "n_active": na.astype(np.int64), "n_failed": nf.astype(np.int64),
        "failure_rate_active": rate_a, "failure_rate_inactive": rate_i,
        "risk_difference": rate_a - rate_i, "ci_low": lo, "ci_high": hi,
        "lift": rate_a / max(F / max(N, 1), 1e-12),
        "odds_ratio": ((nf + 0.5) * (ni - fi + 0.5)) / ((na - nf + 0.5) * (fi + 0.5)),
        "p": p, "q": q,
    }).astype({"label": object})
    return df.sort_values(["q", "risk_difference"], ascending=[True, False], kind="stable").reset_index(drop=True)
