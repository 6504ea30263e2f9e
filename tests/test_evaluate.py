"""Every metric against a direct NumPy computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from sae import evaluate as ev
from sae.models import SAEConfig, SparseAutoencoder


def test_fvu_accumulates_numerator_and_denominator_separately():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 7)) * 3 + 10  # far from zero: variance must be around the mean
    x_hat = x + rng.standard_normal(x.shape) * 0.5
    acc = ev.ReconstructionAccumulator()
    for i in range(0, 500, 64):
        acc.update(x[i : i + 64], x_hat[i : i + 64], np.full(len(x[i : i + 64]), 3))
    r = acc.result()
    direct = ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    np.testing.assert_allclose(r["fvu"], direct, rtol=1e-10)
    np.testing.assert_allclose(r["r2"], 1 - direct, rtol=1e-10)
    assert r["l0"] == 3 and r["rows"] == 500
    batch_mean = np.mean([((x[i:i+64] - x_hat[i:i+64]) ** 2).sum() / ((x[i:i+64] - x[i:i+64].mean(0)) ** 2).sum() for i in range(0, 500, 64)])
    assert abs(batch_mean - direct) > 1e-4, "averaging per-batch FVUs would be a different (wrong) number"


def test_fvu_is_undefined_without_variance():
    acc = ev.ReconstructionAccumulator()
    acc.update(np.ones((1, 4)), np.zeros((1, 4)))
    res = acc.result()
    assert np.isnan(res["fvu"]) and np.isnan(res["r2"]) and res["mse"] == 4.0 and res["rows"] == 1


def test_reconstruction_uses_the_model():
    model = SparseAutoencoder(SAEConfig(d_in=6, n_latents=12, k=3), seed=0)
    x = np.random.default_rng(1).standard_normal((50, 6)).astype(np.float32)
    r = ev.reconstruction(model, [x[:20], x[20:]])
    vals, idx = model.encode(torch.from_numpy(x))
    x_hat = model.decode_codes(vals, idx).numpy()
    np.testing.assert_allclose(r["fvu"], ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum(), rtol=1e-5)


def test_sparsity_fractions():
    rates = np.array([0, 0, 0.5, 0.05, 0.001, 0.2])
    s = ev.sparsity(rates, dense_threshold=0.1)
    assert s["dead_frac"] == 2 / 6 and s["dense_frac"] == 2 / 6
    assert sum(s["density_hist"]["counts"]) == 4


def test_probe_recovery_against_sklearn():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    dense = rng.standard_normal((600, 10)) + np.eye(3, 10)[y] * 2
    codes = np.zeros((600, 20))
    codes[np.arange(600), y] = 1.0 + rng.random(600)  # features 0..2 are the class indicators
    codes[:, 5:] = rng.random((600, 15)) * (rng.random((600, 15)) < 0.1)
    train = np.arange(600) < 450
    df = ev.probe_recovery(dense, sp.csr_matrix(codes), y.astype(str), train, ns=(1, 3))
    sc = StandardScaler().fit(dense[train])
    clf = LogisticRegression(max_iter=2000).fit(sc.transform(dense[train]), y[train])
    direct = balanced_accuracy_score(y[~train], clf.predict(sc.transform(dense[~train])))
    np.testing.assert_allclose(df.iloc[0]["balanced_accuracy"], direct, rtol=1e-9)
    top3 = df[df["probe"] == "sae_top3"].iloc[0]
    assert top3["balanced_accuracy"] > 0.95 and top3["ratio_to_dense"] == top3["balanced_accuracy"] / direct
    # baselines: another code matrix (pure noise) and the raw dimensions, selected two-sided
    noise = sp.csr_matrix(rng.random((600, 20)) * (rng.random((600, 20)) < 0.2))
    df = ev.probe_recovery(dense, sp.csr_matrix(codes), y.astype(str), train, ns=(1, 3), baselines={"random_sae": noise}).set_index("probe")
    assert df.loc["random_sae_top3", "balanced_accuracy"] < 0.6 < df.loc["raw_top3", "balanced_accuracy"]
    flipped = dense.copy()
    flipped[:, :3] *= -1  # class evidence pointing down: a two-sided selection still finds those dimensions
    assert set(ev.select_features(flipped[train], y[train], 3, one_sided=False)) == {0, 1, 2}


def test_random_sae_is_the_baseline_of_the_same_size():
    model = SparseAutoencoder(SAEConfig(d_in=16, n_latents=64, k=4, arch="batchtopk"))
    with torch.no_grad():
        model.b_dec.fill_(0.5)
    rand = ev.random_sae(model, k=6, seed=1)
    assert rand.cfg.arch == "topk" and rand.cfg.k == 6 and rand.cfg.n_latents == 64 and not rand.training
    torch.testing.assert_close(rand.W_enc, rand.W_dec)
    torch.testing.assert_close(rand.W_dec.norm(dim=1), torch.ones(64))
    torch.testing.assert_close(rand.b_dec, torch.full((16,), 0.5))
    assert (rand.encode(torch.randn(3, 16))[0] > 0).sum(1).le(6).all()
    torch.testing.assert_close(ev.random_sae(model, seed=1).W_dec, rand.W_dec)  # seeded


def test_fingerprint_fidelity_identity_and_noise():
    rng = np.random.default_rng(0)
    x = np.abs(rng.standard_normal((300, 12)))
    assert ev.fingerprint_fidelity(x, sp.csr_matrix(x), np.arange(20), k=5, top_features=12) == 1.0
    noise = sp.csr_matrix(np.abs(rng.standard_normal((300, 12))))
    assert ev.fingerprint_fidelity(x, noise, np.arange(20), k=5, top_features=12) < 0.3


def test_monosemanticity_scores():
    rng = np.random.default_rng(0)
    meta = pd.DataFrame({"site": rng.choice(["a", "b", "c", "d"], 1000)})
    pure = np.flatnonzero(meta["site"] == "a")[:80]
    mixed = rng.choice(1000, 80, replace=False)
    df = ev.monosemanticity({0: pure[:50], 1: mixed[:50]}, {0: pure, 1: mixed}, meta, ["site"], seed=0)
    pure_row, mixed_row = df.set_index("feature").loc[0], df.set_index("feature").loc[1]
    p_a = (meta["site"] == "a").mean()
    assert pure_row["coherence"] == 1.0 and pure_row["value"] == "a"
    np.testing.assert_allclose(pure_row["specificity"], (1 - p_a) / (1 - p_a))
    assert pure_row["score"] > 0.5 and mixed_row["score"] < 0.15


def test_ground_truth_and_seed_stability():
    rng = np.random.default_rng(0)
    truth = rng.standard_normal((50, 16))
    learned = np.concatenate([truth[rng.permutation(50)] * 3.0, rng.standard_normal((30, 16))])
    score, per = ev.ground_truth_recovery(truth, learned)
    np.testing.assert_allclose(score, 1.0) and np.testing.assert_allclose(per, 1.0)
    other = learned[rng.permutation(80)]
    s, matched = ev.seed_stability(learned, other)
    np.testing.assert_allclose(s, 1.0)
    assert len(matched) == 80
    s_rand, _ = ev.seed_stability(learned, rng.standard_normal((80, 16)))
    assert s_rand < 0.8
