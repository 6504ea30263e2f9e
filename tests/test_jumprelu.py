"""JumpReLU SAE: registry, straight-through estimators, L0 controller, training, save/load and exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sae.errors import SaeError
from sae.models import ARCHS, SAEConfig, SparseAutoencoder
from sae.models.io import load_sae, save_sae
from sae.models.jumprelu import JumpReLUFn, JumpReLUSAE, StepFn
from sae.train import TrainConfig, Trainer


def planted_rows(n_rows: int, d: int = 32, n_dirs: int = 64, active: float = 4.0, noise: float = 0.02, seed: int = 0):
    """Sparse non-negative combinations of random unit directions plus small noise: (rows, directions)."""
    rng = np.random.default_rng(seed)
    dirs = rng.standard_normal((n_dirs, d))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    coef = (rng.random((n_rows, n_dirs)) < active / n_dirs) * rng.uniform(0.5, 1.5, (n_rows, n_dirs))
    return (coef @ dirs + noise * rng.standard_normal((n_rows, d))).astype(np.float32), dirs


def heldout_fvu_l0(model: SparseAutoencoder, x: np.ndarray) -> tuple[float, float]:
    """FVU of the inference reconstruction of raw rows, and their mean L0."""
    xt = torch.from_numpy(x)
    vals, idx = model.encode(xt)
    x_hat = model.decode_codes(vals, idx)
    return float((xt - x_hat).pow(2).sum() / (xt - xt.mean(0)).pow(2).sum()), float((vals > 0).sum(1).float().mean())


def with_data_scale(model: SparseAutoencoder, x: np.ndarray) -> SparseAutoencoder:
    """Set the input scale as the trainer does (mean norm -> sqrt(d)) and start the thresholds from ``x``."""
    with torch.no_grad():
        model.scale.fill_(model.cfg.d_in ** 0.5 / float(np.linalg.norm(x, axis=1).mean()))
    model.init_from_sample(torch.from_numpy(x))
    return model


@pytest.fixture(scope="module")
def trained():
    """One JumpReLU SAE trained on planted rows, the rows held out from it and their random-init FVU."""
    x, _ = planted_rows(9000)
    train, held = x[:8000], x[8000:]
    cfg = SAEConfig(d_in=32, n_latents=64, k=4, arch="jumprelu")
    model = Trainer(cfg, TrainConfig(batch_size=256, epochs=10, holdout_frac=0.0, seed=0), progress=False).fit(train)
    random_fvu, _ = heldout_fvu_l0(with_data_scale(SparseAutoencoder(cfg, seed=0), train), held)
    return model, held, random_fvu


def test_registered_and_built_through_the_registry():
    assert "jumprelu" in ARCHS
    m = SparseAutoencoder(SAEConfig(d_in=16, n_latents=64, k=4, arch="jumprelu"))
    assert type(m) is JumpReLUSAE and m.arch_name == "jumprelu" and m.unit_norm_decoder
    torch.testing.assert_close(m.threshold, m.theta.detach())
    x = torch.randn(300, 16)
    assert 2 <= float((m.pre_acts(x) > m.threshold).sum(1).float().mean()) <= 8, "the default thresholds give L0 ~ k on unit-variance rows"
    with pytest.raises(SaeError, match="0 < k < n_latents"):
        SAEConfig(d_in=16, n_latents=64, k=64, arch="jumprelu")


def test_straight_through_gradients_use_the_rectangle_kernel():
    eps = 0.1
    theta = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    # latent 0: in band (0.96, 1.04), below the band, above it; latent 1: just above and just below 2 (both in band)
    pre = torch.tensor([[0.96, 2.01], [0.5, 1.97], [1.3, 3.0]], dtype=torch.float64, requires_grad=True)
    g = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=torch.float64)
    z = JumpReLUFn.apply(pre, theta, eps)
    torch.testing.assert_close(z.detach(), torch.tensor([[0.0, 2.01], [0.0, 0.0], [1.3, 3.0]], dtype=torch.float64))
    (z * g).sum().backward()
    torch.testing.assert_close(pre.grad, g * (pre.detach() > theta.detach()))  # exact gradient where active, none elsewhere
    # only pre-activations within eps / 2 of the threshold contribute: -(theta / eps) * sum of their upstream gradients
    torch.testing.assert_close(theta.grad, torch.tensor([-(1.0 / eps) * 1.0, -(2.0 / eps) * (2.0 + 4.0)], dtype=torch.float64))
    pre.grad = theta.grad = None
    h = StepFn.apply(pre, theta, eps)
    torch.testing.assert_close(h.detach(), (pre.detach() > theta.detach()).double())
    (h * g).sum().backward()
    assert (pre.grad == 0).all(), "the L0 penalty does not train the encoder"
    torch.testing.assert_close(theta.grad, torch.tensor([-1.0 / eps, -(2.0 + 4.0) / eps], dtype=torch.float64))
    far = torch.tensor([[5.0, -3.0]], dtype=torch.float64)
    theta.grad = None
    JumpReLUFn.apply(far, theta, eps).sum().add(StepFn.apply(far, theta, eps).sum()).backward()
    assert (theta.grad == 0).all(), "no threshold gradient outside the band"


def test_init_from_sample_starts_at_l0_k_with_no_dead_latent():
    x, _ = planted_rows(4000)
    m = with_data_scale(SparseAutoencoder(SAEConfig(d_in=32, n_latents=64, k=4, arch="jumprelu"), seed=1), x)
    active = m.pre_acts(torch.from_numpy(x)) > m.threshold
    assert abs(float(active.sum(1).float().mean()) - 4) < 0.05
    fires = active.float().mean(0)
    assert (fires > 0.05).all() and (fires < 0.08).all(), "every latent fires on about k / n of the rows"
    torch.testing.assert_close(m.threshold, m.theta.detach())
    assert float(m.l0_coeff) > 0


def test_l0_controller_follows_the_target():
    m = SparseAutoencoder(SAEConfig(d_in=16, n_latents=64, k=4, arch="jumprelu"))
    x = torch.randn(128, 16) * 2
    start = float(m.l0_coeff)
    with torch.no_grad():
        m.log_threshold_scaled.fill_(-1.0)  # tiny thresholds: L0 far above k
    out = m.forward_train(x)
    assert out.l0 > 8 and float(m.l0_coeff) > start
    with torch.no_grad():
        m.log_threshold_scaled.fill_(1.0)  # huge thresholds: L0 = 0
    high = float(m.l0_coeff)
    out = m.forward_train(x)
    assert out.l0 == 0 and float(m.l0_coeff) < high and out.fired.numel() == 0


def test_training_forward_under_bf16_autocast():
    m = SparseAutoencoder(SAEConfig(d_in=16, n_latents=64, k=4, arch="jumprelu"), seed=2)
    x = torch.randn(64, 16)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = m.forward_train(x)
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.l0 > 0 and out.aux_loss == 0
    assert m.log_threshold_scaled.grad is not None and torch.isfinite(m.log_threshold_scaled.grad).all()
    assert m.W_enc.grad is not None and m.W_enc.grad.abs().sum() > 0


def test_training_reconstructs_at_l0_near_k(trained):
    model, held, random_fvu = trained
    fvu, l0 = heldout_fvu_l0(model, held)
    assert fvu < 0.6 * random_fvu and fvu < 0.4, f"held-out FVU {fvu:.3f} (random init {random_fvu:.3f})"
    assert 2 <= l0 <= 8, f"mean L0 {l0:.2f} strays from k = 4"
    torch.testing.assert_close(model.threshold, model.theta.detach(), rtol=0, atol=0)  # the inference mirror is current
    torch.testing.assert_close(model.W_dec.norm(dim=1), torch.ones(64))


def test_folded_save_and_load_give_the_same_codes(trained, tmp_path):
    model, held, _ = trained
    x = torch.from_numpy(held)
    dense = lambda m: torch.from_numpy(m.to_csr(*m.encode(x)).toarray())
    ref = dense(model)
    folded = model.folded()
    assert float(folded.scale) == 1.0 and float(model.scale) != 1.0
    torch.testing.assert_close(dense(folded), ref, rtol=1e-4, atol=1e-4)
    save_sae(model, tmp_path / "run")
    loaded, doc = load_sae(tmp_path / "run")
    assert type(loaded) is JumpReLUSAE and doc["arch"] == "jumprelu"
    torch.testing.assert_close(dense(loaded), ref, rtol=1e-4, atol=1e-4)
    for name in ("threshold", "log_threshold_scaled", "l0_coeff"):
        torch.testing.assert_close(getattr(loaded, name), getattr(model, name).detach(), rtol=0, atol=0)


def test_exact_resume(tmp_path):
    x, _ = planted_rows(3000, seed=1)
    cfg = SAEConfig(d_in=32, n_latents=64, k=4, arch="jumprelu")
    tcfg = TrainConfig(batch_size=256, epochs=2, holdout_frac=0.0, seed=3, dead_window=2000)
    full = Trainer(cfg, tcfg, run_dir=tmp_path / "a", progress=False).fit(x)
    Trainer(cfg, tcfg, run_dir=tmp_path / "b", progress=False).fit(x, stop_after=7)  # "interrupted" mid-epoch
    resumed = Trainer(cfg, tcfg, run_dir=tmp_path / "b", progress=False).fit(x, resume=True)
    state = resumed.state_dict()
    assert {"log_threshold_scaled", "l0_coeff", "threshold"} <= set(state)
    for name, value in full.state_dict().items():
        torch.testing.assert_close(state[name], value, rtol=0, atol=0)
    assert (tmp_path / "b" / "model.safetensors").exists()
