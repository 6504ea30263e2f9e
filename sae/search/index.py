"""Answer a query plan from the per-feature inverted lists in ``codes.zarr`` (no scan of every row).

Concepts in one OR-group (a phrase matched by several features) count by their strongest member.
Presence calibration: a feature's activation is divided by its own 90th percentile among active
items and clipped to [0, 1], so a weak feature at its typical strength counts as much as a strong
one at its typical strength. Ranking: AND semantics (a hit shows every positive concept), score =
weighted mean of the positive presences minus the weighted presences of negated concepts. When no
item shows every positive concept the search falls back to partial matches and says so.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from functools import reduce

import numpy as np
import pandas as pd

from sae.codes import Codes
from sae.errors import SaeError
from sae.search.plan import QueryPlan


@dataclass
class SearchResult:
    """Ranked hits of one plan, with each concept's signed contribution to every hit's score."""

    plan: QueryPlan
    hits: pd.DataFrame
    strict: bool = True
    """True when every hit shows every positive concept (False: partial matches, see notes)."""
    notes: list[str] = field(default_factory=list)

    def _repr_html_(self) -> str:
        notes = "".join(f"<div><i>{html.escape(n)}</i></div>" for n in self.notes)
        return f"<div>{self.plan._repr_html_()}{notes}{self.hits.head(20).to_html(index=False)}</div>"


class ConceptIndex:
    """Posting lists (rows sorted by row number) with calibrated presences, per feature."""

    def __init__(self, codes: Codes, quantile: str = "q90"):
        stats = codes.stats()
        if quantile not in stats:
            raise SaeError(f"unknown calibration {quantile!r}; the codes have {list(stats.columns)}")
        self.n_rows, self.n_latents = codes.n_rows, codes.n_latents
        self._ptr, rows, vals = codes.feature_index()
        scale = stats[quantile].to_numpy(np.float64)
        self.scale = np.where(scale > 0, scale, np.maximum(stats["max"].to_numpy(np.float64), 1e-12))
        # re-sort each posting list by row once, so intersections and lookups are merges
        order = np.lexsort((rows, np.repeat(np.arange(self.n_latents), np.diff(self._ptr))))
        self._rows = rows[order].astype(np.int64)
        self._presence = np.clip(vals[order] / np.repeat(self.scale, np.diff(self._ptr)), 0.0, 1.0)

    def posting(self, feature: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows ascending, presence in [0, 1]) of one feature."""
        if not 0 <= int(feature) < self.n_latents:
            raise SaeError(f"unknown feature {feature}: this SAE has features 0..{self.n_latents - 1}")
        a, b = self._ptr[int(feature)], self._ptr[int(feature) + 1]
        return self._rows[a:b], self._presence[a:b]

    def presence_at(self, feature: int, rows: np.ndarray) -> np.ndarray:
        """Presence of ``feature`` at each of ``rows`` (0 where it does not fire)."""
        prow, pval = self.posting(feature)
        if len(prow) == 0:
            return np.zeros(len(rows))
        at = np.minimum(np.searchsorted(prow, rows), len(prow) - 1)
        return np.where(prow[at] == rows, pval[at], 0.0)

    def _group_presence(self, group, rows: np.ndarray) -> np.ndarray:
        """Presence of an OR-group at ``rows``: the strongest weighted member."""
        return np.max([c.weight * self.presence_at(c.feature, rows) for c in group], axis=0)

    def _group_rows(self, group) -> np.ndarray:
        return reduce(np.union1d, [self.posting(c.feature)[0] for c in group])

    def _candidates(self, plan: QueryPlan, allowed: np.ndarray | None) -> tuple[np.ndarray, bool, list[str]]:
        notes: list[str] = []
        pos = [g for g in plan.groups() if not g[0].negated]
        strict = True
        if not pos:
            cand = np.arange(self.n_rows)
        else:
            sets = [self._group_rows(g) for g in pos]
            cand = reduce(np.intersect1d, sets)
            if allowed is not None:
                cand = cand[allowed[cand]]
            if len(cand) == 0:
                cand, strict = reduce(np.union1d, sets), False
                notes.append("no item shows every concept of the plan: showing items with some of them, best first")
        if allowed is not None:
            cand = cand[allowed[cand]]
        return cand, strict, notes

    def search(self, plan: QueryPlan, top: int = 20, allowed: np.ndarray | None = None) -> SearchResult:
        """Rank items for ``plan``; ``allowed`` (bool per row) restricts the candidates (metadata filters).

        Score = mean over positive groups of the group's presence (weights folded in, divided by the
        total positive weight) minus the presence of every negated group.
        """
        if not plan.concepts:
            raise SaeError(f"the plan for {plan.query!r} has no concepts; add one with plan.add(feature)")
        if allowed is not None and len(allowed) != self.n_rows:
            raise SaeError(f"the filter mask has {len(allowed)} entries; the codes have {self.n_rows} rows")
        cand, strict, notes = self._candidates(plan, allowed)
        groups = plan.groups()
        wsum = sum(max(c.weight for c in g) for g in groups if not g[0].negated) or 1.0
        contrib = {}
        score = np.zeros(len(cand))
        for g in groups:
            p = self._group_presence(g, cand)
            part = -p if g[0].negated else p / wsum
            name = f"#{g[0].feature} {g[0].label}".strip() + (f" (+{len(g) - 1} OR)" if len(g) > 1 else "")
            contrib[name] = part
            score += part
        if len(cand) > 4 * top + 1024:  # keep the sort small: only the best candidates matter
            keep = np.argpartition(-score, 4 * top)[: 4 * top]
            cand, score = cand[keep], score[keep]
            contrib = {k: v[keep] for k, v in contrib.items()}
        order = np.lexsort((cand, -score))[:top]
        hits = pd.DataFrame({"rank": np.arange(1, len(order) + 1), "row": cand[order], "score": score[order],
                             **{k: v[order] for k, v in contrib.items()}})
        return SearchResult(plan, hits, strict, notes)
