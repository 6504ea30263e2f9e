"""Ground-truth recovery metrics (sae.truth) against direct NumPy computations on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from sae.errors import SaeError
from sae.truth import (
    activation_absorption,
    activation_f1,
    best_latents,
    child_residuals,
    decoder_absorption,
    hierarchy_groups,
    load_truth,
    mmcs,
    random_decoder,
    recovery_report,
    split_counts,
)


def _orthonormal(n: int, dim: int, seed: int = 0) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, n)))
    return q.T


def _direct_cos(t: np.ndarray, d: np.ndarray) -> np.ndarray:
    t = t / np.linalg.norm(t, axis=1, keepdims=True)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    return t @ d.T


PARENTS = np.array([-1, 0, 0, -1, 3, -1])
"""Concept 0 has children 1 and 2, concept 3 has child 4, concept 5 stands alone."""


def test_groups():
    g = hierarchy_groups(PARENTS)
    assert g["parents"].tolist() == [0, 3] and g["children"].tolist() == [1, 2, 4] and g["others"].tolist() == [5]
    assert g["all"].tolist() == list(range(6))


def test_a_perfect_decoder_scores_one_without_splits():
    t = _orthonormal(6, 16)
    dec = 3.0 * t[::-1]  # order and scale of the decoder rows do not matter
    np.testing.assert_allclose(mmcs(t, dec), 1.0)
    assert split_counts(t, dec).tolist() == [1] * 6
    rep = recovery_report(t, PARENTS, dec)
    for group in ("all", "parents", "children", "others"):
        assert rep[f"mmcs_{group}"] == pytest.approx(1.0) and rep[f"above_0.9_{group}"] == 1.0
    assert rep["split_mean_latents"] == pytest.approx(1.0) and rep["split_n_directions"] == 0
    assert rep["absorption_decoder"] == 0.0 and rep["absorption_activation"] is None
    assert (rep["n_parents"], rep["n_children"], rep["n_others"], rep["n_latents"]) == (2, 3, 1, 6)


def test_a_parent_learned_twice_is_split():
    t = _orthonormal(6, 16)
    dec = np.vstack([t, t[0] + 0.05 * t[5]])  # a second, slightly rotated copy of parent 0
    counts = split_counts(t, dec)
    assert counts.tolist() == [2, 1, 1, 1, 1, 1]
    rep = recovery_report(t, PARENTS, dec)
    assert rep["split_n_directions"] == 1 and rep["split_mean_latents"] == pytest.approx(7 / 6)


def test_a_child_without_its_own_latent_is_absorbed():
    t = _orthonormal(6, 16)
    t[1] = 0.6 * t[0] + 0.8 * t[1]  # child 1 shares its parent's direction
    dec = np.delete(t, 1, axis=0)  # the dictionary lacks child 1: its best match is parent 0's latent
    assert best_latents(t, dec)[1] == best_latents(t, dec)[0] == 0
    assert decoder_absorption(t, PARENTS, dec).tolist() == [True, False, False]
    assert recovery_report(t, PARENTS, dec)["absorption_decoder"] == pytest.approx(1 / 3)
    assert mmcs(t, dec)[1] == pytest.approx(0.6)


def test_mmcs_and_splits_match_numpy():
    rng = np.random.default_rng(1)
    t, dec = rng.standard_normal((40, 8)), rng.standard_normal((300, 8))
    cos = _direct_cos(t, dec)
    np.testing.assert_allclose(mmcs(t, dec), cos.max(1))
    assert np.array_equal(best_latents(t, dec), cos.argmax(1))
    assert np.array_equal(split_counts(t, dec, 0.8), (cos > 0.8).sum(1))


def test_the_random_baseline_is_seeded_and_low():
    t = _orthonormal(6, 64)
    r = random_decoder((50, 64), seed=3)
    np.testing.assert_allclose(np.linalg.norm(r, axis=1), 1.0)
    assert np.array_equal(r, random_decoder((50, 64), seed=3))
    rep = recovery_report(t, PARENTS, t, seed=3)
    assert rep["random"]["mmcs_all"] == pytest.approx(mmcs(t, random_decoder((6, 64), seed=3)).mean())
    assert rep["random"]["mmcs_all"] < 0.6 and rep["random"]["split_n_directions"] == 0


def _absorption_case():
    """Parent 0 (children 1, 2) with latent 0, child 1 with latent 1, child 2 with latent 2; concept 3 is child-free.

    Rows 0-9: parent alone, its latent fires on 8 (misses 20%). Rows 10-29: child 1, parent latent fires
    on 4 of 20 (misses 80%: absorption 0.6). Rows 30-49: child 2, parent latent fires on 18 (misses 10%:
    clipped to 0). Rows 50-54: child 4 of parent 3, too few rows to count.
    """
    t = _orthonormal(6, 16)
    true = np.zeros((55, 6))
    true[:10, 0] = 1
    true[10:30, [0, 1]] = 1
    true[30:50, [0, 2]] = 1
    true[50:55, [3, 4]] = 1
    codes = np.zeros((55, 6))
    codes[[0, 1, 2, 3, 4, 5, 6, 7], 0] = 1.0
    codes[10:14, 0] = 1.0
    codes[10:30, 1] = 1.0
    codes[30:48, 0] = 1.0
    codes[30:50, 2] = 1.0
    codes[50:55, [3, 4]] = 1.0
    return t, true, codes


def test_activation_absorption_on_a_hand_built_code_matrix():
    t, true, codes = _absorption_case()
    out = activation_absorption(t, PARENTS, t, sp.csr_matrix(codes), sp.csr_matrix(true), min_rows=10)
    assert out["children"].tolist() == [1, 2] and out["n"] == 2
    np.testing.assert_allclose(out["scores"], [0.6, 0.0], atol=1e-12)
    assert out["mean"] == pytest.approx(0.3)
    rep = recovery_report(t, PARENTS, t, codes, true)
    assert rep["absorption_activation"] is not None and np.isnan(rep["absorption_activation"]), "default min_rows=20: no parent has 20 lone rows"


def test_activation_absorption_needs_a_parent_latent_and_matching_rows():
    t, true, codes = _absorption_case()
    weak = t.copy()
    weak[0] = 0.4 * t[0] + np.sqrt(1 - 0.16) * t[5]  # parent 0's best latent has cosine 0.4 < 0.5
    weak = np.delete(weak, 5, axis=0)
    assert activation_absorption(t, PARENTS, weak, codes[:, :5], true, min_rows=10)["n"] == 0
    with pytest.raises(SaeError, match="same rows"):
        activation_absorption(t, PARENTS, t, codes[:10], true)
    sub = activation_absorption(t, PARENTS, t, codes, true, min_rows=1, max_rows=30, seed=0)
    assert sub["n"] >= 1 and 0.0 <= sub["mean"] <= 1.0


def test_report_on_planted_truth_with_the_true_codes(tmp_path):
    """An SAE that is the truth itself (decoder = directions, codes = true codes) absorbs nothing."""
    from sae.datasets.planted import hierarchical_config, make_planted

    cfg = hierarchical_config(n_rows=4000, dim=64, n_revealed=8)
    _, truth = make_planted(tmp_path / "store.zarr", cfg, progress=False, block_rows=2000)
    truth.save(tmp_path / "truth.npz")
    dirs, parents, codes = load_truth(tmp_path / "truth.npz")
    assert np.array_equal(parents, truth.parents) and (codes != truth.codes).nnz == 0
    rep = recovery_report(dirs, parents, dirs, codes, codes)
    assert rep["mmcs_children"] == pytest.approx(1.0, abs=1e-6) and rep["absorption_decoder"] == 0.0
    assert rep["absorption_activation"] == 0.0 and rep["absorption_activation_n"] > 50
    assert (rep["n_parents"], rep["n_children"], rep["n_others"]) == (64, 384, 576)
    assert rep["random"]["mmcs_all"] < 0.6 and rep["random"]["absorption_activation"] is None
    assert rep["random"]["absorption_decoder"] < 0.2


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.integers(1, 30), st.integers(2, 12), st.integers(0, 2**16))
def test_mmcs_properties(n_true, n_dec, dim, seed):
    rng = np.random.default_rng(seed)
    t, dec = rng.standard_normal((n_true, dim)), rng.standard_normal((n_dec, dim))
    per = mmcs(t, dec)
    assert per.shape == (n_true,) and np.all(per <= 1 + 1e-9)
    np.testing.assert_allclose(per, _direct_cos(t, dec).max(1), atol=1e-9)
    perm = rng.permutation(n_dec)
    np.testing.assert_allclose(mmcs(t, dec[perm] * rng.uniform(0.1, 5, (n_dec, 1))), per, atol=1e-9)
    np.testing.assert_allclose(mmcs(t, np.vstack([dec, t])), 1.0, atol=1e-9)
    assert np.all(split_counts(t, np.vstack([dec, t, t])) >= 2)


def test_a_decoder_of_child_residuals_scores_sqrt_one_minus_cos_squared():
    """Parent + child and parent + the child's own residual reconstruct equally: the residual scores
    0.8 on a child at cos 0.6 with its parent, and 1 on the residual itself."""
    base = _orthonormal(3, 8)
    parent, own = base[0], base[1]
    child = 0.6 * parent + 0.8 * own
    dirs = np.stack([parent, child, base[2]])
    parents = np.array([-1, 0, -1])
    children, residuals = child_residuals(dirs, parents)
    assert children.tolist() == [1]
    np.testing.assert_allclose(np.abs(residuals[0]), np.abs(own), atol=1e-12)
    decoder = np.stack([parent, own, base[2]])
    report = recovery_report(dirs, parents, decoder)
    assert report["mmcs_children"] == pytest.approx(0.8) and report["mmcs_children_residual"] == pytest.approx(1.0)
    assert report["random"]["mmcs_children_residual"] < 0.9


def test_activation_f1_matches_a_direct_count():
    true_codes = sp.csr_matrix(np.array([[1, 0], [1, 1], [0, 1], [0, 0]], dtype=float))
    codes = sp.csr_matrix(np.array([[0.5, 0, 0], [2, 0, 1], [0, 0, 1], [0, 3, 0]], dtype=float))
    f1, chance = activation_f1(codes, true_codes, seed=0)
    # concept 0 (rows 0,1) vs latent 0 (rows 0,1): F1 1; concept 1 (rows 1,2) vs latent 2 (rows 1,2): F1 1
    np.testing.assert_allclose(f1, [1.0, 1.0])
    assert chance.shape == (2,) and (chance <= 1).all()
    with pytest.raises(SaeError, match="rows"):
        activation_f1(codes[:3], true_codes)
