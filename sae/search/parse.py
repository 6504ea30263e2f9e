"""Split a clinical text query into positive and negated phrases.

"sagittal slices with motion artifact but no bias field" -> [("sagittal slices", +), ("motion
artifact", +), ("bias field", -)]. A negation marker (without, but not, no, not, excluding, except)
makes the following phrases negative; "or", "nor", "and" and commas continue the current polarity
("without motion or blur" negates both), except ", and" which starts a positive phrase again ("no
calcification, and a spiculated margin"), as do "with", "but" and "plus" ("not showing" stays
negative: a positive marker right after a negator does not undo it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NEGATORS = ("but not", "but no", "but without", "and not", "and no", "without", "excluding", "except", "not", "no",
            "free of", "clear of", "negative for", "other than", "apart from", "lacking", "devoid of", "absence of")
POSITIVE = ("with", "but", "plus", "showing", "having")
CONTINUE = ("and", "or", "nor", "&")
_MARKERS = sorted(NEGATORS + POSITIVE + CONTINUE, key=len, reverse=True)
_SPLIT = re.compile(r"(?:^|\s)(" + "|".join(re.escape(m) for m in _MARKERS) + r")(?=\s|$)|([,;])", re.I)


def split_query(text: str) -> list[tuple[str, bool]]:
    """[(phrase, negated)] in query order; empty phrases dropped, whitespace normalised."""
    text = " ".join(str(text).split())
    out: list[tuple[str, bool]] = []
    negated, pos, just_negated, prev = False, 0, False, ""
    for m in _SPLIT.finditer(text):
        gap = text[pos : m.start()]
        phrase = gap.strip(" ,;")
        if phrase:
            out.append((phrase, negated))
            just_negated = False
        marker = (m.group(1) or m.group(2)).lower()
        if marker in NEGATORS:
            negated, just_negated = True, True
        elif (marker in POSITIVE and not just_negated) or (marker == "and" and ((prev == "," and not phrase) or gap.rstrip().endswith(","))):
            negated = False
        prev, pos = marker, m.end()
    tail = text[pos:].strip(" ,;")
    if tail:
        out.append((tail, negated))
    return out


@dataclass(frozen=True)
class Clause:
    """One required part of a query: alternatives (``"ghosting or spike"``: any may answer) with one polarity.

    ``"and"`` inside a clause is kept ("hardening and calcification of the aorta"): whether it joins two
    concepts or names one is decided by the planner, by whether both halves match distinct labels."""

    alternatives: tuple[str, ...]
    negated: bool = False


_CLAUSE_MARKERS = sorted(NEGATORS + ("neither",) + POSITIVE + ("or", "nor"), key=len, reverse=True)
_CLAUSE_SPLIT = re.compile(r"(?:^|\s)(" + "|".join(re.escape(m) for m in _CLAUSE_MARKERS) + r")(?=\s|$)|(,\s*and\b|,\s*&|[,;])", re.I)


def normalise(text: str) -> str:
    """Whitespace collapsed; "aren't" -> "are not"; "artefact-free slices" -> "slices without artefact"."""
    text = " ".join(str(text).split())
    text = re.sub(r"n't\b", " not", text, flags=re.I)
    m = re.search(r"\b([\w-]+)-free\b\s*(.*)$", text, flags=re.I)
    if m:
        text = f"{text[:m.start()]}{m.group(2)} without {m.group(1)}".strip()
    return " ".join(text.split())


def parse_query(text: str) -> list[Clause]:
    """Clauses in query order: negation markers switch polarity as in :func:`split_query`; ``or`` / ``nor``
    add an alternative to the current clause; commas, ``with``, ``but`` start a new clause; ``, and``
    starts a positive one ("no calcification, and a spiculated margin")."""
    text = normalise(text)
    clauses: list[Clause] = []
    alts: list[str] = []
    negated, pos, just_negated = False, 0, False

    def close() -> None:
        if alts:
            clauses.append(Clause(tuple(alts), negated))
            alts.clear()

    for m in _CLAUSE_SPLIT.finditer(text):
        phrase = text[pos : m.start()].strip(" ,;&")
        if phrase:
            alts.append(phrase)
            just_negated = False
        marker = " ".join((m.group(1) or m.group(2)).lower().split())
        if marker not in ("or", "nor"):
            close()
        if marker in NEGATORS or marker == "neither":
            negated, just_negated = True, True
        elif (marker in POSITIVE and not just_negated) or marker.startswith(", and") or marker == ", &":
            negated = False
        pos = m.end()
    tail = text[pos:].strip(" ,;&")
    if tail:
        alts.append(tail)
    close()
    return clauses
