"""Labelers: turn evidence packs into :class:`Label` records. Two implementations, one interface.

``MetadataLabeler`` (:mod:`sae.interpret.term_labeler`) is offline and deterministic: it names a
feature by the metadata terms and report phrases most of its items share.
``LLMLabeler`` asks an LLM (through :class:`~sae.llm.LLMClient`) with a contrastive prompt.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from sae._io import png_data_url
from sae.errors import SaeError
from sae.interpret.evidence import FeatureEvidence
from sae.interpret.label_types import DEAD, FAILED, OK, UNEXPLAINED, Label
from sae.interpret.prompts import COMPACT_VERSION, LABEL_SCHEMA, LABEL_VERSION, compact_label_messages, label_messages
from sae.interpret.support import support
from sae.interpret.term_labeler import MetadataLabeler, dead_label
from sae.llm import LLMClient, LLMRequest, LLMResult

NUMBER_ONLY = re.compile(r"^\s*(feature|latent|neuron)?[\s_#-]*\d+\s*$", re.IGNORECASE)
"""A label that is only a feature number ("feature 12", "feature_98") says nothing: it is recorded as a failure."""


class Labeler(Protocol):
    """Anything that labels evidence packs. ``id`` names the label version on disk."""

    id: str

    def label_many(self, packs: Sequence[FeatureEvidence], on_label: Callable[[Label], None] | None = None,
                   progress: bool = True) -> list[Label]: ...


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
        if NUMBER_ONLY.match(str(d["label"])):  # small models echo the prompt's "feature N"
            return Label(int(res.key), "", "", 0.0, (), self.id, FAILED, f"the answer names a feature number, not a concept: {d['label']!r}")
        return Label(int(res.key), _clean(d["label"], 80), _clean(d["description"], 600), _confidence(d["confidence"]),
                     tuple(_clean(e, 200) for e in d.get("evidence", [])[:12]), self.id, OK)

    def requests(self, packs: Sequence[FeatureEvidence]) -> list[LLMRequest]:
        return [self.request(p) for p in packs if not p.is_dead]

    def prepare(self, builder) -> None:
        """Keep the evidence's term table: every answer is checked against it (see :meth:`checked`)."""
        self._terms = builder.terms

    def checked(self, label: Label, pack: FeatureEvidence | None) -> Label:
        """The label with the evidence terms it names, their coverage among the active items, and the
        label words that no enriched term and no top item supports (``unsupported``: flagged, not dropped)."""
        terms = getattr(self, "_terms", None)
        if label.status != OK or pack is None or terms is None:
            return label
        named, cols, coverage, unsupported = support(label.label, pack, terms)
        return replace(label, terms=named, term_columns=cols, coverage=coverage, unsupported=unsupported)

    def label_many(self, packs, on_label=None, progress: bool = True) -> list[Label]:
        out: dict[int, Label] = {}
        by_feature = {p.feature: p for p in packs}
        for p in packs:
            special = dead_label(p, self.id)
            if special is not None:
                out[p.feature] = special
                if on_label is not None:
                    on_label(special)

        def landed(res: LLMResult) -> None:
            lab = self._to_label(res)
            lab = self.checked(lab, by_feature.get(lab.feature))
            out[lab.feature] = lab
            if on_label is not None:
                on_label(lab)

        self.client.run(self.requests(packs), on_result=landed, progress=progress, desc="LLM labels")
        return [out[p.feature] for p in packs if p.feature in out]


__all__ = ["DEAD", "FAILED", "OK", "UNEXPLAINED", "LLMLabeler", "Label", "Labeler", "MetadataLabeler"]
