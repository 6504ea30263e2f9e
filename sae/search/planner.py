"""Planners turn text into a :class:`QueryPlan`. The embedding planner is offline (MiniLM by default).

Each phrase of the query (see :func:`split_query`) is embedded and matched against every labeled
feature's label; the best match above ``min_match`` becomes a concept (negated phrases become
negated concepts). A phrase that matches nothing well is reported in the plan's notes with its
nearest labels; a query with no usable phrase raises, so nothing arbitrary is ever returned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from sae.errors import SaeError
from sae.search.parse import split_query
from sae.search.plan import Concept, QueryPlan
from sae.search.thesaurus import Thesaurus


class TextEncoder(Protocol):
    """What the planner embeds text with (any :class:`~sae.encoders.Encoder` of text qualifies)."""

    def encode(self, items: list[str], *, progress: bool = ...) -> np.ndarray: ...


class Rewriter(Protocol):
    """What rewrites a phrase before matching (a :class:`~sae.search.thesaurus.Thesaurus`)."""

    def rewrite(self, phrase: str) -> str: ...


NEGATED_PART = re.compile(r"^\s*(no|not|without|free of|negative for|absence of)\b", re.IGNORECASE)
"""A label part that states an absence (the offline labeler writes negated report phrases as "no ...")."""


@dataclass
class EmbeddingPlanner:
    """Matches query phrases to feature labels in a sentence-embedding space."""

    labels: dict[int, str]
    """feature -> label (e.g. ``LabelSet.mapping()``)."""
    encoder: TextEncoder | None = None
    """Anything with ``encode(list[str]) -> array``; default MiniLM (offline)."""
    min_match: float = 0.45
    """Cosine below which a phrase is reported as unmatched instead of guessed."""
    group_delta: float = 0.1
    """Every feature whose label is within this cosine of the best match joins the phrase's OR-group
    (broad attributes such as an orientation are spread over many features); 0 = best match only."""
    max_group: int = 32
    part_discount: float = 0.97
    """Labels are matched whole and part by part (split at commas and semicolons); a part's match is
    discounted by this factor per position, since labelers put the defining property first."""
    thesaurus: Rewriter | str | None = "radiology"
    """Synonym rewriting before matching (see :mod:`sae.search.thesaurus`); None to match as typed."""
    name: str = "embedding-minilm"
    _features: np.ndarray = field(init=False, repr=False)
    _emb: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.labels:
            raise SaeError("the SAE has no labels yet: run `sae label WORKSPACE` (offline) before searching by text")
        if self.thesaurus == "radiology":
            self.thesaurus = Thesaurus()
        elif isinstance(self.thesaurus, str):
            raise SaeError(f"unknown thesaurus {self.thesaurus!r}: use 'radiology', a Thesaurus or None")
        if self.encoder is None:
            from sae.encoders import MiniLMEncoder

            self.encoder = MiniLMEncoder()
        self._features = np.asarray(sorted(self.labels), dtype=np.int64)
        texts = [self.labels[int(f)] for f in self._features]
        parts = [(i, pos, p.strip()) for i, t in enumerate(texts) for pos, p in enumerate(re.split(r"[,;]", t)) if p.strip()]
        unique = sorted({p for _, _, p in parts} | set(texts))
        emb = self._embed(unique)
        where = {t: j for j, t in enumerate(unique)}
        self._emb = emb[[where[t] for t in texts]]
        self._part_emb = emb
        self._part_owner = np.asarray([i for i, _, _ in parts], dtype=np.int64)
        self._part_row = np.asarray([where[p] for _, _, p in parts], dtype=np.int64)
        self._part_factor = np.asarray([self.part_discount**pos for _, pos, _ in parts], dtype=np.float32)
        # a query phrase is matched as a presence: a label part stating an absence ("no pleural effusion")
        # never answers it, and a label with such a part is matched by its other parts only
        negated = np.asarray([bool(NEGATED_PART.match(p)) for _, _, p in parts], dtype=bool)
        self._part_factor[negated] = 0.0
        self._whole_ok = np.ones(len(texts), dtype=bool)
        self._whole_ok[self._part_owner[negated]] = False

    def similarity(self, phrase: str) -> np.ndarray:
        """Match of ``phrase`` with every labeled feature: the best of the whole label and its discounted parts."""
        variants = [phrase]
        if self.thesaurus is not None and not isinstance(self.thesaurus, str) and (alt := self.thesaurus.rewrite(phrase)) != phrase:
            variants.append(alt)
        q = self._embed(variants)
        sims = np.where(self._whole_ok, (self._emb @ q.T).max(1), -1.0)
        part = np.where(self._part_factor > 0, (self._part_emb @ q.T).max(1)[self._part_row] * self._part_factor, -1.0)
        np.maximum.at(sims, self._part_owner, part)
        return sims

    def _embed(self, texts: list[str]) -> np.ndarray:
        assert self.encoder is not None, "set in __post_init__"
        e = np.asarray(self.encoder.encode(texts, progress=False), dtype=np.float32)
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)

    def nearest(self, phrase: str, n: int = 3) -> list[tuple[int, str, float]]:
        """The ``n`` best (feature, label, cosine) for a phrase."""
        sims = self.similarity(phrase)
        top = np.argsort(-sims, kind="stable")[:n]
        return [(int(self._features[i]), self.labels[int(self._features[i])], float(sims[i])) for i in top]

    def _member_weight(self, best: float, sim: float) -> float:
        """1 for the best match, falling linearly to 0.5 at the edge of the OR-group."""
        if self.group_delta <= 0:
            return 1.0
        return round(float(np.clip(1.0 - 0.5 * (best - sim) / self.group_delta, 0.5, 1.0)), 3)

    def plan(self, query: str) -> QueryPlan:
        phrases = split_query(query)
        if not phrases:
            raise SaeError("empty query: describe what to find, e.g. 'sagittal slices with motion artifact but no bias field'")
        concepts: list[Concept] = []
        notes: list[str] = []
        for group, (phrase, negated) in enumerate(phrases):
            best = self.nearest(phrase, self.max_group)
            f, label, sim = best[0]
            if sim < self.min_match:
                near = ", ".join(f"#{g} {lab!r} ({s:.2f})" for g, lab, s in best[:3])
                notes.append(f"no feature matches {phrase!r} well (best cosine {sim:.2f} < {self.min_match}); nearest: {near}")
                continue
            taken = {c.feature for c in concepts}
            members = [(g, lab, s) for g, lab, s in best if s >= max(self.min_match, sim - self.group_delta) and g not in taken]
            if not members:
                notes.append(f"{phrase!r} maps to #{f} {label!r}, already in the plan")
                continue
            concepts += [Concept(g, self._member_weight(sim, s), negated, lab, phrase, s, group) for g, lab, s in members]
        if not concepts:
            raise SaeError(f"no feature label matches {query!r}: " + "; ".join(notes))
        return QueryPlan(query, tuple(concepts), planner=self.name, notes=tuple(notes))
