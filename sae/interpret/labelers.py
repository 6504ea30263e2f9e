"""Labelers: turn evidence packs into :class:`Label` records. Two implementations, one interface.

``MetadataLabeler`` is offline and deterministic: it names a feature by its enriched metadata terms.
``LLMLabeler`` asks an LLM (through :class:`~sae.llm.LLMClient`) with a contrastive prompt.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd

from sae._io import png_data_url
from sae.errors import SaeError
from sae.interpret.describe import label_key
from sae.interpret.evidence import FeatureEvidence
from sae.interpret.prompts import COMPACT_VERSION, LABEL_SCHEMA, LABEL_VERSION, compact_label_messages, label_messages
from sae.llm import LLMClient, LLMRequest, LLMResult

OK, FAILED, UNEXPLAINED, DEAD = "ok", "failed", "unexplained", "dead"


@dataclass(frozen=True)
class Label:
    """One feature's label, with the labeler that wrote it and how it went."""

    feature: int
    label: str
    description: str
    confidence: float
    evidence: tuple[str, ...] = ()
    labeler: str = ""
    status: str = OK
    error: str = ""

    def record(self) -> dict:
        d = asdict(self)
        d["evidence"] = list(self.evidence)
        return d


class Labeler(Protocol):
    """Anything that labels evidence packs. ``id`` names the label version on disk."""

    id: str

    def label_many(self, packs: Sequence[FeatureEvidence], on_label: Callable[[Label], None] | None = None,
                   progress: bool = True) -> list[Label]: ...


def _special(pack: FeatureEvidence, labeler: str) -> Label | None:
    if pack.is_dead:
        return Label(pack.feature, "dead feature", "Never fires on this store.", 0.0, (), labeler, DEAD)
    return None


def _term_match(item_terms: pd.Series, terms: Sequence[str]) -> float:
    """Share of items carrying every one of ``terms``."""
    if len(item_terms) == 0:
        return 0.0
    return float(np.mean([set(terms) <= set(t) for t in item_terms]))


@dataclass
class MetadataLabeler:
    """Offline labels from enriched metadata terms: "sagittal orientation, superior region, motion artifact".

    Terms must be significant (q < alpha, lift >= min_lift) and describe at least ``min_share`` of
    the active items; one term per column, strongest (log odds) first. Features that would share a
    label each get the enriched term that best separates them from the rest of their group, up to
    ``max_terms_dedup`` terms; features no metadata term separates keep the shared label (and are
    counted as duplicates: the metadata cannot tell them apart, an LLM looking at images might). Confidence is the share of the
    feature's top items that carry every named term.
    """

    max_terms: int = 3
    min_share: float = 0.5
    max_terms_dedup: int = 5
    id: str = "metadata"
    resumable: bool = False

    def _candidates(self, pack: FeatureEvidence) -> pd.DataFrame:
        """Enriched terms describing >= min_share of the active items (else the single best), one per column, by log odds."""
        enr = pack.enriched()
        frac, lor = enr["active_frac"].to_numpy(), enr["log_odds_ratio"].to_numpy()
        cols = enr["column"].to_numpy(dtype=object)
        idx = np.flatnonzero(frac >= self.min_share)
        if len(idx) == 0:
            idx = np.arange(min(1, len(enr)))
        idx = idx[np.argsort(-lor[idx], kind="stable")]
        _, first = np.unique(cols[idx], return_index=True)
        return enr.iloc[idx[np.sort(first)]]

    def _make(self, pack: FeatureEvidence, chosen: pd.DataFrame | None = None) -> Label:
        special = _special(pack, self.id)
        if special is not None:
            return special
        chosen = self._candidates(pack).head(self.max_terms) if chosen is None else chosen
        if chosen.empty:
            return Label(pack.feature, "unexplained", "No metadata term is over-represented where this feature fires.",
                         0.0, (), self.id, UNEXPLAINED)
        texts = chosen["text"].tolist()
        rows = list(zip(texts, chosen["active_frac"].tolist(), chosen["base_frac"].tolist(), chosen["lift"].tolist(), chosen["q"].tolist()))
        parts = [f"{a:.0%} {t} (vs {b:.0%} overall)" for t, a, b, _, _ in rows]
        desc = f"Fires on {pack.stats['rate']:.1%} of items; among them {', '.join(parts)}."
        evidence = tuple(f"{t}: {a:.0%} vs {b:.0%}, lift {lift:.1f}, q={q:.1g}" for t, a, b, lift, q in rows)
        conf = _term_match(pack.top["terms"], texts)
        return Label(pack.feature, ", ".join(texts), desc, round(conf, 3), evidence, self.id, OK)

    def _contrast(self, group: list[FeatureEvidence], chosen: dict[int, pd.DataFrame]) -> None:
        """Give each member of a duplicate group the enriched term that most separates it from the others."""
        shares = {p.feature: dict(zip(p.enrichment["text"].tolist(), p.enrichment["active_frac"].tolist())) for p in group}
        for p in group:
            used = set(chosen[p.feature]["text"])
            cand = p.enriched()
            cand = cand[~cand["text"].isin(used) & ~cand["column"].isin(chosen[p.feature]["column"])]
            if cand.empty:
                continue
            others = [shares[q.feature] for q in group if q.feature != p.feature]
            cand_texts = cand["text"].tolist()
            gap = cand["active_frac"].to_numpy() - np.mean([[o.get(t, 0.0) for t in cand_texts] for o in others], axis=0)
            best = int(np.argmax(gap))
            if gap[best] > 0.05:
                chosen[p.feature] = pd.concat([chosen[p.feature], cand.iloc[[best]]])

    def label_many(self, packs, on_label=None, progress: bool = True) -> list[Label]:
        by_feature = {p.feature: p for p in packs}
        chosen = {p.feature: self._candidates(p).head(self.max_terms) for p in packs}
        labels = {p.feature: self._make(p, chosen[p.feature]) for p in packs}
        for _ in range(self.max_terms_dedup - self.max_terms):
            keys = pd.Series({f: label_key(lab.label) for f, lab in labels.items() if lab.status == OK}, dtype=object)
            dup = keys[keys.duplicated(keep=False)]
            if dup.empty:
                break
            for _, members in dup.groupby(dup):
                group = [by_feature[f] for f in members.index]
                self._contrast(group, chosen)
                for p in group:
                    labels[p.feature] = self._make(p, chosen[p.feature])
        out = [labels[p.feature] for p in packs]
        if on_label is not None:
            for lab in out:
                on_label(lab)
        return out


def _confidence(value: float) -> float:
    """Confidence in [0, 1]; a percentage (1 < value <= 100), which models often give, is rescaled."""
    value = float(value)
    return float(np.clip(value / 100 if 1 < value <= 100 else value, 0.0, 1.0))


def _clean(text: str, limit: int) -> str:
    return re.sub(r"\s+", " ", str(text)).strip()[:limit]


@dataclass
class LLMLabeler:
    """Labels written by an LLM from a contrastive prompt (see :mod:`sae.interpret.prompts`).

    ``images`` (rows -> uint8 thumbnails) turns on vision: the top items travel as base64 PNGs.
    ``sibling_labels`` (feature -> label, e.g. from the metadata labeler) tells the model what
    related features are already called, so the labels come out distinct.
    """

    client: LLMClient
    domain: str = "medical images"
    images: Callable[[np.ndarray], np.ndarray] | None = None
    n_images: int = 6
    max_items: int = 12
    """Top items shown in the prompt (quantile samples and hard negatives: half as many each)."""
    prompt: str = "contrastive"
    """``contrastive`` (the full evidence, for instruction-tuned models) or ``compact`` (a short
    few-shot prompt over the enriched terms, for small or base local models)."""
    sibling_labels: dict[int, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        model = re.sub(r"[^A-Za-z0-9.]+", "-", str(self.client.config.model)).strip("-")
        version = COMPACT_VERSION if self.prompt == "compact" else LABEL_VERSION
        return f"llm-{model}-{version}{'-vision' if self.images is not None else ''}"

    def request(self, pack: FeatureEvidence) -> LLMRequest:
        sibs = {int(f): self.sibling_labels[int(f)] for f in pack.siblings["feature"] if int(f) in self.sibling_labels}
        if self.prompt == "compact":
            return LLMRequest(pack.feature, compact_label_messages(pack, sibs), LABEL_SCHEMA, COMPACT_VERSION)
        if self.prompt != "contrastive":
            raise SaeError(f"unknown prompt {self.prompt!r}: use 'contrastive' or 'compact'")
        urls = []
        if self.images is not None and len(pack.top):
            urls = [png_data_url(im) for im in self.images(pack.top["row"].to_numpy()[: self.n_images])]
        return LLMRequest(pack.feature, label_messages(pack, self.domain, sibs, urls, self.max_items), LABEL_SCHEMA, LABEL_VERSION)

    def _to_label(self, res: LLMResult) -> Label:
        if not res.ok:
            return Label(int(res.key), "", "", 0.0, (), self.id, FAILED, res.error[:500])
        d = res.answer
        return Label(int(res.key), _clean(d["label"], 80), _clean(d["description"], 600), _confidence(d["confidence"]),
                     tuple(_clean(e, 200) for e in d.get("evidence", [])[:12]), self.id, OK)

    def requests(self, packs: Sequence[FeatureEvidence]) -> list[LLMRequest]:
        return [self.request(p) for p in packs if not p.is_dead]

    def label_many(self, packs, on_label=None, progress: bool = True) -> list[Label]:
        out: dict[int, Label] = {}
        for p in packs:
            special = _special(p, self.id)
            if special is not None:
                out[p.feature] = special
                if on_label is not None:
                    on_label(special)

        def landed(res: LLMResult) -> None:
            lab = self._to_label(res)
            out[lab.feature] = lab
            if on_label is not None:
                on_label(lab)

        self.client.run(self.requests(packs), on_result=landed, progress=progress, desc="LLM labels")
        return [out[p.feature] for p in packs if p.feature in out]
