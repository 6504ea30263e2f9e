"""Fault injection on the store (issue 20, "nothing lost, nothing silently wrong"): concurrent writers,
metadata-only changes, zero-row sources, missing / corrupt chunks, CSV parsing that rewrites ids,
mixed image folders, inconsistent attributes and every bad input ending in one ``error:`` line."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sae.cli import main
from sae.errors import IncompleteStoreError, LockedError, MetadataError, StoreError
from sae.store import Store, importers
from sae.store.importers import IngestOptions
from tests.conftest import make_rows

ROOT = Path(__file__).resolve().parents[1]


def _store(url, n=200, dim=8, chunk_rows=64, start=0, seed=0, **kw) -> Store:
    emb, ids, meta = make_rows(n, dim, start=start, seed=seed)
    with Store.create(url, dim, chunk_rows=chunk_rows, **kw) as s:
        s.append(emb, ids, meta)
    return Store.open(url)


def _cli_error(capsys, argv) -> str:
    """Run ``sae argv``: it must exit 2 with one ``error:`` line (no traceback); returns stderr."""
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("error:") or "\nerror:" in err, err
    assert "Traceback" not in err
    return err


def _ingest_npy(tmp_path, emb, ws, *extra, name="e.npy") -> int:
    np.save(tmp_path / name, emb)
    return main(["ingest", str(tmp_path / name), str(ws), *extra])


def _edit_attrs(store_path: Path, **attrs) -> None:
    doc_path = store_path / "zarr.json"
    doc = json.loads(doc_path.read_text())
    doc["attributes"].update(attrs)
    doc_path.write_text(json.dumps(doc))


# ---------------------------------------------------------------------- 1. concurrent writers
SLOW_APPENDER = textwrap.dedent(
    """
    import sys, time, numpy as np, pandas as pd
    from pathlib import Path
    from sae.store.importers import IngestOptions, RowBatch, ingest_batches

    url, marker, release = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])

    def batches():
        for b in range(6):
            x = np.full((50, 8), 1000 + b, dtype=np.float32)
            yield RowBatch(x, [f"slow-{b}-{i}" for i in range(50)], pd.DataFrame({"n": np.full(50, b)}))
            if b == 1:
                marker.write_text("midway")
                while not release.exists():
                    time.sleep(0.02)

    ingest_batches(batches(), 8, None, IngestOptions(dest=url, append=True, progress=False), {"source": "slow"})
    """
)


def test_two_concurrent_appends_lose_no_rows(tmp_path):
    """A second ``sae ingest --append`` while one runs is refused at once (holder named); run again after, both land."""
    ws = tmp_path / "ws"
    store_path = ws / "store.zarr"
    with Store.create(store_path, 8, chunk_rows=64) as s:
        s.append(np.zeros((100, 8), np.float32), [f"base-{i}" for i in range(100)], pd.DataFrame({"n": np.arange(100)}))
    fast = np.full((70, 8), 7.0, np.float32)
    np.save(tmp_path / "fast.npy", fast)
    pd.DataFrame({"id": [f"fast-{i}" for i in range(70)], "n": np.arange(70)}).to_csv(tmp_path / "fast.csv", index=False)
    (tmp_path / "slow.py").write_text(SLOW_APPENDER)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    marker, release = tmp_path / "midway", tmp_path / "release"
    slow = subprocess.Popen([sys.executable, str(tmp_path / "slow.py"), str(store_path), str(marker), str(release)], env=env)
    try:
        deadline = time.time() + 120
        while not marker.exists():
            assert slow.poll() is None and time.time() < deadline, "the slow appender never got going"
            time.sleep(0.05)
        cmd = [sys.executable, "-m", "sae.cli", "ingest", str(tmp_path / "fast.npy"), str(ws), "--append", "--meta", str(tmp_path / "fast.csv")]
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert second.stderr.startswith("error:"), second.stderr
        assert "in use by pid" in second.stderr and "Traceback" not in second.stderr
    finally:
        release.write_text("go")
        assert slow.wait(timeout=120) == 0
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    s = Store.open(store_path)
    assert s.n_rows == 100 + 300 + 70 and s.validate() == []
    ids = s.ids().tolist()
    assert ids[:100] == [f"base-{i}" for i in range(100)] and ids[-70:] == [f"fast-{i}" for i in range(70)]
    assert ids[100:400] == [f"slow-{b}-{i}" for b in range(6) for i in range(50)]
    emb = s.read_embeddings()
    np.testing.assert_array_equal(emb[:100], 0.0)
    np.testing.assert_array_equal(emb[100:400], np.repeat(1000 + np.arange(6), 50)[:, None] * np.ones((1, 8)))
    np.testing.assert_array_equal(emb[400:], fast)


def test_a_second_writer_in_the_same_process_is_refused_while_a_transaction_is_open(tmp_path):
    url = tmp_path / "s.zarr"
    _store(url, n=100)
    emb, ids, meta = make_rows(10, 8, start=100, seed=1)
    first, second = Store.open(url, mode="a"), Store.open(url, mode="a")
    with first.transaction():
        first.append(emb[:5], ids[:5], meta.iloc[:5])
        with pytest.raises(LockedError, match=r"in use by pid \d+"):
            second.append(emb[5:], ids[5:], meta.iloc[5:])
        with pytest.raises(LockedError, match="in use by pid"):
            Store.create(url, 8, overwrite=True)
        with pytest.raises(LockedError, match="in use by pid"):
            second.update_provenance(note="x")
    second.append(emb[5:], ids[5:], meta.iloc[5:])  # the lock is free again, and `second` sees first's rows
    s = Store.open(url)
    assert s.n_rows == 110 and s.ids().tolist()[100:] == ids and s.validate() == []
    np.testing.assert_array_equal(s.read_embeddings(slice(100, 110)), emb)


def test_a_store_opened_before_another_append_appends_after_it(tmp_path):
    """Serialised writers: a Store opened earlier re-reads the committed state when it takes the lock."""
    url = tmp_path / "s.zarr"
    _store(url, n=100)
    old, new = Store.open(url, mode="a"), Store.open(url, mode="a")
    e1, i1, m1 = make_rows(30, 8, start=100, seed=1)
    e2, i2, m2 = make_rows(20, 8, start=200, seed=2)
    new.append(e1, i1, m1)
    old.append(e2, i2, m2)
    s = Store.open(url)
    assert s.n_rows == 150 and s.ids().tolist()[100:] == i1 + i2
    np.testing.assert_array_equal(s.read_embeddings(slice(100, 150)), np.concatenate([e1, e2]))
    with pytest.raises(Exception, match="already in the store"):
        old.append(e1[:1], i1[:1], m1.iloc[:1])


# ---------------------------------------------------------------------- 5. metadata changes the fingerprint
def test_metadata_and_previews_are_part_of_the_fingerprint(tmp_path):
    emb, ids, meta = make_rows(50, 4)
    thumbs = np.random.default_rng(0).integers(0, 255, (50, 4, 4), dtype=np.uint8)
    fixed = meta.copy()
    fixed.loc[7, "label"] = "corrected"

    def fp(name, table, images=thumbs):
        with Store.create(tmp_path / f"{name}.zarr", 4) as s:
            s.append(emb, ids, table, images=images)
        return Store.open(tmp_path / f"{name}.zarr").fingerprint

    base = fp("a", meta)
    assert fp("b", meta) == base, "same inputs, same fingerprint"
    assert fp("c", fixed) != base, "corrected metadata must change the fingerprint"
    assert fp("d", meta.assign(score=meta["score"] + 1e-9)) != base
    other = thumbs.copy()
    other[3, 0, 0] ^= 1
    assert fp("e", meta, other) != base, "different previews change the fingerprint"


def test_an_old_store_keeps_its_recorded_fingerprint(tmp_path):
    url = tmp_path / "old.zarr"
    _store(url, n=20)
    doc = json.loads((url / "zarr.json").read_text())
    for key in ("integrity", "fingerprint_scheme"):  # what a store written before these changes lacks
        doc["attributes"].pop(key, None)
    doc["attributes"]["fingerprint"] = "0123456789abcdef0123456789abcdef"
    (url / "zarr.json").write_text(json.dumps(doc))
    s = Store.open(url, mode="a")
    assert s.fingerprint == "0123456789abcdef0123456789abcdef" and s.validate() == []
    e, i, m = make_rows(3, 8, start=20, seed=5)
    s.append(e, i, m)
    assert Store.open(url).fingerprint != "0123456789abcdef0123456789abcdef"


# ---------------------------------------------------------------------- 6. zero rows
@pytest.mark.parametrize("case", ["empty", "all-nan"])
def test_a_zero_row_source_never_replaces_a_good_store(tmp_path, capsys, case):
    ws = tmp_path / "ws"
    assert _ingest_npy(tmp_path, np.ones((20, 4), np.float32), ws, name="good.npy") == 0
    before = Store.open(ws / "store.zarr")
    fp = before.fingerprint
    capsys.readouterr()
    bad = np.zeros((0, 4), np.float32) if case == "empty" else np.full((5, 4), np.nan, np.float32)
    np.save(tmp_path / "bad.npy", bad)
    err = _cli_error(capsys, ["ingest", str(tmp_path / "bad.npy"), str(ws), "--overwrite", "--drop-nonfinite"])
    assert "no rows" in err or "nothing was imported" in err
    after = Store.open(ws / "store.zarr")
    assert after.n_rows == 20 and after.fingerprint == fp
    assert [p.name for p in ws.iterdir() if p.name.startswith(".store.zarr.")] in ([], [".store.zarr.lock"])


def test_a_zero_row_source_writes_nothing_and_blocks_nothing(tmp_path, capsys):
    ws = tmp_path / "ws"
    np.save(tmp_path / "empty.npy", np.zeros((0, 4), np.float32))
    err = _cli_error(capsys, ["ingest", str(tmp_path / "empty.npy"), str(ws)])
    assert "no rows" in err
    assert not (ws / "store.zarr").exists()
    assert _ingest_npy(tmp_path, np.ones((3, 4), np.float32), ws) == 0
    assert Store.open(ws / "store.zarr").n_rows == 3


# ---------------------------------------------------------------------- 7. missing and corrupt chunks
@pytest.mark.parametrize("array", ["embeddings", "ids", "meta/label", "meta/flag"])
def test_a_missing_chunk_is_an_error_not_fill_values(tmp_path, capsys, array):
    url = tmp_path / "ws" / "store.zarr"
    _store(url, n=200, chunk_rows=64)
    chunk = url / array / "c" / "1"
    victim = chunk / "0" if chunk.is_dir() else chunk
    victim.unlink()
    s = Store.open(url)
    with pytest.raises(IncompleteStoreError, match=rf"{array}.*chunk 1 .*rows 64-127"):
        if array == "embeddings":
            s.read_embeddings()
        elif array == "ids":
            s.ids()
        else:
            s.meta()
    if array == "embeddings":
        with pytest.raises(IncompleteStoreError, match="chunk 1"):
            list(s.iter_batches(32))
    assert any(array in p and "chunk" in p for p in Store.open(url).validate())
    err = _cli_error(capsys, ["info", str(tmp_path / "ws")])
    assert array in err


def test_an_all_zero_chunk_is_still_written(tmp_path):
    """Chunks equal to the fill value are written too, so a missing chunk always means damage."""
    url = tmp_path / "s.zarr"
    with Store.create(url, 4, chunk_rows=16) as s:
        s.append(np.zeros((40, 4)), [f"r{i}" for i in range(40)], pd.DataFrame({"x": np.zeros(40, int), "b": np.zeros(40, bool)}))
    s = Store.open(url)
    assert s.validate() == []
    np.testing.assert_array_equal(s.read_embeddings(), 0.0)
    assert s.meta()["x"].tolist() == [0] * 40


@pytest.mark.parametrize("array", ["embeddings", "meta/label", "ids"])
def test_a_flipped_bit_in_a_chunk_is_an_error(tmp_path, capsys, array):
    url = tmp_path / "ws" / "store.zarr"
    _store(url, n=200, chunk_rows=64)
    chunk = url / array / "c" / "2"
    path = chunk / "0" if chunk.is_dir() else chunk
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 3] ^= 0x10
    path.write_bytes(bytes(raw))
    s = Store.open(url)
    with pytest.raises(StoreError, match=rf"{array}.*chunk 2.*(checksum|corrupt)"):
        s.read_embeddings() if array == "embeddings" else s.meta()
    assert any(array in p and "chunk 2" in p for p in Store.open(url).validate(deep=True))


def test_a_truncated_chunk_is_an_error_line(tmp_path, capsys):
    url = tmp_path / "ws" / "store.zarr"
    _store(url, n=200, chunk_rows=64)
    path = url / "meta" / "label" / "c" / "1"
    path.write_bytes(path.read_bytes()[:10])
    err = _cli_error(capsys, ["info", str(tmp_path / "ws")])
    assert "meta/label" in err and "chunk 1" in err
    path = url / "embeddings" / "c" / "0" / "0"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(StoreError, match="embeddings.*chunk 0"):
        Store.open(url).read_embeddings([3])


def test_checksums_can_be_turned_off(tmp_path):
    s = _store(tmp_path / "s.zarr", n=10, checksums=False)
    assert s.attrs["integrity"] == {"all_chunks": True, "checksums": None} and s.validate(deep=True) == []
    assert Store.open(tmp_path / "s.zarr").read_embeddings().shape == (10, 8)
    assert _ingest_npy(tmp_path, np.ones((5, 4), np.float32), tmp_path / "ws", "--no-checksums") == 0
    assert Store.open(tmp_path / "ws" / "store.zarr").attrs["integrity"]["checksums"] is None
    assert _ingest_npy(tmp_path, np.ones((5, 4), np.float32), tmp_path / "ws2") == 0
    assert Store.open(tmp_path / "ws2" / "store.zarr").attrs["integrity"]["checksums"] == "crc32c"


# ---------------------------------------------------------------------- 8. CSV parsing keeps ids and identifiers
def test_csv_ids_and_identifier_columns_keep_leading_zeros(tmp_path, capsys):
    (tmp_path / "m.csv").write_text("id,volume,site,score,flag,note\n00000,0012,3,0.5,True,NA\n00001,0007,4,1.5,False,x\n00002,0120,5,,True,y\n")
    np.save(tmp_path / "e.npy", np.ones((3, 4), np.float32))
    assert main(["ingest", str(tmp_path / "e.npy"), str(tmp_path / "ws"), "--meta", str(tmp_path / "m.csv")]) == 2
    assert "'note'" in capsys.readouterr().err  # "NA" in a text column is a missing value, refused as before
    (tmp_path / "m.csv").write_text("id,volume,site,score,flag\n00000,0012,3,0.5,True\n00001,0007,4,1.5,False\n00002,0120,5,,True\n")
    assert main(["ingest", str(tmp_path / "e.npy"), str(tmp_path / "ws"), "--meta", str(tmp_path / "m.csv")]) == 0
    s = Store.open(tmp_path / "ws" / "store.zarr")
    assert s.ids().tolist() == ["00000", "00001", "00002"]
    assert s.columns == {"volume": "str", "site": "int", "score": "float", "flag": "bool"}
    assert s.column("volume").tolist() == ["0012", "0007", "0120"]
    assert s.column("site").tolist() == [3, 4, 5] and np.isnan(s.column("score")[2])


def test_tsv_and_explicit_id_column_keep_text(tmp_path):
    (tmp_path / "m.tsv").write_text("patient\tscan\n007\tNA\n010\tnan\n")
    table = importers.read_table(tmp_path / "m.tsv", id_column="scan")
    ids, rest = importers.split_ids(table, "scan")
    assert ids == ["NA", "nan"] and rest["patient"].tolist() == ["007", "010"]


@pytest.mark.parametrize("missing", ["", "   "])
def test_a_missing_id_is_refused_with_its_row(tmp_path, capsys, missing):
    (tmp_path / "m.csv").write_text(f"id,site\na,1\n{missing},2\nc,3\n")
    np.save(tmp_path / "e.npy", np.ones((3, 4), np.float32))
    err = _cli_error(capsys, ["ingest", str(tmp_path / "e.npy"), str(tmp_path / "ws"), "--meta", str(tmp_path / "m.csv")])
    assert "missing" in err and "'id'" in err and "[1]" in err
    with pytest.raises(MetadataError, match=r"missing.*\[1\]"):
        importers.split_ids(pd.DataFrame({"id": ["a", None, "c"]}), None)


# ---------------------------------------------------------------------- 12. image folders
def _tiny_encoder():
    import torch

    from sae.encoders import TorchModuleEncoder

    def pre(ims):
        grey = [np.asarray(Image.fromarray(np.asarray(im)).convert("L").resize((8, 8)), dtype=np.float32) for im in ims]
        return torch.tensor(np.stack(grey))

    return TorchModuleEncoder(torch.nn.Flatten(), dim=64, name="tiny", preprocess=pre)


def _png(path: Path, shape) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(len(shape)).integers(0, 255, shape, dtype=np.uint8)).save(path)


def test_an_image_folder_mixing_grey_and_rgb_imports(tmp_path):
    _png(tmp_path / "imgs" / "a_grey.png", (20, 24))
    _png(tmp_path / "imgs" / "b_rgb.png", (18, 18, 3))
    Image.new("LA", (10, 10)).save(tmp_path / "imgs" / "c_grey_alpha.png")
    store = importers.from_image_folder(tmp_path / "imgs", IngestOptions(dest=str(tmp_path / "s.zarr"), progress=False),
                                        encoder=_tiny_encoder(), thumbnail_size=16)
    assert store.n_rows == 3 and store.previews([0, 1, 2]).shape == (3, 16, 16, 3)
    grey = store.previews([0])[0]
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_image_names_its_file(tmp_path, capsys, monkeypatch, damage):
    import sae.encoders

    _png(tmp_path / "imgs" / "ok.png", (20, 20))
    _png(tmp_path / "imgs" / "sub" / "broken.png", (64, 64, 3))
    bad = tmp_path / "imgs" / "sub" / "broken.png"
    bad.write_bytes(b"this is not an image" if damage == "garbage" else bad.read_bytes()[:120])
    monkeypatch.setattr(sae.encoders, "EfficientNetLite0Encoder", lambda **kw: _tiny_encoder())
    err = _cli_error(capsys, ["ingest", str(tmp_path / "imgs"), str(tmp_path / "ws")])
    assert "broken.png" in err
    assert not (tmp_path / "ws" / "store.zarr").exists()


# ---------------------------------------------------------------------- 13. sae info on a broken store
def test_info_flags_n_rows_beyond_the_stored_rows(tmp_path, capsys):
    url = tmp_path / "ws" / "store.zarr"
    _store(url, n=100, chunk_rows=64)
    _edit_attrs(url, n_rows=150)
    s = Store.open(url)
    problems = s.validate()
    assert any("150" in p and "100" in p for p in problems)
    assert s.summary()["problems"]
    rc = main(["info", str(tmp_path / "ws")])
    err = capsys.readouterr().err
    assert rc == 2 and "warning:" in err and "error:" in err and "inconsistent" in err and "Traceback" not in err
    with pytest.raises(IncompleteStoreError, match="embeddings"):
        s.read_embeddings()


def test_info_on_a_sound_store_reports_no_problems(tmp_path, capsys):
    _store(tmp_path / "ws" / "store.zarr", n=10)
    assert main(["info", str(tmp_path / "ws")]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(["info", str(tmp_path / "ws"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["store"]["problems"] == []


# ---------------------------------------------------------------------- 14. bad inputs end in one error line
NPY_DAMAGE = {
    "object-dtype": lambda p: np.save(p, np.array([[1, "a"], [2, "b"]], dtype=object), allow_pickle=True),
    "zero-bytes": lambda p: p.write_bytes(b""),
    "truncated": lambda p: (np.save(p, np.ones((100, 16), np.float32)), p.write_bytes(p.read_bytes()[:500])),
    "garbage": lambda p: p.write_bytes(b"PK\x03\x04 definitely not numpy" * 20),
    "one-dimensional": lambda p: np.save(p, np.ones(5, np.float32)),
    "strings": lambda p: np.save(p, np.array([["a", "b"]])),
}


@pytest.mark.parametrize("damage", list(NPY_DAMAGE))
def test_a_bad_npy_is_an_error_line(tmp_path, capsys, damage):
    path = tmp_path / "e.npy"
    NPY_DAMAGE[damage](path)
    err = _cli_error(capsys, ["ingest", str(path), str(tmp_path / "ws")])
    assert "e.npy" in err
    assert not (tmp_path / "ws" / "store.zarr").exists()


@pytest.mark.parametrize("source", ["gone.npy", "gone.parquet", "gone.h5", "gone.csv"])
def test_a_missing_source_is_an_error_line(tmp_path, capsys, source):
    err = _cli_error(capsys, ["ingest", str(tmp_path / source), str(tmp_path / "ws")])
    assert source in err


def test_a_missing_meta_table_is_an_error_line(tmp_path, capsys):
    np.save(tmp_path / "e.npy", np.ones((3, 4), np.float32))
    err = _cli_error(capsys, ["ingest", str(tmp_path / "e.npy"), str(tmp_path / "ws"), "--meta", str(tmp_path / "nope.csv")])
    assert "nope.csv" in err


@pytest.mark.parametrize("cut", [0.5, 0.97])
def test_a_truncated_parquet_is_an_error_line(tmp_path, capsys, cut):
    emb, ids, meta = make_rows(3000, 8)
    path = tmp_path / "e.parquet"
    meta.assign(id=ids, embedding=list(emb)).to_parquet(path, row_group_size=500)
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * cut)])
    err = _cli_error(capsys, ["ingest", str(path), str(tmp_path / "ws")])
    assert "e.parquet" in err


@pytest.mark.parametrize("version", ["abc", -1, 0, 1.5, None, True, [1]])
def test_a_bad_schema_version_is_an_error_line(tmp_path, capsys, version):
    url = tmp_path / "ws" / "store.zarr"
    _store(url, n=10)
    _edit_attrs(url, schema_version=version)
    err = _cli_error(capsys, ["info", str(tmp_path / "ws")])
    assert "schema_version" in err


@pytest.mark.parametrize("attrs", [{"n_rows": -3}, {"n_rows": "many"}, {"dim": 0}, {"dtype": "int8"}, {"chunk_rows": None}])
def test_bad_root_attributes_are_an_error_line(tmp_path, capsys, attrs):
    url = tmp_path / "ws" / "store.zarr"
    _store(url, n=10)
    _edit_attrs(url, **attrs)
    err = _cli_error(capsys, ["info", str(tmp_path / "ws")])
    assert next(iter(attrs)) in err


def test_garbage_zarr_json_is_an_error_line(tmp_path, capsys):
    url = tmp_path / "ws" / "store.zarr"
    _store(url, n=10)
    (url / "zarr.json").write_text('{"zarr_format": 3, "node_type": "gro')
    err = _cli_error(capsys, ["info", str(tmp_path / "ws")])
    assert "store.zarr" in err


def _disk_full_after(monkeypatch, n_writes: int) -> None:
    """Make the local zarr store fail with ENOSPC after ``n_writes`` more writes."""
    import zarr.storage._local as local

    real = local._put
    count = {"n": 0}

    def put(path, value, exclusive=False):
        count["n"] += 1
        if count["n"] > n_writes:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, value, exclusive)

    monkeypatch.setattr(local, "_put", put)


@pytest.mark.parametrize("mode", ["append", "overwrite"])
def test_a_full_disk_leaves_the_store_as_it_was(tmp_path, capsys, monkeypatch, mode):
    ws = tmp_path / "ws"
    emb, ids, meta = make_rows(300, 8)
    np.save(tmp_path / "base.npy", emb)
    meta.assign(id=ids).to_csv(tmp_path / "base.csv", index=False)
    assert main(["ingest", str(tmp_path / "base.npy"), str(ws), "--meta", str(tmp_path / "base.csv")]) == 0
    before = Store.open(ws / "store.zarr")
    fp, n = before.fingerprint, before.n_rows
    capsys.readouterr()
    e2, i2, m2 = make_rows(300, 8, start=1000, seed=4)
    np.save(tmp_path / "more.npy", e2)
    m2.assign(id=i2).to_csv(tmp_path / "more.csv", index=False)
    _disk_full_after(monkeypatch, 3)
    flag = "--append" if mode == "append" else "--overwrite"
    err = _cli_error(capsys, ["ingest", str(tmp_path / "more.npy"), str(ws), flag, "--meta", str(tmp_path / "more.csv")])
    assert "disk is full" in err
    monkeypatch.undo()
    after = Store.open(ws / "store.zarr", mode="a")
    assert after.n_rows == n and after.fingerprint == fp and after.validate() == []
    np.testing.assert_array_equal(after.read_embeddings(), emb)
    assert not [p for p in ws.iterdir() if ".partial" in p.name]
    after.append(e2, i2, m2)  # and the store takes the rows once there is space again
    assert Store.open(ws / "store.zarr").n_rows == 600


def test_a_killed_writes_partial_chunk_is_removed_by_the_next_append(tmp_path):
    url = tmp_path / "s.zarr"
    _store(url, n=100, chunk_rows=64)
    leftover = url / "embeddings" / "c" / "2" / "0.3f2a9c0d1e6b4a5f8c7d9e0a1b2c3d4e.partial"
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"\0" * 4096)
    meta_leftover = url / "zarr.0123456789abcdef0123456789abcdef.partial"
    meta_leftover.write_bytes(b"{")
    s = Store.open(url, mode="a")
    e, i, m = make_rows(5, 8, start=100, seed=9)
    s.append(e, i, m)
    assert not leftover.exists() and not meta_leftover.exists()
    assert Store.open(url).n_rows == 105 and Store.open(url).validate() == []
