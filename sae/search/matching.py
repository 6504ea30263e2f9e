"""Match a query chunk to feature labels: embedding similarity first, then the lexicon's polarity check.

Every label is matched part by part (parts split at commas and semicolons; a part's match is discounted
per position, since labelers put the defining property first) and, discounted, whole. A label part stating an
absence ("no pleural effusion") never answers a chunk, which always asks for a presence. After the
embedding match, a label is dropped when it asserts the opposite pole of an axis the chunk speaks about
("superior region" for "lower brain"), or when the chunk states a direction the label does not. Members
of one OR-group must agree with each other: a member whose matched part contradicts a better member's
is left out, so "brain fraction" never gathers both "low" and "high brain fraction".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from sae.search.lexicon import DIRECT_AXES, NEGATED_PART, Lexicon, Poles


class TextEncoder(Protocol):
    """What labels and queries are embedded with (any :class:`~sae.encoders.Encoder` of text qualifies)."""

    def encode(self, items: list[str], *, progress: bool = ...) -> np.ndarray: ...


@dataclass(frozen=True)
class Dropped:
    """A candidate left out of a chunk's OR-group, and why (for the plan's notes)."""

    feature: int
    label: str
    similarity: float
    reason: str


@dataclass(frozen=True)
class Match:
    """A chunk's admissible features (best first) and the candidates dropped as contradicting it."""

    chunk: str
    members: tuple[tuple[int, str, float], ...]
    """(feature, label, similarity), the best admissible first; empty when none is admissible."""
    dropped: tuple[Dropped, ...] = ()
    best_raw: float = -1.0
    """Best similarity before the polarity check (the embedding's own opinion)."""
    best_term: str = ""
    """The label part that gave the best admissible match."""
    term_row: int = -1
    """Its row in :attr:`LabelSpace.unique` (-1 when nothing is admissible)."""
    directional: bool = False
    """The chunk states a direction its members all state too (grounded by the lexicon, not only the embedding)."""

    @property
    def score(self) -> float:
        return self.members[0][2] if self.members else -1.0

    @property
    def features(self) -> frozenset[int]:
        return frozenset(f for f, _, _ in self.members)


@dataclass
class LabelSpace:
    """Every labeled feature's label, its parts, their embeddings and the poles they assert."""

    labels: dict[int, str]
    encoder: TextEncoder
    lexicon: Lexicon = field(default_factory=Lexicon)
    part_discount: float = 0.97
    whole_discount: float = 0.95
    features: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.features = np.asarray(sorted(self.labels), dtype=np.int64)
        texts = [self.labels[int(f)] for f in self.features]
        parts = [(i, pos, p.strip()) for i, t in enumerate(texts) for pos, p in enumerate(re.split(r"[,;]", t)) if p.strip()]
        self.unique = sorted({p for _, _, p in parts})
        where = {t: j for j, t in enumerate(self.unique)}
        self.emb = self.embed(self.unique)
        negated = np.asarray([bool(NEGATED_PART.match(p)) for _, _, p in parts], dtype=bool)
        # entries: every label part (a one-part label is its own part); each names its owner feature and text row.
        # A multi-part label also matches whole, discounted by ``whole_discount``, so "calcified granuloma" gathers
        # "calcified, granuloma"; the part, never the whole, is what a match is said to be about (``term_row``), so
        # "ghosting artifact, sagittal orientation" never makes "ghosting in sagittal views" one concept.
        multi = sorted({i for i, pos, _ in parts if pos > 0} - {i for (i, _, _), neg in zip(parts, negated) if neg})
        self._whole_owner = np.asarray(multi, dtype=np.int64)
        self._whole_emb = self.embed([texts[i] for i in multi]) if multi else np.zeros((0, self.emb.shape[1]), np.float32)
        owner = np.asarray([i for i, _, _ in parts], dtype=np.int64)
        row = np.asarray([where[p] for _, _, p in parts], dtype=np.int64)
        factor = np.asarray([self.part_discount**pos for _, pos, _ in parts], dtype=np.float32)
        factor[negated] = 0.0  # a part stating an absence never answers a presence
        self._owner, self._row, self._factor = owner, row, factor
        self.text_poles = [self.lexicon.poles(t) for t in self.unique]
        kept: list[list[Poles]] = [[] for _ in texts]  # poles of each label's presence parts (what the label asserts)
        for (i, _, p), neg in zip(parts, negated):
            if not neg:
                kept[i].append(self.text_poles[where[p]])
        self.label_poles = [self.lexicon.merge(*k) for k in kept]

    def embed(self, texts: list[str]) -> np.ndarray:
        e = np.asarray(self.encoder.encode(texts, progress=False), dtype=np.float32)
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)

    def best_entries(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per feature (index order): its best similarity to any of the query vectors ``q`` (parts, and the whole
        label discounted) and the text row of its best part (what the match is about)."""
        sims = (self.emb @ q.T).max(1)
        value = np.where(self._factor > 0, sims[self._row] * self._factor, -1.0)
        order = np.lexsort((-value, self._owner))
        first = np.unique(self._owner[order], return_index=True)[1]
        best = order[first]
        out = value[best].copy()
        if len(self._whole_owner):
            whole = (self._whole_emb @ q.T).max(1) * self.whole_discount
            out[self._whole_owner] = np.maximum(out[self._whole_owner], whole)
        return out, self._row[best]

    def similarity(self, q: np.ndarray) -> np.ndarray:
        """Per feature: the best of its discounted presence parts (no polarity check)."""
        return self.best_entries(q)[0]


def admissible(space: LabelSpace, chunk: str, poles: Poles, q: np.ndarray, min_match: float, delta: float,
               max_group: int, context: Poles | None = None) -> Match:
    """The chunk's OR-group: features within ``delta`` of the best admissible one, agreeing with it and each other.

    ``poles``: what the chunk asserts (a label must state its directions); ``context``: poles no label may
    contradict (the chunk's and its phrase's, with the implicit "abnormal" of a query naming a finding)."""
    context = poles if context is None else context
    value, rows = space.best_entries(q)
    order = np.argsort(-value, kind="stable")
    best_raw = float(value[order[0]]) if len(order) else -1.0
    lex = space.lexicon
    members: list[tuple[int, str, float]] = []
    dropped: list[Dropped] = []
    agreed: Poles = {}
    best: float | None = None
    best_term, term_row = "", -1
    for i in order:
        sim = float(value[i])
        floor = min_match if best is None else max(min_match, best - delta)
        if sim < floor or len(members) >= max_group:
            break
        f = int(space.features[i])
        label = space.labels[f]
        term_poles = space.text_poles[int(rows[i])]
        # normality is said of one part ("thoracic spondylosis, contours are normal" still answers "spondylosis"),
        # directions and degrees of the whole label
        wider = {a: p for a, p in context.items() if a != "normality"}
        narrow = {a: p for a, p in context.items() if a == "normality"}
        if clash := lex.conflicts(wider, space.label_poles[i]) or lex.conflicts(narrow, term_poles):
            axis, want, have = clash[0]
            implicit = axis == "normality" and "normality" not in poles
            dropped.append(Dropped(f, label, sim, f"states {have}; the query names a finding" if implicit
                                   else f"{have} contradicts {want} ({axis})"))
            continue
        if lack := lex.missing(poles, space.label_poles[i], DIRECT_AXES):
            dropped.append(Dropped(f, label, sim, f"does not state {lack[0][1]}"))
            continue
        if lex.conflicts(agreed, term_poles):
            continue  # disagrees with a better member: not an alternative of the same thing
        agreed = lex.merge(agreed, term_poles)
        if best is None:
            best = sim
            term_row = int(rows[i])
            best_term = space.unique[term_row]
        members.append((f, label, sim))
    directional = bool(members) and any(axis in DIRECT_AXES for axis in poles)
    return Match(chunk, tuple(members), tuple(dropped), best_raw, best_term, term_row, directional)
