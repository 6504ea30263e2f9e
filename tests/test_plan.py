"""Schedules chosen from the data (sae.train.plan), the plateau stop, and k on the FVU elbow (sae.train.autok)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sae.errors import SaeError
from sae.models import SAEConfig
from sae.train import TrainConfig, Trainer
from sae.train.autok import choose_k, elbow
from sae.train.plan import TARGET_STEPS, default_batch_size, default_n_latents, plan_schedule, validation_rows


def sparse_rows(n: int, d: int = 32, concepts: int = 64, active: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dirs = rng.standard_normal((concepts, d))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    x = np.zeros((n, d))
    for i in range(n):
        x[i] = rng.uniform(0.5, 2.0, active) @ dirs[rng.choice(concepts, active, replace=False)]
    return (x + 0.02 * rng.standard_normal((n, d))).astype(np.float32)


def test_defaults_follow_the_row_count():
    assert default_batch_size(3534) == 256 and default_batch_size(90_000) == 1024 and default_batch_size(10_000_000) == 4096
    assert default_batch_size(100) <= 100
    assert default_n_latents(3927, 384) == 512 and default_n_latents(100_000, 384) == 4096 and default_n_latents(300, 384) == 128
    assert default_n_latents(10_000_000, 64) == 1024  # at most 16 x d_in
    assert validation_rows(3534) == 256 and validation_rows(1_000_000) == 4096


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 10_000_000))
def test_batch_size_is_a_power_of_two_in_range(n):
    b = default_batch_size(n)
    assert 1 <= b <= min(4096, n) and (b & (b - 1) == 0 or b == n)


def test_an_automatic_schedule_says_what_it_chose():
    plan = plan_schedule(TrainConfig(), n_train=3534, n_latents=512)
    cfg = plan.config
    assert cfg.batch_size == 256 and cfg.stop_on_plateau and cfg.validation_rows == 256 and plan.max_steps == TARGET_STEPS
    assert "3,278 training rows: batch 256" in plan.notes[0] and any("plateaus" in n for n in plan.notes)
    assert not any(n.startswith("warning") for n in plan.notes)
    assert any(n.startswith("warning: 4,096 latents") for n in plan_schedule(TrainConfig(), 3534, 4096).notes)


def test_explicit_flags_win():
    plan = plan_schedule(TrainConfig(batch_size=100, epochs=3), n_train=1000, n_latents=64)
    assert plan.config.batch_size == 100 and plan.max_steps == 30 and not plan.config.stop_on_plateau and plan.notes == ()
    assert plan_schedule(TrainConfig(max_steps=77), 1000, 64).max_steps == 77
    assert plan_schedule(TrainConfig(batch_size=10, max_samples=95), 1000, 64).max_steps == 10
    forced = plan_schedule(TrainConfig(max_steps=500, stop_on_plateau=True), 1000, 64).config
    assert forced.stop_on_plateau and forced.validation_rows == 250  # at most a quarter of the rows
    with pytest.raises(SaeError, match="batch_size must be positive"):
        TrainConfig(batch_size=0)


def test_plateau_stop_ends_early_with_a_decay_and_resumes_exactly(tmp_path):
    x = sparse_rows(1500)
    sae_cfg = SAEConfig(d_in=32, n_latents=128, k=4)
    cfg = TrainConfig(max_steps=3000, stop_on_plateau=True, eval_every=20, holdout_frac=0.1, seed=1)
    tr = Trainer(sae_cfg, cfg, run_dir=tmp_path / "a", progress=False)
    full = tr.fit(x)
    state = tr.state_
    assert state.stopped.startswith("plateau at step") and state.step == state.end < 3000
    assert state.end - state.decay_start == int(np.ceil(state.decay_start * 0.2 / 0.8))
    assert tr.validation == slice(tr.split.train.stop, tr.split.holdout.start) and tr.validation.stop - tr.validation.start == 256
    assert tr.state_.samples <= state.step * 256 and tr.in_memory_
    steps = [s for s, _ in state.validation]
    assert steps == list(range(20, state.decay_start + 1, 20))
    # the validation FVU is the model's own reconstruction of the validation rows
    xv = torch.from_numpy(x[tr.validation])
    assert tr.validation_fvu(full) == pytest.approx(float((xv - full.decode_codes(*full.encode(xv))).pow(2).sum() / (xv - xv.mean(0)).pow(2).sum()), rel=1e-5)
    Trainer(sae_cfg, cfg, run_dir=tmp_path / "b", progress=False).fit(x, stop_after=state.decay_start + 3)  # interrupted in the decay
    resumed = Trainer(sae_cfg, cfg, run_dir=tmp_path / "b", progress=False).fit(x, resume=True)
    for name, value in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=0, atol=0)


def test_a_fixed_schedule_runs_to_the_end():
    tr = Trainer(SAEConfig(d_in=32, n_latents=64, k=4), TrainConfig(batch_size=100, epochs=2, holdout_frac=0.0), progress=False)
    tr.fit(sparse_rows(500))
    assert tr.state_.step == 10 and tr.state_.stopped == "" and tr.state_.validation == [] and tr._x_val is None


def test_elbow_finds_the_bend():
    ks = [2, 4, 8, 16, 32, 64]
    assert elbow(ks, [0.9, 0.6, 0.12, 0.1, 0.09, 0.085]) == 8
    assert elbow(ks, [0.5, 0.4, 0.3, 0.2, 0.1, 0.0]) == 64  # no bend: the first k within 5% of the end
    assert elbow(ks, [0.1, 0.2, 0.3, 0.3, 0.4, 0.5]) == 2  # FVU never falls: the smallest k
    with pytest.raises(SaeError, match="three values"):
        elbow([4, 8], [0.5, 0.1])


def test_choose_k_lands_near_the_true_l0():
    x = sparse_rows(4000, d=48, concepts=96, active=4)
    choice = choose_k(x, n_latents=256, ks=(1, 2, 4, 8, 16, 32), steps=300, progress=False)
    assert choice.k in (4, 8), choice.curve
    assert list(choice.curve["k"]) == [1, 2, 4, 8, 16, 32] and choice.curve["fvu"].is_monotonic_decreasing
    assert "auto-k: k=" in choice.note() and "<b>k =" in choice._repr_html_()
