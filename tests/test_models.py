"""SAE architectures: kernels against dense autograd, selection rules, decoder constraint, save/load."""

from __future__ import annotations

import pytest
import torch

from sae.errors import DimensionMismatchError, SaeError
from sae.models import SAEConfig, SparseAutoencoder
from sae.models.io import load_sae, save_sae
from sae.models.sparse import SparseDecode, SparseEncode, batch_topk_indices, topk_selector


def test_sparse_encode_matches_dense_autograd():
    torch.manual_seed(0)
    x = torch.randn(32, 12, dtype=torch.float64)
    w = torch.randn(40, 12, dtype=torch.float64, requires_grad=True)
    b = torch.randn(40, dtype=torch.float64, requires_grad=True)
    dead = torch.zeros(40, dtype=torch.bool)
    dead[5:20] = True
    vals, idx, aux_vals, aux_idx = SparseEncode.apply(x, w, b, topk_selector(4), topk_selector(3), dead)
    g1, g2 = torch.randn_like(vals), torch.randn_like(aux_vals)
    (vals * g1).sum().add((aux_vals * g2).sum()).backward()
    gw, gb = w.grad.clone(), b.grad.clone()
    w.grad = b.grad = None
    pre = torch.relu(x @ w.T + b)
    ref = pre.gather(1, idx)
    pre_dead = torch.where(dead, x @ w.T + b, torch.full_like(pre, -1e9)).relu()
    ref_aux = pre_dead.gather(1, aux_idx)
    torch.testing.assert_close(vals.double(), ref)
    torch.testing.assert_close(aux_vals.double(), ref_aux)
    (ref * g1).sum().add((ref_aux * g2).sum()).backward()
    torch.testing.assert_close(gw, w.grad)
    torch.testing.assert_close(gb, b.grad)
    assert set(aux_idx.flatten().tolist()) <= set(range(5, 20))


def test_sparse_decode_gradcheck():
    torch.manual_seed(0)
    idx = torch.randint(0, 30, (16, 5))
    v = torch.rand(16, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(30, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, w: SparseDecode.apply(v, idx, w), (v, w))
    dense = torch.zeros(16, 30, dtype=torch.float64).scatter_add(1, idx, v.detach())
    torch.testing.assert_close(SparseDecode.apply(v, idx, w), dense @ w)


def test_batch_topk_keeps_the_batch_top():
    torch.manual_seed(0)
    pre = torch.randn(64, 100)
    idx, keep = batch_topk_indices(pre, k=5, row_cap=4)
    kept = pre.gather(1, idx)[keep]
    assert len(kept) == 64 * 5
    cutoff = pre.flatten().topk(64 * 5).values.min()
    assert (kept >= cutoff).all()
    assert (keep.sum(1) <= 20).all() and (keep.sum(1) != 5).any(), "rows differ in L0"


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "matryoshka", "relu", "jumprelu"])
def test_training_forward_backward_and_decoder_norm(arch):
    cfg = SAEConfig(d_in=16, n_latents=64, k=4, arch=arch, aux_k=4)
    m = SparseAutoencoder(cfg, seed=1)
    x = torch.randn(128, 16)
    dead = torch.zeros(64, dtype=torch.bool)
    dead[:10] = True
    out = m.forward_train(x, dead)
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.l0 > 0
    assert m.W_enc.grad is not None and m.W_dec.grad is not None and m.b_dec.grad is not None
    m.project_decoder_grad()
    if arch != "relu":
        parallel = (m.W_dec.grad * m.W_dec).sum(1)
        assert parallel.abs().max() < 1e-5
        with torch.no_grad():
            m.W_dec.mul_(3.0)
        m.normalize_decoder()
        torch.testing.assert_close(m.W_dec.norm(dim=1), torch.ones(64))
    if arch in ("batchtopk", "matryoshka"):
        assert (m.threshold > 0).all(), "the inference threshold is learned during training"


def test_jumprelu_inference_does_not_shift_values():
    cfg = SAEConfig(d_in=8, n_latents=32, k=4, arch="batchtopk")
    m = SparseAutoencoder(cfg)
    m.threshold.fill_(0.3)
    x = torch.randn(20, 8)
    vals, idx = m.encode(x)
    pre = m.pre_acts(x)
    kept = vals > 0
    torch.testing.assert_close(vals[kept], pre.gather(1, idx)[kept])  # kept values are the raw pre-activations
    assert (vals[kept] > 0.3).all()
    assert ((pre > 0.3).sum(1) == kept.sum(1)).all()  # and every value above the threshold is kept


def test_matryoshka_levels():
    cfg = SAEConfig(d_in=8, n_latents=64, k=8, arch="matryoshka")
    sizes, ks = cfg.levels()
    assert sum(sizes) == 64 and sum(ks) == 8 and sizes[0] == 4 and ks == (2, 2, 4)
    with pytest.raises(SaeError, match="sum"):
        SAEConfig(d_in=8, n_latents=64, k=8, arch="matryoshka", level_sizes=(10, 10), level_ks=(4, 4))


def test_matryoshka_prefix_losses_train_the_decoder():
    cfg = SAEConfig(d_in=8, n_latents=32, k=6, arch="matryoshka", level_sizes=(4, 8, 20), level_ks=(2, 2, 2))
    m = SparseAutoencoder(cfg)
    out = m.forward_train(torch.randn(64, 8))
    out.loss.backward()
    assert m.W_dec.grad[:4].abs().sum() > 0, "the first prefix's decoder receives gradient"


def test_config_errors():
    with pytest.raises(SaeError, match="0 < k < n_latents"):
        SAEConfig(d_in=8, n_latents=16, k=16)
    with pytest.raises(SaeError, match="unknown architecture"):
        SAEConfig(d_in=8, arch="jump")
    assert SAEConfig.from_dict(SAEConfig(d_in=8, n_latents=64, k=8, arch="matryoshka").to_dict()).levels()[0] == (4, 12, 48)


def test_fold_and_save_roundtrip(tmp_path):
    cfg = SAEConfig(d_in=8, n_latents=32, k=4, arch="batchtopk")
    m = SparseAutoencoder(cfg, seed=3)
    with torch.no_grad():
        m.scale.fill_(2.5)
        m.b_dec.normal_()
        m.b_enc.normal_()
        m.threshold.fill_(0.1)
    x = torch.randn(10, 8)
    v1, i1 = m.encode(x)
    folded = m.folded()
    assert float(folded.scale) == 1.0
    v2, i2 = folded.encode(x)
    torch.testing.assert_close(v1, v2, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(m.decode_codes(v1, i1), folded.decode_codes(v2, i2), rtol=1e-4, atol=1e-5)
    save_sae(m, tmp_path / "run")
    loaded, doc = load_sae(tmp_path / "run")
    assert doc["arch"] == "batchtopk" and doc["input_scale"] == 2.5 and doc["schema_version"] == 1
    torch.testing.assert_close(loaded.encode(x)[0], v1, rtol=1e-4, atol=1e-5)
    with pytest.raises(DimensionMismatchError, match="width 8"):
        loaded.encode(torch.randn(3, 9))
    with pytest.raises(SaeError, match="no SAE at"):
        load_sae(tmp_path / "nothing")


def test_architecture_registry_and_a_new_architecture():
    from sae.models import ARCHS
    from sae.models.base import get_architecture, register, registered_archs, unregister
    from sae.models.topk import TopKSAE

    assert ARCHS == ("topk", "batchtopk", "matryoshka", "relu", "jumprelu") == registered_archs()
    for name in ARCHS:
        m = SparseAutoencoder(SAEConfig(d_in=8, n_latents=32, k=4, arch=name))
        assert type(m) is get_architecture(name) and isinstance(m, SparseAutoencoder) and m.arch_name == name

    @register("tiny_topk_test")
    class TinyTopK(TopKSAE):
        """TopK whose inference keeps one latent fewer: enough to tell it apart."""

        def select_codes(self, pre, max_active=None):
            vals, idx = pre.topk(self.cfg.k - 1, dim=1)
            return vals.clamp_min(0), idx

    try:
        import sae.models

        assert "tiny_topk_test" in sae.models.ARCHS
        cfg = SAEConfig(d_in=8, n_latents=32, k=4, arch="tiny_topk_test")
        m = SparseAutoencoder(cfg, seed=2)
        assert type(m) is TinyTopK and isinstance(m, TopKSAE) and isinstance(m, SparseAutoencoder)
        assert m.encode(torch.randn(5, 8))[1].shape == (5, 3)
        m.forward_train(torch.randn(16, 8)).loss.backward()  # the TopK training forward is inherited
        assert type(m.folded()) is TinyTopK
        with pytest.raises(SaeError, match="already registered"):
            register("tiny_topk_test")(TopKSAE)
    finally:
        unregister("tiny_topk_test")
    assert "tiny_topk_test" not in sae.models.ARCHS
    with pytest.raises(SaeError, match=r"unknown architecture 'gated'; choose one of \('topk', 'batchtopk', 'matryoshka', 'relu', 'jumprelu'\)"):
        SAEConfig(d_in=8, arch="gated")
    with pytest.raises(SaeError, match="unknown architecture 'gated'"):
        get_architecture("gated")
    with pytest.raises(SaeError, match="config says 'batchtopk'"):
        TopKSAE(SAEConfig(d_in=8, n_latents=32, k=4, arch="batchtopk"))


def test_estimator_is_a_sklearn_estimator():
    from dataclasses import fields

    from sklearn.base import clone

    from sae.estimator import SAE, SAE_OPTIONS

    est = SAE("topk", n_latents=64, k=4, epochs=2.0, l1_coeff=3.0, level_sizes=(4, 60))
    params = est.get_params(deep=True)
    assert params["arch"] == "topk" and params["n_latents"] == 64 and params["k"] == 4 and params["l1_coeff"] == 3.0
    assert params["aux_k"] is None and params["level_sizes"] == (4, 60)
    twin = clone(est)
    assert twin is not est and twin.get_params() == params and not hasattr(twin, "model_")
    assert SAE(**params).get_params() == params  # get_params round-trips through __init__
    assert est.set_params(k=8, arch="batchtopk") is est and est.k == 8 and est.arch == "batchtopk"
    assert clone(est).get_params()["k"] == 8
    with pytest.raises(ValueError, match="Invalid parameter"):
        est.set_params(not_a_param=1)
    covered = {"d_in", "n_latents", "k", "arch", *SAE_OPTIONS}
    assert covered == {f.name for f in fields(SAEConfig)}, "every SAEConfig field is an estimator parameter"
