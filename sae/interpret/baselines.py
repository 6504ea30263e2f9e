"""Label scores beside their baselines: what the same labeler and judge reach when the label cannot be about the feature.

- :func:`shuffled_label_scores`: the run's labels handed to other features (a derangement), scored on
  the same held-out items by the same judge. Detection that survives the shuffle comes from what labels
  in general have in common with active items, not from the label being about this feature.
- :func:`random_sae_label_baseline`: an SAE of the run's size that learned nothing
  (:func:`sae.evaluate.random_sae`, the run's L0 and decoder bias) encodes the store in memory, and the
  same offline labeler, evidence settings, judge and scorer label and score its features. What a random
  dictionary's features get is the floor a trained one's labels must clear. LLM labelers are not run on it.
- :func:`label_baselines`: both, for the labels summary.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd
import scipy.sparse as sp

from sae.codes import STAT_NAMES, Codes, Postings
from sae.codes.layout import _block_stats
from sae.codes.reader import check_feature
from sae.errors import StaleArtifactError
from sae.evaluate import random_sae
from sae.interpret.describe import TermTable, label_key
from sae.interpret.evidence import EvidenceBuilder, EvidenceConfig, FeatureEvidence
from sae.interpret.labelers import DEAD, OK, Labeler
from sae.interpret.scoring import Judge, LabelScorer, ScoringConfig
from sae.store import Store
from sae.truth import sae_codes

if TYPE_CHECKING:
    from sae.run import Run

RANDOM_SAE_ROWS = 50_000
"""The random SAE encodes at most this many rows (a seeded sample) of a bigger store."""


def _mean(values: pd.Series) -> float:
    values = pd.to_numeric(values, errors="coerce")
    return float(values.mean()) if values.notna().any() else float("nan")


def _derangement(labels: np.ndarray, seed: int, tries: int = 1000) -> tuple[np.ndarray, str]:
    """Positions to take each label from: none keeps a label with its own words when some draw allows it,
    else none keeps its own position (a random cycle), else (one label) the identity."""
    n = len(labels)
    if n < 2:
        return np.arange(n), "none"
    rng = np.random.default_rng(seed)
    keys = np.array([label_key(x) for x in labels], dtype=object)
    for _ in range(tries):
        perm = rng.permutation(n)
        if not (keys[perm] == keys).any():
            return perm, "labels"
    order = rng.permutation(n)  # Sattolo: one cycle through a random order moves every position
    perm = np.empty(n, np.int64)
    perm[order] = np.roll(order, -1)
    return perm, "positions"


def shuffled_label_scores(scorer: LabelScorer, frame: pd.DataFrame, packs: dict[int, FeatureEvidence], seed: int = 0) -> dict[str, Any]:
    """Mean detection and detection_sibling of the ok labels permuted among the ok features, on the same
    held-out items (``scorer.plan``) and judge, beside the true labels' on the same items (features
    without a pack, e.g. kept from an earlier partial run, are left out)."""
    ok = frame[(frame["status"] == OK) & frame["feature"].astype(int).isin(list(packs))]
    features = [int(f) for f in ok["feature"]]
    labels = [str(x) for x in ok["label"]]
    perm, kind = _derangement(np.array(labels, dtype=object), seed)
    moved = [labels[i] for i in perm]
    plans = [scorer.plan(packs[f]) for f in features]
    with getattr(scorer.judge, "preserved", nullcontext)():
        scorer.prepare(plans, labels)
        true = pd.DataFrame([scorer.detection(packs[f], lab, p) for f, lab, p in zip(features, labels, plans)])
        shuf = pd.DataFrame([scorer.detection(packs[f], lab, p) for f, lab, p in zip(features, moved, plans)])
    same = np.array([label_key(a) == label_key(b) for a, b in zip(labels, moved)], bool)
    cols = ("detection", "detection_sibling")
    return {"features": len(features), "seed": seed, "derangement": kind, "same_label_share": float(same.mean()) if len(same) else float("nan"),
            **{c: _mean(shuf[c]) if len(shuf) else float("nan") for c in cols},
            **{f"true_{c}": _mean(true[c]) if len(true) else float("nan") for c in cols}, "chance": 0.5}


class MemoryCodes:
    """A baseline's codes held in memory: the part of :class:`~sae.codes.Codes` that :class:`EvidenceBuilder`
    and :class:`LabelScorer` read (sizes, the store check, per-feature statistics, postings), computed the
    way ``sae encode`` computes them (strongest first, equal values in row order)."""

    def __init__(self, codes: sp.csr_matrix, store_fingerprint: str):
        coo = sp.csr_matrix(codes).tocoo()
        self.n_rows, self.n_latents = (int(x) for x in coo.shape)
        self.nnz = int(coo.nnz)
        self.store_fingerprint = store_fingerprint
        order = np.lexsort((coo.row, -coo.data, coo.col))
        ptr = np.concatenate([[0], np.cumsum(np.bincount(coo.col, minlength=self.n_latents))]).astype(np.int64)
        self.postings = Postings(ptr, coo.row[order], coo.data[order], self.n_rows)
        stats = {name: np.zeros(self.n_latents, np.float64) for name in STAT_NAMES}
        _block_stats(stats, coo.data[order], ptr, 0, self.n_latents, self.n_rows)
        self._stats = pd.DataFrame(stats)
        self._stats["count"] = self._stats["count"].astype(np.int64)
        self._stats.index.name = "feature"

    def check_store(self, store: Store | RowSample) -> None:
        if store.fingerprint != self.store_fingerprint:
            raise StaleArtifactError("these in-memory codes were computed from another version of the store")

    def stats(self) -> pd.DataFrame:
        return self._stats.copy()

    def _check_feature(self, feature: int) -> int:
        return check_feature(feature, self.n_latents)

    def read_feature(self, feature: int, top: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.postings.top(feature, top)


class RowSample:
    """Some rows of a store, renumbered 0..n-1, read as a store of their own (what EvidenceBuilder reads)."""

    def __init__(self, store: Store, rows: np.ndarray):
        self.base, self.rows = store, np.asarray(rows, np.int64)
        self.n_rows = len(self.rows)
        self.fingerprint, self.provenance, self.columns = store.fingerprint, store.provenance, store.columns
        self.has_text_previews = store.has_text_previews

    def ids(self) -> np.ndarray:
        return np.asarray(self.base.ids())[self.rows]

    def meta(self, columns=None, rows=None) -> pd.DataFrame:
        picked = self.rows if rows is None else self.rows[np.asarray(rows, np.int64)]
        return self.base.meta(columns, rows=picked).reset_index(drop=True)

    def texts(self, rows) -> np.ndarray:
        return self.base.texts(self.rows[np.asarray(rows, np.int64)])


def _encode(model, store: Store, rows: np.ndarray, batch: int = 8192) -> sp.csr_matrix:
    blocks = [sae_codes(model, store.read_embeddings(rows[a : a + batch])) for a in range(0, len(rows), batch)]
    return sp.vstack(blocks).tocsr() if blocks else sp.csr_matrix((0, model.cfg.n_latents), dtype=np.float32)


def random_sae_label_baseline(run: Run, labeler: Labeler, judge: Judge, evidence_config: EvidenceConfig | None = None,
                              scoring: ScoringConfig | None = None, seed: int = 0, progress: bool = False,
                              max_rows: int = RANDOM_SAE_ROWS, evidence: EvidenceBuilder | None = None) -> dict[str, Any]:
    """The labels ``labeler`` gives a random SAE's features and their scores (same evidence settings, judge
    and scoring), summarised: labeled share, mean detection and detection_sibling, duplicate and collision
    rates, features. Stores above ``max_rows`` rows are sampled (seeded; the result says so). ``evidence``:
    the run's builder, whose term table and texts (the same rows, the same settings) are reused."""
    if getattr(labeler, "client", None) is not None:
        return {"skipped": f"{labeler.id} asks an LLM; the random-SAE baseline runs offline labelers only (no LLM cost)"}
    t0 = time.perf_counter()
    store, model = run.verify().store, run.model
    k = max(1, round(float(run.codes.nnz) / max(1, run.codes.n_rows)))  # the run's L0, as sae evaluate does
    rand = random_sae(model, k=k, seed=seed)
    n = store.n_rows
    sampled = n > max_rows
    rows = np.sort(np.random.default_rng(seed).choice(n, max_rows, replace=False)) if sampled else np.arange(n)
    codes = MemoryCodes(_encode(rand, store, rows), store.fingerprint)
    view = RowSample(store, rows) if sampled else store
    meta = run.meta.iloc[rows].reset_index(drop=True) if sampled else run.meta
    terms = texts = None
    if evidence is not None:
        terms = TermTable(evidence.terms.matrix[rows], evidence.terms.terms) if sampled else evidence.terms
        texts = evidence.texts[rows] if sampled and evidence.texts is not None else evidence.texts
    builder = EvidenceBuilder(cast(Store, view), cast(Codes, codes), rand.W_dec.detach().numpy(), evidence_config, progress=False,
                              postings=codes.postings, meta=meta, stats=codes.stats(), terms=terms, texts=texts)
    packs = {p.feature: p for p in builder.packs()}
    labels = labeler.label_many(list(packs.values()), progress=False)
    frame = pd.DataFrame([lab.record() for lab in labels])
    with getattr(judge, "preserved", nullcontext)():
        scores = LabelScorer(builder, judge, scoring).score(frame[["feature", "label", "description", "status"]], packs, progress=progress)
    ok = scores[frame["status"].eq(OK).to_numpy()]
    return {"features": int(len(frame)), "labeled": int(len(ok)), "labeled_share": len(ok) / max(1, len(frame)),
            "dead": int(frame["status"].eq(DEAD).sum()), "detection": _mean(ok["detection"]),
            "detection_sibling": _mean(ok["detection_sibling"]), "duplicate_rate": _mean(ok["duplicate"].astype(float)),
            "collision_rate": _mean(ok["collision"].astype(float)), "k": rand.cfg.k, "seed": seed, "rows": int(len(rows)),
            "rows_note": f"a seeded sample of {len(rows):,} of the store's {n:,} rows" if sampled else f"all {n:,} rows",
            "chance": 0.5, "seconds": round(time.perf_counter() - t0, 2)}


def label_baselines(run: Run, labeler: Labeler, scorer: LabelScorer, frame: pd.DataFrame, packs: dict[int, FeatureEvidence],
                    seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """Both baselines of one labels table, for the labels summary: the shuffled labels on the scorer's
    held-out items, and a random SAE labeled and scored with the scorer's judge, scoring and evidence settings."""
    return {"shuffled_labels": shuffled_label_scores(scorer, frame, packs, seed),
            "random_sae": random_sae_label_baseline(run, labeler, scorer.judge, scorer.b.cfg, scorer.cfg, seed, progress,
                                                    evidence=scorer.b)}


__all__ = ["MemoryCodes", "RowSample", "label_baselines", "random_sae_label_baseline", "shuffled_label_scores"]
