"""The trainer on real stores: ground-truth recovery, exact resume, streaming, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from sae.datasets.planted import PlantedConfig, make_planted
from sae.errors import DimensionMismatchError, NonFiniteError, SaeError
from sae.evaluate import ground_truth_recovery
from sae.models import SAEConfig
from sae.store import Store
from sae.train import TrainConfig, Trainer, geometric_median


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    path = tmp_path_factory.mktemp("planted") / "store.zarr"
    cfg = PlantedConfig(n_rows=12000, dim=64, n_concepts=48, n_parents=0, k_active=3, n_revealed=8, noise=0.02, seed=1)
    return make_planted(path, cfg, progress=False)


@pytest.mark.parametrize("arch", ["topk", "matryoshka"])
def test_recovers_planted_directions(planted, arch):
    store, truth = planted
    sae_cfg = SAEConfig(d_in=64, n_latents=96, k=4, arch=arch)
    model = Trainer(sae_cfg, TrainConfig(batch_size=512, epochs=20, seed=0), progress=False).fit(store)
    score, per = ground_truth_recovery(truth.directions, model.W_dec.detach().numpy())
    assert score > 0.93, f"{arch} recovered only {score:.3f}"


def test_exact_resume(tmp_path, planted):
    store, _ = planted
    sae_cfg = SAEConfig(d_in=64, n_latents=64, k=4, arch="batchtopk")
    tcfg = TrainConfig(batch_size=1024, epochs=2, seed=3, dead_window=2000)
    full = Trainer(sae_cfg, tcfg, run_dir=tmp_path / "a", progress=False).fit(store)
    Trainer(sae_cfg, tcfg, run_dir=tmp_path / "b", progress=False).fit(store, stop_after=7)  # "interrupted" mid-epoch
    resumed = Trainer(sae_cfg, tcfg, run_dir=tmp_path / "b", progress=False).fit(store, resume=True)
    for name, value in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=0, atol=0)
    assert (tmp_path / "b" / "model.safetensors").exists() and (tmp_path / "b" / "train_log.json").exists()
    with pytest.raises(SaeError, match="different configuration.*k: 4 -> 5"):
        Trainer(sae_cfg.with_(k=5), tcfg, run_dir=tmp_path / "b", progress=False).fit(store, resume=True)
    with pytest.raises(SaeError, match="nothing to resume"):
        Trainer(sae_cfg, tcfg, run_dir=tmp_path / "c", progress=False).fit(store, resume=True)


def test_streaming_matches_in_memory_contract(planted):
    store, truth = planted
    sae_cfg = SAEConfig(d_in=64, n_latents=96, k=6)
    tr = Trainer(sae_cfg, TrainConfig(batch_size=500, epochs=3, memory_budget_gb=1e-6), progress=False)
    tr.fit(store)
    assert not tr.in_memory_
    assert tr.state_.samples == 3 * (store.n_rows - int(round(store.n_rows * 0.1)))
    assert tr.state_.log[-1]["fvu"] < 0.5


def test_bad_inputs(tmp_path, planted):
    store, _ = planted
    with pytest.raises(DimensionMismatchError, match="64-d embeddings but the SAE expects d_in=32"):
        Trainer(SAEConfig(d_in=32, n_latents=64, k=4), progress=False).fit(store)
    with pytest.raises(SaeError, match="0 < k < n_latents"):
        SAEConfig(d_in=64, n_latents=64, k=64)
    x = np.random.default_rng(0).standard_normal((100, 6)).astype(np.float32)
    with Store.create(tmp_path / "bad.zarr", 6) as s:
        s.append(x)
    zarr.open_group(str(tmp_path / "bad.zarr"), mode="r+")["embeddings"][7, 2] = np.nan  # corrupted outside the workbench
    with pytest.raises(NonFiniteError, match="row000000007"):
        Trainer(SAEConfig(d_in=6, n_latents=16, k=2), progress=False).fit(Store.open(tmp_path / "bad.zarr"))


def test_geometric_median_is_robust():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 3)) + 5
    x[:20] += 1000  # outliers drag the mean, not the median
    gm = geometric_median(x)
    assert np.linalg.norm(gm - 5) < 0.5 and np.linalg.norm(x.mean(0) - 5) > 50
