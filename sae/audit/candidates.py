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

Every test counts: Benjamini-Hochberg q-values are taken over all metadata values, pairs and (concept, value)
pairs tested together, and a candidate needs q < alpha, lift >= min_lift and >= ``min_slice_size`` failing
members on the discovery items; the held-out validation then judges it like any slice.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

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


def _test(n: int, k: int, N: int, F: int) -> float:
    """One-sided hypergeometric p of k or more failures among n items drawn from N with F failures."""
    return float(hypergeom.sf(k - 1, N, F, n)) if n and k > n * F / max(N, 1) else 1.0


def find_candidates(index, failed: np.ndarray, meta: pd.DataFrame | None, disc: np.ndarray, cfg: AuditConfig,
                    exclude: set[str]) -> list[Candidate]:
    """Metadata-value, concept-pair and concept x value candidates on the discovery rows (see the module docstring)."""
    in_disc = np.zeros(len(failed), bool)
    in_disc[disc] = True
    N, F = len(disc), int(failed[disc].sum())
    base = F / max(N, 1)
    tested: list[Candidate] = []

    def add(concepts: tuple[int, ...], conditions: tuple[Condition, ...], mask: np.ndarray, kind: str, halves: float) -> None:
        n, k = int(mask.sum()), int(failed[mask].sum())
        lift = (k / max(n, 1)) / max(base, 1e-12)
        tested.append(Candidate(concepts, conditions, n, k, lift, _test(n, k, N, F) if lift >= PAIR_GAIN * halves else 1.0, kind))

    conds = metadata_conditions(meta, exclude) if meta is not None else []
    masks = {c: c.mask(meta) & in_disc for c in conds} if meta is not None else {}
    for c, m in masks.items():
        add((), (c,), m, "metadata", 1.0 / PAIR_GAIN)
    feats, rows = _top_features(index, failed, disc)
    lift_of = {f: _lift(r, failed, base) for f, r in zip(feats, rows)}
    active = {f: _mask(r, len(failed)) for f, r in zip(feats, rows)}
    for i, a in enumerate(feats):
        for b in feats[i + 1:]:
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


def _top_features(index, failed: np.ndarray, disc: np.ndarray) -> tuple[list[int], list[np.ndarray]]:
    """The ``TOP_FEATURES`` features firing on the most failing discovery items, with their discovery rows."""
    flag = np.zeros(len(failed), bool)
    flag[disc[failed[disc]]] = True
    _, n_fail = index.count_active(flag, disc)
    feats = [int(f) for f in np.argsort(-n_fail, kind="stable")[:TOP_FEATURES] if n_fail[f] > 0]
    rows = [index.active_rows(f) for f in feats]
    return feats, [r[np.isin(r, disc, assume_unique=True)] for r in rows]


def _mask(rows: np.ndarray, n: int) -> np.ndarray:
    m = np.zeros(n, bool)
    m[rows] = True
    return m


def _lift(rows: np.ndarray, failed: np.ndarray, base: float) -> float:
    return float(failed[rows].mean()) / max(base, 1e-12) if len(rows) else 0.0


def candidate_slices(cands: list[Candidate], existing: list, labels: dict[int, str], failed: np.ndarray, disc: np.ndarray,
                     index, meta: pd.DataFrame | None, cfg: AuditConfig, max_new: int = 12) -> list:
    """Slices for the ``max_new`` most significant candidates whose rule no existing slice already has."""
    from sae.audit.slices import Slice, rule_rows, rule_score, short_label

    keys: set[tuple[tuple[int, ...], tuple[str, ...]]] = {(tuple(sorted(s.concepts)), ()) for s in existing}
    out: list[Slice] = []
    for c in cands:
        key = (tuple(sorted(c.concepts)), tuple(x.text() for x in c.conditions))
        if key in keys:
            continue
        keys.add(key)
        mask = np.logical_and.reduce([x.mask(meta) for x in c.conditions]) if c.conditions and meta is not None else None
        rows = rule_rows(index, list(c.concepts), disc, (), mask)
        failing = rows[failed[rows]]
        labs = [labels.get(f, f"feature {f}") for f in c.concepts]
        order = np.argsort(-rule_score(index, list(c.concepts), failing), kind="stable")
        name = " & ".join([x.text() for x in c.conditions] + [short_label(lab, 1) for lab in labs])
        proposed = [t for lab in labs for t in short_label(lab, 3).split(", ") if t]
        out.append(Slice(len(existing) + len(out), name, list(c.concepts), labs, failing, failing[order[: cfg.prototypes]],
                         kind=c.kind, conditions=list(c.conditions), mask=mask, proposed=proposed))
        if len(out) == max_new:
            break
    return out
