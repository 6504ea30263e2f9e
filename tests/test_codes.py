"""codes.zarr: CSR codes, inverted index and statistics equal direct computations; stale codes refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sae.codes import Codes, encode_store
from sae.errors import DimensionMismatchError, SaeError, StaleArtifactError
from sae.models import SAEConfig, SparseAutoencoder
from sae.store import Store


def _setup(tmp_path, arch="batchtopk", n_rows=700):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n_rows, 12)).astype(np.float32)
    with Store.create(tmp_path / "s.zarr", 12, chunk_rows=128) as s:
        s.append(x)
    model = SparseAutoencoder(SAEConfig(d_in=12, n_latents=40, k=4, arch=arch), seed=2)
    with torch.no_grad():
        model.threshold.fill_(0.5)
        model.b_enc.fill_(-0.2)
    return Store.open(tmp_path / "s.zarr"), model, x


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
@pytest.mark.parametrize("budget", [1.0, 2e-7])  # 2e-7 GB forces many feature blocks
def test_codes_match_direct_encoding(tmp_path, arch, budget):
    store, model, x = _setup(tmp_path, arch)
    codes = encode_store(store, model, tmp_path / "codes.zarr", batch_size=100, memory_budget_gb=budget, progress=False)
    vals, idx = model.encode(torch.from_numpy(x))
    direct = model.to_csr(vals, idx)
    csr = codes.to_csr()
    assert (csr != direct).nnz == 0
    assert codes.nnz == direct.nnz and np.array_equal(codes.l0(), np.diff(direct.indptr))
    dense = direct.toarray()
    stats = codes.stats()
    for f in range(40):
        col = dense[:, f]
        rows, values = codes.read_feature(f)
        active = np.flatnonzero(col > 0)
        assert sorted(rows.tolist()) == active.tolist()
        assert np.all(np.diff(values) <= 0), "strongest first"
        np.testing.assert_allclose(values, col[rows])
        assert stats.loc[f, "count"] == len(active)
        np.testing.assert_allclose(stats.loc[f, "rate"], len(active) / len(x), rtol=1e-6)
        if len(active):
            np.testing.assert_allclose(stats.loc[f, "mean"], col[active].mean(), rtol=1e-5)
            np.testing.assert_allclose(stats.loc[f, "max"], col[active].max(), rtol=1e-6)
            np.testing.assert_allclose(stats.loc[f, "q90"], np.quantile(col[active], 0.9), rtol=1e-5)
    sub = codes.rows([5, 0, 699])
    assert (sub != direct[[5, 0, 699]]).nnz == 0
    assert len(codes.read_feature(3, top=2)[0]) <= 2


def test_codes_errors(tmp_path):
    store, model, _ = _setup(tmp_path)
    codes = encode_store(store, model, tmp_path / "codes.zarr", progress=False)
    with pytest.raises(SaeError, match="unknown feature 40"):
        codes.read_feature(40)
    s2 = Store.open(tmp_path / "s.zarr", mode="a")
    s2.append(np.zeros((1, 12), np.float32))
    with pytest.raises(StaleArtifactError, match="different version of the store"):
        Codes.open(tmp_path / "codes.zarr", store=Store.open(tmp_path / "s.zarr"))
    wrong = SparseAutoencoder(SAEConfig(d_in=8, n_latents=16, k=2))
    with pytest.raises(DimensionMismatchError, match="expects 8-d inputs"):
        encode_store(store, wrong, tmp_path / "c2.zarr", progress=False)
    assert not (tmp_path / "c2.zarr").exists()
    with pytest.raises(SaeError, match="no codes at"):
        Codes.open(tmp_path / "nothing.zarr")
