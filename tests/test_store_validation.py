"""Every validation error is raised with an actionable message, and nothing is half-written."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from sae.errors import (
    DimensionMismatchError,
    DuplicateIdError,
    IncompleteStoreError,
    MetadataError,
    NonFiniteError,
    SchemaVersionError,
    StoreError,
    UnknownColumnError,
)
from sae.store import Store
from tests.conftest import make_rows


def _store(url, n=10, dim=4):
    emb, ids, meta = make_rows(n, dim)
    with Store.create(url, dim) as s:
        s.append(emb, ids, meta)
    return Store.open(url, mode="a")


def test_nonfinite_rows_are_refused_with_their_ids(tmp_path):
    emb, ids, meta = make_rows(20, 4)
    emb[3, 1] = np.nan
    emb[17, 0] = np.inf
    with pytest.raises(NonFiniteError, match=r"2 rows.*item-00003.*item-00017.*drop_nonfinite"):
        with Store.create(tmp_path / "s.zarr", 4) as s:
            s.append(emb, ids, meta)
    assert not (tmp_path / "s.zarr").exists(), "a failed create must leave nothing behind"


def test_drop_nonfinite_records_provenance(tmp_path):
    emb, ids, meta = make_rows(20, 4)
    emb[[2, 5]] = np.nan
    with Store.create(tmp_path / "s.zarr", 4) as s:
        assert s.append(emb, ids, meta, drop_nonfinite=True) == 18
    s = Store.open(tmp_path / "s.zarr")
    assert s.n_rows == 18 and "item-00002" not in set(s.ids())
    assert s.provenance["dropped_nonfinite"] == {"count": 2, "ids": ["item-00002", "item-00005"]}
    assert s.meta()["label"].tolist() == meta.drop(index=[2, 5])["label"].tolist()


def test_float16_overflow_counts_as_nonfinite(mem_url):
    with pytest.raises(NonFiniteError, match="after casting to float16"):
        with Store.create(mem_url, 2, dtype="float16") as s:
            s.append(np.array([[1e6, 0.0], [1.0, 2.0]]), ["a", "b"])


def test_dimension_mismatch_on_append(mem_url):
    s = _store(mem_url)
    with pytest.raises(DimensionMismatchError, match="dimension 5, the store has 4"):
        s.append(np.zeros((2, 5)))
    with pytest.raises(DimensionMismatchError, match="2-D"):
        s.append(np.zeros(4))
    assert Store.open(mem_url).n_rows == 10


def test_duplicate_ids(mem_url):
    s = _store(mem_url)
    _, _, meta = make_rows(2, 4)
    with pytest.raises(DuplicateIdError, match="within the batch"):
        s.append(np.zeros((2, 4)), ["x", "x"], meta)
    with pytest.raises(DuplicateIdError, match="already in the store.*item-00003"):
        s.append(np.zeros((2, 4)), ["new", "item-00003"], meta)
    assert Store.open(mem_url).n_rows == 10


def test_metadata_length_mismatch(mem_url):
    emb, ids, meta = make_rows(10, 4)
    with pytest.raises(MetadataError, match="meta has 9 rows but embeddings have 10"):
        with Store.create(mem_url, 4) as s:
            s.append(emb, ids, meta.iloc[:9])
    with pytest.raises(MetadataError, match="ids has 3 rows"):
        with Store.create(mem_url, 4, overwrite=True) as s:
            s.append(emb, ids[:3], meta)


def test_unknown_and_mismatched_columns(mem_url):
    s = _store(mem_url)
    with pytest.raises(UnknownColumnError, match=r"unknown metadata column\(s\) \['nope'\]; available: \['count', 'flag', 'label', 'score'\]"):
        s.meta(["nope"])
    emb, ids, meta = make_rows(2, 4, start=100)
    with pytest.raises(UnknownColumnError, match=r"missing columns \['score'\].*unknown columns \['extra'\]"):
        s.append(emb, ids, meta.drop(columns="score").assign(extra=1))
    with pytest.raises(MetadataError, match="is int in the store but str"):
        s.append(emb, ids, meta.assign(count=["a", "b"]))


def test_missing_values_in_non_float_columns(mem_url):
    with pytest.raises(MetadataError, match="'label' \\(str\\) has 1 missing values"):
        with Store.create(mem_url, 2) as s:
            s.append(np.ones((2, 2)), ["a", "b"], pd.DataFrame({"label": ["x", None]}))


def test_newer_schema_is_refused(tmp_path):
    _store(tmp_path / "s.zarr")
    meta_file = tmp_path / "s.zarr" / "zarr.json"
    doc = json.loads(meta_file.read_text())
    doc["attributes"]["schema_version"] = 99
    meta_file.write_text(json.dumps(doc))
    with pytest.raises(SchemaVersionError, match="schema_version 99.*upgrade"):
        Store.open(tmp_path / "s.zarr")


def test_incomplete_store_is_refused(mem_url):
    s = Store.create(mem_url, 4)  # never committed: no `with` block
    s.append(np.zeros((2, 4)))
    with pytest.raises(IncompleteStoreError, match="never completed"):
        Store.open(mem_url)


def test_create_refuses_to_clobber(tmp_path):
    _store(tmp_path / "s.zarr")
    with pytest.raises(StoreError, match="already exists.*overwrite"):
        Store.create(tmp_path / "s.zarr", 4)
    with Store.create(tmp_path / "s.zarr", 3, overwrite=True) as s:
        s.append(np.zeros((1, 3)))
    assert Store.open(tmp_path / "s.zarr").dim == 3


def test_read_only_and_bad_rows(tmp_path):
    _store(tmp_path / "s.zarr")
    s = Store.open(tmp_path / "s.zarr")
    with pytest.raises(StoreError, match="read-only"):
        s.append(np.zeros((1, 4)))
    with pytest.raises(StoreError, match=r"row numbers must be in \[0, 10\)"):
        s.read_embeddings([10])
    with pytest.raises(StoreError, match="not in the store"):
        s.rows_for_ids(["ghost"])
    with pytest.raises(StoreError, match="no store at"):
        Store.open(tmp_path / "missing.zarr")


def test_preview_consistency(mem_url):
    emb, ids, meta = make_rows(4, 4)
    imgs = np.zeros((4, 5, 5), np.uint8)
    with Store.create(mem_url, 4) as s:
        s.append(emb[:2], ids[:2], meta.iloc[:2], images=imgs[:2])
        with pytest.raises(MetadataError, match="must provide them too"):
            s.append(emb[2:], ids[2:], meta.iloc[2:])
        with pytest.raises(MetadataError, match="must be uint8"):
            s.append(emb[2:], ids[2:], meta.iloc[2:], images=imgs[2:].astype(float))
        s.append(emb[2:], ids[2:], meta.iloc[2:], images=imgs[2:])
    assert Store.open(mem_url).n_rows == 4


def test_transaction_rolls_back(tmp_path):
    s = _store(tmp_path / "s.zarr")
    fp = s.fingerprint
    emb, ids, meta = make_rows(5, 4, start=100)
    with pytest.raises(RuntimeError):
        with s.transaction():
            s.append(emb, ids, meta)
            raise RuntimeError("interrupted")
    again = Store.open(tmp_path / "s.zarr", mode="a")
    assert again.n_rows == 10 and again.fingerprint == fp
    again.append(emb, ids, meta)  # the same ids are accepted: the rolled-back rows never existed
    assert Store.open(tmp_path / "s.zarr").n_rows == 15 and again.validate() == []


def test_validate_batch_returns_a_frozen_batch_in_stored_form():
    import dataclasses

    from sae.store.validate import Batch, validate_batch

    emb, ids, meta = make_rows(6, 4)
    emb[2, 0] = np.nan
    texts = [f"t{i}" for i in range(6)]
    batch = validate_batch(emb, ids, meta, None, texts, dim=4, dtype="float16", start_row=0,
                           existing_ids=lambda: pytest.fail("an empty store has no ids to check"), drop_nonfinite=True)
    assert isinstance(batch, Batch) and batch.n == 5 and batch.dropped == (ids[2],)
    assert batch.embeddings.dtype == np.float16 and batch.embeddings.flags.c_contiguous
    assert list(batch.meta) == list(batch.kinds) == list(meta.columns)
    assert batch.images is None and batch.texts.tolist() == [t for i, t in enumerate(texts) if i != 2]
    assert list(batch.arrays())[:2] == ["embeddings", "ids"] and "previews/text" in batch.arrays()
    with pytest.raises(dataclasses.FrozenInstanceError):
        batch.ids = batch.ids  # type: ignore[misc]
    with pytest.raises(DuplicateIdError, match="already in the store"):
        validate_batch(emb[:1], ids[:1], None, None, None, dim=4, dtype="float32", start_row=6,
                       existing_ids=lambda: {ids[0]}, drop_nonfinite=False)
