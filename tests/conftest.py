"""Shared fixtures: real stores on disk and in memory, and the small MNI demo built once per session."""

from __future__ import annotations

import os
import uuid

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def mem_url() -> str:
    """A fresh fsspec memory:// URL per test."""
    return f"memory://sae-test-{uuid.uuid4().hex}/store.zarr"


def make_rows(n: int, dim: int, start: int = 0, seed: int = 0):
    """Embeddings, ids and a metadata table covering every column kind."""
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    ids = [f"item-{start + i:05d}" for i in range(n)]
    meta = pd.DataFrame(
        {
            "label": rng.choice(["axial", "coronal", "sagittal ünïcødé"], n),
            "count": rng.integers(-5, 1000, n),
            "score": rng.random(n),
            "flag": rng.random(n) < 0.5,
        }
    )
    return emb, ids, meta


@pytest.fixture(scope="session")
def demo_small(tmp_path_factory):
    """The small MNI demo store (a few hundred slices), built once."""
    from sae.datasets.mni import MNIDemoConfig, build_mni_demo

    path = tmp_path_factory.mktemp("demo") / "store.zarr"
    return build_mni_demo(path, MNIDemoConfig.small(), progress=False)


@pytest.fixture
def fake_openai():
    """A scripted OpenAI-compatible server on 127.0.0.1 (see tests/fake_openai.py)."""
    from tests.fake_openai import FakeOpenAI

    with FakeOpenAI() as server:
        yield server


@pytest.fixture(scope="session")
def labeled_ws_template(demo_small, tmp_path_factory):
    """A workspace with the small demo store and a small trained SAE (copied per test by ``run_ws``)."""
    import shutil
    from pathlib import Path

    from sae.models import SAEConfig
    from sae.pipeline import train_run
    from sae.run import Workspace
    from sae.train import TrainConfig

    ws = Workspace(tmp_path_factory.mktemp("labelws") / "ws")
    ws.path.mkdir()
    shutil.copytree(Path(demo_small.url), ws.store_path)
    train_run(ws, SAEConfig(d_in=demo_small.dim, n_latents=48, k=8), TrainConfig(batch_size=64, epochs=4), progress=False, evaluate=False)
    return ws


@pytest.fixture
def run_ws(labeled_ws_template, tmp_path):
    """A private copy of the trained workspace and its SAE run."""
    import shutil

    from sae.run import Run, Workspace

    ws = Workspace(tmp_path / "ws")
    shutil.copytree(labeled_ws_template.path, ws.path)
    return ws, Run.find(ws)


def labeled_copy(template, folder):
    """A private copy of the trained template workspace in ``folder``, labeled offline from its metadata: (ws, run)."""
    import shutil

    from sae.interpret import MetadataLabeler, label_run
    from sae.run import Run, Workspace

    ws = Workspace(folder / "ws")
    shutil.copytree(template.path, ws.path)
    run = Run.find(ws)
    label_run(run, MetadataLabeler(), judge=None, progress=False)
    return ws, run
