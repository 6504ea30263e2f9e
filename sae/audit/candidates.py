"""Slice candidates beyond single strong concepts: metadata values, and pairs of weakly enriched concepts.

* **Metadata values.** A failure that follows a site, a scanner or an age band is a finding, and a one-line
  group-by finds it; the audit tests every value of every categorical column (up to ``MAX_VALUES`` values) and
  every quintile of every numeric column, on the discovery items. The failure column, columns that restate it
  (:func:`~sae.audit.report.derived_columns`) and the group key are never tested.
* **Concept pairs.** Two parent concepts may each be barely enriched (lift 1.1-1.2) while items showing both
  fail five times as often; a single-concept search never tries them. Pairs are drawn from the ``top`` features
  most frequent among failing discovery items (enriched or not); a pair is a candidate when its lift is at
  least ``min_lift`` and ``PAIR_GAIN`` times the better of its two halves.
* **Concept x metadata value.** The same test for (concept, value) pairs, with the value as one half.
* **Concept terms.** An SAE often spreads one labeled concept over several features (one per site, one per
  strength); a rule over one of them finds part of the concept's items. Every label term of a top feature
  shared by several features' labels is also a unit ("any of these features"), paired like a feature.

Every test counts: Benjamini-Hochberg q-values are taken over all metadata values, pairs and (concept, value)
pairs tested together, and a candidate needs q < alpha, lift >= min_lift and >= ``min_slice_size`` failing
members on the discovery items; the held-out validation then judges it like any slice.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import hypergeom

from sae.audit.slices import AuditConfig
from sae.interpret.enrichment import bh_qvalues

MAX_VALUES = 30
"""Categorical columns with more values than this are not tested (ids, free text)."""
PAIR_GAIN = 1.5
"""A pair must fail this many times more often than the better of its halves alone."""
TOP_FEATURES = 40
"""Features (most frequent among failing discovery items) whose pairs are tested."""


@dataclass(frozen=True)
class Condition:
    """A metadata condition of a slice: ``column == value``, or ``low <= column < high`` for a numeric bin."""

    column: str
    value: object = None
    low: float | None = None
    high: float | None = None

    def mask(self, meta: pd.DataFrame) -> np.ndarray:
        s = meta[self.column]
        if self.low is not None and self.high is not None:
            v = pd.to_numeric(s, errors="coerce").to_numpy(np.float64)
            return (v >= self.low) & (v < self.high)
        return (s.astype(object) == self.value).to_numpy(bool)

    def text(self) -> str:
        if self.low is not None and self.high is not None:
            return f"{self.column} in [{self.low:.3g}, {self.high:.3g})"
        return f"{self.column} = {self.value}"


def metadata_conditions(meta: pd.DataFrame, exclude: set[str]) -> list[Condition]:
    """Every value of every categorical column (<= ``MAX_VALUES`` values) and every quintile bin of every numeric one."""
    out: list[Condition] = []
    for col in meta.columns:
        if col == "id" or col in exclude:
            continue
        s = meta[col]
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s) and s.nunique() > MAX_VALUES:
            edges = np.unique(np.nanquantile(s.to_numpy(np.float64), np.linspace(0, 1, 6)))
            edges[-1] = np.nextafter(edges[-1], np.inf)
            out += [Condition(str(col), low=float(a), high=float(b)) for a, b in itertools.pairwise(edges)]
        elif s.nunique(dropna=True) <= MAX_VALUES:
            out += [Condition(str(col), value=v) for v in pd.unique(s.dropna().astype(object))]
    return out


@dataclass
class Candidate:
    """A candidate rule: concepts and metadata conditions its items must all show, and its discovery counts."""

    concepts: tuple[int, ...]
    conditions: tuple[Condition, ...]
    members: int
    failed: int
    lift: float
    p: float
    kind: str
    """"metadata", "pair" or "concept x metadata"."""
    q: float = 1.0
    alternatives: dict[int, list[int]] = field(default_factory=dict)
    """Features standing in for a concept (OR), when a unit is a label term carried by several features."""
    terms: dict[int, str] = field(default_factory=dict)
    """The label term a concept with alternatives stands for (it names the slice)."""


@dataclass(frozen=True)
class Unit:
    """One half of a pair: a feature, or a label term and every feature whose label carries it (any of them)."""

    features: tuple[int, ...]
    term: str = ""

    @property
    def primary(self) -> int:
        return self.features[0]


def _test(n: int, k: int, N: int, F: int) -> float:
    """One-sided hypergeometric p of k or more failures among n items drawn from N with F failures."""
    return float(hypergeom.sf(k - 1, N, F, n)) if n and k > n * F / max(N, 1) else 1.0


def find_candidates(index, failed: np.ndarray, meta: pd.DataFrame | None, disc: np.ndarray, cfg: AuditConfig,
                    exclude: set[str], term_features: dict[str, list[int]] | None = None) -> list[Candidate]:
    """Metadata-value, concept-pair and concept x value candidates on the discovery rows (see the module docstring);
    ``term_features``: label term -> the features whose labels carry it (the concept-term units)."""
    in_disc = np.zeros(len(failed), bool)
    in_disc[disc] = True
    N, F = len(disc), int(failed[disc].sum())
    base = F / max(N, 1)
    tested: list[Candidate] = []

    def add(units: tuple[Unit, ...], conditions: tuple[Condition, ...], mask: np.ndarray, kind: str, halves: float) -> None:
        n, k = int(mask.sum()), int(failed[mask].sum())
        lift = (k / max(n, 1)) / max(base, 1e-12)
        tested.append(Candidate(tuple(u.primary for u in units), conditions, n, k, lift,
                                _test(n, k, N, F) if lift >= PAIR_GAIN * halves else 1.0, kind,
                                alternatives={u.primary: list(u.features[1:]) for u in units if len(u.features) > 1},
                                terms={u.primary: u.term for u in units if u.term}))

    conds = metadata_conditions(meta, exclude) if meta is not None else []
    masks = {c: c.mask(meta) & in_disc for c in conds} if meta is not None else {}
    for c, m in masks.items():
        add((), (c,), m, "metadata", 1.0 / PAIR_GAIN)
    units = _units(index, failed, disc, term_features or {})
    active = {u: _mask(np.concatenate([index.active_rows(f) for f in u.features]), len(failed)) & in_disc for u in units}
    lift_of = {u: _lift(np.flatnonzero(m), failed, base) for u, m in active.items()}
    for i, a in enumerate(units):
        for b in units[i + 1:]:
            if not set(a.features) & set(b.features):
                add((a, b), (), active[a] & active[b], "pair", max(lift_of[a], lift_of[b]))
        for c, m in masks.items():
            add((a,), (c,), active[a] & m, "concept x metadata", max(lift_of[a], _lift(np.flatnonzero(m), failed, base)))
    if not tested:
        return []
    q = bh_qvalues(np.asarray([t.p for t in tested]))[0]
    keep = []
    for t, qv in zip(tested, q):
        t.q = float(qv)
        if qv < cfg.alpha and t.lift >= cfg.min_lift and t.failed >= cfg.min_slice_size:
            keep.append(t)
    return sorted(keep, key=lambda t: (t.q, -t.lift))


def _units(index, failed: np.ndarray, disc: np.ndarray, term_features: dict[str, list[int]]) -> list[Unit]:
    """The ``TOP_FEATURES`` features firing on the most failing discovery items, then every label term of theirs that
    several features carry (its features ordered by failing discovery items, so the primary is the strongest)."""
    flag = np.zeros(len(failed), bool)
    flag[disc[failed[disc]]] = True
    _, n_fail = index.count_active(flag, disc)
    feats = [int(f) for f in np.argsort(-n_fail, kind="stable")[:TOP_FEATURES] if n_fail[f] > 0]
    units = [Unit((f,)) for f in feats]
    top = set(feats)
    seen: set[tuple[int, ...]] = set()
    for term, members in sorted(term_features.items()):
        group = tuple(sorted({int(f) for f in members if n_fail[int(f)] > 0}, key=lambda f: (-n_fail[f], f)))
        if len(group) > 1 and top & set(group) and group not in seen:
            seen.add(group)
            units.append(Unit(group, term))
    return units


def _mask(rows: np.ndarray, n: int) -> np.ndarray:
    m = np.zeros(n, bool)
    m[rows] = True
    return m


def _lift(rows: np.ndarray, failed: np.ndarray, base: float) -> float:
    return float(failed[rows].mean()) / max(base, 1e-12) if len(rows) else 0.0


def unit_sets(c: Candidate) -> list[frozenset[int]]:
    """Each concept of a candidate with its alternatives, as a feature set."""
    return [frozenset((f, *c.alternatives.get(f, ()))) for f in c.concepts]


def same_finding(a: Candidate, b: Candidate) -> bool:
    """Whether two candidates are variants of one rule: same conditions, and each concept of one shares a feature with
    a concept of the other (``A & B``, ``(A or A') & B``, ``A & (B or B')`` ...)."""
    if a.conditions != b.conditions or len(a.concepts) != len(b.concepts):
        return False
    ua, ub = unit_sets(a), unit_sets(b)
    return all(any(x & y for y in ub) for x in ua) and all(any(x & y for x in ua) for y in ub)


def most_general(cands: list[Candidate], keep_lift: float = 0.8) -> list[Candidate]:
    """One candidate per finding: of the variants of a rule (:func:`same_finding`), the one with the most failing
    members among those keeping ``keep_lift`` of the best variant's lift. A rule over a concept term's features
    (``A or A'``) covers more of the same failures than the rule over one of them; reporting every combination of
    features would list one finding several times."""
    out = []
    for c in cands:
        family = [g for g in cands if g is c or same_finding(g, c)]
        best = max(g.lift for g in family)
        pick = max((g for g in family if g.lift >= keep_lift * best), key=lambda g: (g.failed, g.lift))
        if pick is c:
            out.append(c)
    return out


def candidate_slices(cands: list[Candidate], existing: list, labels: dict[int, str], failed: np.ndarray, disc: np.ndarray,
                     index, meta: pd.DataFrame | None, cfg: AuditConfig, max_new: int = 12) -> list:
    """Slices for the ``max_new`` most significant candidates whose rule no existing slice already has."""
    from sae.audit.slices import Slice, rule_rows, rule_score, short_label

    keys: set[tuple[tuple[int, ...], tuple[str, ...]]] = {(tuple(sorted(s.concepts)), ()) for s in existing}
    out: list[Slice] = []
    for c in most_general(cands):
        key = (tuple(sorted(c.concepts + tuple(a for alts in c.alternatives.values() for a in alts))), tuple(x.text() for x in c.conditions))
        if key in keys:
            continue
        keys.add(key)
        mask = np.logical_and.reduce([x.mask(meta) for x in c.conditions]) if c.conditions and meta is not None else None
        rows = rule_rows(index, list(c.concepts), disc, (), mask, c.alternatives)
        failing = rows[failed[rows]]
        labs = [c.terms.get(f) or labels.get(f, f"feature {f}") for f in c.concepts]
        order = np.argsort(-rule_score(index, list(c.concepts), failing, c.alternatives), kind="stable")
        name = " & ".join([x.text() for x in c.conditions] + [short_label(lab, 1) for lab in labs])
        proposed = [t for lab in labs for t in short_label(lab, 3).split(", ") if t]
        out.append(Slice(len(existing) + len(out), name, list(c.concepts), labs, failing, failing[order[: cfg.prototypes]],
                         kind=c.kind, conditions=list(c.conditions), mask=mask, proposed=proposed,
                         alternatives={f: list(a) for f, a in c.alternatives.items()}))
        if len(out) == max_new:
            break
    return out
