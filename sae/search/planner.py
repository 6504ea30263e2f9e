"""The embedding planner turns text into a :class:`QueryPlan` offline (MiniLM by default).

1. The query is refused when it is not English (:mod:`sae.search.language`), then parsed into clauses
   (:func:`parse_query`): negations, and "or" as alternatives inside one clause.
2. Each alternative is *segmented* into the concepts it requires: "blurry coronal images" is "blurry" AND
   "coronal"; "ghosting artefacts in sagittal views" is "ghosting artefacts" AND "sagittal views";
   "hardening and calcification of the aorta" stays one concept unless both halves match distinct labels.
   A split is taken only when every chunk matches a label better (by ``split_margin`` per split) than the
   whole does; generic words ("images", "slices", "the") never become a concept of their own.
3. Each chunk is matched to labels in a sentence-embedding space, as typed and as rewritten by the
   radiology thesaurus, then checked by the lexicon of opposites (:mod:`sae.search.matching`): a label
   that contradicts the chunk (direction, degree, normality) or fails to state its direction is dropped,
   and the plan's notes say so. Labels within ``group_delta`` of the best admissible one that agree with it
   join its OR-group. A prepositional attribute shared by alternatives ("ringing or ghosting artefacts in
   sagittal views") is its own required concept; an alternative's missing head noun is borrowed ("ringing"
   is also tried as "ringing artefacts").
A chunk that matches nothing well is reported in the notes with its nearest labels; a query with no
usable chunk raises, so nothing arbitrary is ever returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Protocol

import numpy as np

from sae.errors import SaeError
from sae.search.exclusive import TermColumns, restrict
from sae.search.language import check_english
from sae.search.lexicon import NEGATED_PART, Lexicon
from sae.search.matching import LabelSpace, Match, TextEncoder, admissible
from sae.search.parse import Clause, parse_query
from sae.search.plan import Concept, QueryPlan
from sae.search.thesaurus import Thesaurus


def _words(text: str) -> frozenset[str]:
    """The whitespace-separated words of ``text`` (a readable way to write a word list)."""
    return frozenset(text.split())

__all__ = ["NEGATED_PART", "EmbeddingPlanner", "Rewriter", "TextEncoder"]

GENERIC = _words(
    'the a an of in on at near from to towards toward into within across through around over for with '
    'some any other image images slice slices view views scan scans study studies section sections '
    'picture pictures film films radiograph radiographs x-ray x-rays xray series exam exams examination '
    'examinations case cases patient patients area areas portion portions one ones showing show shows '
    'seen visible by that which who this these those is are was were be being has have brain head skull '
    'cerebrum chest thorax body')
"""Words that never form a concept of their own (edges of chunks are trimmed of them): function words, words for
images, and the organ every item shows ("the front of the brain" is "front"; "high brain fraction" keeps "brain")."""

ATTRIBUTE_PREPOSITIONS = _words(
    'in on at near by from towards toward within across through around')
"""Words that may introduce an attribute ("in sagittal views", "at the vertex")."""

MAX_SEGMENT_WORDS = 8
"""Alternatives longer than this (content words) are matched whole or split at prepositions and "and" only."""


class Rewriter(Protocol):
    """What rewrites a phrase before matching (a :class:`~sae.search.thesaurus.Thesaurus`)."""

    def rewrite(self, phrase: str) -> str: ...


def trim(words: list[str]) -> list[str]:
    """The words without generic words at either edge ("the lower part of the brain" keeps "lower part of the brain")."""
    a, b = 0, len(words)
    while a < b and words[a].lower().strip(",.") in GENERIC:
        a += 1
    while b > a and words[b - 1].lower().strip(",.") in GENERIC:
        b -= 1
    return words[a:b]


@dataclass
class Segment:
    """A best segmentation of a span: its chunks' matches and its score (the weakest chunk, minus split margins)."""

    score: float
    matches: tuple[Match, ...]
    attached: tuple[bool, ...] = ()
    """Per chunk: introduced by a preposition ("on coronal images"): an attribute that restricts the phrase,
    so it stays a positive requirement when the phrase is negated ("no motion on coronal images")."""


@dataclass
class EmbeddingPlanner:
    """Matches query chunks to feature labels in a sentence-embedding space, polarity-checked."""

    labels: dict[int, str]
    """feature -> label (e.g. ``LabelSet.mapping()``)."""
    encoder: TextEncoder | None = None
    """Anything with ``encode(list[str]) -> array``; default MiniLM (offline)."""
    min_match: float = 0.45
    """Cosine below which a chunk is reported as unmatched instead of guessed."""
    group_delta: float = 0.1
    """Every admissible feature within this cosine of the best joins the chunk's OR-group (broad attributes
    such as an orientation are spread over many features); 0 = best match only."""
    max_group: int = 32
    part_discount: float = 0.97
    """A label part's match is discounted by this factor per position (labelers put the defining property first)."""
    split_margin: float = 0.03
    """Each split costs this much of the segmentation's score (the weakest chunk's match), so fewer chunks win ties."""
    standalone_match: float = 0.6
    """A chunk split off a phrase must match a label this well to be a concept of its own (a direction the
    lexicon grounds needs only ``min_match``): "brain" in "front of the brain" never becomes one."""
    whole_match: float = 0.75
    """A span matched this well by one label part (stating its poles) is never split."""
    split_tolerance: float = 0.3
    """A split whose weakest chunk matches more than this below the whole phrase is not taken."""
    cover_delta: float = 0.1
    """A chunk counts as explained by the whole phrase's best label part when it matches that part within
    this cosine of its own best match; a split is taken only when some chunk is not explained."""
    thesaurus: Rewriter | str | None = "radiology"
    """Synonym rewriting before matching (see :mod:`sae.search.thesaurus`); None to match as typed."""
    term_columns: TermColumns | None = None
    """feature -> {label term: its column} (``Searcher`` passes the label set's): values of one metadata column
    exclude each other across the plan's groups (see :mod:`sae.search.exclusive`); None skips that check."""
    lexicon: Lexicon | None = None
    """The lexicon of opposites (default :class:`~sae.search.lexicon.Lexicon`); the check cannot be turned off."""
    name: str = "embedding-minilm"
    space: LabelSpace = field(init=False, repr=False)

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
        self.lexicon = self.lexicon or Lexicon()
        self.space = LabelSpace(self.labels, self.encoder, self.lexicon, self.part_discount)
        self._features = self.space.features

    # -- matching one piece of text ----------------------------------------------------------------
    def _variants(self, text: str) -> list[str]:
        """The text as typed, as rewritten by the thesaurus, and with its pole words replaced by their poles."""
        out = [text]
        if self.thesaurus is not None and not isinstance(self.thesaurus, str):
            out.append(self.thesaurus.rewrite(text))
        assert self.lexicon is not None, "set in __post_init__"
        out.append(self.lexicon.canonical(text))
        found = self.lexicon.words(text)
        rest = self.lexicon.canonical(text).split()
        poles = {pole for _, _, pole in found}
        if found and sum(w.lower() not in GENERIC and w.lower() not in poles for w in rest) <= 1:
            out.append(" ".join(dict.fromkeys(pole for _, _, pole in found)))  # "uppermost slices of the cerebrum" -> "superior"
        return list(dict.fromkeys(out))

    def _vectors(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Embeddings of every variant of ``texts`` in one encoder call: text -> (variants x dim)."""
        variants = {t: self._variants(t) for t in dict.fromkeys(texts)}
        flat = list(dict.fromkeys(v for vs in variants.values() for v in vs))
        emb = self.space.embed(flat) if flat else np.zeros((0, 1), np.float32)
        at = {v: i for i, v in enumerate(flat)}
        return {t: emb[[at[v] for v in vs]] for t, vs in variants.items()}

    def match(self, chunk: str, vectors: np.ndarray | None = None, phrase: str = "") -> Match:
        """The chunk's admissible OR-group (see :func:`sae.search.matching.admissible`). ``phrase``: the query phrase
        the chunk was cut from; its poles count too ("heart" cut from "enlarged heart" never maps to "heart is normal")."""
        q = self._vectors([chunk])[chunk] if vectors is None else vectors
        assert self.lexicon is not None, "set in __post_init__"
        # what the user typed asserts (the rewrites only help the embedding); the phrase's poles only forbid
        own = self.lexicon.poles(chunk)
        context = self.lexicon.merge(self.lexicon.query_poles(phrase), own) if phrase else self.lexicon.query_poles(chunk)
        return admissible(self.space, chunk, own, q, self.min_match, self.group_delta, self.max_group, context)

    def similarity(self, phrase: str) -> np.ndarray:
        """Match of ``phrase`` with every labeled feature (the embedding alone, before the polarity check)."""
        return self.space.similarity(self._vectors([phrase])[phrase])

    def nearest(self, phrase: str, n: int = 3) -> list[tuple[int, str, float]]:
        """The ``n`` best (feature, label, cosine) for a phrase by the embedding alone (SAIL's picker uses it)."""
        sims = self.similarity(phrase)
        top = np.argsort(-sims, kind="stable")[:n]
        return [(int(self._features[i]), self.labels[int(self._features[i])], float(sims[i])) for i in top]

    # -- segmentation ------------------------------------------------------------------------------
    def segment(self, text: str) -> Segment:
        """The best split of ``text`` into required chunks (see the module docstring)."""
        words = text.split()
        spans = self._spans(words)
        texts = {s: " ".join(trim(words[s[0]:s[1]])) for s in spans}
        vectors = self._vectors([t for t in texts.values() if t])
        matches = {t: self.match(t, vectors[t], text) for t in set(texts.values()) if t}

        @cache
        def best(a: int, b: int) -> Segment:
            t = texts.get((a, b), "")
            out = Segment(matches[t].score if t else float("inf"), (matches[t],) if t else (), (False,) if t else ())
            if t and self._one_concept(matches[t]):
                return out
            split: Segment | None = None
            for k in self._cuts(words, a, b):
                left, right = best(a, k), best(k, b)
                if not left.matches or not right.matches:
                    continue  # a generic-only side adds nothing: the whole (trimmed) already covers it
                parts = left.matches + right.matches
                if not self._distinct(parts) or (t and self._covered(matches[t], parts, vectors)):
                    continue
                score = min(left.score, right.score) - self.split_margin
                if score < out.score - self.split_tolerance:
                    continue  # the whole matches far better: "motion artifact" is one concept
                if split is None or score > split.score:
                    prep = words[k].lower() in ATTRIBUTE_PREPOSITIONS
                    split = Segment(score, parts, left.attached + tuple(prep or a for a in right.attached))
            return split if split is not None else out

        return best(0, len(words))

    def _one_concept(self, m: Match) -> bool:
        """A span without pole words, prepositions or "and" that one label part answers well (``whole_match``) is one
        concept: "pulmonary atelectasis" is "atelectasis", not "pulmonary" AND "atelectasis"."""
        assert self.lexicon is not None, "set in __post_init__"
        # a span with a pole word may match its direction's label through the bare-pole variant alone: never one concept
        # nor may a span with a preposition or "and" ("spike artifact in sagittal views" is two concepts)
        words = {w.lower() for w in m.chunk.split()}
        return (m.term_row >= 0 and m.score >= self.whole_match and not self.lexicon.words(m.chunk)
                and not words & (ATTRIBUTE_PREPOSITIONS | {"and", "&"}))

    def _standalone(self, m: Match) -> bool:
        """Whether a chunk may be a concept of its own: a strong match, or a direction the lexicon grounds."""
        return m.score >= self.standalone_match or (m.directional and m.score >= self.min_match)

    def _distinct(self, parts: tuple[Match, ...]) -> bool:
        """Every chunk stands alone and is best matched by a label part of its own (else it is one concept).
        Feature sets may overlap: a feature encoding both attributes belongs to both chunks' OR-groups."""
        if not all(self._standalone(m) for m in parts):
            return False
        terms = [m.best_term for m in parts]
        tops = [m.members[0][0] for m in parts]
        return len(set(terms)) == len(terms) and len(set(tops)) == len(tops)

    def _covered(self, whole: Match, parts: tuple[Match, ...], vectors: dict[str, np.ndarray]) -> bool:
        """Whether the whole's best label part already explains every chunk ("motion artifact" is not "motion"
        AND "artifact": the part "motion artifact" contains both), by words or within ``cover_delta`` cosine."""
        if whole.term_row < 0:
            return False
        term = self.space.emb[whole.term_row]
        term_words = self._stems(whole.best_term)
        return all(self._stems(m.chunk) <= term_words or float((vectors[m.chunk] @ term).max()) >= m.score - self.cover_delta
                   for m in parts)

    def _stems(self, text: str) -> set[str]:
        words = set()
        for v in self._variants(text):
            words |= {w.lower().strip(",.;:").removesuffix("s") for w in v.split() if w.lower() not in GENERIC}
        return words

    def _content(self, words: list[str]) -> int:
        return sum(w.lower() not in GENERIC for w in words)

    def _spans(self, words: list[str]) -> list[tuple[int, int]]:
        n = len(words)
        if self._content(words) <= MAX_SEGMENT_WORDS:
            return [(a, b) for a in range(n) for b in range(a + 1, n + 1)]
        cuts = [0] + [k for k in range(1, n) if self._coarse_cut(words, k)] + [n]
        return [(a, b) for i, a in enumerate(cuts) for b in cuts[i + 1:]]

    @staticmethod
    def _coarse_cut(words: list[str], k: int) -> bool:
        return words[k].lower() in ATTRIBUTE_PREPOSITIONS or words[k].lower() == "and" or words[k - 1].lower() == "and"

    def _cuts(self, words: list[str], a: int, b: int) -> range | list[int]:
        if self._content(words) <= MAX_SEGMENT_WORDS:
            return range(a + 1, b)
        return [k for k in range(a + 1, b) if self._coarse_cut(words, k)]

    # -- planning ----------------------------------------------------------------------------------
    def plan(self, query: str) -> QueryPlan:
        check_english(query)
        clauses = parse_query(query)
        if not clauses:
            raise SaeError("empty query: describe what to find, e.g. 'sagittal slices with motion artifact but no bias field'")
        notes: list[str] = []
        specs = [spec for clause in clauses for spec in self._groups(clause, notes)]
        owner = self._allocate(specs, notes)
        concepts: list[Concept] = []
        defining: dict[int, list[tuple[int, str]]] = {}
        group = 0
        for si, (alternatives, negated) in enumerate(specs):
            added = False
            for ai, m in enumerate(alternatives):
                self._note_drops(m, notes)
                if not m.members:
                    notes.append(self._unmatched(m))
                    continue
                mine = [(f, lab, sim) for f, lab, sim in m.members if owner.get(f) == (si, ai)]
                if not mine:
                    notes.append(f"{m.chunk!r} maps to #{m.members[0][0]} {m.members[0][1]!r}, already in the plan")
                    continue
                best = m.members[0][2]
                concepts += [Concept(f, self._member_weight(best, sim), negated, lab, m.chunk, sim, group) for f, lab, sim in mine]
                if not negated:
                    defining.setdefault(group, []).append((m.members[0][0], m.best_term))
                added = True
            group += int(added)
        concepts = restrict(concepts, defining, self.term_columns, notes)
        if not concepts:
            raise SaeError(f"no feature label matches {query!r}: " + "; ".join(notes))
        return QueryPlan(query, tuple(concepts), planner=self.name, notes=tuple(dict.fromkeys(notes)))

    @staticmethod
    def _allocate(specs: list[tuple[list[Match], bool]], notes: list[str]) -> dict[int, tuple[int, int]]:
        """feature -> (group, alternative) that keeps it, since a plan names each feature once. An exclusion wins
        ("any artefact other than ghosting"); otherwise the chunk it matches best relative to that chunk's best
        (the blur feature labeled "blur artifact, severe severity" goes to "blurred", not to "severely")."""
        claims: dict[int, list[tuple[bool, float, int, int]]] = {}
        for si, (alternatives, negated) in enumerate(specs):
            for ai, m in enumerate(alternatives):
                for f, _, sim in m.members:
                    claims.setdefault(f, []).append((negated, sim / max(m.score, 1e-9), -si, -ai))
        owner = {}
        moved: dict[str, list[int]] = {}
        for f, c in claims.items():
            negated, _, si, ai = max(c)
            owner[f] = (-si, -ai)
            if negated and not all(x[0] for x in c):
                moved.setdefault(next(specs[-x[2]][0][-x[3]].chunk for x in c if not x[0]), []).append(f)
        for chunk, feats in moved.items():
            notes.append(f"{len(feats)} feature(s) matching {chunk!r} are excluded by the query, not required (e.g. #{feats[0]})")
        return owner

    def _groups(self, clause: Clause, notes: list[str]) -> list[tuple[list[Match], bool]]:
        """(matches that are alternatives of one OR-group, negated) for every group the clause requires."""
        if len(clause.alternatives) == 1:
            seg = self.segment(clause.alternatives[0])
            if not seg.matches:
                notes.append(f"{clause.alternatives[0]!r} has no searchable words")
            return [([m], clause.negated and not (i and a)) for i, (m, a) in enumerate(zip(seg.matches, seg.attached))]
        *first, last = clause.alternatives
        seg = self.segment(last)
        head, shared = (seg.matches[0], list(seg.matches[1:])) if seg.matches else (self.match(last), [])
        head_noun = head.chunk.split()[-1] if len(head.chunk.split()) > 1 else ""
        alts = [self._alternative(a, head_noun) for a in first] + [head]
        # a shared attribute ("in sagittal views") restricts every alternative: required, never negated by the clause
        return [(alts, clause.negated)] + [([m], False) for m in shared]

    def _alternative(self, text: str, head_noun: str) -> Match:
        """One alternative, also tried with the last alternative's head noun ("ringing" -> "ringing artefacts").
        The borrowed form counts only when it matches its label better than the head noun alone does: "ringing
        artefacts" must not become "spike artifact" on the strength of "artefacts"."""
        words = trim(text.split())
        text = " ".join(words) or text
        bare = self.match(text)
        if not head_noun or len(words) != 1 or head_noun.lower() == words[0].lower():
            return bare
        vec = self._vectors([f"{text} {head_noun}", head_noun])
        borrowed = self.match(f"{text} {head_noun}", vec[f"{text} {head_noun}"])
        if borrowed.term_row < 0 or borrowed.score <= bare.score:
            return bare
        noun_alone = float((vec[head_noun] @ self.space.emb[borrowed.term_row]).max())
        return borrowed if borrowed.score > noun_alone + self.cover_delta / 2 else bare

    def _member_weight(self, best: float, sim: float) -> float:
        """1 for the best match, falling linearly to 0.5 at the edge of the OR-group."""
        if self.group_delta <= 0:
            return 1.0
        return round(float(np.clip(1.0 - 0.5 * (best - sim) / self.group_delta, 0.5, 1.0)), 3)

    def _unmatched(self, m: Match) -> str:
        near = self.nearest(m.chunk, 3)
        shown = ", ".join(f"#{g} {lab!r} ({s:.2f})" for g, lab, s in near)
        if m.dropped:
            return (f"no admissible label for {m.chunk!r}: every close label contradicts it; nearest by embedding: {shown}")
        return f"no feature matches {m.chunk!r} well (best cosine {m.best_raw:.2f} < {self.min_match}); nearest: {shown}"

    @staticmethod
    def _note_drops(m: Match, notes: list[str]) -> None:
        if m.dropped:
            d = m.dropped[0]
            more = f" and {len(m.dropped) - 1} more" if len(m.dropped) > 1 else ""
            notes.append(f"for {m.chunk!r}: dropped #{d.feature} {d.label!r} ({d.reason}){more} as contradicting")
