"""Kill an ingest midway in a subprocess: the store either opens whole (old contents) or not at all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from sae.errors import StoreError
from sae.store import Store

WRITER = textwrap.dedent(
    """
    import sys, time, numpy as np, pandas as pd
    from pathlib import Path
    from sae.store import Store
    from sae.store.importers import IngestOptions, RowBatch, ingest_batches

    url, mode, marker = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    dim = 8

    def batches():
        for b in range(10_000):
            x = np.full((64, dim), b, dtype=np.float32)
            yield RowBatch(x, [f"{mode}-{b}-{i}" for i in range(64)], pd.DataFrame({"b": np.full(64, b)}))
            if b == 3:
                marker.write_text("midway")
            time.sleep(0.05)

    opts = IngestOptions(dest=url, append=(mode == "append"), progress=False, chunk_rows=128)
    ingest_batches(batches(), dim, None, opts, {"source": "killed-writer"})
    """
)


def _run_and_kill(tmp_path: Path, url: str, mode: str) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    marker = tmp_path / f"marker-{mode}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, str(script), url, mode, str(marker)], env=env)
    deadline = time.time() + 120
    while not marker.exists():
        assert proc.poll() is None, "writer died before reaching the midpoint"
        assert time.time() < deadline, "writer never reached the midpoint"
        time.sleep(0.05)
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_killed_create_leaves_nothing(tmp_path):
    url = str(tmp_path / "new.zarr")
    _run_and_kill(tmp_path, url, "create")
    assert not Path(url).exists()
    with pytest.raises(StoreError):
        Store.open(url)
    leftovers = list(tmp_path.glob(".new.zarr.partial-*"))
    assert leftovers, "the partial build folder is hidden next to the target"
    with Store.create(url, 8) as s:  # a later create cleans up after the dead writer
        s.append(np.zeros((1, 8)))
    assert not list(tmp_path.glob(".new.zarr.partial-*"))


def test_killed_append_leaves_old_store(tmp_path):
    url = str(tmp_path / "old.zarr")
    with Store.create(url, 8, chunk_rows=128) as s:
        s.append(np.ones((100, 8), np.float32), [f"old-{i}" for i in range(100)], __import__("pandas").DataFrame({"b": np.arange(100)}))
    before = Store.open(url)
    fp = before.fingerprint
    _run_and_kill(tmp_path, url, "append")
    after = Store.open(url, mode="a")
    assert after.n_rows == 100 and after.fingerprint == fp
    assert after.embeddings.shape[0] > 100, "the killed writer had written uncommitted rows"
    np.testing.assert_array_equal(after.read_embeddings(), np.ones((100, 8)))
    assert after.meta()["b"].tolist() == list(range(100))
    after.append(np.full((3, 8), 7.0), ["n1", "n2", "n3"], __import__("pandas").DataFrame({"b": [1, 2, 3]}))
    final = Store.open(url)
    assert final.n_rows == 103 and final.validate() == []
    assert final.embeddings.shape[0] == 103
    np.testing.assert_array_equal(final.read_embeddings(slice(100, 103)), np.full((3, 8), 7.0))
