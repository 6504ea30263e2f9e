"""The label record every labeler writes, and the statuses it can have."""

from __future__ import annotations

from dataclasses import asdict, dataclass

OK, FAILED, UNEXPLAINED, DEAD = "ok", "failed", "unexplained", "dead"
LIST_FIELDS = ("evidence", "terms", "term_columns", "coverage", "unsupported")
"""The :class:`Label` fields that are sequences (tuples in memory, lists on disk)."""


@dataclass(frozen=True)
class Label:
    """One feature's label, with the labeler that wrote it and how it went.

    ``terms`` are the evidence terms the label names (metadata values, report phrases), with their
    metadata ``term_columns`` and ``coverage``: the share of the feature's active items carrying each.
    ``unsupported`` lists label words no evidence supports (checked for LLM labels).
    """

    feature: int
    label: str
    description: str
    confidence: float
    evidence: tuple[str, ...] = ()
    labeler: str = ""
    status: str = OK
    error: str = ""
    terms: tuple[str, ...] = ()
    term_columns: tuple[str, ...] = ()
    coverage: tuple[float, ...] = ()
    unsupported: tuple[str, ...] = ()

    def record(self) -> dict:
        d = asdict(self)
        for key in LIST_FIELDS:
            d[key] = list(d[key])
        return d
