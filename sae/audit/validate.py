"""Held-out validation of slices: the rule's failure rate and its defining concepts must hold there.

On the held-out rows a slice is validated when (1) its rule matches at least ``min_slice_size``
items, (2) they fail at least ``min_lift`` times the held-out base rate, (3) that excess is
significant after Benjamini-Hochberg over all slices (one-sided Fisher, q < alpha), (4) every
defining concept is still enriched for failure there (the lower end of its risk-difference interval
is above 0) and (5) it is not redundant: its held-out members outside every *more precise* validated slice (higher held-out
failure rate) still fail at least ``min_lift`` times the base rate (a broad slice that only re-finds a precise
slice's failures through a correlated parent concept is not a new discovery; the precise one is kept). Slices failing any check are reported with the reason,
never hidden.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import hypergeom

from sae.audit.enrichment import concept_enrichment
from sae.audit.slices import AuditConfig, Slice, SliceStats, describe_members, slice_rows
from sae.interpret.enrichment import bh_qvalues


def validate(index, failed: np.ndarray, slices: list[Slice], disc: np.ndarray, hold: np.ndarray, cfg: AuditConfig) -> None:
    """Fill each slice's ``stats`` with discovery and held-out numbers and its validation verdict."""
    if not slices:
        return
    base = failed[hold].mean() if len(hold) else float("nan")
    N, F = len(hold), int(failed[hold].sum())
    held_enr = concept_enrichment(index, failed, None, rows=hold, min_active=1).set_index("feature")
    pvals = []
    held: dict[int, np.ndarray] = {}
    for s in slices:
        held[s.id] = held_rows = slice_rows(index, s, hold)
        d = describe_members(failed, slice_rows(index, s, disc))
        h = describe_members(failed, held_rows)
        p = float(hypergeom.sf(h.failed - 1, N, F, h.members)) if h.members and h.failed > h.members * F / max(N, 1) else 1.0
        pvals.append(p)
        # a clustered rule's concepts must each hold; a pair's halves are weak alone by construction (its whole is tested)
        weak = [f for f in s.concepts if f not in held_enr.index or held_enr["ci_low"].loc[f] <= 0] if s.kind == "cluster" else []
        s.stats = SliceStats(discovery=d, holdout=h, cluster_size=int(len(s.cluster_rows)),
                             holdout_lift=h.failure_rate / max(base, 1e-12), holdout_p=p, concepts_not_holding=weak)
    q = bh_qvalues(np.asarray(pvals))[0]
    for s, qv in zip(slices, q):
        st = s.stats
        reasons = []
        if st.holdout_members < cfg.min_slice_size:
            reasons.append(f"{st.holdout_members} held-out members < {cfg.min_slice_size}")
        if st.holdout_lift < cfg.min_lift:
            reasons.append(f"held-out lift {st.holdout_lift:.2f} < {cfg.min_lift}")
        if qv >= cfg.alpha:
            reasons.append(f"held-out q {qv:.2g} >= {cfg.alpha}")
        if st.concepts_not_holding:
            reasons.append(f"concepts {st.concepts_not_holding} not enriched on held-out items")
        st.holdout_q = float(qv)
        st.validated = not reasons
        st.why_not = "; ".join(reasons)
    _mark_redundant(slices, held, failed, base, cfg)


def _mark_redundant(slices: list[Slice], held: dict[int, np.ndarray], failed: np.ndarray, base: float, cfg: AuditConfig) -> None:
    """Most precise validated slices first (held-out failure rate, its Wilson lower bound); a later, broader one is
    redundant when some *one* more precise kept slice explains its failures: its held-out members (``held``) outside
    that slice no longer fail at ``min_lift`` x the base rate. A slice whose excess only several precise parts explain
    together stays (a clean cause such as "artifact = blur" is a finding even when its failures concentrate in a few
    regions); each kept slice mostly (>= 80%) inside another kept one is reported as refining it."""
    kept: list[Slice] = []
    for s in sorted((s for s in slices if s.stats.validated), key=lambda s: (-s.stats.holdout.rate_low, -s.stats.holdout_failure_rate)):
        rows = held[s.id]
        reason = ""
        for t in kept:
            rest = rows[~np.isin(rows, held[t.id])]
            if len(rest) == len(rows):
                continue
            rate = float(failed[rest].mean()) if len(rest) else 0.0
            if len(rest) < cfg.min_slice_size // 2 or rate < cfg.min_lift * base:
                inside = np.isin(held[t.id], rows).mean() >= 0.8 if len(held[t.id]) else False
                reason = (f"redundant: outside the more precise slice {t.name!r}" + (" (which it contains)" if inside else "")
                          + f" its {len(rest)} held-out members fail at {rate:.0%} (needs {cfg.min_lift * base:.0%})")
                break
        if reason:
            s.stats.validated, s.stats.why_not = False, reason
            continue
        for t in kept:  # a more precise kept slice mostly inside this one refines it
            if len(held[t.id]) and np.isin(held[t.id], rows).mean() >= 0.8:
                t.stats.refines.append(s.id)
        kept.append(s)
