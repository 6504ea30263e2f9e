"""Text as terms: the 1-3-word phrases of each item's text (a report), negation-aware, boilerplate suppressed.

Radiology reports say as much about what is absent as about what is present ("no pleural effusion"),
so a phrase inside a negation scope is not a mention of the finding: it becomes the separate term
``no <phrase>``. Scopes follow NegEx: a cue before the phrase (``no``, ``without``, ``free of``,
``negative for``, ``no evidence of`` ...) or after it (``... is not seen``, ``... has resolved``)
negates up to :data:`SCOPE` words of the same clause; a sentence end, a semicolon, a conjunction
that turns the sentence (``but``, ``however``, ``although``) or a preposition of place (``in``,
``under``: "no free air under the diaphragm" does not negate the diaphragm) closes the scope.

Each phrase is one binary term per item (present in its text or not), so the same enrichment test,
labeler rules and coverage check apply to text as to metadata. Phrases in more than ``max_df`` of the
texts are boilerplate (``heart size``, ``no pneumothorax`` in a report store) and carry no label;
phrases in fewer than ``min_df`` texts cannot be tested. Phrases never start or end with a stop word.
Plural and singular forms share one term (``effusions`` -> ``effusion``), shown in their most common form.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from sae._progress import tqdm

PRE_CUES = ("no evidence of", "no signs of", "no sign of", "negative for", "free of", "clear of", "absence of", "rather than",
            "no", "not", "without", "nor", "neither", "never", "denies")
"""Words that negate what follows them (longest first: a longer cue wins)."""
POST_CUES = ("not seen", "not identified", "not present", "not visualized", "not evident", "is absent", "are absent",
             "has resolved", "have resolved", "resolved", "ruled out", "excluded")
"""Words that negate the words before them in the same clause."""


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


TERMINATORS = frozenset({"but", "however", "although", "though", "except", "aside", "apart", "which", "whereas", "yet",
                         "still", "nevertheless", "otherwise",
                         # a location after the negated finding exists: "no free air under the diaphragm"
                         "in", "on", "at", "under", "over", "above", "below", "beneath", "within", "into", "along", "near",
                         "behind", "through", "overlying", "projecting"})
SCOPE = 8
"""At most this many words after a pre-cue (before a post-cue) are negated."""
STOP = _wordset("""a an the and or of in on at to for with is are was were be been being there this that these those
it its as by from into than then also both either which who whom whose what when where while has have had do does did
no not without nor neither never free negative evidence sign signs absence denies excluded resolved seen identified
present visualized evident absent ruled out rather very may might could would should can will shall suggest suggests
suggesting suggestive likely possibly possible probably noted note seen demonstrated demonstrate shows show showing
given since again otherwise compared comparison prior previous previously stable unchanged interval today now
xxxx x th st nd rd one two three four five appear appears appearance within under over above below between
through along beyond behind near across around upon about after before""")
MODIFIERS = _wordset("""left right upper lower mid middle bilateral small large mild mildly moderate moderately severe minimal
minimally slight slightly subtle new old chronic acute tiny trace focal diffuse patchy active definite normally
specifically otherwise grossly""")
"""Qualifiers that cannot end a phrase ("small left" says nothing; "small left effusion" does)."""
NOT_ALONE = _wordset("""cardiac pulmonary mediastinal chest lobe lung lungs view lateral frontal contour contours silhouette
structure structures normal size intact expanded clear degenerative basilar bibasilar bilateral bilaterally active
definite focal acute thoracic osseous bony heart mediastinum vascularity vasculature airspace disease change changes
finding findings process abnormality limit limits study film image exam examination""")
"""Words that are no finding on their own (anatomy, template words, adjectives): never a one-word phrase."""
LIST_WORDS = frozenset({"and", "or", "nor", ","})
"""Words a phrase never starts or ends with (cue words included: they carry polarity, not content)."""

_SENTENCE = re.compile(r"[.;:!?\n]+|\s\d+\.\s")
_TOKEN = re.compile(r"[a-z][a-z\-]*[a-z]|[a-z]|,")


@dataclass(frozen=True)
class PhraseConfig:
    """Which phrases of a text column become terms."""

    max_words: int = 3
    min_df: int = 5
    """A phrase must occur in at least this many texts (rarer ones cannot be tested)."""
    max_df: float = 0.15
    """Boilerplate: phrases in more than this share of the texts carry no label (in the IU X-ray reports:
    "heart size", "contour", "silhouette", "no pneumothorax"; findings such as "cardiomegaly" or
    "atelectasis" are in fewer than 10%)."""
    max_phrases: int = 4000
    """The most frequent phrases kept (a bound on the enrichment table's width)."""
    negation: bool = True


def stem(word: str) -> str:
    """Plural to singular for the common English endings (``effusions`` -> ``effusion``, ``opacities`` -> ``opacity``)."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is", "ous")):
        return word[:-1]
    return word


PSEUDO_CUES = ("no significant interval change", "no significant change", "no interval change", "no change", "not only",
               "without change", "no further", "not necessarily", "no increase in size")
"""Phrases that look like negations but negate nothing after them ("no change in the small effusion")."""
CLAUSE_STARTS = frozenset({"the", "there", "a", "an", "this", "these", "it", "they"})
"""After ", and", these start a new clause, which closes a negation scope ("no pneumothorax, and the heart is enlarged")."""


def _cue_spans(tokens: list[str], cues: Sequence[str], used: np.ndarray | None = None) -> list[tuple[int, int]]:
    """(start, end) token spans where a cue occurs, longest cue first, non-overlapping (``used``: tokens taken already)."""
    spans, used = [], np.zeros(len(tokens), bool) if used is None else used.copy()
    for cue in sorted(cues, key=lambda c: -len(c.split())):
        words = cue.split()
        n = len(words)
        for i in range(len(tokens) - n + 1):
            if tokens[i : i + n] == words and not used[i : i + n].any():
                spans.append((i, i + n))
                used[i : i + n] = True
    return spans


def negated_mask(tokens: list[str]) -> np.ndarray:
    """Per token of one clause-free sentence: True inside a negation scope (cue words themselves included)."""
    neg = np.zeros(len(tokens), bool)
    stops = [i for i, t in enumerate(tokens) if t in TERMINATORS
             or (t == "and" and 0 < i < len(tokens) - 1 and tokens[i - 1] == "," and tokens[i + 1] in CLAUSE_STARTS)]
    words = np.flatnonzero(np.asarray([t != "," for t in tokens], bool))  # commas do not use up the scope
    pseudo = np.zeros(len(tokens), bool)
    for a, b in _cue_spans(tokens, PSEUDO_CUES):
        pseudo[a:b] = True
    for a, b in _cue_spans(tokens, PRE_CUES, pseudo):
        after = words[words >= b]
        reach = int(after[SCOPE - 1]) + 1 if len(after) >= SCOPE else len(tokens)
        neg[a : min([s for s in stops if s >= b] + [reach])] = True
    for a, b in _cue_spans(tokens, POST_CUES):
        before = words[words < a]
        reach = int(before[-SCOPE]) if len(before) >= SCOPE else 0
        neg[max([s + 1 for s in stops if s < a] + [reach]) : b] = True
    return neg


def sentence_tokens(text: str) -> list[list[str]]:
    """Lower-case word tokens per sentence (numbers and punctuation dropped, commas kept as tokens: a phrase
    never spans one, a negation scope may: "no effusion, pneumothorax or fracture")."""
    return [_TOKEN.findall(s) for s in _SENTENCE.split(str(text).lower()) if s.strip()]


def text_phrases(text: str, max_words: int = 3, negation: bool = True) -> dict[str, str]:
    """The phrases of one text: {key: surface form}; a negated phrase's key and form start with ``no ``."""
    out: dict[str, str] = {}
    for tokens in sentence_tokens(text):
        neg = negated_mask(tokens) if negation else np.zeros(len(tokens), bool)
        for n in range(1, max_words + 1):
            for i in range(len(tokens) - n + 1):
                words = tokens[i : i + n]
                if words[0] in STOP or words[-1] in STOP or words[-1] in MODIFIERS \
                        or (n == 1 and (len(words[0]) < 3 or words[0] in NOT_ALONE)):
                    continue
                if any(w in PRE_CUES or w in TERMINATORS or w in LIST_WORDS for w in words) or neg[i : i + n].any() != neg[i : i + n].all():
                    continue  # a phrase straddling a scope boundary says neither
                key = " ".join(stem(w) for w in words)
                surface = " ".join(words)
                if neg[i]:
                    key, surface = f"no {key}", f"no {surface}"
                out.setdefault(key, surface)
    return out


@dataclass(frozen=True)
class PhraseTable:
    """Items x phrases (binary) with each phrase's key, display text and polarity."""

    matrix: sp.csr_matrix
    phrases: pd.DataFrame  # columns: key, text, negated, df
    dropped_boilerplate: tuple[str, ...] = ()


def build_phrases(texts: Sequence[str], config: PhraseConfig | None = None, progress: bool = False) -> PhraseTable:
    """The phrase terms of a text column: tokenised once, filtered by document frequency, one-hot per item."""
    cfg = config or PhraseConfig()
    per_item: list[dict[str, str]] = [text_phrases(t, cfg.max_words, cfg.negation)
                                      for t in tqdm(texts, desc="text phrases", disable=not progress)]
    df: Counter[str] = Counter()
    forms: dict[str, Counter[str]] = {}
    for ph in per_item:
        df.update(ph.keys())
        for key, surface in ph.items():
            forms.setdefault(key, Counter())[surface] += 1
    n = max(len(per_item), 1)
    boiler = sorted((k for k, c in df.items() if c > cfg.max_df * n), key=lambda k: -df[k])
    kept = [k for k, c in df.most_common() if cfg.min_df <= c <= cfg.max_df * n][: cfg.max_phrases]
    col = {k: j for j, k in enumerate(kept)}
    rows, cols = [], []
    for i, ph in enumerate(per_item):
        js = [col[k] for k in ph if k in col]
        rows += [i] * len(js)
        cols += js
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(per_item), len(kept)))
    table = pd.DataFrame({"key": kept, "text": [forms[k].most_common(1)[0][0] for k in kept],
                          "negated": [k.startswith("no ") for k in kept], "df": [df[k] for k in kept]})
    return PhraseTable(matrix, table, tuple(boiler))


def phrase_words(text: str) -> frozenset[str]:
    """The stemmed content words of a phrase (for telling overlapping phrases apart)."""
    return frozenset(stem(w) for w in _TOKEN.findall(str(text).lower()) if w not in STOP and w != ",")
