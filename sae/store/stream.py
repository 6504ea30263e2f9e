"""Streaming row batches out of a row-chunked zarr array, sequential or shuffled by chunk.

Reads whole chunks (the unit zarr stores) in a background thread while the consumer works on the
previous block, then slices batches out of memory, so throughput is bounded by chunk decoding, not
by per-batch calls into zarr.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator

import numpy as np

from sae.errors import StoreError

_READ_BYTES = 64 * 2**20  # sequential reads gather whole chunks up to about this many bytes


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
        per_read = max(1, _READ_BYTES // max(1, self.chunk_rows * self._row_bytes()))
        groups, current = [], []
        for r in ranges:  # merge neighbouring chunks into one contiguous read
            if current and (len(current) >= per_read or current[-1][1] != r[0]):
                groups.append(current)
                current = []
            current.append(r)
        return groups + ([current] if current else [])

    def _row_bytes(self) -> int:
        shape = self.array.shape[1:]
        return int(np.prod(shape)) * self.array.dtype.itemsize if shape else self.array.dtype.itemsize

    def _read_group(self, group: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        if not self.shuffle:
            a, b = group[0][0], group[-1][1]
            block = self.array[a:b]
            rows = np.arange(a, b, dtype=np.int64)
        else:
            block = np.concatenate([self.array[a:b] for a, b in group])
            rows = np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in group])
            perm = self.rng.permutation(len(rows))
            block, rows = block[perm], rows[perm]
        if self.dtype is not None and block.dtype != self.dtype:
            block = block.astype(self.dtype)
        return rows, block

    def _blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        groups = self._groups()  # the rng draws happen here, in a fixed order, before any thread starts
        if self.prefetch <= 0:
            for g in groups:
                yield self._read_group(g)
            return
        yield from _prefetched(self._read_group, groups, self.prefetch)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        carry_rows: np.ndarray | None = None
        carry: np.ndarray | None = None
        bs = self.batch_size
        for rows, block in self._blocks():
            if carry is not None:
                rows = np.concatenate([carry_rows, rows])
                block = np.concatenate([carry, block])
                carry_rows = carry = None
            full = (len(rows) // bs) * bs
            for i in range(0, full, bs):
                yield rows[i : i + bs], block[i : i + bs]
            if full < len(rows):
                carry_rows, carry = rows[full:], block[full:]
        if carry is not None and len(carry) and not self.drop_last:
            yield carry_rows, carry


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
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
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
