"""Values of one metadata column exclude each other: a plan never keeps a member that names another value.

The lexicon knows that "superior" contradicts "inferior"; it cannot know that in a given store ``region =
lateral`` excludes ``region = superior`` (different anatomical axes, one column). The labels know: a
metadata label names at most one term per column, so two terms of one such column never hold together.
When one group of a plan asks for a column's value ("near the top of the head" -> ``superior region``),
a member of another group whose label names a different value of that column ("noise artifact, lateral
region" for "noise") is dropped, with a note. Columns where a label names several terms (report text)
are not exclusive and never checked.
"""

from __future__ import annotations

from collections.abc import Mapping

from sae.search.plan import Concept

TermColumns = Mapping[int, Mapping[str, str]]
"""feature -> {label term: the column it came from} (from the label set's ``terms`` / ``term_columns``)."""


def exclusive_columns(term_columns: TermColumns) -> frozenset[str]:
    """Columns no label names two terms of (metadata columns; report text is not one)."""
    seen: set[str] = set()
    multi: set[str] = set()
    for terms in term_columns.values():
        cols = list(terms.values())
        seen |= set(cols)
        multi |= {c for c in cols if cols.count(c) > 1}
    return frozenset(seen - multi)


def wanted_values(defining: Mapping[int, list[tuple[int, str]]], term_columns: TermColumns,
                  exclusive: frozenset[str]) -> dict[int, dict[str, set[str]]]:
    """group -> {exclusive column: the terms its alternatives ask for}, from each alternative's best (feature, term)."""
    out: dict[int, dict[str, set[str]]] = {}
    for group, pairs in defining.items():
        cols: dict[str, set[str]] = {}
        for feature, term in pairs:
            col = term_columns.get(feature, {}).get(term)
            if col in exclusive:
                cols.setdefault(col, set()).add(term)
        if len(cols) == 1 or all(len(v) == 1 for v in cols.values()):
            out[group] = cols
    return out


def restrict(concepts: list[Concept], defining: Mapping[int, list[tuple[int, str]]], term_columns: TermColumns | None,
             notes: list[str]) -> list[Concept]:
    """The concepts without positive members naming a value another group excludes (see the module docstring)."""
    if not term_columns:
        return concepts
    exclusive = exclusive_columns(term_columns)
    wanted = wanted_values(defining, term_columns, exclusive)
    dropped: dict[int, list[tuple[Concept, tuple[str, set[str]]]]] = {}
    for c in concepts:
        clash = None if c.negated else _clash(c, wanted, term_columns)
        if clash is not None:
            dropped.setdefault(c.group, []).append((c, clash))
    removed: set[int] = set()
    for group, pairs in dropped.items():
        cs = [c for c, _ in pairs]
        names = sorted({term for _, (term, _) in pairs})
        asked = sorted({t for _, (_, want) in pairs for t in want})
        what = f"naming {', '.join(repr(n) for n in names)} where the query asks for {' or '.join(repr(t) for t in asked)}"
        if sum(c.group == group for c in concepts) == len(cs):  # never empty a group: keep it whole and say so
            notes.append(f"every feature for {cs[0].phrase!r} is labeled {what}; kept, as the SAE has no other feature for it")
        else:
            removed |= {id(c) for c in cs}
            notes.append(f"for {cs[0].phrase!r}: dropped {len(cs)} feature(s) {what} (e.g. #{cs[0].feature} {cs[0].label!r})")
    return [c for c in concepts if id(c) not in removed]


def _clash(c: Concept, wanted: Mapping[int, Mapping[str, set[str]]], term_columns: TermColumns) -> tuple[str, set[str]] | None:
    """(the term ``c`` names, the terms the query asks for in that column) when ``c`` names an excluded value."""
    mine = term_columns.get(c.feature, {})
    for group, cols in wanted.items():
        if group == c.group:
            continue
        for term, col in mine.items():
            if col in cols and term not in cols[col]:
                return term, cols[col]
    return None
