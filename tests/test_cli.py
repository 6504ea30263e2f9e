"""The `sae` command end to end: demo (small), ingest, info, planted, and clean errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd

from sae.cli import main


def test_demo_small_and_info(tmp_path, capsys):
    ws = tmp_path / "demo"
    assert main(["demo", "--small", "--workspace", str(ws)]) == 0
    out = capsys.readouterr().out
    assert "[store]" in out and "MRI slices" in out and "1280-d" in out
    assert "[train]" in out and "held-out R2" in out and "balanced accuracy of a probe on 10 features" in out and "random SAE" in out
    assert "[label]" in out and "[search]" in out and "metadata queries" in out and "SAIL" in out and "plan: " in out
    assert main(["info", str(ws)]) == 0
    out = capsys.readouterr().out
    for text in ("rows", "1280-d float32", "previews   images (64, 64)", "artifact", "motion", "quality_fail", "topk-n512-k8-s0"):
        assert text in out


def test_ingest_npy_and_errors(tmp_path, capsys):
    emb = np.random.default_rng(0).standard_normal((30, 5)).astype(np.float32)
    emb[4] = np.nan
    np.save(tmp_path / "e.npy", emb)
    pd.DataFrame({"id": [f"r{i}" for i in range(30)], "site": ["a", "b", "c"] * 10}).to_csv(tmp_path / "m.csv", index=False)
    args = ["ingest", str(tmp_path / "e.npy"), str(tmp_path / "ws"), "--meta", str(tmp_path / "m.csv")]
    assert main(args) == 2
    assert "NaN or Inf" in capsys.readouterr().err and not (tmp_path / "ws" / "store.zarr").exists()
    assert main(args + ["--drop-nonfinite", "--dtype", "float16"]) == 0
    out = capsys.readouterr().out
    assert "rows       29" in out and "dropped 1 non-finite rows" in out and "site" in out
    assert main(["info", str(tmp_path / "nowhere")]) == 2
    assert "not a workspace" in capsys.readouterr().err


def test_ingest_a_text_store_with_a_group_key(tmp_path, capsys):
    """``--text-column`` moves the reports into the text previews (not metadata), ``--group-key`` is recorded."""
    from sae.store import Store

    emb = np.random.default_rng(1).standard_normal((12, 4)).astype(np.float32)
    np.save(tmp_path / "e.npy", emb)
    reports = [f"Report {i}. {'Cardiomegaly.' if i % 3 == 0 else 'No acute disease.'}" for i in range(12)]
    meta = pd.DataFrame({"id": [f"r{i}" for i in range(12)], "patient": [f"p{i // 2}" for i in range(12)], "report": reports})
    meta.to_csv(tmp_path / "m.csv", index=False)
    base = ["ingest", str(tmp_path / "e.npy"), str(tmp_path / "ws"), "--meta", str(tmp_path / "m.csv")]
    assert main(base + ["--text-column", "findings"]) == 2
    err = capsys.readouterr().err
    assert "error: --text-column findings: no such metadata column" in err and "report" in err
    assert not (tmp_path / "ws" / "store.zarr").exists()
    assert main(base + ["--text-column", "report", "--group-key", "patient"]) == 0
    out = capsys.readouterr().out
    assert "group key  patient" in out and "text" in out.split("previews", 1)[1].splitlines()[0]
    store = Store.open(tmp_path / "ws" / "store.zarr")
    assert store.has_text_previews and list(store.texts([0, 3])) == [reports[0], reports[3]]
    assert "report" not in store.columns and store.provenance["group_key"] == "patient"


def test_planted_and_console_script(tmp_path):
    assert main(["planted", str(tmp_path / "p"), "--rows", "500", "--dim", "16", "--concepts", "96"]) == 0
    assert (tmp_path / "p" / "truth.npz").exists()
    proc = subprocess.run([sys.executable, "-m", "sae.cli", "info", str(tmp_path / "p"), "--json"], capture_output=True, text=True)
    assert proc.returncode == 0 and '"rows": 500' in proc.stdout
