"""The offline labeler: a feature is named by the terms (metadata values, report phrases) most of its items share.

The rules are the product's promise about a label, so they are strict:
- every named term is significantly over-represented among the feature's active items (BH-FDR
  q < alpha and lift >= min_lift), carried by at least ``min_share`` (50%) of them **and** by at least
  ``min_top_share`` (50%) of its top items (the strongest activations, at most 2 per group); a term that
  is common but under-represented is never named, nor a column the evidence excludes (outcomes,
  the failure flag, the group key, ground truth);
- at most ``max_terms`` (3) terms: at most one per metadata column, and text phrases that do not
  restate each other (``pleural effusion`` and ``effusion`` are one finding: the more specific phrase
  is kept when it covers nearly as many items);
- terms are ranked by the informative-prior log-odds z-score (how sure the difference is);
- when nothing qualifies the feature is ``unexplained`` and the description says what came closest
  and how far it fell short, instead of naming a weak term;
- features that would share a label: the strongest keeps it and each other gets its next-best
  admissible label (a combination of its qualifying terms, within the same rules and budget) that
  no feature has yet; a feature whose every admissible label is taken keeps its best one and counts
  as a duplicate (the evidence cannot tell it apart).

Each label carries its terms, their columns and their coverage (share of active items with the term),
so cards, searches and audits can show and check exactly what was claimed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import NamedTuple

import numpy as np
import pandas as pd

from sae.interpret.describe import TEXT_KINDS, label_key
from sae.interpret.evidence import FeatureEvidence
from sae.interpret.label_types import DEAD, OK, UNEXPLAINED, Label
from sae.interpret.phrases import phrase_words

DEDUP_CANDIDATES = 8
"""Labels of a feature are drawn from combinations of its this many strongest qualifying terms."""
SPECIFIC_SHARE = 0.8
"""A longer phrase replaces a shorter one it contains when it covers at least this share of the shorter one's items."""


class Term(NamedTuple):
    """One enriched term of a feature, as the labeler weighs it."""

    text: str
    column: str
    kind: str
    n_items: int
    active_frac: float
    base_frac: float
    lift: float
    q: float
    z: float


def dead_label(pack: FeatureEvidence, labeler: str) -> Label | None:
    """The label of a feature that never fires, else None."""
    if pack.is_dead:
        return Label(pack.feature, "dead feature", "Never fires on this store.", 0.0, (), labeler, DEAD)
    return None


def term_match(item_terms: pd.Series, terms: Sequence[str]) -> float:
    """Share of items carrying every one of ``terms``."""
    if len(item_terms) == 0:
        return 0.0
    return float(np.mean([set(terms) <= set(t) for t in item_terms]))


def _overlaps(a: str, b: str) -> bool:
    """Whether two phrases restate each other: one's words contain the other's, or they are overlapping windows
    of one sentence ("lungs are normally" / "normally inflated": the end of one is the start of the other)."""
    wa, wb = phrase_words(a), phrase_words(b)
    if not wa or not wb or wa <= wb or wb <= wa:
        return bool(wa) and bool(wb)
    sa, sb = str(a).lower().split(), str(b).lower().split()
    return any(sa[-k:] == sb[:k] or sb[-k:] == sa[:k] for k in range(1, min(len(sa), len(sb))))


@dataclass
class MetadataLabeler:
    """Offline labels from the terms most of a feature's items share (see the module docstring).

    ``use_text``: name features by report phrases too (None: whenever the evidence has text terms);
    the id is ``text`` then, ``metadata`` otherwise.
    """

    max_terms: int = 3
    min_share: float = 0.5
    min_top_share: float = 0.5
    """A term must also be carried by this share of the feature's top items (the strongest activations shown)."""
    use_text: bool | None = None
    resumable: bool = False
    id: str = field(default="metadata", init=False)

    def __post_init__(self) -> None:
        if self.max_terms < 1 or not 0 < self.min_share <= 1:
            raise ValueError("max_terms must be >= 1 and min_share in (0, 1]")
        self.id = "text" if self.use_text else "metadata"

    def prepare(self, builder) -> None:
        """Resolve ``use_text`` against the evidence (called by ``label_run`` before labeling)."""
        if self.use_text is None:
            self.use_text = bool(builder.terms.terms["kind"].isin(TEXT_KINDS).any())
        self.id = "text" if self.use_text else "metadata"

    # -- candidates ------------------------------------------------------------------------
    def qualifying(self, pack: FeatureEvidence, limit: int = 64) -> list[Term]:
        """Terms that may be named: enriched, covering >= min_share of the active items, strongest z first
        (at most ``limit``)."""
        enr = pack.enriched()  # numpy, not pandas: thousands of tiny frames make pandas' per-call overhead dominate
        cols = {c: enr["count" if c == "n_items" else c].to_numpy() for c in Term._fields}
        mask = cols["active_frac"] >= self.min_share
        if not self.use_text:
            mask &= ~np.isin(cols["kind"].astype(str), list(TEXT_KINDS))
        idx = np.flatnonzero(mask)
        idx = idx[np.lexsort((-cols["lift"][idx], -cols["z"][idx]))]
        if self.min_top_share > 0 and len(pack.top) and len(idx):  # true of the strongest items too, not only the bulk
            top = [set(t) for t in pack.top["terms"]]
            share = np.array([np.mean([cols["text"][i] in t for t in top]) for i in idx])
            idx = idx[share >= self.min_top_share]
        return [Term(*t) for t in zip(*(cols[c][idx[:limit]] for c in Term._fields))]

    def _compatible(self, row: Term, chosen: Sequence[Term]) -> bool:
        for c in chosen:
            if row.column == c.column and row.kind not in TEXT_KINDS:
                return False
            if row.kind in TEXT_KINDS and c.kind in TEXT_KINDS and _overlaps(row.text, c.text):
                return False
        return True

    def _specific(self, row: Term, cand: list[Term]) -> Term:
        """The longest qualifying phrase containing ``row``'s words that covers nearly as many items."""
        if row.kind not in TEXT_KINDS:
            return row
        words = phrase_words(row.text)
        best = row
        for other in cand:
            if (other.kind == row.kind and len(phrase_words(other.text)) > len(phrase_words(best.text))
                    and words <= phrase_words(other.text) and other.n_items >= SPECIFIC_SHARE * row.n_items):
                best = other
        return best

    def choose(self, pack: FeatureEvidence, cand: list[Term] | None = None) -> list:
        """The named terms (rows of the enrichment table), at most ``max_terms``."""
        cand = self.qualifying(pack) if cand is None else cand
        chosen: list = []
        for row in cand:
            row = self._specific(row, cand)
            if self._compatible(row, chosen):
                chosen.append(row)
            if len(chosen) == self.max_terms:
                break
        return chosen

    # -- labels ----------------------------------------------------------------------------
    def _unexplained(self, pack: FeatureEvidence) -> Label:
        enr = pack.enriched()
        if not self.use_text and "kind" in enr:
            enr = enr[~enr["kind"].isin(TEXT_KINDS)]
        if enr.empty:
            why = "No metadata or text term is over-represented where this feature fires."
        else:
            best = enr.sort_values("active_frac", ascending=False, kind="stable").iloc[0]
            why = (f"No term is shared by at least {self.min_share:.0%} of the items where it fires; the closest, "
                   f"'{best['text']}', covers {best['active_frac']:.0%} of them (vs {best['base_frac']:.0%} overall).")
        return Label(pack.feature, "unexplained", why, 0.0, (), self.id, UNEXPLAINED)

    def make(self, pack: FeatureEvidence, chosen: list) -> Label:
        """The label naming ``chosen`` (or the dead / unexplained label)."""
        special = dead_label(pack, self.id)
        if special is not None:
            return special
        if not chosen:
            return self._unexplained(pack)
        texts = [r.text for r in chosen]
        parts = [f"{r.active_frac:.0%} {r.text} (vs {r.base_frac:.0%} overall)" for r in chosen]
        desc = f"Fires on {pack.stats['rate']:.1%} of items; among them {', '.join(parts)}."
        evidence = tuple(f"{r.text}: {r.active_frac:.0%} vs {r.base_frac:.0%}, lift {r.lift:.1f}, q={r.q:.1g}" for r in chosen)
        conf = term_match(pack.top["terms"], texts)
        return Label(pack.feature, ", ".join(texts), desc, round(conf, 3), evidence, self.id, OK,
                     terms=tuple(texts), term_columns=tuple(str(r.column) for r in chosen),
                     coverage=tuple(round(float(r.active_frac), 4) for r in chosen))

    def options(self, pack: FeatureEvidence, cand: list[Term], top: int = DEDUP_CANDIDATES) -> list[tuple]:
        """Every admissible label of a feature: combinations of up to ``max_terms`` compatible qualifying terms
        among the ``top`` strongest, best first (by the summed z of their terms)."""
        rows: list = []
        for row in cand:
            row = self._specific(row, cand)
            if all(r.text != row.text for r in rows):
                rows.append(row)
            if len(rows) == top:
                break
        combos = []
        for size in range(min(self.max_terms, len(rows)), 0, -1):
            for combo in combinations(rows, size):
                if all(self._compatible(r, list(combo[:i])) for i, r in enumerate(combo)):
                    combos.append(combo)
        return sorted(combos, key=lambda c: -sum(r.z for r in c))

    def label_many(self, packs: Sequence[FeatureEvidence], on_label: Callable[[Label], None] | None = None,
                   progress: bool = True) -> list[Label]:
        """Label every pack; a label another feature already has is replaced by the feature's next-best
        admissible label, features taken strongest first (so the clearest feature keeps the plainest name)."""
        opts = {p.feature: self.options(p, self.qualifying(p)) for p in packs}
        order = sorted(packs, key=lambda p: -sum(r.z for r in opts[p.feature][0]) if opts[p.feature] else 0.0)
        taken: set[str] = set()
        labels: dict[int, Label] = {}
        for p in order:
            choice = next((c for c in opts[p.feature] if label_key(", ".join(r.text for r in c)) not in taken),
                          opts[p.feature][0] if opts[p.feature] else ())
            labels[p.feature] = self.make(p, list(choice))
            taken.add(label_key(labels[p.feature].label))
        out = [labels[p.feature] for p in packs]
        if on_label is not None:
            for lab in out:
                on_label(lab)
        return out
