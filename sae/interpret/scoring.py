"""How much to trust a label, measured with chance-corrected tests.

- detection: a judge sees only the label and 2m held-out items (m where the feature fires, m where
  it does not, none of them shown to the labeler) and picks the m that belong. Balanced accuracy,
  chance 0.5; ties are broken in expectation, so a judge that cannot tell scores exactly 0.5.
- intruder: 4 items where the feature fires strongly and 1 where it does not; the judge, without the
  label, picks the odd one out. Accuracy, chance 0.2. It measures the feature's coherence.
- metadata agreement: the share of the feature's key enriched terms that the label names, and a
  contradiction flag when the label names a value that is under-represented among the active items
  while another value of the same column dominates.
- duplicate rate: the share of labeled features whose normalised label another feature also has.
- sail_top2: SAIL's lenient check on the same judgements (the active item ranked in the top 2 of 5,
  chance 0.4), reported so the two protocols can be compared on the same labels.

Judges: :class:`EmbeddingJudge` (offline, MiniLM over the items' metadata descriptions) and
:class:`LLMJudge` (the shared LLM wrapper).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from sae.interpret.describe import TermTable, label_key, normalize_label
from sae.interpret.evidence import EvidenceBuilder, FeatureEvidence
from sae.interpret.labelers import OK
from sae.interpret.prompts import DETECT_SCHEMA, DETECT_VERSION, INTRUDER_SCHEMA, INTRUDER_VERSION, detect_messages, intruder_messages
from sae.llm import LLMClient, LLMRequest


@dataclass(frozen=True)
class ScoringConfig:
    n_detect: int = 10
    """Held-out items per side for detection (m active + m inactive)."""
    n_intruder_trials: int = 5
    seed: int = 0


class Judge(Protocol):
    name: str

    def detect(self, label: str, items: Sequence[str]) -> np.ndarray:
        """Probability-like membership per item (the m highest are taken as the judge's picks)."""

    def intruder(self, items: Sequence[str]) -> np.ndarray:
        """Per item, the judge's belief that it is the intruder (the highest is the pick)."""


def top_m_balanced_accuracy(scores: np.ndarray, truth: np.ndarray) -> float:
    """Balanced accuracy when the judge picks the m = #positives highest scores, ties broken in expectation."""
    scores, truth = np.asarray(scores, float), np.asarray(truth, bool)
    m = int(truth.sum())
    if m == 0 or m == len(truth):
        return float("nan")
    order = np.sort(scores)[::-1]
    cut = order[m - 1]
    above = scores > cut
    tied = scores == cut
    slots = m - above.sum()
    prob = above.astype(float) + tied * (slots / max(tied.sum(), 1))
    tpr = prob[truth].mean()
    tnr = (1 - prob[~truth]).mean()
    return float(0.5 * (tpr + tnr))


def sail_top2(scores: np.ndarray, truth: np.ndarray, rng: np.random.Generator, draws: int = 20) -> float:
    """SAIL's lenient protocol on the same judgements: one active item among 4 inactive ones counts as
    recognised when ranked 1st or 2nd of the 5 (chance 0.4). Ties are broken in expectation."""
    scores, truth = np.asarray(scores, float), np.asarray(truth, bool)
    pos, neg = scores[truth], scores[~truth]
    if len(pos) == 0 or len(neg) < 4:
        return float("nan")
    hits = []
    for _ in range(draws):
        s = pos[rng.integers(len(pos))]
        four = neg[rng.choice(len(neg), 4, replace=False)]
        above, tied = int((four > s).sum()), int((four == s).sum())
        hits.append(0.0 if above >= 2 else (1 / (tied + 1) if above == 1 else min(2, tied + 1) / (tied + 1)))
    return float(np.mean(hits))


def argmax_accuracy(scores: np.ndarray, target: int) -> float:
    """Expected accuracy of picking the highest score (ties split evenly)."""
    scores = np.asarray(scores, float)
    best = scores == scores.max()
    return float(best[target] / best.sum())


class EmbeddingJudge:
    """Offline judge: cosine between the label and each item's description in MiniLM space."""

    name = "embedding-minilm"

    def __init__(self, encoder=None):
        if encoder is None:
            from sae.encoders import MiniLMEncoder

            encoder = MiniLMEncoder()
        self.encoder = encoder
        self._cache: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        missing = sorted({t for t in texts if t not in self._cache})
        if missing:
            vecs = np.asarray(self.encoder.encode(missing, progress=False), dtype=np.float32)
            vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
            self._cache.update(zip(missing, vecs))
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, 1), np.float32)

    def prepare(self, texts: Sequence[str], labels: Sequence[str] = ()) -> None:
        """Embed many texts in one batched pass; ``labels`` (all labels of the run) centre the scores."""
        self.embed(list(texts) + list(labels))
        if len(labels):
            self._label_mean = self.embed(sorted(set(labels))).mean(axis=0)

    def detect(self, label: str, items: Sequence[str]) -> np.ndarray:
        """Cosine to the label minus the item's mean cosine to all labels (items with many terms match everything)."""
        e = self.embed(list(items))
        ref = getattr(self, "_label_mean", None)
        return e @ self.embed([label])[0] - (e @ ref if ref is not None else 0.0)

    def intruder(self, items: Sequence[str]) -> np.ndarray:
        e = self.embed(list(items))
        sim = e @ e.T
        np.fill_diagonal(sim, np.nan)
        return -np.nanmean(sim, axis=1)


class LLMJudge:
    """The LLM as judge, through the shared wrapper (cached; a failed answer scores as chance)."""

    name = "llm"

    def __init__(self, client: LLMClient):
        self.client = client

    def detect(self, label: str, items: Sequence[str]) -> np.ndarray:
        res = self.client.run_one(LLMRequest("detect", detect_messages(label, items), DETECT_SCHEMA, DETECT_VERSION))
        out = np.zeros(len(items))
        if res.ok:
            picks = [i for i in res.answer["matches"] if 0 <= int(i) < len(items)]
            out[picks] = 1.0
        return out

    def intruder(self, items: Sequence[str]) -> np.ndarray:
        res = self.client.run_one(LLMRequest("intruder", intruder_messages(items), INTRUDER_SCHEMA, INTRUDER_VERSION))
        out = np.zeros(len(items))
        if res.ok and 0 <= int(res.answer["intruder"]) < len(items):
            out[int(res.answer["intruder"])] = 1.0
        return out


def _has_phrase(label_norm: str, phrase: str) -> bool:
    return bool(phrase) and f" {phrase} " in f" {label_norm} "


def _label_terms(label: str, terms: TermTable) -> list[int]:
    """Terms the label names: the term's text as a phrase, or a categorical term's (non-generic) value."""
    lab = normalize_label(label)
    return [i for i, text, value in terms.phrases if _has_phrase(lab, text) or _has_phrase(lab, value)]


def metadata_agreement(label: str, pack: FeatureEvidence, terms: TermTable, n_key: int = 2) -> tuple[float, str]:
    """(share of the pack's key enriched terms the label names, contradiction text or "")."""
    key = pack.enriched()["text"].head(n_key).tolist()
    named = _label_terms(label, terms)
    all_texts = terms.terms["text"].to_numpy()
    all_cols = terms.terms["column"].to_numpy()
    named_texts = {all_texts[i] for i in named}
    agree = float(np.mean([t in named_texts for t in key])) if key else float("nan")
    enr = pack.enrichment
    share = dict(zip(enr["text"].tolist(), enr["active_frac"].tolist()))
    by_col: dict[str, list[tuple[str, float]]] = {}
    for text, col, frac in zip(enr["text"].tolist(), enr["column"].tolist(), enr["active_frac"].tolist()):
        by_col.setdefault(col, []).append((text, frac))
    problems = []
    for i in named:
        text, col = all_texts[i], all_cols[i]
        own = share.get(text, 0.0)
        dominant = [(t, f) for t, f in by_col.get(col, []) if t != text and f >= 0.5]
        if own < terms.base_frac[i] and dominant:
            t, f = dominant[0]
            problems.append(f"label says '{text}' but {f:.0%} of active items are '{t}' ({own:.0%} are '{text}')")
    return agree, "; ".join(problems)


def duplicate_flags(labels: pd.Series) -> pd.Series:
    """True where another labeled feature has the same normalised label."""
    norm = labels.map(label_key)
    return norm.duplicated(keep=False) & norm.ne("")


class LabelScorer:
    """Scores labels against held-out items of the store the evidence came from."""

    def __init__(self, builder: EvidenceBuilder, judge: Judge, config: ScoringConfig | None = None):
        self.b, self.judge, self.cfg = builder, judge, config or ScoringConfig()

    def _samples(self, pack: FeatureEvidence, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows, _ = self.b.top_rows(pack.feature)
        held = rows[~np.isin(rows, pack.shown_rows())]
        m = min(self.cfg.n_detect, len(held))
        pos = held[np.linspace(0, len(held) - 1, m).round().astype(int)] if m else held[:0]
        n = self.b.codes.n_rows
        need = self.cfg.n_detect + self.cfg.n_intruder_trials
        cand = rng.choice(n, size=min(n, 4 * need + 64), replace=False)
        inactive = cand[~np.isin(cand, rows)]
        if len(inactive) < need:
            inactive = rng.permutation(np.setdiff1d(np.arange(n), rows))
        neg = inactive[: m + self.cfg.n_intruder_trials]
        strong = rows[: max(4, len(rows) // 2)]
        return pos, neg, strong


    def _plan(self, pack: FeatureEvidence) -> dict:
        """The held-out items one feature is scored on (seeded per feature, so scores are reproducible)."""
        rng = np.random.default_rng([self.cfg.seed, pack.feature])
        pos, neg, strong = self._samples(pack, rng)
        m = min(len(pos), len(neg))
        plan: dict = {"detect": None, "intruder": []}
        if m >= 2:
            items = np.concatenate([pos[:m], neg[:m]])
            perm = rng.permutation(2 * m)
            plan["detect"] = (self.b.describe(items[perm]), np.r_[np.ones(m, bool), np.zeros(m, bool)][perm])
        for t in range(self.cfg.n_intruder_trials if len(strong) >= 4 and len(neg) > m else 0):
            four = rng.choice(strong, 4, replace=False)
            intr = neg[min(m + t, len(neg) - 1)]
            at = int(rng.integers(5))
            plan["intruder"].append((self.b.describe(np.insert(four, at, intr)), at))
        return plan

    def score_one(self, pack: FeatureEvidence, label: str, description: str, plan: dict | None = None) -> dict:
        plan = plan or self._plan(pack)
        out: dict = {"feature": pack.feature, "detection": float("nan"), "intruder": float("nan"), "sail_top2": float("nan")}
        if plan["detect"] is not None:
            texts, truth = plan["detect"]
            judged = self.judge.detect(label, texts)
            out["detection"] = top_m_balanced_accuracy(judged, truth)
            out["sail_top2"] = sail_top2(judged, truth, np.random.default_rng([self.cfg.seed, pack.feature, 1]))
        if plan["intruder"]:
            out["intruder"] = float(np.mean([argmax_accuracy(self.judge.intruder(t), at) for t, at in plan["intruder"]]))
        out["metadata_agreement"], out["contradiction"] = metadata_agreement(label, pack, self.b.terms)
        return out

    def score(self, labels: pd.DataFrame, packs: dict[int, FeatureEvidence], progress: bool = True) -> pd.DataFrame:
        """Scores for every label with status ok (others get NaN), plus the duplicate flag."""
        from tqdm.auto import tqdm

        ok = labels[labels["status"] == OK]
        plans = {int(f): self._plan(packs[int(f)]) for f in ok["feature"]}
        if hasattr(self.judge, "prepare"):  # embed every text once, in big batches
            texts = [t for p in plans.values() for t in (p["detect"][0] if p["detect"] else [])]
            texts += [t for p in plans.values() for trial, _ in p["intruder"] for t in trial]
            self.judge.prepare(texts, list(ok["label"]))
        triples = list(zip(ok["feature"], ok["label"], ok["description"], strict=True))
        rows = [self.score_one(packs[int(f)], label, description, plans[int(f)])
                for f, label, description in tqdm(triples, desc=f"scoring ({self.judge.name})", disable=not progress)]
        scores = pd.DataFrame(rows, columns=["feature", "detection", "intruder", "sail_top2", "metadata_agreement", "contradiction"])
        out = labels[["feature"]].merge(scores, on="feature", how="left")
        out["duplicate"] = False
        out.loc[labels["status"].eq(OK).to_numpy(), "duplicate"] = duplicate_flags(ok["label"]).to_numpy()
        out["contradiction"] = out["contradiction"].fillna("")
        out["judge"] = self.judge.name
        return out
