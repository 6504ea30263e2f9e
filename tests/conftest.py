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
