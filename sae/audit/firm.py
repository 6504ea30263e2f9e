"""The audit's view of a concept index: a concept *shows* on an item only at a firm activation.

Why. A TopK SAE fills its ``k`` slots on every item, so when an item carries fewer concepts than
``k`` the remaining slots go to features at a small fraction of their usual strength. Counting those
weak activations as "the item shows the concept" makes every rule broad: on planted data with k = 16, a
pair rule's members were 4.7x the planted pair's rows, its extra members fired at a median ratio of 0.10
(vs 0.60 inside the pair) and failed at the base rate, so the slice's failing-member precision fell to 0.6.
The audit therefore reads a feature as present at ``ratio >= min_ratio`` (the activation over the
feature's own 90th percentile, as everywhere in the index), and everything it derives (enrichment,
clusters, rules, members, validation, look-alikes) uses this one reading. The search and the map keep
every activation (ranking weighs weak ones little anyway).
"""

from __future__ import annotations

import numpy as np

from sae.search.index import ConceptIndex


class FirmIndex(ConceptIndex):
    """A :class:`ConceptIndex` whose features fire only where their ratio is at least ``min_ratio``.

    It shares the postings of the index it is made from (no copy of the codes); ``active_rows``,
    ``count_active`` (through ``_kept_entries``), ``posting`` and ``ratio_at`` (hence ``presence_at`` and the scores of
    :meth:`search`) see only the firm activations."""

    min_ratio: float
    base: ConceptIndex
    _firm: np.ndarray
    """Per posting entry (the base index's order): whether it is firm."""
    _active: dict[int, np.ndarray]

    @classmethod
    def view(cls, index: ConceptIndex, min_ratio: float) -> ConceptIndex:
        """``index`` itself when ``min_ratio`` is 0 (every activation counts), else its firm view."""
        if min_ratio <= 0:
            return index
        if isinstance(index, FirmIndex):
            if index.min_ratio == float(min_ratio):
                return index
            index = index.base
        firm = cls.__new__(cls)
        firm.__dict__.update(index.__dict__)
        firm.base, firm.min_ratio = index, float(min_ratio)
        firm._firm = index._ratio >= np.float32(firm.min_ratio)
        firm._active = {}
        return firm

    def active_rows(self, feature: int) -> np.ndarray:
        """Rows (ascending) where the feature fires firmly."""
        f = self._check(feature)
        if f not in self._active:
            a, b = self._ptr[f], self._ptr[f + 1]
            self._active[f] = self._rows[a:b][self._firm[a:b]]
        return self._active[f]

    def posting(self, feature: int) -> tuple[np.ndarray, np.ndarray]:
        rows, presence = self.base.posting(feature)
        keep = presence >= np.float32(min(self.min_ratio, 1.0))
        return rows[keep], presence[keep]

    def _kept_entries(self) -> np.ndarray:
        """Only the firm entries count (:meth:`ConceptIndex.count_active` reads this)."""
        return self._firm

    def ratio_at(self, feature: int, rows: np.ndarray, rows_sorted: bool = False) -> np.ndarray:
        """The base ratio where it is firm, 0 elsewhere."""
        r = self.base.ratio_at(feature, rows, rows_sorted)
        return np.where(r >= np.float32(self.min_ratio), r, np.float32(0.0)).astype(np.float32)
