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

NEGATORS = ("but not", "but no", "but without", "and not", "and no", "without", "excluding", "except", "not", "no")
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
