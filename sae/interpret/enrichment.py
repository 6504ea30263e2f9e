"""Metadata enrichment of every feature at once: one sparse product, a hypergeometric test, BH-FDR.

For feature f and term t: how many of f's active items carry t (``count``), the share among active
items (``active_frac``) against the share among all items (``base_frac``), their ratio (``lift``), a
log odds ratio with a 0.5 continuity correction, its z-score under an informative Dirichlet prior
(Monroe, Colaresi and Quinn 2008: the prior is the term's share of all items, so a rare term needs more
evidence than a common one; ``z`` ranks terms by how sure the difference is, not only how big), the one-sided hypergeometric p-value of
over-representation (Fisher's exact test; computed where the count exceeds its expectation, 1
elsewhere) and the Benjamini-Hochberg q-value within the feature's family of terms.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.stats import hypergeom

from sae.interpret.describe import TermTable


def active_matrix(codes_csr: sp.csr_matrix) -> sp.csr_matrix:
    """Binary items x features matrix: 1 where the feature fires."""
    a = codes_csr.copy().astype(np.float32)
    a.data[:] = 1.0
    a.eliminate_zeros()
    return a


def bh_qvalues(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values along the last axis (each row is one family)."""
    p = np.atleast_2d(np.asarray(p, dtype=np.float64))
    m = p.shape[1]
    order = np.argsort(p, axis=1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=1) * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[:, ::-1], axis=1)[:, ::-1]
    q = np.empty_like(ranked)
    np.put_along_axis(q, order, np.minimum(ranked, 1.0), axis=1)
    return q


PRIOR_STRENGTH = 10.0
"""Pseudo-items of the informative prior, spread over the term and its absence by the term's base rate."""


def prior_log_odds_z(count: np.ndarray, n_active: np.ndarray, n_term: np.ndarray, n_items: int,
                     strength: float = PRIOR_STRENGTH) -> np.ndarray:
    """z-score of the log odds of a term among a feature's active items against the rest, with an
    informative Dirichlet prior (``strength`` pseudo-items at the term's base rate) on both sides."""
    prior = strength * n_term / max(n_items, 1)
    rest_n, rest_c = n_items - n_active, n_term - count
    lo_active = np.log((count + prior) / (n_active - count + strength - prior))
    lo_rest = np.log((rest_c + prior) / (rest_n - rest_c + strength - prior))
    var = 1 / (count + prior) + 1 / (n_active - count + strength - prior) + 1 / (rest_c + prior) + 1 / (rest_n - rest_c + strength - prior)
    return (lo_active - lo_rest) / np.sqrt(var)


def enrichment_table(active: sp.csr_matrix, terms: TermTable, min_count: int = 1) -> pd.DataFrame:
    """Long table (feature, term) of every cell with at least ``min_count`` co-occurrences.

    ``active`` is items x features (binary); ``terms.matrix`` items x terms (one-hot).
    q-values are computed over all terms of a feature, zero-count cells included (p = 1).
    """
    n_items = active.shape[0]
    counts = np.asarray((active.T @ terms.matrix).todense(), dtype=np.float64)  # features x terms
    n_active = np.asarray(active.sum(axis=0)).ravel().astype(np.float64)  # per feature
    n_term = np.asarray(terms.matrix.sum(axis=0)).ravel().astype(np.float64)  # per term
    # exact one-sided p only where the count exceeds its expectation; elsewhere p >= ~0.5 and is set to 1,
    # which leaves every q-value below 0.5 unchanged (they never involve those cells) and saves most of the work
    pvals = np.ones_like(counts)
    over = counts > np.outer(n_active, n_term) / max(n_items, 1)
    f_idx, t_idx = np.nonzero(over)
    if len(f_idx):
        pvals[over] = hypergeom.sf(counts[over] - 1, n_items, n_term[t_idx], n_active[f_idx])
    qvals = bh_qvalues(pvals) if counts.shape[1] else pvals
    keep = counts >= max(1, min_count)
    f_idx, t_idx = np.nonzero(keep)
    c = counts[keep]
    na, nt = n_active[f_idx], n_term[t_idx]
    active_frac = c / np.maximum(na, 1)
    base_frac = nt / max(n_items, 1)
    # 2x2 table: active&term=c, active&~term=na-c, ~active&term=nt-c, ~active&~term=rest
    a, b, cc = c + 0.5, na - c + 0.5, nt - c + 0.5
    d = n_items - na - nt + c + 0.5
    df = pd.DataFrame({
        "feature": f_idx.astype(np.int64),
        "term": t_idx.astype(np.int64),
        "column": terms.terms["column"].to_numpy()[t_idx],
        "value": terms.terms["value"].to_numpy()[t_idx],
        "text": terms.terms["text"].to_numpy()[t_idx],
        "kind": terms.terms["kind"].to_numpy()[t_idx],
        "count": c.astype(np.int64),
        "n_active": na.astype(np.int64),
        "active_frac": active_frac,
        "base_frac": base_frac,
        "lift": active_frac / np.maximum(base_frac, 1e-12),
        "log_odds_ratio": np.log(a * d / (b * cc)),
        "z": prior_log_odds_z(c, na, nt, n_items),
        "p": pvals[keep],
        "q": qvals[keep],
    })
    # plain object strings: thousands of tiny per-feature frames are filtered later, and Arrow-backed
    # strings make every such small operation several times slower
    df = df.astype({"column": object, "value": object, "text": object, "kind": object})
    return df.sort_values(["feature", "p", "lift"], ascending=[True, True, False], kind="stable").reset_index(drop=True)
