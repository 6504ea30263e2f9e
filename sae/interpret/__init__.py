"""Feature interpretation: evidence packs, labelers (metadata, LLM), label scores, the one LLM wrapper."""

from sae.interpret.evidence import EvidenceBuilder, EvidenceConfig, FeatureEvidence
from sae.interpret.labelers import Label, Labeler, LLMLabeler, MetadataLabeler
from sae.interpret.labels import LabelSet, label_run, load_labels
from sae.interpret.scoring import EmbeddingJudge, LabelScorer, LLMJudge, ScoringConfig
from sae.llm import LLMClient, LLMConfig, LLMRequest, LLMResult

__all__ = [
    "EmbeddingJudge",
    "EvidenceBuilder",
    "EvidenceConfig",
    "FeatureEvidence",
    "LLMClient",
    "LLMConfig",
    "LLMJudge",
    "LLMLabeler",
    "LLMRequest",
    "LLMResult",
    "Label",
    "LabelScorer",
    "LabelSet",
    "Labeler",
    "MetadataLabeler",
    "ScoringConfig",
    "label_run",
    "load_labels",
]
