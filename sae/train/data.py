"""Training data: a store's training rows as seeded, per-epoch shuffled batches.

Small data is loaded once into memory (a fast path that also makes epochs cheap); larger data is
streamed from Zarr chunk by chunk. Both give the same contract: epoch ``e`` of seed ``s`` is a fixed
sequence of batches, so a resumed run can skip exactly the batches it already consumed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from sae.compute import rows_within
from sae.errors import NonFiniteError, SaeError
from sae.store import Store


@dataclass
class Split:
    """Training and held-out row ranges (contiguous: the held-out rows are the tail)."""

    train: slice
    holdout: slice

    @classmethod
    def of(cls, n_rows: int, holdout_frac: float) -> Split:
        n_hold = int(round(n_rows * holdout_frac))
        if n_rows - n_hold <= 0:
            raise SaeError(f"no training rows left: {n_rows} rows with holdout_frac={holdout_frac}")
        return cls(slice(0, n_rows - n_hold), slice(n_rows - n_hold, n_rows))


class TrainingData:
    """Batches of one store's training rows (float32 torch tensors, not yet scaled)."""

    def __init__(self, source: Store | np.ndarray, rows: slice, batch_size: int, seed: int, memory_budget_gb: float, shuffle: bool = True):
        self.source = source
        self.rows = rows
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.memory_budget_gb = memory_budget_gb
        self.n_rows = rows.stop - rows.start
        dim = source.dim if isinstance(source, Store) else source.shape[1]
        self.in_memory = isinstance(source, np.ndarray) or self.n_rows * dim * 4 <= memory_budget_gb * 2**30
        self._x: torch.Tensor | None = None
        if self.in_memory:
            x = source.read_embeddings(rows) if isinstance(source, Store) else np.asarray(source[rows], dtype=np.float32)
            self._x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(self.n_rows / self.batch_size)

    def _store(self) -> Store:
        """The store the streaming path reads (an array source is always held in memory)."""
        assert isinstance(self.source, Store), "only a store source is streamed"
        return self.source

    def _window(self) -> int:
        """Chunks shuffled together: as many as fit a quarter of the memory budget (1..8), so streaming stays bounded."""
        store = self._store()
        chunk_bytes = store.chunk_rows * store.dim * 4
        return int(max(1, min(8, self.memory_budget_gb * 2**30 / 4 / (chunk_bytes * 3))))

    def sample(self, n: int, seed: int) -> np.ndarray:
        """Up to ``n`` training rows chosen at random (for scaling and bias initialisation)."""
        rng = np.random.default_rng(seed)
        take = np.sort(rng.choice(self.n_rows, size=min(n, self.n_rows), replace=False))
        if self._x is not None:
            return self._x[torch.from_numpy(take)].numpy()
        rows = take + self.rows.start
        store = self._store()
        chunk = store.chunk_rows  # one chunk at a time: memory stays at one chunk, not the whole store
        parts = [store.read_embeddings(rows[(rows // chunk) == c]) for c in np.unique(rows // chunk)]
        return np.concatenate(parts)

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[torch.Tensor]:
        """Batches of ``epoch`` (seeded), starting after ``skip`` batches."""
        bs = self.batch_size
        if self._x is not None:
            if not self.shuffle:
                for b in range(skip, self.batches_per_epoch):
                    yield self._x[b * bs : (b + 1) * bs]
                return
            gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            perm = torch.randperm(self.n_rows, generator=gen)
            for b in range(skip, self.batches_per_epoch):
                yield self._x[perm[b * bs : (b + 1) * bs]]
            return
        stream = self._store().iter_batches(bs, shuffle=self.shuffle, seed=self.seed, epoch=epoch, rows=self.rows, shuffle_window=self._window())
        for b, batch in enumerate(stream):
            if b >= skip:
                yield torch.from_numpy(batch)


def check_finite(store: Store, rows: slice, memory_budget_gb: float | None = None) -> None:
    """Refuse to train on non-finite rows (they would poison every weight); names the first ids.

    Reads one chunk (or, within ``memory_budget_gb``, a part of one) at a time."""
    bad: list[int] = []
    step = store.chunk_rows
    if memory_budget_gb is not None:
        step = rows_within(memory_budget_gb, 4 * store.dim * 4, 1, step)
    start, stop = rows.start or 0, store.n_rows if rows.stop is None else rows.stop
    for a in range(start, stop, step):
        x = store.read_embeddings(slice(a, min(stop, a + step)), dtype=store.embeddings.dtype)  # as stored: no float32 copy
        ok = np.isfinite(x).all(axis=1)
        if not ok.all():
            bad.extend((a + np.flatnonzero(~ok))[: 10 - len(bad)].tolist())
            if len(bad) >= 10:
                break
    if bad:
        ids = store.ids()[bad].tolist()
        raise NonFiniteError(f"the store has rows with NaN/Inf embeddings (first ids: {ids}); re-ingest with --drop-nonfinite")
