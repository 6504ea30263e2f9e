"""Slice discovery: cluster the failing items in the concept space, name each cluster by a concept rule.

Method (and why). Failing items of the discovery split are represented by their presences on the
features enriched for failure there (q < alpha, lift >= min_lift), each column weighted by log lift so
failure-related concepts dominate and the many incidental ones (anatomy, position) do not; rows are
L2-normalised (spherical k-means: shared concepts, not activation scale, define similarity). K-means
is chosen over HDBSCAN because failing items are few and their codes sparse: density estimates in
tens of dimensions are unstable at a few hundred points, while k-means with k picked by silhouette
(2..max_k, cosine) is stable, seeded and cheap; items with none of the enriched concepts are
reported as unexplained rather than forced into a cluster.

Each cluster is then described by a *rule*: the conjunction of up to ``max_concepts`` concepts that
best separate its members from passing items (share in the cluster x log ratio to the share among
passing items), grown greedily while the rule's failure rate rises and it keeps enough failing
items. Rules, not cluster ids, define a slice, so a slice can be applied to any item: the held-out
split (validation), the passing pool (look-alikes), new data. Clusters with the same rule merge.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sae.audit.enrichment import concept_enrichment
from sae.audit.slices import AuditConfig, Slice, rule_rows, short_label, slice_name, without_text


def _negation(index, failed: np.ndarray, rows: np.ndarray, cfg: AuditConfig, base: float) -> int | None:
    """The concept whose absence explains the rule's failures (a spurious cue fails only without the true concept):
    the rule's members that show it fail at less than ``min_lift`` x the ``base`` rate, those that lack it keep
    >= 60% of the failing members and fail >= 1.25x as often as all members; the one with the highest rate without it.
    (A gap-to-purity criterion missed cues whose own failure rate tops out at 60-80%.)"""
    n_active, n_fail = index.count_active(failed, rows)
    total, fails = len(rows), int(failed[rows].sum())
    keep_n, keep_f = total - n_active, fails - n_fail
    rate = np.where(keep_n > 0, keep_f / np.maximum(keep_n, 1), 0.0)
    rate_with = np.where(n_active > 0, n_fail / np.maximum(n_active, 1), 1.0)
    now = fails / max(total, 1)
    ok = ((keep_f >= max(cfg.min_slice_size, 0.6 * fails)) & (rate >= 1.25 * now) & (rate_with < cfg.min_lift * base)
          & (n_active >= cfg.min_slice_size // 2))
    if not ok.any():
        return None
    return int(np.flatnonzero(ok)[np.argmax(rate[ok])])


def _cluster(x: np.ndarray, min_size: int, max_k: int, seed: int) -> tuple[np.ndarray, int, float]:
    """Spherical k-means labels with k chosen by silhouette (cosine); (labels, k, silhouette)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    n = len(x)
    distinct = len(np.unique(np.round(x, 6), axis=0))  # items showing only one concept share one point
    ks = [k for k in range(2, min(max_k, distinct) + 1) if n // k >= min_size]
    if not ks:
        return np.zeros(n, int), 1, float("nan")
    rng = np.random.default_rng(seed)
    sample = rng.choice(n, min(n, 3000), replace=False)
    best = (np.zeros(n, int), 1, -1.0)
    for k in ks:
        lab = KMeans(k, n_init=4, random_state=seed).fit_predict(x)
        if len(np.unique(lab[sample])) < 2:
            continue
        s = float(silhouette_score(x[sample], lab[sample], metric="cosine"))
        if s > best[2]:
            best = (lab, k, s)
    return best


def _distinguishing(presence: np.ndarray, members: np.ndarray, candidates: pd.DataFrame) -> np.ndarray:
    """Per candidate concept: share in the cluster x log(share in the cluster / share among passing items)."""
    share_in = (presence[members] > 0).mean(0)
    share_pass = candidates["pass_share"].to_numpy()
    return share_in * np.log((share_in + 1e-3) / (share_pass + 1e-3))


def _rule(index, failed: np.ndarray, score: np.ndarray, candidates: pd.DataFrame, disc: np.ndarray, cfg: AuditConfig) -> list[int]:
    """Greedy conjunction: start from the most distinguishing concept; add one only when it raises the
    rule's failure rate by >= 10% (relative) while keeping >= 60% of its failing items and the minimum size."""
    order = [i for i in np.argsort(-score) if score[i] > 0][: 3 * cfg.max_concepts]
    if not order:
        return []
    feats = candidates["feature"].to_numpy()
    rule = [int(feats[order[0]])]
    rows = rule_rows(index, rule, disc)
    rate, n_fail = (failed[rows].mean(), failed[rows].sum()) if len(rows) else (0.0, 0)
    for i in order[1:]:
        if len(rule) >= cfg.max_concepts:
            break
        trial = rule + [int(feats[i])]
        r = rule_rows(index, trial, disc)
        k = failed[r].sum() if len(r) else 0
        if k >= max(cfg.min_slice_size, 0.6 * n_fail) and failed[r].mean() > rate * 1.1:
            rule, rate, n_fail = trial, failed[r].mean(), k
    return rule


def name_terms(labels: dict[int, str], concepts: np.ndarray, weights: np.ndarray, pool: np.ndarray, n_terms: int = 3,
               exclude: tuple[str, ...] = ()) -> list[str]:
    """Name a slice by label terms (comma-separated parts) that its distinguishing concepts share and
    other failure concepts do not: term score = sum of the concepts' distinguishing weights x IDF of
    the term over all failure-enriched concepts (so generic terms like 'severe' rank low)."""
    def terms(f: int) -> set[str]:
        return {t.strip() for t in str(labels.get(int(f), "")).split(",") if t.strip() and not any(x in t.lower() for x in exclude)}

    df: dict[str, int] = {}
    for f in pool:
        for t in terms(f):
            df[t] = df.get(t, 0) + 1
    score: dict[str, float] = {}
    for f, w in zip(concepts, weights):
        for t in terms(f):
            score[t] = score.get(t, 0.0) + max(float(w), 0.0) * np.log((1 + len(pool)) / (1 + df.get(t, 0)))
    ranked = sorted(score.items(), key=lambda kv: (-kv[1], kv[0]))
    best = ranked[0][1] if ranked else 0.0
    return [t for t, v in ranked[:n_terms] if v >= 0.5 * best and v > 0]


def discover(index, failed: np.ndarray, labels: dict[int, str], disc: np.ndarray, cfg: AuditConfig,
             exclude_terms: tuple[str, ...] = ()) -> tuple[list[Slice], dict]:
    """Slices found on the discovery rows, and facts about the clustering (k, silhouette, unexplained).

    ``exclude_terms``: label words that restate the failure signal itself (e.g. "quality fail" when
    auditing the quality_fail column), kept out of slice names."""
    enr = concept_enrichment(index, failed, labels, rows=disc)
    base = failed[disc].mean()
    cand = enr[(enr["q"] < cfg.alpha) & (enr["lift"] >= cfg.min_lift) & (enr["n_failed"] >= max(3, cfg.min_slice_size // 4))].copy()
    info = {"enriched_concepts": int(len(cand)), "discovery_rows": int(len(disc)), "discovery_failure_rate": float(base)}
    failing = disc[failed[disc]]
    if cand.empty:
        return [], {**info, "k": 0, "silhouette": float("nan"), "unexplained": int(len(failing))}
    n_pass = max(int((~failed[disc]).sum()), 1)
    cand["pass_share"] = (cand["n_active"] - cand["n_failed"]) / n_pass
    feats = cand["feature"].to_numpy()
    presence = np.stack([index.presence_at(f, failing) for f in feats], axis=1)
    weighted = presence * np.log(np.maximum(cand["lift"].to_numpy(), 1.0 + 1e-6))
    explained = np.flatnonzero(weighted.sum(1) > 0)
    x = weighted[explained] / np.linalg.norm(weighted[explained], axis=1, keepdims=True)
    labels_k, k, sil = _cluster(x, cfg.min_slice_size, cfg.max_k, cfg.seed)
    info.update({"k": int(k), "silhouette": sil, "unexplained": int(len(failing) - len(explained))})
    slices: dict[tuple, Slice] = {}
    for c in range(k):
        members = explained[labels_k == c]
        if len(members) < cfg.min_slice_size:
            continue
        score = _distinguishing(presence, members, cand)
        rule = _rule(index, failed, score, cand, disc, cfg)
        if not rule:
            continue
        top = np.argsort(-score)[:10]
        terms = name_terms(labels, feats[top], score[top], feats, exclude=exclude_terms)
        centre = x[labels_k == c].mean(0)
        proto = failing[members[np.argsort(-(x[labels_k == c] @ centre), kind="stable")[: cfg.prototypes]]]
        neg = _negation(index, failed, rule_rows(index, rule, disc), cfg, base)
        negated = [neg] if neg is not None and neg not in rule else []
        key = (tuple(sorted(rule)), tuple(negated))
        if key in slices:  # same rule from two clusters: one slice
            s = slices[key]
            s.cluster_rows = np.union1d(s.cluster_rows, failing[members])
            continue
        labs = [labels.get(f, f"feature {f}") for f in rule]
        neg_labs = [labels.get(f, f"feature {f}") for f in negated]
        name = (" + ".join(terms) if terms else slice_name(labs)) + without_text(labs, neg_labs)
        # a cue's feature often carries the true cause's label too ("cue, cause"); the name is checked against the
        # slice's failing members (which lack the cause) before it is kept (:mod:`sae.audit.evidence_names`)
        proposed = list(terms) + [t for lab in labs for t in short_label(lab, 3).split(", ") if t]
        slices[key] = Slice(len(slices), name, rule, labs, failing[members], proto, negated=negated, negated_labels=neg_labs,
                            proposed=proposed)
    return list(slices.values()), info
