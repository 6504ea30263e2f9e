"""Failure slices: cluster the failing items in the concept space, name each cluster by a concept rule.

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

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sae.audit.enrichment import concept_enrichment, wilson
from sae.errors import SaeError


@dataclass(frozen=True)
class AuditConfig:
    """How an audit finds and validates slices (saved in report.json); refuses values outside their range."""

    alpha: float = 0.05
    """FDR level for enriched concepts and for validated slices."""
    min_slice_size: int = 20
    """Failing items a slice needs in discovery, and members it needs in the held-out split."""
    min_lift: float = 1.5
    """A concept or slice must fail at least this many times more often than the items overall."""
    holdout_frac: float = 0.5
    min_groups: int = 10
    """Split by group (volume, patient) only with at least this many groups; fewer make lumpy splits, so items are split instead."""
    max_concepts: int = 3
    max_k: int = 12
    prototypes: int = 3
    queue_size: int = 50
    """Look-alikes queued per slice (0: no queue)."""
    min_slice_floor: int = 5
    """When failures are rare the minimum slice size scales down to a quarter of the failing discovery items,
    never below this floor (:func:`effective_min_size`); the report says when it did."""
    seed: int = 0

    def __post_init__(self) -> None:
        def need(ok: bool, field_: str, rule: str) -> None:
            if not ok:
                raise SaeError(f"AuditConfig.{field_} must be {rule}, got {getattr(self, field_)!r}")

        def integer(field_: str, low: int) -> None:
            v = getattr(self, field_)
            need(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and bool(v >= low), field_, f"an integer >= {low}")

        def number(field_: str) -> float:
            v = getattr(self, field_)
            need(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and bool(np.isfinite(v)), field_, "a finite number")
            return float(v)

        need(0 < number("alpha") < 1, "alpha", "strictly between 0 and 1")
        need(0 < number("holdout_frac") < 1, "holdout_frac", "strictly between 0 and 1")
        need(number("min_lift") >= 1, "min_lift", ">= 1 (a failure rate at least the overall one)")
        for name, low in (("min_slice_size", 1), ("min_groups", 2), ("max_concepts", 1), ("max_k", 1), ("prototypes", 1),
                          ("queue_size", 0), ("min_slice_floor", 1), ("seed", 0)):
            integer(name, low)


def effective_min_size(cfg: AuditConfig, failing_discovery: int) -> tuple[int, str]:
    """(minimum slice size to use, the sentence saying why when it was lowered): a quarter of the failing
    discovery items when that is below ``min_slice_size``, never below ``min_slice_floor``."""
    scaled = max(cfg.min_slice_floor, failing_discovery // 4)
    if scaled >= cfg.min_slice_size:
        return cfg.min_slice_size, ""
    return scaled, (f"minimum slice size lowered from {cfg.min_slice_size} to {scaled}: only {failing_discovery} failing "
                    f"discovery items (a quarter of them, floor {cfg.min_slice_floor})")


@dataclass(frozen=True)
class Members:
    """A slice's members on one side of the split: how many, how many fail, the failure rate (Wilson 95%)."""

    members: int = 0
    failed: int = 0
    failure_rate: float = 0.0
    rate_low: float = 0.0
    rate_high: float = 0.0


@dataclass
class SliceStats:
    """A slice's numbers and verdict, filled by :func:`sae.audit.validate.validate` (and the LLM namer)."""

    discovery: Members = field(default_factory=Members)
    """Rule members among the discovery items."""
    holdout: Members = field(default_factory=Members)
    """Rule members among the held-out items (what the verdict rests on)."""
    cluster_size: int = 0
    """Failing discovery items in the cluster the rule was made from."""
    holdout_lift: float = 0.0
    """Held-out failure rate of the members / the held-out base rate."""
    holdout_p: float = 1.0
    holdout_q: float = 1.0
    """BH q-value of the held-out excess over all slices."""
    concepts_not_holding: list[int] = field(default_factory=list)
    """Defining concepts no longer enriched for failure on the held-out items."""
    refines: list[int] = field(default_factory=list)
    """Validated slices whose held-out members contain most (>= 80%) of this slice's: it is a more precise part of them."""
    validated: bool = False
    why_not: str = ""
    """Why the slice is not validated ("" when it is)."""
    llm_name: str = ""
    llm_summary: str = ""

    # flat names, as in slices.parquet and the report table
    @property
    def discovery_members(self) -> int:
        return self.discovery.members

    @property
    def discovery_failure_rate(self) -> float:
        return self.discovery.failure_rate

    @property
    def holdout_members(self) -> int:
        return self.holdout.members

    @property
    def holdout_failed(self) -> int:
        return self.holdout.failed

    @property
    def holdout_failure_rate(self) -> float:
        return self.holdout.failure_rate


@dataclass
class Slice:
    """One failure slice: its concept rule, name, members and statistics."""

    id: int
    name: str
    concepts: list[int]
    labels: list[str]
    cluster_rows: np.ndarray
    """Failing discovery items in the cluster the slice came from."""
    prototypes: np.ndarray
    stats: SliceStats = field(default_factory=SliceStats)
    negated: list[int] = field(default_factory=list)
    """Concepts the slice's items must lack (a spurious cue fails where the true concept is absent)."""
    negated_labels: list[str] = field(default_factory=list)
    kind: str = "cluster"
    """How it was found: "cluster" (failing items clustered, rule grown), "pair" (two concepts, each alone weakly
    enriched), "metadata" (a metadata value) or "concept x metadata"."""
    conditions: list = field(default_factory=list)
    """Metadata conditions (:class:`~sae.audit.candidates.Condition`) its items must also meet."""
    mask: np.ndarray | None = field(default=None, repr=False)
    """The conditions as a bool per row (None: no condition)."""
    proposed: list[str] = field(default_factory=list)
    """Label terms the offline namer proposed (checked against the slice's items by :mod:`sae.audit.evidence_names`)."""
    name_evidence: list[dict] = field(default_factory=list)
    """Per term of the name: its column, coverage among the failing members, base share and lift ([] = not checked)."""


def split_rows(n: int, groups: np.ndarray | None, holdout_frac: float, seed: int, min_groups: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(discovery rows, held-out rows); whole groups (volumes, patients) go to one side when there are
    at least ``min_groups`` of them, else items are split."""
    rng = np.random.default_rng(seed)
    codes, uniq = pd.factorize(pd.Series(groups).astype(object)) if groups is not None else (None, ())
    if groups is None or len(uniq) < min_groups:
        hold = rng.random(n) < holdout_frac
    else:
        hold = (rng.random(len(uniq)) < holdout_frac)[codes]
        if hold.all() or not hold.any():  # too few groups: fall back to items
            hold = rng.random(n) < holdout_frac
    return np.flatnonzero(~hold), np.flatnonzero(hold)


def slice_rows(index, s: Slice, within: np.ndarray | None = None) -> np.ndarray:
    """Rows of a slice's rule: its concepts, its negated concepts and its metadata conditions (ascending)."""
    return rule_rows(index, s.concepts, within, s.negated, s.mask)


def rule_rows(index, concepts: Sequence[int], within: np.ndarray | None = None, negated: Sequence[int] = (),
              mask: np.ndarray | None = None) -> np.ndarray:
    """Rows where every concept of the rule fires, no negated one does and ``mask`` (metadata conditions) holds
    (ascending), optionally within sorted ``within``."""
    if not concepts:
        rows = np.flatnonzero(mask) if mask is not None else np.arange(index.n_rows)
        return rows if within is None else rows[np.isin(rows, within, assume_unique=True)]
    if mask is not None:
        rows = rule_rows(index, concepts, within, negated)
        return rows[mask[rows]]
    rows = index.active_rows(concepts[0])
    for f in concepts[1:]:
        rows = rows[np.isin(rows, index.active_rows(f), assume_unique=True)]
    for f in negated:
        rows = rows[~np.isin(rows, index.active_rows(f), assume_unique=True)]
    return rows if within is None else rows[np.isin(rows, within, assume_unique=True)]


def _negation(index, failed: np.ndarray, rows: np.ndarray, cfg: AuditConfig) -> int | None:
    """The concept whose absence most raises the failure rate of the rule's members (a spurious cue
    fails only without the true concept), if it keeps >= 60% of the failing members and closes at
    least half of the gap between the rule's failure rate and 1."""
    n_active, n_fail = index.count_active(failed, rows)
    total, fails = len(rows), int(failed[rows].sum())
    keep_n, keep_f = total - n_active, fails - n_fail
    rate = np.where(keep_n > 0, keep_f / np.maximum(keep_n, 1), 0.0)
    now = fails / max(total, 1)
    ok = (keep_f >= max(cfg.min_slice_size, 0.6 * fails)) & (rate - now >= 0.5 * (1 - now)) & (n_active >= cfg.min_slice_size // 2)
    if not ok.any():
        return None
    return int(np.flatnonzero(ok)[np.argmax(rate[ok])])


def rule_score(index, concepts: list[int], rows: np.ndarray) -> np.ndarray:
    """Mean calibrated activation (unclipped: the strongest items rank first) of the rule's concepts at ``rows``
    (0 for a metadata-only rule)."""
    if not concepts:
        return np.zeros(len(rows))
    return np.mean([index.ratio_at(f, rows) for f in concepts], axis=0)


def short_label(label: str, parts: int = 2) -> str:
    return ", ".join(p.strip() for p in label.split(",")[:parts] if p.strip()) or label


def slice_name(labels: list[str]) -> str:
    """Labels of the rule's concepts, each cut to its first terms, repeated terms dropped."""
    seen: list[str] = []
    for lab in labels:
        for term in short_label(lab).split(", "):
            if term and term not in seen:
                seen.append(term)
    return " + ".join(seen) if seen else "unnamed concepts"


def _cluster(x: np.ndarray, min_size: int, max_k: int, seed: int) -> tuple[np.ndarray, int, float]:
    """Spherical k-means labels with k chosen by silhouette (cosine); (labels, k, silhouette)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    n = len(x)
    ks = [k for k in range(2, max_k + 1) if n // k >= min_size]
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
        neg = _negation(index, failed, rule_rows(index, rule, disc), cfg)
        negated = [neg] if neg is not None and neg not in rule else []
        key = (tuple(sorted(rule)), tuple(negated))
        if key in slices:  # same rule from two clusters: one slice
            s = slices[key]
            s.cluster_rows = np.union1d(s.cluster_rows, failing[members])
            continue
        labs = [labels.get(f, f"feature {f}") for f in rule]
        if negated and short_label(labels.get(negated[0], ""), 1) in terms:  # "X without X": a split feature, not a cue
            negated = []
        neg_labs = [labels.get(f, f"feature {f}") for f in negated]
        name = (" + ".join(terms) if terms else slice_name(labs)) + "".join(f" without {short_label(lab, 1)}" for lab in neg_labs)
        proposed = list(terms) + [t for lab in labs for t in short_label(lab, 3).split(", ") if t]
        slices[key] = Slice(len(slices), name, rule, labs, failing[members], proto, negated=negated, negated_labels=neg_labs,
                            proposed=proposed)
    return list(slices.values()), info


def describe_members(failed: np.ndarray, m: np.ndarray) -> Members:
    """Members, failures and failure rate (with a Wilson interval) of a slice's members ``m``."""
    k = int(failed[m].sum())
    lo, hi = wilson(np.array([k]), np.array([len(m)]))
    return Members(int(len(m)), k, k / max(len(m), 1), float(lo[0]), float(hi[0]))
