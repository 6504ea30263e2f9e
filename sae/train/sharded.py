"""Training batches for data-parallel training: one global batch order, whatever the world size.

Epoch ``e`` is a fixed stream of the training rows: the store's row chunks in a seeded order, each
chunk's rows in a seeded order of their own (``seed``, ``e``, chunk). Global batch ``s`` is rows
``s*B .. (s+1)*B`` of that stream and rank ``r`` of ``w`` takes its ``r``-th slice of ``B / w`` rows. So
the same seed gives the same global batches on 1, 2 or 64 ranks: a run can be resumed at another
world size from a checkpoint that only records the global step, and a 2-rank run matches a 1-rank
run up to floating-point rounding.

Each rank reads only the chunks its slices touch, one or two at a time (memory stays at a couple of
chunks). When ``B / w`` is a multiple of the store's ``chunk_rows`` every rank reads a disjoint set of
whole chunks (its own shard); with smaller slices neighbouring ranks share chunks and each decodes
them. The last partial global batch of an epoch is dropped so every rank always holds ``B / w`` rows.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from sae.errors import SaeError
from sae.store import Store
from sae.train.data import TrainingData


class ShardedData(TrainingData):
    """Rank ``rank``'s slices of the world-size-independent global batches of a store's training rows."""

    def __init__(self, store: Store, rows: slice, batch_size: int, seed: int, shuffle: bool = True, rank: int = 0, world: int = 1):
        if not isinstance(store, Store):
            raise SaeError("data-parallel training streams from a Store (not an in-memory array)")
        if batch_size % world:
            raise SaeError(f"batch_size ({batch_size}) must be divisible by the world size ({world})")
        super().__init__(store, rows, batch_size, seed, memory_budget_gb=0.0, shuffle=shuffle)
        self.rank, self.world = int(rank), int(world)
        self.local = batch_size // world
        chunk = store.chunk_rows
        start, stop = rows.start, rows.stop
        self.ranges = [(max(c * chunk, start), min((c + 1) * chunk, stop)) for c in range(start // chunk, -(-stop // chunk))]
        self.ranges = [r for r in self.ranges if r[1] > r[0]]
        if self.n_rows < batch_size:
            raise SaeError(f"data-parallel training needs at least one full batch: {self.n_rows} training rows < batch_size {batch_size}")

    @property
    def batches_per_epoch(self) -> int:
        return self.n_rows // self.batch_size

    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.ranges))
        return np.random.default_rng([int(self.seed), int(epoch)]).permutation(len(self.ranges))

    def _chunk(self, epoch: int, c: int) -> np.ndarray:
        a, b = self.ranges[c]
        x = self._store().read_embeddings(slice(a, b))
        if self.shuffle:
            x = x[np.random.default_rng([int(self.seed), int(epoch), int(c)]).permutation(b - a)]
        return x

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[torch.Tensor]:
        """This rank's slices of the global batches of ``epoch``, starting after ``skip`` global batches."""
        order = self._order(epoch)
        ends = np.cumsum([self.ranges[c][1] - self.ranges[c][0] for c in order])
        starts = ends - np.array([self.ranges[c][1] - self.ranges[c][0] for c in order])
        cache: dict[int, np.ndarray] = {}
        for s in range(skip, self.batches_per_epoch):
            p = s * self.batch_size + self.rank * self.local
            q = p + self.local
            first = int(np.searchsorted(ends, p, "right"))
            last = int(np.searchsorted(starts, q, "left"))
            for j in [j for j in cache if j < first]:
                del cache[j]
            parts = []
            for j in range(first, last):
                if j not in cache:
                    cache[j] = self._chunk(epoch, int(order[j]))
                lo, hi = max(p, int(starts[j])), min(q, int(ends[j]))
                parts.append(cache[j][lo - starts[j] : hi - starts[j]])
            yield torch.from_numpy(np.ascontiguousarray(np.concatenate(parts)))
