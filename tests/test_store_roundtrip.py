"""Round trips through the store: every dtype and column kind, previews, local and memory:// URLs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sae.store import Store
from tests.conftest import make_rows


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("where", ["local", "memory"])
def test_roundtrip_every_kind(tmp_path, mem_url, dtype, where):
    url = str(tmp_path / "s.zarr") if where == "local" else mem_url
    emb, ids, meta = make_rows(300, 12)
    grey = np.random.default_rng(1).integers(0, 255, (300, 8, 8), dtype=np.uint8)
    with Store.create(url, 12, dtype=dtype, chunk_rows=64, encoder="test-encoder", provenance={"dataset": "unit"}) as s:
        s.append(emb[:100], ids[:100], meta.iloc[:100], images=grey[:100])
        s.append(emb[100:], ids[100:], meta.iloc[100:], images=grey[100:])
    s = Store.open(url)
    assert s.n_rows == 300 and s.dim == 12 and s.dtype == dtype
    assert s.columns == {"label": "str", "count": "int", "score": "float", "flag": "bool"}
    tol = 1e-3 if dtype == "float16" else 0
    np.testing.assert_allclose(s.read_embeddings(), emb, rtol=tol, atol=tol)
    back = s.meta()
    assert back["id"].tolist() == ids
    pd.testing.assert_frame_equal(back.drop(columns="id"), meta.reset_index(drop=True), check_dtype=False)
    assert back["count"].dtype == np.int64 and back["flag"].dtype == bool and back["score"].dtype == np.float64
    rows = [299, 0, 150, 7]
    np.testing.assert_allclose(s.read_embeddings(rows), emb[rows], rtol=tol, atol=tol)
    np.testing.assert_array_equal(s.previews(rows), grey[rows])
    assert s.meta(["label"], rows=rows)["id"].tolist() == [ids[r] for r in rows]
    assert s.encoder["name"] == "test-encoder" and s.provenance["dataset"] == "unit"
    assert s.validate() == []


def test_text_and_rgb_previews(tmp_path):
    emb, ids, _ = make_rows(20, 4)
    rgb = np.random.default_rng(0).integers(0, 255, (20, 6, 6, 3), dtype=np.uint8)
    texts = [f"report {i}: <b>bold</b> ✓" for i in range(20)]
    with Store.create(tmp_path / "s.zarr", 4) as s:
        s.append(emb, ids, images=rgb, texts=texts)
    s = Store.open(tmp_path / "s.zarr")
    assert s.has_image_previews and s.has_text_previews
    np.testing.assert_array_equal(s.previews([3, 1]), rgb[[3, 1]])
    assert list(s.texts([5, 0])) == [texts[5], texts[0]]


def test_append_changes_fingerprint_and_is_deterministic(tmp_path):
    emb, ids, meta = make_rows(50, 4)
    fps = []
    for name in ("a", "b"):
        with Store.create(tmp_path / f"{name}.zarr", 4) as s:
            s.append(emb, ids, meta)
        fps.append(Store.open(tmp_path / f"{name}.zarr").fingerprint)
    assert fps[0] == fps[1]
    s = Store.open(tmp_path / "a.zarr", mode="a")
    e2, i2, m2 = make_rows(5, 4, start=50, seed=3)
    s.append(e2, i2, m2)
    assert s.n_rows == 55 and s.fingerprint != fps[0]
    assert Store.open(tmp_path / "a.zarr").meta()["id"].tolist()[-5:] == i2


def test_auto_ids_and_row_lookup(mem_url):
    with Store.create(mem_url, 3) as s:
        s.append(np.ones((4, 3)))
    s = Store.open(mem_url, mode="a")
    s.append(np.zeros((2, 3)))
    assert list(s.ids()) == [f"row{i:09d}" for i in range(6)]
    np.testing.assert_array_equal(s.rows_for_ids(["row000000005", "row000000001"]), [5, 1])


def test_int_widens_into_float_column(mem_url):
    with Store.create(mem_url, 2) as s:
        s.append(np.ones((2, 2)), ["a", "b"], pd.DataFrame({"x": [0.5, 1.5]}))
    s = Store.open(mem_url, mode="a")
    s.append(np.ones((1, 2)), ["c"], pd.DataFrame({"x": [3]}))
    assert s.column("x").tolist() == [0.5, 1.5, 3.0]


def test_float_nan_metadata_is_kept(mem_url):
    with Store.create(mem_url, 2) as s:
        s.append(np.ones((2, 2)), ["a", "b"], pd.DataFrame({"x": [np.nan, 1.0]}))
    assert np.isnan(Store.open(mem_url).column("x")[0])
