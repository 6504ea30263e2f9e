"""Metadata as words: the (column, value) terms that labelers name and judges read.

A store's metadata is turned into a table of *terms*: each categorical value (``artifact=motion``),
each boolean (``quality_fail``), and each numeric column cut into tertiles (``position: high``).
Enrichment tests, the metadata labeler, the item descriptions read by a judge and the contradiction
check all use the same terms, so a label can be checked against exactly what the evidence said.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

GENERIC_VALUES = {"none", "no", "false", "0", "unknown", "nan", "normal", "n/a", ""}
TERTILES = ("low", "medium", "high")
TEXT_KINDS = frozenset({"phrase", "negated"})
"""Kinds of the terms made from text (a mention, a negated mention); the others come from metadata columns."""
RANGE_BINS = 6
"""Numeric columns are also cut into this many quantile bins, named by value range."""


@dataclass(frozen=True)
class TermTable:
    """A one-hot matrix (items x terms) with each term's column, value and display text."""

    matrix: sp.csr_matrix
    terms: pd.DataFrame  # columns: column, value, text, kind

    @property
    def n_terms(self) -> int:
        return len(self.terms)

    @cached_property
    def positive(self) -> np.ndarray:
        return _positive(self.terms)

    @cached_property
    def base_frac(self) -> np.ndarray:
        """Share of all items carrying each term."""
        return np.asarray(self.matrix.sum(axis=0)).ravel() / max(self.matrix.shape[0], 1)

    @cached_property
    def phrases(self) -> list[tuple[int, str, str]]:
        """(term index, normalised text, normalised value if the value alone can name the term, else "")."""
        out = []
        t: Any  # a row of the term table: its fields are the table's columns
        for i, t in enumerate(self.terms.itertuples()):
            value = normalize_label(t.value)
            named_by_value = (t.kind == "str" and value not in GENERIC_VALUES and not value.isdigit()) or t.kind == "phrase"
            out.append((i, normalize_label(t.text), value if named_by_value else ""))
        return out


def term_text(column: str, value: str, kind: str) -> str:
    """How a term reads in a label: ``motion artifact``, ``no artifact``, ``quality_fail``, ``high position``."""
    col = column.replace("_", " ")
    if kind == "bool":
        return col if value == "True" else f"not {col}"
    if kind == "numeric":
        return f"{value} {col}"
    if kind == "range":
        return f"{col} {value}"
    if value.lower() in GENERIC_VALUES:
        return f"no {col}" if value.lower() in {"none", "no", "false", "0"} else f"{col} {value}"
    if col.lower() in value.lower():
        return value
    return f"{value} {col}"


def _categorical_codes(values: pd.Series, kind: str) -> tuple[np.ndarray, list[str]]:
    if kind == "numeric":
        x = pd.to_numeric(values, errors="coerce").to_numpy(float)
        finite = np.isfinite(x)
        if finite.sum() == 0 or np.nanmax(x) == np.nanmin(x):
            return np.full(len(x), -1), []
        edges = np.nanquantile(x, [1 / 3, 2 / 3])
        codes = np.where(finite, np.searchsorted(edges, x, side="right"), -1)
        return codes, list(TERTILES)
    cat = pd.Categorical(values.astype(str))
    return np.asarray(cat.codes), [str(c) for c in cat.categories]


def _range_codes(values: pd.Series, bins: int = RANGE_BINS) -> tuple[np.ndarray, list[str]]:
    """Quantile bins of a numeric column, named by their value range (``0.42-0.61``): finer than tertiles,
    so features that tile a continuous variable get names that tell them apart."""
    x = pd.to_numeric(values, errors="coerce").to_numpy(float)
    finite = np.isfinite(x)
    if finite.sum() < bins * 2:
        return np.full(len(x), -1), []
    edges = np.unique(np.nanquantile(x, np.linspace(0, 1, bins + 1)))
    if len(edges) < 3:
        return np.full(len(x), -1), []
    codes = np.where(finite, np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2), -1)
    for digits in range(3, 10):  # as few digits as keep every bin's name distinct
        names = [f"{_edge(a, digits)}-{_edge(b, digits)}" for a, b in pairwise(edges)]
        if len(set(names)) == len(names):
            break
    return codes, names


def _edge(x: float, digits: int) -> str:
    """A bin edge in plain notation: ``1670``, not ``1.67e+03``; ``0.0243``."""
    if abs(x) >= 10 ** digits or float(x).is_integer():
        return f"{x:.{max(digits - 3, 0)}f}" if not float(x).is_integer() else f"{x:.0f}"
    return f"{float(f'{x:.{digits}g}'):f}".rstrip("0").rstrip(".")


def column_kinds(store_columns: dict[str, str], meta: pd.DataFrame, group_key: str | None, max_values: int = 50) -> dict[str, str]:
    """Which columns become terms, and how: ``str``/``bool`` up to ``max_values`` values, numbers by tertiles.

    The group key (volume, patient) and free-text-like columns (more than ``max_values`` values) are skipped:
    a label that names patient 17 says nothing about what the feature encodes.
    """
    kinds = {}
    for name, kind in store_columns.items():
        if name == group_key or name not in meta:
            continue
        if kind == "bool":
            kinds[name] = "bool"
        elif kind == "str":
            if 2 <= meta[name].nunique() <= max_values:
                kinds[name] = "str"
        elif kind in ("int", "float"):
            n = meta[name].nunique()
            if 2 <= n <= min(max_values, 12) and kind == "int":
                kinds[name] = "str"
            elif n > 2:
                kinds[name] = "numeric"
    return kinds


def build_terms(meta: pd.DataFrame, kinds: dict[str, str]) -> TermTable:
    """One-hot encode every term of ``meta`` (rows aligned with the store)."""
    n = len(meta)
    blocks, records = [], []
    for column, kind in kinds.items():
        codes, values = _categorical_codes(meta[column], kind)
        if not values:
            continue
        ok = codes >= 0
        rows = np.flatnonzero(ok)
        m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, codes[ok])), shape=(n, len(values)))
        blocks.append(m)
        records += [{"column": column, "value": v, "text": term_text(column, v, kind), "kind": kind} for v in values]
        if kind == "numeric":
            rng_codes, ranges = _range_codes(meta[column])
            if ranges:
                ok = rng_codes >= 0
                rows = np.flatnonzero(ok)
                blocks.append(sp.csr_matrix((np.ones(len(rows), np.float32), (rows, rng_codes[ok])), shape=(n, len(ranges))))
                records += [{"column": column, "value": v, "text": f"{column.replace('_', ' ')} {v}", "kind": "range"} for v in ranges]
    matrix = sp.hstack(blocks, format="csr") if blocks else sp.csr_matrix((n, 0), dtype=np.float32)
    return TermTable(matrix=matrix, terms=pd.DataFrame.from_records(records, columns=["column", "value", "text", "kind"]))


def phrase_terms(phrases, column: str) -> TermTable:
    """A :class:`~sae.interpret.phrases.PhraseTable` as terms of ``column``: kind ``phrase`` for a mention,
    ``negated`` for a negated one (``no pleural effusion``), the phrase as both value and text."""
    kinds = np.where(phrases.phrases["negated"].to_numpy(bool), "negated", "phrase")
    terms = pd.DataFrame({"column": column, "value": phrases.phrases["key"].to_numpy(object),
                          "text": phrases.phrases["text"].to_numpy(object), "kind": kinds})
    return TermTable(matrix=phrases.matrix.tocsr(), terms=terms)


def merge_terms(*tables: TermTable) -> TermTable:
    """One term table from several over the same items (metadata terms, then text phrases)."""
    tables = tuple(t for t in tables if t.n_terms) or tables[:1]
    if len(tables) == 1:
        return tables[0]
    return TermTable(matrix=sp.hstack([t.matrix for t in tables], format="csr"),
                     terms=pd.concat([t.terms for t in tables], ignore_index=True))


def positive_terms(table: TermTable) -> np.ndarray:
    """Mask of terms that state a presence (drops "no artifact", "not quality fail", "severity none")."""
    return table.positive


def _positive(t: pd.DataFrame) -> np.ndarray:
    generic = t["value"].astype(str).str.lower().isin(GENERIC_VALUES) & t["kind"].eq("str")
    false_bool = t["kind"].eq("bool") & t["value"].ne("True")
    return ~(generic | false_bool | t["kind"].eq("negated")).to_numpy()


def describe_items(table: TermTable, rows: np.ndarray, texts: np.ndarray | None = None) -> list[str]:
    """One line per item listing the terms it has (presences only) and its text preview: what a judge reads.

    Absences ("no artifact") are left out: text encoders and small LLMs read "no X" as close to "X".
    """
    sub = table.matrix[np.asarray(rows, dtype=np.int64)]
    # text phrases are not listed: the text itself follows
    shown = positive_terms(table) & ~table.terms["kind"].isin(list(TEXT_KINDS)).to_numpy()
    words = np.where(shown, table.terms["text"].to_numpy(), "")
    out = []
    for i in range(sub.shape[0]):
        cols = sub.indices[sub.indptr[i] : sub.indptr[i + 1]]
        line = ", ".join(w for w in words[np.sort(cols)] if w)
        if texts is not None and len(texts):
            line = f"{line}; text: {texts[i]}" if line else str(texts[i])
        out.append(line)
    return out


def item_terms(table: TermTable, rows: np.ndarray) -> list[list[str]]:
    """Every term text of each item, absences included (for checking labels against items)."""
    sub = table.matrix[np.asarray(rows, dtype=np.int64)]
    texts = table.terms["text"].to_numpy()
    return [list(texts[np.sort(sub.indices[sub.indptr[i] : sub.indptr[i + 1]])]) for i in range(sub.shape[0])]


_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> set[str]:
    """Lower-case word set, for matching a label against term texts."""
    return set(_WORD.findall(str(text).lower().replace("_", " ")))


def normalize_label(label: str) -> str:
    """Lower case, words only, order kept (for phrase matching)."""
    return " ".join(_WORD.findall(str(label).lower().replace("_", " ")))


def label_key(label: str) -> str:
    """Canonical form for the duplicate-label rate: the sorted words, so reordered labels count as duplicates."""
    return " ".join(sorted(_WORD.findall(str(label).lower().replace("_", " "))))
