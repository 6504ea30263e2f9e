"""Is a query English? The planners match English labels with an English sentence encoder, so a query in
another language would be answered by whatever its loan words happen to match; it is refused instead.

The check counts function words (articles, prepositions, conjunctions) of English and of the languages
clinicians most often type in (French, Spanish, German, Italian, Portuguese, Dutch). A query whose
foreign function words outnumber its English ones is refused with the language's name. Queries made of
content words only ("cardiomegaly", "axial T1") pass: medical vocabulary is shared across languages and
the label match decides.
"""

from __future__ import annotations

import re

from sae.errors import SaeError


def _words(text: str) -> frozenset[str]:
    """The whitespace-separated words of ``text`` (a readable way to write a word list)."""
    return frozenset(text.split())


ENGLISH = _words(
    'the a an of in on at with without and or but not no to from by for near into onto over under above '
    'below is are was were this that these those some any showing having than then there its their')

FOREIGN: dict[str, frozenset[str]] = {
    "French": _words(
    'le la les des du de un une et ou avec sans dans sur sous pour par au aux est sont pas ni cette ces'),
    "Spanish": _words(
    'el los las de del un una unos unas y o con sin en sobre para por es son al'),
    "German": _words(
    'der die das den dem des ein eine einer und oder mit ohne im auf unter ist sind nicht kein keine'),
    "Italian": _words(
    'il lo gli di della delle dei degli un una e o con senza nel nella sul sulla per è sono'),
    "Portuguese": _words(
    'o os as de da das do dos um uma e ou com sem em no na nos nas para por é são'),
    "Dutch": _words(
    'de het een en of met zonder in op onder is zijn niet geen van'),
}

class QueryLanguageError(SaeError):
    """The query is not in English (a refusal no other ranking may paper over)."""


_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


def guess_foreign(text: str) -> str | None:
    """The language a query seems to be written in when it is not English, else None."""
    words = [w.lower() for w in _WORD.findall(text)]
    english = sum(w in ENGLISH for w in words)
    best, hits = None, 0
    for name, vocab in FOREIGN.items():
        n = sum(w in vocab and w not in ENGLISH for w in words)
        if n > hits:
            best, hits = name, n
    accents = sum(ch in "àâäçéèêëîïôöùûüÿñßõãœæ" for ch in text.lower())
    if best is not None and (hits > english or (hits >= english and accents)):
        return best
    return None


def check_english(text: str) -> None:
    """Refuse a query that looks like another language (see the module docstring)."""
    if lang := guess_foreign(text):
        raise QueryLanguageError(f"the query {text!r} looks {lang}; the planner matches English labels with an English sentence "
                       "encoder, so it would be answered by loan words only. Write the query in English "
                       "(e.g. 'blurry images' for 'des images floues')")
