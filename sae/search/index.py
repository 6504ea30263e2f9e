"""Answer a query plan from the per-feature inverted lists in ``codes.zarr`` (no scan of every row).

Presence calibration: a feature's activation is divided by its own 90th percentile among active
items (the *ratio*). For ranking, the ratio is squashed without clipping: ``presence = a / (a + q50)``
(``a`` the activation, ``q50`` the feature's median active strength), so a feature at its median
strength counts 0.5, a stronger one more, and no item ever saturates at 1: the order inside the top
stays visible and a weight change moves it. (:meth:`ConceptIndex.presences`, used by the map, the
audit and query-by-example fingerprints, keeps the clipped ratio.) Concepts in one OR-group (a phrase
matched by several features) combine by noisy-OR. Ranking: AND semantics over required groups (a hit
shows every required concept), score = weighted mean of the positive presences (required and soft)
minus the weighted presences of negated concepts (for those, the clipped ratio: a negated concept at its
typical strength cancels a full match, so "but not X" really excludes X); the per-group contributions sum to the score. Ties
are broken by the summed ratios, then by row. When no item shows every required concept the search
falls back to partial matches and says so.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from sae._io import html_table
from sae.codes import Codes, Postings
from sae.errors import SaeError
from sae.search.plan import QueryPlan

POOLING = ("max", "mean")
COMBINE = ("noisy_or", "max")
"""How an OR-group's members combine: noisy-OR (1 - prod(1 - w p): several members agreeing count
more than one, which separates items that truly show a broad attribute) or the strongest member."""


CONCEPT_PREFIX = "concept."
META_PREFIX = "meta."
"""Hits columns: ``rank``, ``row``, (``id``), ``score``, one ``concept.<group>`` column per plan group
(its signed contribution; see :class:`Contribution`) and, from a Searcher, ``meta.<column>`` per
metadata column: namespaced, so a metadata column named ``score`` or ``rank`` never collides."""


@dataclass(frozen=True)
class Contribution:
    """One plan group's signed share of every hit's score (the hits column :attr:`column` holds the values)."""

    group: int
    """Position of the group in ``plan.groups()``."""
    feature: int
    """The group's strongest member (the feature that names it)."""
    label: str
    negated: bool
    alternatives: int = 0
    """Other members of the OR-group."""

    @property
    def column(self) -> str:
        return f"{CONCEPT_PREFIX}{self.group}"

    def display(self) -> str:
        """``NOT #12 label (+2 OR)``: for tables, legends and bars (made here, at the edge)."""
        name = f"{'NOT ' if self.negated else ''}#{self.feature} {self.label}".strip()
        return name + (f" (+{self.alternatives} OR)" if self.alternatives else "")

    def short(self) -> str:
        """``#12`` or ``NOT #12``: a narrow column header."""
        return f"{'NOT ' if self.negated else ''}#{self.feature}"


def display_columns(hits: pd.DataFrame, contributions: list[Contribution], short: bool = False) -> pd.DataFrame:
    """The hits with display headers: contributions by name (or short name), metadata without its prefix."""
    names = {c.column: (c.short() if short else c.display()) for c in contributions}
    names.update({col: col[len(META_PREFIX):] for col in hits.columns if col.startswith(META_PREFIX)})
    return hits.rename(columns=names)


@dataclass
class SearchResult:
    """Ranked hits of one plan, with each concept's signed contribution to every hit's score."""

    plan: QueryPlan
    hits: pd.DataFrame
    contributions: list[Contribution] = field(default_factory=list)
    """The plan groups behind the ``concept.<group>`` columns of :attr:`hits` (they sum to ``score``)."""
    strict: bool = True
    """True when every hit shows every required concept (False: partial matches, see notes)."""
    notes: list[str] = field(default_factory=list)
    previews: Callable[[np.ndarray], list[str]] | None = None
    """Optional ``rows -> list of HTML snippets`` (thumbnails or text) used by ``_repr_html_``."""
    searcher: object | None = field(default=None, repr=False)
    """The :class:`~sae.search.searcher.Searcher` that produced it (the live view re-runs its plan)."""

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        from sae.display import bundle

        plain = f"SearchResult({self.plan.query!r}, {len(self.hits)} hits)"
        return bundle(self._repr_html_(), plain, "search_result" if self.searcher is not None else None, self)

    def _repr_html_(self) -> str:
        notes = "".join(f"<div><i>{html.escape(n)}</i></div>" for n in self.notes)
        table = display_columns(self.hits.head(20).drop(columns=["row"], errors="ignore"), self.contributions)
        if self.previews is not None and "row" in self.hits:
            table = table.copy()
            table.insert(0, "preview", self.previews(self.hits["row"].head(20).to_numpy()))
        return f"<div>{self.plan._repr_html_()}{notes}{html_table(table, raw=('preview',))}</div>"


@dataclass
class Scored:
    """Every candidate of a plan with its score (before the top-k cut)."""

    rows: np.ndarray
    score: np.ndarray
    tiebreak: np.ndarray
    contrib: dict[Contribution, np.ndarray]
    strict: bool
    notes: list[str]


def _check_top(top: int) -> None:
    """Refuse a ``top`` that is not a positive integer (a negative one would silently cut from the end)."""
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise SaeError(f"top must be a positive integer (hits to return), got {top!r}")


def presences(codes: Codes, rows: np.ndarray, scale: np.ndarray, dtype=np.float32) -> sp.csr_matrix:
    """Items x features presences of ``rows``: activation / ``scale`` (each feature's calibration quantile), clipped to 1."""
    m = codes.rows(rows).tocsr().astype(dtype)
    m.data = np.minimum(m.data / scale[m.indices].astype(dtype), 1.0)
    return m


class ConceptIndex:
    """Posting lists (rows sorted by row number) with calibrated presences, per feature."""

    def __init__(self, codes: Codes, quantile: str = "q90", combine: str = "noisy_or", postings: Postings | None = None,
                 stats: pd.DataFrame | None = None):
        """``postings`` / ``stats``: the run's in-memory index and statistics (read from ``codes`` when not given)."""
        if combine not in COMBINE:
            raise SaeError(f"unknown OR-group combination {combine!r}; use one of {COMBINE}")
        self.combine = combine
        stats = codes.stats() if stats is None else stats
        if quantile not in stats:
            raise SaeError(f"unknown calibration {quantile!r}; the codes have {list(stats.columns)}")
        self.n_rows, self.n_latents = codes.n_rows, codes.n_latents
        self.postings = postings if postings is not None else Postings.from_codes(codes)
        self._ptr = self.postings.ptr
        scale = stats[quantile].to_numpy(np.float64)
        self.scale = np.where(scale > 0, scale, np.maximum(stats["max"].to_numpy(np.float64), 1e-12))
        q50 = stats["q50"].to_numpy(np.float64) if "q50" in stats else 0.5 * self.scale
        self.half = (np.where(q50 > 0, q50, 0.5 * self.scale) / self.scale).astype(np.float32)
        """Each feature's median active strength in ratio units: the ratio at which its ranking presence is 0.5."""
        rows, vals = self.postings.by_row()
        self._rows = rows
        self._ratio = (vals / np.repeat(self.scale, self.postings.counts)).astype(np.float32)

    @classmethod
    def of(cls, run, quantile: str = "q90", combine: str = "noisy_or") -> ConceptIndex:
        """The run's concept index, built once per run from its shared postings (search and audit share it)."""
        return run.cached(("concept_index", quantile, combine),
                          lambda: cls(run.codes, quantile, combine, postings=run.postings, stats=run.stats))

    def _check(self, feature: int) -> int:
        return self.postings.check(feature)

    def posting(self, feature: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows ascending, presence in [0, 1]) of one feature."""
        f = self._check(feature)
        a, b = self._ptr[f], self._ptr[f + 1]
        return self._rows[a:b], np.minimum(self._ratio[a:b], 1.0)

    def active_rows(self, feature: int) -> np.ndarray:
        """Rows (ascending) where one feature fires; a view, no presence computed."""
        return self.postings.rows(feature)

    @property
    def _entry_feature(self) -> np.ndarray:
        return self.postings.entry_feature

    def _kept_entries(self) -> np.ndarray | None:
        """Posting entries that count as the feature firing (None: every one; the audit's firm view keeps fewer)."""
        return None

    def count_active(self, flag: np.ndarray, within: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per feature: items where it fires, and how many of them have ``flag`` (bool per row), within ``within`` rows."""
        keep = self._kept_entries()
        if within is not None:
            mask = np.zeros(self.n_rows, bool)
            mask[within] = True
            inside = mask[self._rows]
            keep = inside if keep is None else keep & inside
        feat, rows = (self._entry_feature, self._rows) if keep is None else (self._entry_feature[keep], self._rows[keep])
        n_active = np.bincount(feat, minlength=self.n_latents)
        n_flag = np.bincount(feat, weights=flag[rows], minlength=self.n_latents).astype(np.int64)
        return n_active, n_flag

    def presences(self, codes: Codes, rows: np.ndarray, dtype=np.float32) -> sp.csr_matrix:
        """Items x features presences (activation / the feature's calibration quantile, clipped to 1) of ``rows``."""
        return presences(codes, rows, self.scale, dtype)

    def ratio_at(self, feature: int, rows: np.ndarray, rows_sorted: bool = False) -> np.ndarray:
        """Activation / calibration quantile of ``feature`` at each of ``rows`` (0 where it does not fire).

        With ``rows_sorted`` (ascending, unique) and a posting list shorter than ``rows``, the posting
        is located in ``rows`` instead of the other way round: the cost follows the shorter list.
        """
        f = self._check(feature)
        a, b = self._ptr[f], self._ptr[f + 1]
        prow = self._rows[a:b]
        if len(prow) == 0 or len(rows) == 0:
            return np.zeros(len(rows), np.float32)
        if rows_sorted and len(prow) < len(rows):
            out = np.zeros(len(rows), np.float32)
            at = np.minimum(np.searchsorted(rows, prow), len(rows) - 1)
            hit = rows[at] == prow
            out[at[hit]] = self._ratio[a:b][hit]
            return out
        at = np.minimum(np.searchsorted(prow, rows), len(prow) - 1)
        return np.where(prow[at] == rows, self._ratio[a:b][at], np.float32(0.0))

    def presence_at(self, feature: int, rows: np.ndarray) -> np.ndarray:
        """Presence in [0, 1] of ``feature`` at each of ``rows``."""
        return np.minimum(self.ratio_at(feature, rows), 1.0)

    def activation_at(self, feature: int, rows: np.ndarray) -> np.ndarray:
        """Raw SAE activation of ``feature`` at each of ``rows``."""
        return self.ratio_at(feature, rows) * self.scale[self._check(feature)]

    def _union(self, features) -> np.ndarray:
        return np.unique(np.concatenate([self.active_rows(f) for f in features] or [np.zeros(0, np.int64)]))

    def _intersection(self, groups) -> np.ndarray:
        sets = sorted((self._union(c.feature for c in g) for g in groups), key=len)
        out = sets[0]
        for s in sets[1:]:
            out = out[np.isin(out, s, assume_unique=True)]
        return out

    def _candidates(self, plan: QueryPlan, allowed: np.ndarray | None) -> tuple[np.ndarray, bool, list[str]]:
        groups = [g for g in plan.groups() if not g[0].negated]
        required = [g for g in groups if g[0].required]
        notes: list[str] = []
        strict = True
        if required:
            cand = self._intersection(required)
            if allowed is not None:
                cand = cand[allowed[cand]]
            if len(cand) == 0:
                cand, strict = self._union(c.feature for g in required for c in g), False
                notes.append("no item shows every required concept of the plan: showing items with some of them, best first")
        else:  # soft concepts only (score() refuses a plan without a positive concept)
            cand = self._union(c.feature for g in groups for c in g)
        if allowed is not None:
            cand = cand[allowed[cand]]
        if len(cand) == 0:  # not even a partial match: say so rather than "showing items with some of them"
            where = " passing the filters" if allowed is not None else ""
            notes[:] = [f"no item{where} shows any concept of the plan: nothing to rank"]
        return cand, strict, notes

    def score(self, plan: QueryPlan, allowed: np.ndarray | None = None) -> Scored:
        """Score every candidate of ``plan``; ``allowed`` (bool per row) restricts the candidates.

        A plan needs a positive concept: negated ones only exclude items, so a plan without one
        (empty, or every concept dropped or negated) would rank arbitrary items, and is refused."""
        if not plan.concepts:
            raise SaeError(f"the plan for {plan.query!r} has no concepts (no positive concept): add one with plan.add(feature)")
        if not plan.positives:
            raise SaeError(f"the plan for {plan.query!r} has no positive concept: add one with plan.add(feature) "
                           f"(or un-negate one of {[c.feature for c in plan.negatives]}); negated concepts only exclude items, "
                           "so a query like 'without X' needs something to look for, e.g. 'axial slices without X'")
        for c in plan.concepts:
            self._check(c.feature)
        if allowed is not None and len(allowed) != self.n_rows:
            raise SaeError(f"the filter mask has {len(allowed)} entries; the codes have {self.n_rows} rows")
        cand, strict, notes = self._candidates(plan, allowed)
        groups = plan.groups()
        wsum = sum(max(c.weight for c in g) for g in groups if not g[0].negated) or 1.0
        contrib: dict[Contribution, np.ndarray] = {}
        score = np.zeros(len(cand))
        tiebreak = np.zeros(len(cand))
        for gi, g in enumerate(groups):
            raw = np.stack([self.ratio_at(c.feature, cand, rows_sorted=True) for c in g])
            w = np.array([[c.weight] for c in g], dtype=np.float32)
            ratios = w * raw
            # a negated concept at its typical strength cancels a full match (clipped ratio); positives never saturate
            pres = w * (np.minimum(raw, 1.0) if g[0].negated else self.squash(raw, [c.feature for c in g]))
            top_w = max(c.weight for c in g)
            p = pres.max(0) if self.combine == "max" or len(g) == 1 else top_w * (1.0 - np.prod(1.0 - pres / top_w, axis=0))
            part = -p if g[0].negated else p / wsum
            if not g[0].negated:
                tiebreak += ratios.max(0) if self.combine == "max" else ratios.sum(0)
            contrib[Contribution(gi, int(g[0].feature), g[0].label, bool(g[0].negated), len(g) - 1)] = part
            score += part
        return Scored(cand, score, tiebreak, contrib, strict, notes)

    def squash(self, ratios: np.ndarray, features: list[int]) -> np.ndarray:
        """Ranking presence of ``ratios`` (features x items): ratio / (ratio + the feature's median ratio), in [0, 1)."""
        half = self.half[np.asarray(features, dtype=np.int64)][:, None]
        return ratios / (ratios + half)

    def search(self, plan: QueryPlan, top: int = 20, allowed: np.ndarray | None = None) -> SearchResult:
        """Rank items for ``plan``: the ``top`` best with their per-concept contributions."""
        _check_top(top)
        s = self.score(plan, allowed)
        keep = np.arange(len(s.rows))
        if len(keep) > 4 * top + 1024:  # keep the sort small: only the best candidates matter
            keep = np.argpartition(-s.score, 4 * top)[: 4 * top]
        order = keep[np.lexsort((s.rows[keep], -s.tiebreak[keep], -s.score[keep]))][:top]
        hits = pd.DataFrame({"rank": np.arange(1, len(order) + 1), "row": s.rows[order], "score": s.score[order],
                             **{c.column: v[order] for c, v in s.contrib.items()}})
        return SearchResult(plan, hits, list(s.contrib), s.strict, s.notes)

    def rank_groups(self, plan: QueryPlan, group_codes: np.ndarray, group_names: np.ndarray, pool: str = "max",
                    top: int = 20, allowed: np.ndarray | None = None) -> pd.DataFrame:
        """Rank groups (volumes, studies, patients) by pooling their items' scores.

        ``max``: a group is as good as its best item (find studies that contain the finding);
        ``mean``: the average over all of the group's (allowed) items, items without the concepts
        counting 0 (find studies where the finding is widespread).
        """
        if pool not in POOLING:
            raise SaeError(f"unknown pooling {pool!r}; use one of {POOLING}")
        _check_top(top)
        s = self.score(plan, allowed)
        n_groups = len(group_names)
        codes = group_codes[s.rows]
        sizes = np.bincount(group_codes if allowed is None else group_codes[allowed], minlength=n_groups)
        hits = np.bincount(codes, weights=(s.score > 0), minlength=n_groups)
        if pool == "max":
            value = np.full(n_groups, -np.inf)
            np.maximum.at(value, codes, s.score)
        else:
            value = np.bincount(codes, weights=s.score, minlength=n_groups) / np.maximum(sizes, 1)
        best = np.full(n_groups, -1)
        order = np.lexsort((-s.score, codes))  # per group, its best item first
        first = np.unique(codes[order], return_index=True)
        best[first[0]] = s.rows[order[first[1]]]
        present = np.flatnonzero(hits > 0)
        ranked = present[np.lexsort((present, -hits[present], -value[present]))][:top]  # ties: more items with the concepts first
        return pd.DataFrame({"rank": np.arange(1, len(ranked) + 1), "group": group_names[ranked], "score": value[ranked],
                             "items": sizes[ranked], "items_with_concepts": hits[ranked].astype(int),
                             "best_row": best[ranked], "pooling": pool})
