"""Exceptions with actionable messages, shared by every module.

Every error a user can trigger with bad input is a subclass of :class:`SaeError` (itself a
``ValueError``), so callers can catch one type while tests can assert the precise one.
"""

from __future__ import annotations


class SaeError(ValueError):
    """Base class for every user-facing error raised by sae-workbench."""


class StoreError(SaeError):
    """A workspace store is missing, malformed or used incorrectly."""


class SchemaVersionError(StoreError):
    """The store was written by a newer sae-workbench than the one reading it."""


class IncompleteStoreError(StoreError):
    """The store was never committed (an interrupted create)."""


class NonFiniteError(StoreError):
    """Embeddings contain NaN or Inf values."""


class DimensionMismatchError(StoreError):
    """Embedding width differs from the store's (or the model's) dimension."""


class DuplicateIdError(StoreError):
    """Row ids must be unique across the whole store."""


class MetadataError(StoreError):
    """Metadata table does not line up with the embeddings or has unsupported values."""


class UnknownColumnError(MetadataError, KeyError):
    """A metadata column was requested that the store does not have."""

    def __str__(self) -> str:  # KeyError would repr() the message; keep it readable
        return str(self.args[0]) if self.args else ""


class StaleArtifactError(SaeError):
    """A derived artifact was computed from a different version of the store."""


def preview_list(values, limit: int = 5) -> str:
    """Render the first ``limit`` values of a sequence for an error message."""
    values = list(values)
    shown = ", ".join(repr(v) for v in values[:limit])
    more = f" ... (+{len(values) - limit} more)" if len(values) > limit else ""
    return f"[{shown}{more}]"


class LLMError(SaeError):
    """An LLM call failed for good (after retries) or its configuration is unusable."""


class LLMUnreachableError(LLMError):
    """The LLM server could not be reached at all (wrong base URL, server down, no network)."""


class LabelError(SaeError):
    """Labels are missing, refer to unknown features, or were made for another SAE."""


class LockedError(SaeError):
    """Another process holds the lock of a store or run (it is being written)."""


class UnsafeNameError(SaeError):
    """A user-given name is not one plain path component (it would reach outside its folder)."""
