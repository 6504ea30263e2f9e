"""Quality-failure audit: the concepts that explain failures, validated failure slices, look-alike queues, a concept map."""

from sae.audit.enrichment import concept_enrichment, newcombe, wilson
from sae.audit.report import AuditReport, audit
from sae.audit.signal import FailureSignal, FailureSignalError
from sae.audit.slices import AuditConfig, Slice

__all__ = [
           "AuditConfig",
           "AuditReport",
           "FailureSignal",
           "FailureSignalError",
           "Slice",
           "audit",
           "concept_enrichment",
           "newcombe",
           "wilson",
]
