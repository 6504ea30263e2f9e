"""Streaming covers every row exactly once per epoch, in any mode (property-based)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sae.errors import StoreError
from sae.store import Store


def _store(n: int, chunk_rows: int) -> Store:
    url = f"memory://stream-{uuid.uuid4().hex}/s.zarr"
    x = np.repeat(np.arange(n, dtype=np.float32)[:, None], 3, axis=1)  # row r holds the value r
    with Store.create(url, 3, chunk_rows=chunk_rows) as s:
        if n:
            s.append(x)
    return Store.open(url)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(0, 700),
    chunk_rows=st.integers(1, 130),
    batch=st.integers(1, 200),
    shuffle=st.booleans(),
    seed=st.integers(0, 3),
    window=st.integers(1, 5),
    world=st.integers(1, 3),
)
def test_every_row_once_per_epoch(n, chunk_rows, batch, shuffle, seed, window, world):
    store = _store(n, chunk_rows)
    seen = []
    for rank in range(world):
        for rows, x in store.iter_batches(batch, shuffle=shuffle, seed=seed, shuffle_window=window, shard=(rank, world), with_rows=True):
            assert len(rows) == len(x) <= batch
            np.testing.assert_array_equal(x[:, 0], rows)  # the batch holds exactly the rows it claims
            seen.append(rows)
    seen = np.concatenate(seen) if seen else np.zeros(0, int)
    assert sorted(seen.tolist()) == list(range(n))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 400), batch=st.integers(1, 64), start=st.integers(0, 400), length=st.integers(0, 400))
def test_row_ranges_and_drop_last(n, batch, start, length):
    store = _store(n, 32)
    sel = slice(start, start + length)
    rows = np.concatenate([r for r, _ in store.iter_batches(batch, rows=sel, with_rows=True)] or [np.zeros(0, int)])
    assert rows.tolist() == list(range(n))[sel]
    dropped = [len(b) for b in store.iter_batches(batch, rows=sel, drop_last=True)]
    assert all(b == batch for b in dropped) and sum(dropped) == (len(rows) // batch) * batch


def test_shuffle_is_seeded_and_changes_per_epoch():
    store = _store(500, 50)
    order = lambda **kw: np.concatenate([r for r, _ in store.iter_batches(64, shuffle=True, with_rows=True, **kw)])
    np.testing.assert_array_equal(order(seed=1, epoch=0), order(seed=1, epoch=0))
    assert not np.array_equal(order(seed=1, epoch=0), order(seed=1, epoch=1))
    assert not np.array_equal(order(seed=1, epoch=0), np.arange(500))
    seq = np.concatenate([r for r, _ in store.iter_batches(64, with_rows=True)])
    np.testing.assert_array_equal(seq, np.arange(500))


def test_stream_dtype_and_errors():
    store = _store(10, 4)
    assert next(iter(store.iter_batches(4))).dtype == np.float32
    assert next(iter(store.iter_batches(4, dtype=np.float64))).dtype == np.float64
    with pytest.raises(StoreError, match="batch_size"):
        list(store.iter_batches(0))
    with pytest.raises(StoreError, match="shard"):
        list(store.iter_batches(4, shard=(2, 2)))
