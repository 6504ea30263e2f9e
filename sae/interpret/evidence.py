"""Evidence packs: everything known about one feature, as data that labelers, widgets and figures share.

A pack holds the feature's statistics, its top activating items (at most ``max_per_group`` per
group key, so one patient cannot fill the list), items sampled across activation quantiles, hard
negatives (items where sibling features fire but this one stays silent), sibling features (decoder
cosine and co-activation) and metadata enrichment with BH-FDR q-values.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp

from sae._progress import tqdm
from sae.codes import Codes, Postings
from sae.errors import SaeError
from sae.interpret.describe import TermTable, build_terms, column_kinds, describe_items, item_terms, merge_terms, phrase_terms
from sae.interpret.enrichment import active_matrix, enrichment_table
from sae.interpret.phrases import PhraseConfig, build_phrases
from sae.store import Store


@dataclass(frozen=True)
class EvidenceConfig:
    """How much evidence to collect per feature."""

    n_top: int = 20
    """Top activating items shown (after de-duplication by the group key)."""
    max_per_group: int = 2
    """At most this many top items from one group (volume, patient); 0 disables the cap."""
    n_quantile_bins: int = 5
    """Active items are split into this many activation-rank bins ..."""
    per_bin: int = 2
    """... and this many items are sampled from each."""
    n_negatives: int = 10
    """Hard negatives: items where sibling features fire but this one does not."""
    n_siblings: int = 6
    """Sibling features kept (union of the nearest by decoder cosine and by co-activation)."""
    coactivation_rows: int = 200_000
    """Co-activation is measured on at most this many rows (a seeded sample)."""
    alpha: float = 0.05
    """FDR level for calling a metadata term enriched."""
    min_lift: float = 1.5
    """Minimum over-representation for an enriched term."""
    exclude_columns: tuple[str, ...] = ()
    """Metadata columns that never become terms: outcomes and targets (a failure flag, a diagnosis the
    model predicts). The store's group key and the columns its provenance lists under ``label_exclude``
    are always excluded."""
    text: str = "auto"
    """Where text phrases come from: ``auto`` (the store's text previews, else none), ``none``, or the name
    of a free-text metadata column."""
    phrases: PhraseConfig = field(default_factory=PhraseConfig)
    seed: int = 0


@dataclass
class FeatureEvidence:
    """The evidence pack of one feature."""

    feature: int
    stats: dict
    top: pd.DataFrame
    quantiles: pd.DataFrame
    negatives: pd.DataFrame
    siblings: pd.DataFrame
    enrichment: pd.DataFrame
    alpha: float = 0.05
    min_lift: float = 1.5

    @property
    def is_dead(self) -> bool:
        return int(self.stats.get("count", 0)) == 0

    def enriched(self) -> pd.DataFrame:
        """Terms significantly over-represented among the active items (q < alpha, lift >= min_lift)."""
        return self._enriched

    @cached_property
    def _enriched(self) -> pd.DataFrame:
        e = self.enrichment
        return e[(e["q"] < self.alpha) & (e["lift"] >= self.min_lift)].sort_values(["q", "lift"], ascending=[True, False])

    def shown_rows(self) -> np.ndarray:
        """Rows shown to a labeler (excluded from held-out scoring)."""
        return np.unique(np.concatenate([self.top["row"], self.quantiles["row"], self.negatives["row"]]).astype(np.int64))

    def _repr_html_(self) -> str:
        enr = self.enriched().head(5)
        terms = ", ".join(f"{html.escape(str(t))} (x{lift:.1f})" for t, lift in zip(enr["text"], enr["lift"])) or "none"
        return (f"<div><b>feature {self.feature}</b>: fires on {self.stats.get('rate', 0):.2%} of items, "
                f"max {self.stats.get('max', 0):.3g}; enriched: {terms}; "
                f"{len(self.top)} top items, {len(self.negatives)} hard negatives, siblings "
                f"{html.escape(str(list(self.siblings['feature'])))}</div>")


def excluded_columns(store: Store, config: EvidenceConfig) -> frozenset[str]:
    """Columns that never name a feature: the group key, the store's ``label_exclude`` (ground truth, outcomes)
    and the configured ones; an unknown configured column is an error, not a silent no-op."""
    unknown = sorted(set(config.exclude_columns) - set(store.columns))
    if unknown:
        raise SaeError(f"--exclude-column {', '.join(unknown)}: no such metadata column (columns: {', '.join(store.columns)})")
    prov = store.provenance
    return frozenset([*config.exclude_columns, *prov.get("label_exclude", []), *([prov["group_key"]] if prov.get("group_key") else [])])


def _cap_per_group(rows: np.ndarray, groups: np.ndarray | None, cap: int, limit: int) -> np.ndarray:
    """Positions of the first ``limit`` rows (already ranked) with at most ``cap`` per group; when the
    groups run out (fewer groups than limit / cap), the best remaining rows fill the list. Rank order is kept."""
    if groups is None or cap <= 0:
        return np.arange(min(limit, len(rows)))
    seen: dict = {}
    keep = np.zeros(len(rows), bool)
    for i, r in enumerate(rows):
        g = groups[r]
        if seen.get(g, 0) < cap:
            seen[g] = seen.get(g, 0) + 1
            keep[i] = True
            if keep.sum() == limit:
                break
    short = limit - int(keep.sum())
    if short > 0:
        keep[np.flatnonzero(~keep)[:short]] = True
    return np.flatnonzero(keep)


class EvidenceBuilder:
    """Builds evidence packs for the features of one SAE over one store.

    Global work (the term table, the enrichment of every feature, decoder cosines, co-activation) is
    done once in the constructor; :meth:`pack` is then cheap per feature.
    """

    def __init__(self, store: Store, codes: Codes, decoder: np.ndarray | None = None, config: EvidenceConfig | None = None,
                 progress: bool = True, postings: Postings | None = None, meta: pd.DataFrame | None = None,
                 stats: pd.DataFrame | None = None, terms: TermTable | None = None, texts: np.ndarray | None = None):
        """``postings`` / ``meta`` / ``stats``: a run's shared in-memory index, metadata and statistics
        (read from ``codes`` and ``store`` when not given; :meth:`of` passes a run's). ``terms`` / ``texts``:
        the items' term table and texts, built by another builder over the same rows with the same settings
        (the random-SAE baseline reuses the run's instead of tokenising every report again)."""
        codes.check_store(store)
        self.store, self.codes, self.cfg = store, codes, config or EvidenceConfig()
        self.progress = progress
        self.group_key = store.provenance.get("group_key")
        self.meta = store.meta() if meta is None else meta
        self.groups = self.meta[self.group_key].to_numpy() if self.group_key in self.meta else None
        self.ids = np.asarray(store.ids())
        if texts is None and store.has_text_previews:
            texts = np.asarray(store.texts(np.arange(store.n_rows)))
        self.texts = texts
        self.excluded = excluded_columns(store, self.cfg)
        self.terms: TermTable = self._build_terms(progress) if terms is None else terms
        self.stats = codes.stats() if stats is None else stats
        self.postings = postings if postings is not None else Postings.from_codes(codes)  # read once, not per feature
        # the inverted index is the codes in column-major form: no second read of the row-major copy
        self.active = active_matrix(self.postings.by_feature_matrix().tocsr())
        self.enrichment = enrichment_table(self.active, self.terms)
        bounds = np.searchsorted(self.enrichment["feature"].to_numpy(), np.arange(codes.n_latents + 1))
        self._enr_bounds = bounds
        self._siblings = self._sibling_table(decoder)

    @classmethod
    def of(cls, run, config: EvidenceConfig | None = None, progress: bool = True) -> EvidenceBuilder:
        """The evidence builder of a run over its shared postings, metadata and statistics (built once per
        run and configuration)."""
        return run.cached(("evidence", config or EvidenceConfig()),
                          lambda: cls(run.store, run.codes, run.decoder, config, progress=progress, postings=run.postings,
                                      meta=run.meta, stats=run.stats))

    def _build_terms(self, progress: bool) -> TermTable:
        """The metadata terms of the usable columns, then the phrases of the text source (when there is one)."""
        kinds = {c: k for c, k in column_kinds(self.store.columns, self.meta, self.group_key).items() if c not in self.excluded}
        source, texts = self._text_source()
        if self.texts is None and texts is not None:
            self.texts = texts  # what a labeler or judge reads about an item
        phrases = [phrase_terms(build_phrases(texts.tolist(), self.cfg.phrases, progress), source)] if texts is not None else []
        return merge_terms(build_terms(self.meta, kinds), *phrases)

    def _text_source(self) -> tuple[str, np.ndarray | None]:
        """(name, texts) of the text the phrases come from, per :attr:`EvidenceConfig.text`."""
        choice = self.cfg.text
        if choice == "none":
            return "", None
        if choice == "auto":
            return ("text", self.texts) if self.texts is not None else ("", None)
        if choice not in self.meta or choice in self.excluded:
            raise SaeError(f"text column {choice!r} is not a usable metadata column of this store "
                           f"(columns: {', '.join(c for c in self.meta.columns if c not in self.excluded)})")
        return choice, self.meta[choice].fillna("").astype(str).to_numpy()

    @property
    def has_terms(self) -> bool:
        """Whether anything (metadata or text) can name a feature."""
        return self.terms.n_terms > 0

    # -- global tables -------------------------------------------------------------------------
    def _coactivation(self) -> tuple[sp.csr_matrix, np.ndarray]:
        n = self.active.shape[0]
        rng = np.random.default_rng(self.cfg.seed)
        rows = np.sort(rng.choice(n, self.cfg.coactivation_rows, replace=False)) if n > self.cfg.coactivation_rows else np.arange(n)
        a = self.active[rows]
        return (a.T @ a).tocsr(), np.asarray(a.sum(axis=0)).ravel()

    def _sibling_table(self, decoder: np.ndarray | None) -> dict[int, pd.DataFrame]:
        """Per feature: nearest features by decoder cosine and by co-activation (Jaccard)."""
        n, k = self.codes.n_latents, self.cfg.n_siblings
        co, counts = self._coactivation()
        cos_top, w = None, None
        if decoder is not None:
            w = np.asarray(decoder, dtype=np.float32)
            if w.shape[0] != n:
                raise SaeError(f"decoder has {w.shape[0]} rows but the codes have {n} features")
            w = w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12)
            cos_top = []
            for a in range(0, n, 2048):
                sim = w[a : a + 2048] @ w.T
                sim[np.arange(sim.shape[0]), np.arange(a, a + sim.shape[0])] = -np.inf
                idx = np.argpartition(-sim, min(k, n - 1) - 1, axis=1)[:, : min(k, n - 1)]
                cos_top.append((idx, np.take_along_axis(sim, idx, axis=1)))
        out = {}
        for f in range(n):
            row = co.getrow(f)
            others, inter = row.indices, row.data
            mask = others != f
            others, inter = others[mask], inter[mask]
            jac = inter / np.maximum(counts[f] + counts[others] - inter, 1)
            order = np.argsort(-jac, kind="stable")[: k // 2 if cos_top is not None else k]
            cand = set(others[order].tolist())
            if cos_top is not None:
                idx, _ = cos_top[f // 2048]
                cand |= set(idx[f % 2048][: k - len(cand)].tolist())
            out[f] = self._sibling_frame(f, sorted(cand), co, counts, w)
        return out

    def _sibling_frame(self, f: int, cand: list[int], co: sp.csr_matrix, counts: np.ndarray, w_unit: np.ndarray | None) -> pd.DataFrame:
        cand_arr = np.asarray(cand, dtype=np.int64)
        inter = np.asarray(co[f, cand_arr].todense()).ravel() if len(cand_arr) else np.zeros(0)
        jac = inter / np.maximum(counts[f] + counts[cand_arr] - inter, 1) if len(cand_arr) else np.zeros(0)
        df = pd.DataFrame({"feature": cand_arr, "jaccard": jac, "p_sibling_given_feature": inter / max(counts[f], 1)})
        if w_unit is not None and len(cand_arr):
            df["decoder_cos"] = w_unit[cand_arr] @ w_unit[f]
        return df.sort_values("jaccard", ascending=False, kind="stable").reset_index(drop=True)

    # -- per feature ---------------------------------------------------------------------------
    def top_rows(self, feature: int, top: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Rows where ``feature`` fires and its values, strongest first (from the in-memory postings)."""
        return self.postings.top(feature, top)

    def describe(self, rows: np.ndarray) -> list[str]:
        """What a labeler or judge reads about each row: its metadata terms and text preview."""
        rows = np.asarray(rows, dtype=np.int64)
        return describe_items(self.terms, rows, self.texts[rows] if self.texts is not None else None)

    def _items(self, rows: np.ndarray, values: np.ndarray, **extra) -> pd.DataFrame:
        rows = np.asarray(rows, dtype=np.int64)
        df = pd.DataFrame({"row": rows, "id": self.ids[rows] if len(rows) else np.zeros(0, str), "activation": values, **extra})
        df["description"] = self.describe(rows)
        df["terms"] = item_terms(self.terms, rows)
        return df

    def _quantile_sample(self, rows: np.ndarray, vals: np.ndarray, exclude: np.ndarray, rng) -> pd.DataFrame:
        bins = np.array_split(np.arange(len(rows)), self.cfg.n_quantile_bins) if len(rows) else []
        picks: list[int] = []
        picked_bins: list[int] = []
        for b, idx in enumerate(bins):
            idx = idx[~np.isin(rows[idx], exclude)]
            take = rng.choice(idx, size=min(self.cfg.per_bin, len(idx)), replace=False) if len(idx) else idx
            picks += list(take)
            picked_bins += [b] * len(take)
        at = np.asarray(picks, dtype=np.int64)
        return self._items(rows[at], vals[at], bin=np.asarray(picked_bins, dtype=np.int64))

    def _hard_negatives(self, f: int, own_rows: np.ndarray, siblings: pd.DataFrame) -> pd.DataFrame:
        cand_rows, cand_vals, cand_sib = [], [], []
        for g in siblings["feature"].head(3):
            rows, vals = self.top_rows(int(g), top=max(50, 10 * self.cfg.n_negatives))
            keep = ~np.isin(rows, own_rows)
            scale = max(float(self.stats["max"].iloc[int(g)]), 1e-12)
            cand_rows.append(rows[keep])
            cand_vals.append(vals[keep] / scale)
            cand_sib.append(np.full(keep.sum(), int(g)))
        if not cand_rows:
            return self._items(np.zeros(0, np.int64), np.zeros(0, np.float32), sibling=np.zeros(0, np.int64))
        rows, score, sib = np.concatenate(cand_rows), np.concatenate(cand_vals), np.concatenate(cand_sib)
        order = np.argsort(-score, kind="stable")
        rows, score, sib = rows[order], score[order], sib[order]
        _, first = np.unique(rows, return_index=True)
        first = np.sort(first)
        rows, score, sib = rows[first], score[first], sib[first]
        idx = _cap_per_group(rows, self.groups, self.cfg.max_per_group, self.cfg.n_negatives)
        return self._items(rows[idx], np.zeros(len(idx), np.float32), sibling=sib[idx], sibling_activation=score[idx])

    def pack(self, feature: int) -> FeatureEvidence:
        """The evidence pack of one feature."""
        f = self.codes._check_feature(feature)
        rows, vals = self.top_rows(f)
        top = _cap_per_group(rows, self.groups, self.cfg.max_per_group, self.cfg.n_top)
        top_rows, top_vals = rows[top], vals[top].astype(np.float32)
        rng = np.random.default_rng([self.cfg.seed, f])
        quant = self._quantile_sample(rows, vals, top_rows, rng)
        siblings = self._siblings[f]
        a, b = self._enr_bounds[f], self._enr_bounds[f + 1]
        return FeatureEvidence(
            feature=f,
            stats={k: (float(v) if k != "count" else int(v)) for k, v in self.stats.iloc[f].items()},
            top=self._items(top_rows, top_vals, rank=np.arange(len(top_rows))),
            quantiles=quant,
            negatives=self._hard_negatives(f, rows, siblings),
            siblings=siblings,
            enrichment=self.enrichment.iloc[a:b].reset_index(drop=True),
            alpha=self.cfg.alpha,
            min_lift=self.cfg.min_lift,
        )

    def packs(self, features: Sequence[int] | None = None) -> list[FeatureEvidence]:
        """Evidence packs of ``features`` (default: every feature)."""
        features = range(self.codes.n_latents) if features is None else features
        return [self.pack(int(f)) for f in tqdm(list(features), desc="evidence packs", disable=not self.progress)]
