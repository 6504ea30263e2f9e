"""Failure slices as data: the audit's config, a slice (its rule, members, statistics), rule rows and names.

A slice is a *rule*: concepts that must fire (each possibly with alternatives), concepts that must not, and metadata
conditions; :func:`slice_rows` applies it to any items (validation, members, look-alikes, new data). How slices are
found is in :mod:`sae.audit.discovery` (clustered rules) and :mod:`sae.audit.candidates` (pairs, metadata values).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sae.audit.enrichment import wilson
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
    min_ratio: float = 0.2
    """A concept shows on an item only where its activation is at least this share of the feature's 90th
    percentile (:mod:`sae.audit.firm`: a TopK SAE's weak fill-in activations are not evidence); 0 counts every activation."""
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
        need(0 <= number("min_ratio") < 1, "min_ratio", ">= 0 and < 1 (a share of the feature's 90th percentile)")
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
    alternatives: dict[int, list[int]] = field(default_factory=dict)
    """Features that may stand in for a concept of the rule (OR): an SAE often spreads one labeled concept over
    several features (one per site, one per strength), so a rule over the concept term is "any of them"."""


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
    """Rows of a slice's rule: its concepts (or their alternatives), its negated concepts and its metadata conditions (ascending)."""
    return rule_rows(index, s.concepts, within, s.negated, s.mask, s.alternatives)


def concept_rows(index, feature: int, alternatives: dict[int, list[int]] | None = None) -> np.ndarray:
    """Rows (ascending) where ``feature`` or one of its alternatives fires."""
    alts = (alternatives or {}).get(feature, ())
    if not alts:
        return index.active_rows(feature)
    return np.unique(np.concatenate([index.active_rows(f) for f in (feature, *alts)]))


def rule_rows(index, concepts: Sequence[int], within: np.ndarray | None = None, negated: Sequence[int] = (),
              mask: np.ndarray | None = None, alternatives: dict[int, list[int]] | None = None) -> np.ndarray:
    """Rows where every concept of the rule (or one of its ``alternatives``) fires, no negated one does and ``mask``
    (metadata conditions) holds (ascending), optionally within sorted ``within``."""
    if not concepts:
        rows = np.flatnonzero(mask) if mask is not None else np.arange(index.n_rows)
        return rows if within is None else rows[np.isin(rows, within, assume_unique=True)]
    if mask is not None:
        rows = rule_rows(index, concepts, within, negated, alternatives=alternatives)
        return rows[mask[rows]]
    rows = concept_rows(index, concepts[0], alternatives)
    for f in concepts[1:]:
        rows = rows[np.isin(rows, concept_rows(index, f, alternatives), assume_unique=True)]
    for f in negated:
        rows = rows[~np.isin(rows, index.active_rows(f), assume_unique=True)]
    return rows if within is None else rows[np.isin(rows, within, assume_unique=True)]


def rule_score(index, concepts: list[int], rows: np.ndarray, alternatives: dict[int, list[int]] | None = None) -> np.ndarray:
    """Mean calibrated activation (unclipped: the strongest items rank first) of the rule's concepts at ``rows``, a
    concept with alternatives counting its strongest one (0 for a metadata-only rule)."""
    if not concepts:
        return np.zeros(len(rows))
    alts = alternatives or {}
    return np.mean([np.max([index.ratio_at(g, rows) for g in (f, *alts.get(f, ()))], axis=0) for f in concepts], axis=0)


def without_text(labels: Sequence[str], negated_labels: Sequence[str]) -> str:
    """" without X" per negated concept, X the first term of its label that the rule's own labels do not carry (a
    split feature shares its sibling's terms: "edge slices without high slice index", never "X without X")."""
    own = {t.strip() for lab in labels for t in lab.split(",")}
    out = ""
    for lab in negated_labels:
        terms = [t.strip() for t in lab.split(",") if t.strip()]
        out += f" without {next((t for t in terms if t not in own), terms[0] if terms else lab)}"
    return out


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


def describe_members(failed: np.ndarray, m: np.ndarray) -> Members:
    """Members, failures and failure rate (with a Wilson interval) of a slice's members ``m``."""
    k = int(failed[m].sum())
    lo, hi = wilson(np.array([k]), np.array([len(m)]))
    return Members(int(len(m)), k, k / max(len(m), 1), float(lo[0]), float(hi[0]))
