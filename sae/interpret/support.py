"""Which evidence terms a label names, and which of its words no evidence supports.

Used to check any label against its feature's evidence: the contradiction check of the scores, the
coverage stored with an LLM's label (the share of active items carrying each term it names) and the
``unsupported`` words flagged on it (content words that appear in no term over-represented among the
feature's items and in none of its top items' texts).
"""

from __future__ import annotations

import re

import numpy as np

from sae.interpret.describe import TEXT_KINDS, TermTable, normalize_label
from sae.interpret.evidence import FeatureEvidence
from sae.interpret.phrases import STOP, negated_mask, stem


def has_phrase(label_norm: str, phrase: str, affirmed: bool = False) -> bool:
    """Whether ``phrase`` occurs in the normalised label; ``affirmed``: at least once outside a negation scope
    ("no focal airspace disease" does not affirm "airspace disease")."""
    if not phrase:
        return False
    words, target = label_norm.split(), phrase.split()
    neg = negated_mask(words) if affirmed else np.zeros(len(words), bool)
    n = len(target)
    return any(words[i : i + n] == target and not neg[i : i + n].any() for i in range(len(words) - n + 1))


def label_terms(label: str, terms: TermTable) -> list[int]:
    """Terms the label names, part by part (comma- or semicolon-separated; a term never spans two parts): the
    term's text as a phrase, or a categorical term's (non-generic) value; a phrase of the text only when the
    part affirms it ("no pleural effusion" does not name "pleural effusion"), and only the longest such match."""
    kinds = terms.terms["kind"].to_numpy()
    found: dict[int, str] = {}
    for part in re.split(r"[,;]", str(label)):
        lab = normalize_label(part)
        if not lab:
            continue
        hits = [(i, text) for i, text, value in terms.phrases
                if has_phrase(lab, text, kinds[i] == "phrase") or has_phrase(lab, value, kinds[i] == "phrase")]
        texts = [t for i, t in hits if kinds[i] in TEXT_KINDS]
        found.update((i, t) for i, t in hits if kinds[i] not in TEXT_KINDS or not any(t != o and has_phrase(o, t) for o in texts))
    return sorted(found)


def _stems(text: str) -> set[str]:
    return {stem(w) for w in normalize_label(text).split() if w not in STOP and len(w) > 2}


def support(label: str, pack: FeatureEvidence, terms: TermTable) -> tuple[tuple[str, ...], tuple[str, ...], tuple[float, ...], tuple[str, ...]]:
    """(named terms, their columns, their coverage among the active items, unsupported label words)."""
    named = label_terms(label, terms)
    texts, cols = terms.terms["text"].to_numpy(), terms.terms["column"].to_numpy()
    share = dict(zip(pack.enrichment["text"].tolist(), pack.enrichment["active_frac"].tolist()))
    coverage = tuple(round(float(share.get(texts[i], 0.0)), 4) for i in named)
    known: set[str] = set()
    for t in pack.enriched()["text"].tolist():
        known |= _stems(t)
    for d in pack.top["description"].tolist():
        known |= _stems(d)
    unsupported = tuple(sorted(_stems(label) - known))
    return tuple(texts[i] for i in named), tuple(str(cols[i]) for i in named), coverage, unsupported


def contradictions(named: list[int], pack: FeatureEvidence, terms: TermTable) -> list[str]:
    """Named terms that are under-represented among the feature's active items, said in words."""
    all_texts, all_cols, kinds = terms.terms["text"].to_numpy(), terms.terms["column"].to_numpy(), terms.terms["kind"].to_numpy()
    enr = pack.enrichment
    share = dict(zip(enr["text"].tolist(), enr["active_frac"].tolist()))
    by_col: dict[str, list[tuple[str, float]]] = {}
    for text, col, kind, frac in zip(enr["text"].tolist(), enr["column"].tolist(), enr["kind"].tolist(), enr["active_frac"].tolist()):
        if kind not in TEXT_KINDS:
            by_col.setdefault(col, []).append((text, frac))
    problems = []
    for i in named:
        text, own = all_texts[i], share.get(all_texts[i], 0.0)
        if own >= terms.base_frac[i]:
            continue
        if kinds[i] in TEXT_KINDS:
            problems.append(f"label says '{text}' but only {own:.0%} of active items mention it (vs {terms.base_frac[i]:.0%} overall)")
            continue
        dominant = [(t, f) for t, f in by_col.get(all_cols[i], []) if t != text and f >= 0.5]
        if dominant:
            t, f = dominant[0]
            problems.append(f"label says '{text}' but {f:.0%} of active items are '{t}' ({own:.0%} are '{text}')")
    return problems


def agreement(label: str, pack: FeatureEvidence, terms: TermTable, n_key: int = 2) -> tuple[float, str]:
    """(share of the pack's key enriched terms the label names, contradiction text or "")."""
    key = pack.enriched()["text"].head(n_key).tolist()
    named = label_terms(label, terms)
    named_texts = {terms.terms["text"].to_numpy()[i] for i in named}
    agree = float(np.mean([t in named_texts for t in key])) if key else float("nan")
    return agree, "; ".join(contradictions(named, pack, terms))
