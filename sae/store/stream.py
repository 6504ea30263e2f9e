"""Streaming row batches out of a row-chunked zarr array, sequential or shuffled by chunk.

Reads whole chunks (the unit zarr stores) in a background thread while the consumer works on the
previous block, then slices batches out of memory, so throughput is bounded by chunk decoding, not
by per-batch calls into zarr.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from sae.errors import StoreError

READ_BYTES = 64 * 2**20
"""Sequential reads gather whole chunks up to about this many bytes."""


def read_bytes_within(memory_budget_gb: float) -> int:
    """The read size within a memory budget: a read, its prefetched neighbours and their float32 copies
    take about eight times it."""
    return int(min(READ_BYTES, memory_budget_gb * 2**30 / 8))


class BatchStream:
    """Iterator of ``(row_numbers, batch)``; every selected row appears exactly once per epoch."""

    def __init__(
        self,
        array,
        *,
        n_rows: int,
        chunk_rows: int,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
        rows: slice | None = None,
        shard: tuple[int, int] | None = None,
        drop_last: bool = False,
        dtype=np.float32,
        shuffle_window: int = 4,
        prefetch: int = 2,
        read_bytes: int = READ_BYTES,
    ):
        if batch_size <= 0:
            raise StoreError(f"batch_size must be positive, got {batch_size}")
        if shard is not None and not (0 <= shard[0] < shard[1]):
            raise StoreError(f"shard must be (rank, world) with 0 <= rank < world, got {shard}")
        self.array = array
        self.start, self.stop = _bounds(rows, n_rows)
        self.chunk_rows = chunk_rows
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.rng = np.random.default_rng([int(seed), int(epoch)])
        self.shard = shard
        self.drop_last = drop_last
        self.dtype = np.dtype(dtype) if dtype is not None else None
        self.shuffle_window = max(1, int(shuffle_window))
        self.prefetch = int(prefetch)
        self.read_bytes = max(1, int(read_bytes))
        """Sequential reads merge neighbouring chunks up to about this many bytes (a memory budget lowers it)."""

    def chunk_ranges(self) -> list[tuple[int, int]]:
        """Row ranges of the chunks intersecting the selection, after sharding."""
        first = self.start // self.chunk_rows
        last = -(-self.stop // self.chunk_rows)
        ranges = [
            (max(c * self.chunk_rows, self.start), min((c + 1) * self.chunk_rows, self.stop))
            for c in range(first, last)
        ]
        ranges = [r for r in ranges if r[1] > r[0]]
        if self.shard is not None:
            rank, world = self.shard
            ranges = ranges[rank::world]
        return ranges

    def n_selected(self) -> int:
        return sum(b - a for a, b in self.chunk_ranges())

    def __len__(self) -> int:
        n = self.n_selected()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _groups(self) -> list[list[tuple[int, int]]]:
        ranges = self.chunk_ranges()
        if self.shuffle:
            order = self.rng.permutation(len(ranges))
            ranges = [ranges[i] for i in order]
            return [ranges[i : i + self.shuffle_window] for i in range(0, len(ranges), self.shuffle_window)]
        per_read = max(1, self.read_bytes // max(1, self.chunk_rows * self._row_bytes()))
        groups: list[list[tuple[int, int]]] = []
        current: list[tuple[int, int]] = []
        for r in ranges:  # merge neighbouring chunks into one contiguous read
            if current and (len(current) >= per_read or current[-1][1] != r[0]):
                groups.append(current)
                current = []
            current.append(r)
        return groups + ([current] if current else [])

    def _row_bytes(self) -> int:
        shape = self.array.shape[1:]
        return int(np.prod(shape)) * self.array.dtype.itemsize if shape else self.array.dtype.itemsize

    def _read_sequential(self, group: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray, None]:
        """Rows and the block (stored dtype) of one contiguous run of chunks."""
        a, b = group[0][0], group[-1][1]
        return np.arange(a, b, dtype=np.int64), self.array[a:b], None

    def _read_shuffled(self, group: list[tuple[int, int]], order: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows and block of a window of (non-adjacent) chunks, with the pre-drawn order to take them in."""
        block = np.concatenate([self.array[a:b] for a, b in group])
        rows = np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in group])
        return rows, block, order

    def _blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        groups = self._groups()  # the rng draws happen here, in a fixed order, before any thread starts
        reads: list[Any]  # chunk groups, with their permutations when shuffling
        read: Callable[[Any], tuple[np.ndarray, np.ndarray, np.ndarray | None]]
        if self.shuffle:  # draw every permutation up front too, so results never depend on thread timing
            reads = [(g, self.rng.permutation(sum(b - a for a, b in g))) for g in groups]
            read = lambda item: self._read_shuffled(*item)
        else:
            reads, read = groups, self._read_sequential
        if self.prefetch <= 0:
            for item in reads:
                yield read(item)
            return
        yield from _prefetched(read, reads, self.prefetch)

    def _cast(self, x: np.ndarray) -> np.ndarray:
        # batch-sized casts stay in cache; casting whole 64 MiB blocks at once is ~2x slower
        return x.astype(self.dtype) if self.dtype is not None and x.dtype != self.dtype else x

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        bs = self.batch_size
        carry_rows: list[np.ndarray] = []
        carry: list[np.ndarray] = []
        n_carry = 0
        for rows, block, order in self._blocks():
            take = _taker(rows, block, order)
            pos = 0
            if n_carry:  # complete the batch left over from the previous block
                need = bs - n_carry
                r, x = take(0, need)
                carry_rows.append(r)
                carry.append(x)
                n_carry += len(r)
                pos = len(r)
                if n_carry < bs:
                    continue
                yield np.concatenate(carry_rows), self._cast(np.concatenate(carry))
                carry_rows, carry, n_carry = [], [], 0
            n = len(rows)
            while pos + bs <= n:
                r, x = take(pos, pos + bs)
                yield r, self._cast(x)
                pos += bs
            if pos < n:
                r, x = take(pos, n)
                carry_rows, carry, n_carry = [r], [np.array(x)], len(r)
        if n_carry and not self.drop_last:
            yield np.concatenate(carry_rows), self._cast(np.concatenate(carry))


def _taker(
    rows: np.ndarray, block: np.ndarray, order: np.ndarray | None
) -> Callable[[int, int], tuple[np.ndarray, np.ndarray]]:
    """``take(i, j)``: the i-th to j-th rows of a block (row numbers and values), in stored order or through ``order``."""
    if order is None:
        return lambda i, j: (rows[i:j], block[i:j])
    return lambda i, j: (rows[order[i:j]], block[order[i:j]])


def _bounds(rows: slice | None, n_rows: int) -> tuple[int, int]:
    if rows is None:
        return 0, n_rows
    if not isinstance(rows, slice) or rows.step not in (None, 1):
        raise StoreError("rows must be a contiguous slice (step 1) for streaming")
    start, stop, _ = rows.indices(n_rows)
    return start, max(start, stop)


def _prefetched(read, groups, depth: int) -> Iterator:
    """Run ``read(group)`` for each group in a background thread, ``depth`` results ahead."""
    out: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    sentinel = object()

    def worker() -> None:
        try:
            for g in groups:
                if stop.is_set():
                    return
                out.put(read(g))
            out.put(sentinel)
        except BaseException as exc:
            out.put(exc)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        while True:
            item = out.get()
            if item is sentinel:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a worker waiting on a full queue
            try:
                out.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)
