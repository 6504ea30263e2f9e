"""The one in-memory inverted index: for every feature, the rows where it fires and its activations.

``codes.zarr`` stores each feature's posting strongest first. Evidence (top items) reads that order;
search and the audit intersect postings, which needs them ascending by row. One object holds both
views of the same entries (the row-ordered one built on first use), so a run keeps one index in
memory whatever reads it. The contract, one name per order:

- :meth:`Postings.top`: ``(rows, values)`` strongest first (equal values keep row order);
- :meth:`Postings.rows`: rows ascending, and :meth:`Postings.by_row` ``(rows, values)`` ascending.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import scipy.sparse as sp

from sae.codes.reader import Codes, check_feature


class Postings:
    """Per-feature posting lists of one ``codes.zarr``, read into memory once (nnz x 12 bytes)."""

    def __init__(self, ptr: np.ndarray, rows: np.ndarray, values: np.ndarray, n_rows: int):
        self.ptr = np.asarray(ptr, dtype=np.int64)
        self._rows = np.asarray(rows, dtype=np.int64)
        self._values = np.asarray(values, dtype=np.float32)
        self.n_rows = int(n_rows)
        self.n_latents = len(self.ptr) - 1

    @classmethod
    def from_codes(cls, codes: Codes) -> Postings:
        ptr, rows, values = codes.feature_index()
        return cls(ptr, rows, values, codes.n_rows)

    @property
    def counts(self) -> np.ndarray:
        """Active items per feature."""
        return np.diff(self.ptr)

    def check(self, feature: int) -> int:
        """``feature`` as an int, or an error naming the valid range."""
        return check_feature(feature, self.n_latents)

    def top(self, feature: int, top: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Rows where ``feature`` fires and its values, strongest first (``top`` limits the count)."""
        f = self.check(feature)
        a, b = int(self.ptr[f]), int(self.ptr[f + 1])
        b = min(b, a + int(top)) if top is not None else b
        return self._rows[a:b], self._values[a:b]

    @cached_property
    def _row_order(self) -> tuple[np.ndarray, np.ndarray]:
        """Every posting re-sorted by row once, so intersections and lookups are merges."""
        order = np.lexsort((self._rows, self.entry_feature))
        return self._rows[order], self._values[order]

    def rows(self, feature: int) -> np.ndarray:
        """Rows (ascending) where ``feature`` fires; a view."""
        f = self.check(feature)
        return self._row_order[0][self.ptr[f] : self.ptr[f + 1]]

    def by_row(self) -> tuple[np.ndarray, np.ndarray]:
        """All entries ordered by feature, then row: ``(rows, values)``; feature f owns ``ptr[f]:ptr[f+1]``."""
        return self._row_order

    @cached_property
    def entry_feature(self) -> np.ndarray:
        """The feature of every entry (int32)."""
        return np.repeat(np.arange(self.n_latents, dtype=np.int32), self.counts)

    def by_feature_matrix(self) -> sp.csc_matrix:
        """Items x features activations as CSC (the index is the codes in column-major form)."""
        return sp.csc_matrix((self._values, self._rows, self.ptr), shape=(self.n_rows, self.n_latents))

    def __repr__(self) -> str:
        return f"Postings({self.n_latents:,} features, {len(self._rows):,} entries over {self.n_rows:,} rows)"
