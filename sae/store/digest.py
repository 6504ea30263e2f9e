"""The store's fingerprint: a hash chain over every committed batch, recorded by every derived artifact.

A new store's fingerprint starts from its width and dtype; each commit folds in the digest of each
batch it publishes. Scheme 2 (``fingerprint_scheme`` in the attributes) digests a batch's ids and
embedding bytes exactly as scheme 1 did, then its metadata columns (sorted by name, with their kinds)
and previews, so re-ingesting the same embeddings with corrected metadata gives another fingerprint
and every reader check (``run.verify()``, stale codes and labels) refuses artifacts made before. A
batch without metadata or previews digests as in scheme 1. Fingerprints are recorded, never
recomputed, so a store written under scheme 1 keeps its fingerprint until it is appended to.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from sae.store.schema import META, PREVIEW_IMAGES, PREVIEW_TEXT
from sae.store.validate import Batch

FINGERPRINT_SCHEME = 2


def initial_fingerprint(dim: int, dtype: str) -> str:
    """The fingerprint of an empty store of this width and dtype."""
    return hashlib.blake2b(f"{dim}:{dtype}".encode(), digest_size=16).hexdigest()


def chain(fingerprint: str, digests: list[bytes]) -> str:
    """The fingerprint after committing batches with these digests, in order."""
    for digest in digests:
        fingerprint = hashlib.blake2b(bytes.fromhex(fingerprint) + digest, digest_size=16).hexdigest()
    return fingerprint


def _update(digest: Any, label: str, values: np.ndarray) -> None:
    """Fold one labelled array into ``digest``: text as JSON (unambiguous), numbers as dtype + shape + bytes."""
    values = np.asarray(values)
    digest.update(b"\x00" + label.encode() + b"\x00")
    if values.dtype.kind in "OUT":
        digest.update(json.dumps([str(v) for v in values.tolist()], ensure_ascii=False).encode("utf-8", "surrogatepass"))
    else:
        digest.update(f"{values.dtype.str}{values.shape}".encode())
        digest.update(np.ascontiguousarray(values).data)


def batch_digest(batch: Batch) -> bytes:
    """Digest of one batch: ids, embedding bytes, then (scheme 2) metadata and previews.

    Runs in a worker thread while the batch is written (hashlib releases the GIL on large buffers).
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update("\x00".join(batch.ids.tolist()).encode())
    digest.update(batch.embeddings.data)
    for name in sorted(batch.meta):
        _update(digest, f"{META}/{name}:{batch.kinds[name]}", batch.meta[name])
    if batch.images is not None:
        _update(digest, PREVIEW_IMAGES, batch.images)
    if batch.texts is not None:
        _update(digest, PREVIEW_TEXT, batch.texts)
    return digest.digest()
