"""Retrieval quality against metadata ground truth: P@10 and mAP@100 per query kind and method.

Queries are built from metadata values and a vocabulary of paraphrases (three per value): single
attributes, pairs, triples (orientation x region x artifact) and negations ("motion artifact but not
sagittal"). An item is relevant when its metadata has every positive value and none of the negated
ones. Every method is a function ``query -> ranked rows``, so planners and baselines are measured
by the same code on the same queries.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from sae.errors import SaeError

Vocabulary = Mapping[str, Mapping[str, tuple[str, ...]]]
"""column -> value -> paraphrases (the same number for every value)."""

DEMO_VOCABULARY: Vocabulary = {
    "orientation": {
        "axial": ("axial slices", "axial view", "transverse plane images"),
        "coronal": ("coronal slices", "coronal view", "frontal plane images"),
        "sagittal": ("sagittal slices", "sagittal view", "sagittal plane images"),
    },
    "artifact": {
        "motion": ("motion artifact", "patient movement artifact", "motion corrupted scan"),
        "ghosting": ("ghosting artifact", "ghost replicas", "ghosted image"),
        "spike": ("spike artifact", "herringbone spike pattern", "k-space spike"),
        "bias_field": ("bias field", "intensity inhomogeneity", "bias field shading"),
        "noise": ("noise artifact", "noisy image", "grainy low snr image"),
        "blur": ("blur artifact", "blurry image", "blurred slice"),
    },
    "region": {
        "inferior": ("inferior region", "lower brain", "bottom of the brain"),
        "superior": ("superior region", "upper brain", "top of the brain"),
        "anterior": ("anterior region", "front of the brain", "frontal part"),
        "posterior": ("posterior region", "back of the brain", "rear part"),
        "lateral": ("lateral region", "side of the brain", "lateral edge"),
        "medial": ("medial region", "near the midline", "medial part"),
        "mid": ("mid region", "middle of the brain", "central part"),
    },
}


@dataclass(frozen=True)
class QueryCase:
    text: str
    kind: str
    """single | pair | triple | negation"""
    positive: tuple[tuple[str, str], ...]
    negative: tuple[tuple[str, str], ...] = ()
    paraphrase: int = 0

    def relevant(self, meta: pd.DataFrame) -> np.ndarray:
        mask = np.ones(len(meta), bool)
        for col, val in self.positive:
            mask &= (meta[col] == val).to_numpy(bool)
        for col, val in self.negative:
            mask &= (meta[col] != val).to_numpy(bool)
        return mask


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else " with ".join(parts)


def metadata_cases(vocab: Vocabulary, meta: pd.DataFrame, *, min_relevant: int = 10, max_per_kind: int = 60,
                   seed: int = 0) -> list[QueryCase]:
    """Queries of every kind, each in every paraphrase; combinations with < ``min_relevant`` items are skipped."""
    for col in vocab:
        if col not in meta:
            raise SaeError(f"the query vocabulary names column {col!r}, which the store lacks")
    rng = np.random.default_rng(seed)
    n_para = min(len(p) for values in vocab.values() for p in values.values())
    cols = list(vocab)
    combos: dict[str, list] = {"single": [((c, v),) for c in cols for v in vocab[c]]}
    combos["pair"] = [((a, va), (b, vb)) for a, b in itertools.combinations(cols, 2) for va in vocab[a] for vb in vocab[b]]
    combos["triple"] = [tuple(zip(cols[:3], vals)) for vals in itertools.product(*(vocab[c] for c in cols[:3]))] if len(cols) >= 3 else []
    combos["negation"] = [(((a, va),), ((b, vb),)) for a, b in itertools.permutations(cols[:2], 2) for va in vocab[a] for vb in vocab[b]]
    cases: list[QueryCase] = []
    for kind, items in combos.items():
        picked = []
        for item in (rng.permutation(len(items)) if len(items) > max_per_kind // n_para else range(len(items))):
            pos, neg = items[item] if kind == "negation" else (items[item], ())
            probe = QueryCase("", kind, pos, neg)
            if probe.relevant(meta).sum() >= min_relevant:
                picked.append((pos, neg))
            if len(picked) * n_para >= max_per_kind:
                break
        for pos, neg in picked:
            for i in range(n_para):
                text = _join([vocab[c][v][i] for c, v in pos])
                if neg:
                    text += " but not " + " or ".join(vocab[c][v][i] for c, v in neg)
                cases.append(QueryCase(text, kind, pos, neg, i))
    return cases


def precision_at(ranked: np.ndarray, relevant: np.ndarray, k: int = 10) -> float:
    """Share of the first ``k`` slots holding relevant items (missing slots count as misses)."""
    return float(relevant[ranked[:k]].sum() / k)


def average_precision(ranked: np.ndarray, relevant: np.ndarray, depth: int = 100) -> float:
    """AP@depth: mean precision at each relevant hit in the first ``depth``, over min(#relevant, depth)."""
    hit = relevant[ranked[:depth]].astype(float)
    if not hit.any():
        return 0.0
    prec = np.cumsum(hit) / np.arange(1, len(hit) + 1)
    return float((prec * hit).sum() / min(int(relevant.sum()), depth))


class Case(Protocol):
    """What :func:`evaluate_methods` needs of a query case (:class:`QueryCase`, ``sae.search.suites.AnyCase``)."""

    @property
    def text(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def paraphrase(self) -> int: ...

    def relevant(self, meta: pd.DataFrame) -> np.ndarray: ...


def evaluate_methods(methods: Mapping[str, Callable[[str], np.ndarray]], cases: Sequence[Case],
                     meta: pd.DataFrame, depth: int = 100, progress: str | None = None) -> pd.DataFrame:
    """One row per (method, query): P@10, AP@depth, and the error text when the method refused the query.
    ``progress``: the description of a progress bar over the queries (None: no bar)."""
    from sae._progress import tqdm

    out = []
    for case in tqdm(cases, desc=progress, unit="query", disable=progress is None):
        rel = case.relevant(meta)
        for name, rank in methods.items():
            try:
                ranked, err = np.asarray(rank(case.text), dtype=np.int64), ""
            except SaeError as e:
                ranked, err = np.zeros(0, np.int64), str(e)
            out.append({"method": name, "kind": case.kind, "query": case.text, "paraphrase": case.paraphrase,
                        "n_relevant": int(rel.sum()), "p@10": precision_at(ranked, rel), "ap@100": average_precision(ranked, rel, depth),
                        "error": err})
    return pd.DataFrame(out)


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean P@10 and mAP per method and query kind (plus 'all')."""
    both = pd.concat([results, results.assign(kind="all")])
    table = both.groupby(["method", "kind"], sort=False).agg(queries=("query", "size"), p10=("p@10", "mean"),
                                                             map100=("ap@100", "mean"), refused=("error", lambda e: int((e != "").sum())))
    return table.reset_index()
