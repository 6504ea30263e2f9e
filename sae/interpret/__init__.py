"""Feature interpretation: evidence packs, labelers (metadata, LLM), label scores, the one LLM wrapper."""

from sae.interpret.evidence import EvidenceBuilder, EvidenceConfig, FeatureEvidence
from sae.interpret.labelers import Label, Labeler, LLMLabeler, MetadataLabeler
from sae.interpret.labels import LabelSet, label_run, load_labels
from sae.interpret.llm import LLMClient, LLMConfig, LLMRequest, LLMResult
from sae.interpret.scoring import EmbeddingJudge, LabelScorer, LLMJudge, ScoringConfig

__all__ = [
    "EvidenceBuilder", "EvidenceConfig", "FeatureEvidence", "Label", "Labeler", "LLMLabeler", "MetadataLabeler",
    "LabelSet", "label_run", "load_labels", "LLMClient", "LLMConfig", "LLMRequest", "LLMResult",
    "EmbeddingJudge", "LabelScorer", "LLMJudge", "ScoringConfig",
]
