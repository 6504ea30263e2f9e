"""Slice names from evidence: a slice is named only by label terms most of its failing members carry.

The offline namer (:func:`sae.audit.slices.name_terms`) proposes terms from the labels of the slice's
distinguishing concepts; a label is a claim about a *feature's* items, not about a slice's, so a term is kept
only when the store's own term table (metadata values and report phrases, the labels' evidence) shows it on
at least half of the slice's failing members and at least ``min_lift`` times more often than among all items.
The failure column never names a slice. When no proposed term holds, the slice is called "unnamed slice (top
concepts: #12, #40)" rather than a wrong name.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sae.interpret.describe import TEXT_KINDS, TermTable

MIN_COVERAGE = 0.5
MIN_LIFT = 1.5
MAX_TERMS = 3


def coverage_and_lift(terms: TermTable, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per term: the share of ``rows`` carrying it, and that share over its share among all items."""
    coverage = np.asarray(terms.matrix[rows].sum(axis=0)).ravel() / max(len(rows), 1)
    return coverage, coverage / np.maximum(terms.base_frac, 1e-12)


def term_evidence(terms: TermTable, rows: np.ndarray, candidates: Sequence[str], exclude_columns: Sequence[str] = ()) -> list[dict]:
    """Per proposed term found in the term table (outside ``exclude_columns``): its column, coverage among ``rows``,
    base share and lift, in proposal order."""
    if not len(rows):
        return []
    table = terms.terms
    where = {str(t): i for i, t in enumerate(table["text"])}
    coverage, lift = coverage_and_lift(terms, rows)
    out = []
    for text in dict.fromkeys(candidates):
        j = where.get(text)
        if j is None or str(table["column"].iloc[j]) in exclude_columns:
            continue
        out.append({"term": text, "column": str(table["column"].iloc[j]), "kind": str(table["kind"].iloc[j]),
                    "coverage": float(coverage[j]), "base": float(terms.base_frac[j]), "lift": float(lift[j])})
    return out


def evidence_name(terms: TermTable, rows: np.ndarray, candidates: Sequence[str], concepts: Sequence[int],
                  exclude_columns: Sequence[str] = ()) -> tuple[str, list[dict]]:
    """(name, the evidence of its terms): up to ``MAX_TERMS`` proposed terms covering >= half of ``rows`` (the slice's
    failing members) at lift >= ``MIN_LIFT``, one per column, strongest first; else "unnamed slice (top concepts: ...)"."""
    ev = [e for e in term_evidence(terms, rows, candidates, exclude_columns) if e["coverage"] >= MIN_COVERAGE and e["lift"] >= MIN_LIFT]
    ev.sort(key=lambda e: -e["coverage"] * np.log(e["lift"]))
    kept: list[dict] = []
    columns: set[str] = set()
    for e in ev:
        phrase = e["kind"] in TEXT_KINDS  # report phrases: several per column, but never one inside another
        if (not phrase and e["column"] in columns) or (phrase and any(e["term"] in k["term"] or k["term"] in e["term"] for k in kept)):
            continue
        kept.append(e)
        if not phrase:
            columns.add(e["column"])
        if len(kept) == MAX_TERMS:
            break
    if not kept:
        top = ", ".join(f"#{c}" for c in concepts[:3])
        shared = best_shared(terms, rows, exclude_columns)
        hint = f"; its failing items share {shared['term']!r} ({shared['coverage']:.0%})" if shared else ""
        return (f"unnamed slice (top concepts: {top}{hint})" if top else f"unnamed{hint}"), []
    return " + ".join(e["term"] for e in kept), kept


def best_shared(terms: TermTable, rows: np.ndarray, exclude_columns: Sequence[str] = ()) -> dict | None:
    """The term most of ``rows`` carry at the highest lift (coverage >= half, lift >= ``MIN_LIFT``), any term of
    the table: what the items share when no label of the slice's concepts says it."""
    if not len(rows):
        return None
    table = terms.terms
    coverage, lift = coverage_and_lift(terms, rows)
    ok = (coverage >= MIN_COVERAGE) & (lift >= MIN_LIFT) & ~table["column"].astype(str).isin(list(exclude_columns)).to_numpy()
    if not ok.any():
        return None
    idx = np.flatnonzero(ok)
    j = int(idx[np.argmax(coverage[idx] * np.log(lift[idx]))])
    return {"term": str(table["text"].iloc[j]), "coverage": float(coverage[j]), "lift": float(lift[j])}
