"""Every importer on real files: NumPy + CSV/Parquet tables, Parquet (lists and SAIL bytes), HDF5, image folders."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from sae.errors import MetadataError, StoreError, UnknownColumnError
from sae.store import importers
from sae.store.importers import IngestOptions
from tests.conftest import make_rows


def _opts(tmp_path, **kw):
    return IngestOptions(dest=str(tmp_path / "ws" / "store.zarr"), progress=False, **kw)


@pytest.mark.parametrize("table_format", ["csv", "parquet"])
def test_numpy_memmap_with_table(tmp_path, table_format):
    emb, ids, meta = make_rows(1000, 16)
    np.save(tmp_path / "emb.npy", emb)
    table = meta.assign(id=ids)
    path = tmp_path / f"meta.{table_format}"
    table.to_csv(path, index=False) if table_format == "csv" else table.to_parquet(path)
    store = importers.from_numpy(tmp_path / "emb.npy", _opts(tmp_path, batch_rows=300), meta=path)
    assert store.n_rows == 1000 and list(store.ids()[:2]) == ids[:2]
    np.testing.assert_array_equal(store.read_embeddings(), emb)
    assert store.meta()["label"].tolist() == meta["label"].tolist()
    assert store.provenance["format"] == "numpy"


def test_numpy_float16_append_and_bad_table(tmp_path):
    emb, ids, meta = make_rows(100, 8)
    opts = _opts(tmp_path, dtype="float16")
    importers.from_numpy(emb[:60], opts, ids=ids[:60], meta=meta.iloc[:60])
    store = importers.from_numpy(emb[60:], IngestOptions(**{**opts.__dict__, "append": True}), ids=ids[60:], meta=meta.iloc[60:])
    assert store.n_rows == 100 and store.dtype == "float16"
    assert store.provenance["appended"][0]["format"] == "numpy"
    with pytest.raises(MetadataError, match="metadata has 99 rows but the embeddings have 100"):
        importers.from_numpy(emb, _opts(tmp_path / "x"), meta=meta.iloc[:99])
    with pytest.raises(UnknownColumnError, match="id column 'nope'"):
        importers.from_numpy(emb, _opts(tmp_path / "y"), meta=meta, id_column="nope")


def test_parquet_list_column(tmp_path):
    emb, ids, meta = make_rows(50, 6)
    df = meta.assign(image_id=ids, embedding=list(emb.astype(np.float64)))
    df.to_parquet(tmp_path / "e.parquet")
    store = importers.from_parquet(tmp_path / "e.parquet", _opts(tmp_path))
    assert list(store.ids()) == ids and set(store.columns) == {"label", "count", "score", "flag"}
    np.testing.assert_allclose(store.read_embeddings(), emb, rtol=1e-6)


def test_parquet_sail_format(tmp_path):
    """SAIL stores one row per image with the vector as raw float32 bytes plus shape and dtype columns."""
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((40, 1536)).astype(np.float32)
    table = pa.table(
        {
            "image_path": [f"scans/img_{i}.png" for i in range(40)],
            "modality": rng.choice(["CT", "MRI"], 40).tolist(),
            "embedding": [row.tobytes() for row in emb],
            "embedding_shape": [[1, 1536]] * 40,
            "embedding_dtype": ["float32"] * 40,
        }
    )
    pq.write_table(table, tmp_path / "sail.parquet", row_group_size=16)
    store = importers.from_parquet(tmp_path / "sail.parquet", _opts(tmp_path))
    assert store.dim == 1536 and store.n_rows == 40
    assert store.ids()[3] == "scans/img_3.png" and store.columns == {"modality": "str"}
    np.testing.assert_array_equal(store.read_embeddings(), emb)


def test_parquet_errors(tmp_path):
    bad = pa.table({"embedding": [np.ones(3, np.float32).tobytes()], "embedding_shape": ["(4,)"], "embedding_dtype": ["float32"]})
    pq.write_table(bad, tmp_path / "bad.parquet")
    with pytest.raises(StoreError, match="embedding_shape says"):
        importers.from_parquet(tmp_path / "bad.parquet", _opts(tmp_path))
    with pytest.raises(UnknownColumnError, match="embedding column 'vec' not in"):
        importers.from_parquet(tmp_path / "bad.parquet", _opts(tmp_path), embedding_column="vec")


def test_hdf5(tmp_path):
    import h5py

    emb, ids, meta = make_rows(120, 5)
    with h5py.File(tmp_path / "e.h5", "w") as f:
        f["embeddings"] = emb
        f["ids"] = np.array(ids, dtype="S")
        f["meta/label"] = np.array(meta["label"].tolist(), dtype=h5py.string_dtype())
        f["meta/score"] = meta["score"].to_numpy()
    store = importers.from_hdf5(tmp_path / "e.h5", _opts(tmp_path, batch_rows=50))
    assert list(store.ids()) == ids
    assert store.meta()["label"].tolist() == meta["label"].tolist()
    np.testing.assert_array_equal(store.read_embeddings(), emb)
    with pytest.raises(UnknownColumnError, match="dataset 'x' not in"):
        importers.from_hdf5(tmp_path / "e.h5", _opts(tmp_path / "z"), dataset="x")


def test_image_folder(tmp_path):
    import torch

    from sae.encoders import TorchModuleEncoder

    rng = np.random.default_rng(0)
    for cls in ("normal", "artifact"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (20, 24), dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    enc = TorchModuleEncoder(
        torch.nn.Flatten(), dim=8 * 8, name="flatten",
        preprocess=lambda ims: torch.stack([torch.tensor(np.array(Image.fromarray(np.asarray(im)).resize((8, 8))), dtype=torch.float32) for im in ims]),
    )
    store = importers.from_image_folder(tmp_path / "imgs", _opts(tmp_path), encoder=enc, thumbnail_size=16)
    assert store.n_rows == 6 and store.dim == 64
    assert sorted(set(store.column("label"))) == ["artifact", "normal"]
    assert store.ids()[0] == "artifact/0.png" and store.previews([0]).shape == (1, 16, 16)
    assert store.encoder["name"] == "flatten"
    with pytest.raises(StoreError, match="no images"):
        importers.from_image_folder(tmp_path / "ws", _opts(tmp_path / "q"), encoder=enc)


def test_guess_format(tmp_path):
    assert importers.guess_format(tmp_path) == "images"
    assert importers.guess_format("x.npy") == "npy" and importers.guess_format("x.h5") == "hdf5"
    with pytest.raises(StoreError, match="--format"):
        importers.guess_format("x.bin")
