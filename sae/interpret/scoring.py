"""How much to trust a label, measured with chance-corrected tests.

- detection: a judge sees only the label and 2m held-out items (m where the feature fires, m where
  it does not, none of them shown to the labeler) and picks the m that belong. Balanced accuracy,
  chance 0.5; ties are broken in expectation, so a judge that cannot tell scores exactly 0.5.
- detection_sibling: the same m active items against up to m items where the nearest sibling features
  fire strongly and this one does not (none shown to the labeler). Balanced accuracy, chance 0.5, NaN
  with fewer than 2 such items. It tells neighbouring features apart: a label naming only what a
  feature shares with its siblings scores ~0.5 here however well it detects against random items.
  An LLM judge is asked about them only with ``ScoringConfig.llm_sibling_detection`` (NaN otherwise).
- intruder: 4 items where the feature fires strongly and 1 where it does not; the judge, without the
  label, picks the odd one out. Accuracy, chance 0.2. It measures the feature's coherence.
- metadata agreement: the share of the feature's key enriched terms that the label names, and a
  contradiction flag when the label names a value that is under-represented among the active items
  while another value of the same column dominates.
- duplicate rate: the share of labeled features whose normalised label another feature also has.
- collision rate: the same with near-identical labels counted too (:func:`collision_flags`).
- sail_top2: SAIL's lenient check on the same judgements (the active item ranked in the top 2 of 5,
  chance 0.4), reported so the two protocols can be compared on the same labels.

Judges: :class:`EmbeddingJudge` (offline, MiniLM over the items' metadata descriptions) and
:class:`LLMJudge` (the shared LLM wrapper).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from sae.interpret.describe import TermTable, label_key, normalize_label
from sae.interpret.evidence import EvidenceBuilder, FeatureEvidence
from sae.interpret.labelers import OK
from sae.interpret.prompts import DETECT_SCHEMA, DETECT_VERSION, INTRUDER_SCHEMA, INTRUDER_VERSION, detect_messages, intruder_messages
from sae.interpret.support import agreement
from sae.llm import LLMClient, LLMRequest


@dataclass(frozen=True)
class ScoringConfig:
    n_detect: int = 10
    """Held-out items per side for detection (m active + m inactive)."""
    n_intruder_trials: int = 5
    seed: int = 0
    sibling_pool: int = 100
    """Strongest activations of each sibling feature the sibling distractors are drawn from."""
    collision_threshold: float = 0.9
    """MiniLM cosine at or above which two words count as the same word in :func:`collision_flags`."""
    llm_sibling_detection: bool = False
    """Also ask an LLM judge (one with a ``client``) about the sibling distractors: one more call per feature."""


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

    def __init__(self, encoder=None) -> None:
        if encoder is None:
            from sae.encoders import MiniLMEncoder

            encoder = MiniLMEncoder()
        self.encoder = encoder
        self._cache: dict[str, np.ndarray] = {}
        self._label_mean: np.ndarray | None = None

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
        ref = self._label_mean
        return e @ self.embed([label])[0] - (e @ ref if ref is not None else 0.0)

    @contextmanager
    def preserved(self) -> Iterator[EmbeddingJudge]:
        """Scoring a baseline (other labels) re-centres the judge; this puts the centre back afterwards."""
        saved = self._label_mean
        try:
            yield self
        finally:
            self._label_mean = saved

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


def metadata_agreement(label: str, pack: FeatureEvidence, terms: TermTable, n_key: int = 2) -> tuple[float, str]:
    """(share of the pack's key enriched terms the label names, contradiction text or ""); see :mod:`sae.interpret.support`."""
    return agreement(label, pack, terms, n_key)


def duplicate_flags(labels: pd.Series) -> pd.Series:
    """True where another labeled feature has the same normalised label."""
    norm = labels.map(label_key)
    return norm.duplicated(keep=False) & norm.ne("")


def _singular(word: str) -> str:
    """A plural folded to its singular by spelling (effusions -> effusion, opacities -> opacity, masses -> mass)."""
    if len(word) > 4 and word.endswith(("ies", "sses")):
        return word[:-3] + "y" if word.endswith("ies") else word[:-2]
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")) else word


def collision_flags(labels: pd.Series, embed: Callable[[list[str]], np.ndarray], threshold: float = 0.9) -> pd.Series:
    """True where another label is the same (:func:`duplicate_flags`) or nearly the same.

    Nearly the same: the same words once plurals are folded ("pleural effusions") or spaces dropped
    ("x ray" / "xray"), or the same number of words of which all but at most two are shared (one for a
    one- or two-word label) and each of the others is a word that ``embed`` puts at cosine >= ``threshold``
    from its counterpart (a spelling variant: colour/color, sagital/sagittal). Words with digits must match
    exactly. A label that adds or drops a term never collides with the shorter one.

    The cosine is of the differing words, not of whole labels: MiniLM puts labels differing in one telling word
    close ("right-sided pleural effusion with adjacent atelectasis" / "left-sided ...": 0.994; demo term lists
    swapping high/low: 0.999), so no whole-label threshold separates a variant from another label. Word to word,
    distinct words stay below 0.9 (monday/tuesday 0.874, preoperative/postoperative 0.866, t1/t2 0.827) and
    spelling variants above (colour/color 0.974, sagital/sagittal 0.943, tumour/tumor 0.911): hence 0.9.
    Synonyms ("enlarged heart" / "cardiomegaly": 0.51) are not caught.
    """
    words = [tuple(_singular(w) for w in normalize_label(x).split()) for x in labels]
    out = duplicate_flags(labels).to_numpy(copy=True)
    for keys in ([" ".join(sorted(w)) for w in words], ["".join(w) for w in words]):
        k = pd.Series(keys, dtype=object)
        out |= (k.duplicated(keep=False) & k.ne("")).to_numpy()
    vocab = sorted({t for w in words for t in w})
    index = {t: i for i, t in enumerate(vocab)}
    plain = [i for i, t in enumerate(vocab) if not any(c.isdigit() for c in t)]
    vecs = np.asarray(embed([vocab[i] for i in plain]), dtype=np.float32) if plain else np.zeros((0, 1), np.float32)
    unit = np.zeros((len(vocab), vecs.shape[1]), np.float32)  # words with digits stay zero: never close to another word
    unit[plain] = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    close = lambda a, b: (unit[a] @ unit[b].T >= threshold) | (a[:, None] == b[None, :])
    buckets: dict[tuple, list[tuple[int, list[int]]]] = defaultdict(list)  # (length, shared words) -> (label, the other words)
    for i, w in enumerate(words):
        srt = sorted(w)
        for d in [1] if len(srt) == 1 else range(1, min(2, len(srt) - 1) + 1):
            for drop in itertools.combinations(range(len(srt)), d):
                rest = tuple(t for j, t in enumerate(srt) if j not in drop)
                buckets[(len(srt), rest)].append((i, [index[srt[j]] for j in drop]))
    for members in (m for m in buckets.values() if len(m) > 1):
        who, other = np.array([m[0] for m in members]), np.array([m[1] for m in members])
        c = [[close(other[:, a], other[:, b]) for b in range(other.shape[1])] for a in range(other.shape[1])]
        match = c[0][0] if other.shape[1] == 1 else (c[0][0] & c[1][1]) | (c[0][1] & c[1][0])
        match &= who[:, None] != who[None, :]
        out[who[match.any(axis=1)]] = True
    return pd.Series(out, index=labels.index)


class LabelScorer:
    """Scores labels against held-out items of the store the evidence came from."""

    def __init__(self, builder: EvidenceBuilder, judge: Judge, config: ScoringConfig | None = None,
                 embed: Callable[[list[str]], np.ndarray] | None = None):
        """``embed``: the text embedding the collision flags use (default the judge's, else MiniLM's)."""
        self.b, self.judge, self.cfg = builder, judge, config or ScoringConfig()
        self._embed = embed or getattr(judge, "embed", None)
        self._plans: dict[int, dict] = {}
        self._ask_siblings = self.cfg.llm_sibling_detection or getattr(judge, "client", None) is None

    def embed(self, texts: list[str]) -> np.ndarray:
        if self._embed is None:  # an LLM judge: collisions are still measured in MiniLM space
            self._embed = EmbeddingJudge().embed
        return self._embed(texts)

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

    def _sibling_negatives(self, pack: FeatureEvidence, rows: np.ndarray, n: int) -> np.ndarray:
        """Up to ``n`` rows among the strongest activations of the pack's siblings (nearest first, taken in
        turn) where this feature does not fire, neither shown to the labeler nor the pack's hard negatives."""
        exclude = np.concatenate([rows, pack.shown_rows(), np.asarray(pack.negatives["row"], np.int64)])
        rng = np.random.default_rng([self.cfg.seed, pack.feature, 2])
        pools = []
        for g in pack.siblings["feature"]:
            cand, _ = self.b.top_rows(int(g), top=self.cfg.sibling_pool)
            pools.append(rng.permutation(cand[~np.isin(cand, exclude)]).tolist())
        turns = [p[i] for i in range(max(map(len, pools), default=0)) for p in pools if i < len(p)]
        return np.asarray(list(dict.fromkeys(turns))[:n], dtype=np.int64)

    def _plan(self, pack: FeatureEvidence) -> dict:
        """The held-out items one feature is scored on (seeded per feature, so scores are reproducible)."""
        rng = np.random.default_rng([self.cfg.seed, pack.feature])
        pos, neg, strong = self._samples(pack, rng)
        m = min(len(pos), len(neg))
        plan: dict = {"detect": None, "detect_sibling": None, "intruder": []}
        if m >= 2:
            items = np.concatenate([pos[:m], neg[:m]])
            perm = rng.permutation(2 * m)
            plan["detect"] = (self.b.describe(items[perm]), np.r_[np.ones(m, bool), np.zeros(m, bool)][perm])
            hard = self._sibling_negatives(pack, self.b.top_rows(pack.feature)[0], m)
            if len(hard) >= 2:
                items = np.concatenate([pos[:m], hard])
                perm = np.random.default_rng([self.cfg.seed, pack.feature, 3]).permutation(len(items))
                plan["detect_sibling"] = (self.b.describe(items[perm]), np.r_[np.ones(m, bool), np.zeros(len(hard), bool)][perm])
        for t in range(self.cfg.n_intruder_trials if len(strong) >= 4 and len(neg) > m else 0):
            four = rng.choice(strong, 4, replace=False)
            intr = neg[min(m + t, len(neg) - 1)]
            at = int(rng.integers(5))
            plan["intruder"].append((self.b.describe(np.insert(four, at, intr)), at))
        return plan

    def plan(self, pack: FeatureEvidence) -> dict:
        """The held-out items ``pack`` is scored on, made once per feature (every baseline reuses them)."""
        if pack.feature not in self._plans:
            self._plans[pack.feature] = self._plan(pack)
        return self._plans[pack.feature]

    def prepare(self, plans: Sequence[dict], labels: Sequence[str]) -> None:
        """Hand every text of ``plans`` to the judge at once (when it batches, as the MiniLM judge does)."""
        if hasattr(self.judge, "prepare"):
            texts = [t for p in plans for key in ("detect", "detect_sibling") if p.get(key) for t in p[key][0]]
            texts += [t for p in plans for trial, _ in p["intruder"] for t in trial]
            self.judge.prepare(texts, list(labels))

    def detection(self, pack: FeatureEvidence, label: str, plan: dict | None = None) -> dict:
        """detection, detection_sibling and sail_top2 of ``label`` on the feature's held-out items."""
        plan = plan or self.plan(pack)
        out = {"detection": float("nan"), "detection_sibling": float("nan"), "sail_top2": float("nan")}
        if plan["detect"] is not None:
            texts, truth = plan["detect"]
            judged = self.judge.detect(label, texts)
            out["detection"] = top_m_balanced_accuracy(judged, truth)
            out["sail_top2"] = sail_top2(judged, truth, np.random.default_rng([self.cfg.seed, pack.feature, 1]))
        if plan.get("detect_sibling") is not None and self._ask_siblings:
            texts, truth = plan["detect_sibling"]
            out["detection_sibling"] = top_m_balanced_accuracy(self.judge.detect(label, texts), truth)
        return out

    def score_one(self, pack: FeatureEvidence, label: str, description: str, plan: dict | None = None) -> dict:
        plan = plan or self.plan(pack)
        out: dict = {"feature": pack.feature, "intruder": float("nan"), **self.detection(pack, label, plan)}
        if plan["intruder"]:
            out["intruder"] = float(np.mean([argmax_accuracy(self.judge.intruder(t), at) for t, at in plan["intruder"]]))
        out["metadata_agreement"], out["contradiction"] = metadata_agreement(label, pack, self.b.terms)
        return out

    def score(self, labels: pd.DataFrame, packs: dict[int, FeatureEvidence], progress: bool = True) -> pd.DataFrame:
        """Scores for every label with status ok (others get NaN), plus the duplicate and collision flags."""
        from sae._progress import tqdm

        ok = labels[labels["status"] == OK]
        plans = {int(f): self.plan(packs[int(f)]) for f in ok["feature"]}
        self.prepare(list(plans.values()), ok["label"].tolist())  # embed every text once, in big batches
        triples = list(zip(ok["feature"], ok["label"], ok["description"], strict=True))
        rows = [self.score_one(packs[int(f)], label, description, plans[int(f)])
                for f, label, description in tqdm(triples, desc=f"scoring ({self.judge.name})", disable=not progress)]
        scores = pd.DataFrame(rows, columns=["feature", "detection", "detection_sibling", "intruder", "sail_top2", "metadata_agreement",
                                             "contradiction"])
        out = labels[["feature"]].merge(scores, on="feature", how="left")
        out["duplicate"] = out["collision"] = False
        is_ok = labels["status"].eq(OK).to_numpy()
        out.loc[is_ok, "duplicate"] = duplicate_flags(ok["label"]).to_numpy()
        out.loc[is_ok, "collision"] = collision_flags(ok["label"], self.embed, self.cfg.collision_threshold).to_numpy()
        out["contradiction"] = out["contradiction"].fillna("")
        out["judge"] = self.judge.name
        return out
