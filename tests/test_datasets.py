"""The MNI152 demo (small mode) and the planted generator: their truth matches their data."""

from __future__ import annotations

import numpy as np
import pytest

from sae.datasets import mni
from sae.datasets.planted import PlantedConfig, SliceSpec, make_planted
from sae.errors import SaeError


def test_demo_small_contents(demo_small):
    s = demo_small
    assert 150 <= s.n_rows <= 600 and s.dim == 1280
    m = s.meta()
    assert set(m["orientation"]) == set(mni.ORIENTATIONS)
    assert set(m["artifact"]) == {"none", *mni.ARTIFACTS}
    combos = m.loc[m["artifact"] != "none"].groupby(["artifact", "severity"]).size()
    assert len(combos) == 12 and combos.max() - combos.min() <= 1, "artifact x severity combinations are balanced"
    assert (m["quality_fail"] == (m["severity"] == "severe")).all()
    assert ((m["artifact"] == "none") == (m["severity"] == "none")).all()
    assert m["gm_fraction"].between(0, 1).all() and m["wm_fraction"].between(0, 1).all()
    assert set(m["region"]) <= {"inferior", "mid", "superior", "posterior", "anterior", "medial", "lateral"}
    assert m["id"].is_unique and s.has_image_previews and s.previews([0]).shape == (1, 64, 64)
    assert s.provenance["dataset"] == "mni152-demo" and s.provenance["group_key"] == "volume"
    assert np.isfinite(s.read_embeddings()).all()


def test_demo_is_cached(demo_small, tmp_path):
    from pathlib import Path

    again = mni.build_mni_demo(Path(demo_small.url), mni.MNIDemoConfig.small(), progress=False)
    assert again.fingerprint == demo_small.fingerprint


def test_demo_slices_are_deterministic_whatever_the_workers():
    cfg = mni.MNIDemoConfig.small(n_volumes=2, stride=25)
    m1, im1 = mni.generate_slices(cfg, progress=False, workers=1)
    m2, im2 = mni.generate_slices(cfg, progress=False, workers=2)
    assert m1.equals(m2) and np.array_equal(im1, im2)
    assert (m1["artifact"] != "none").any()


@pytest.mark.parametrize("artifact", mni.ARTIFACTS)
def test_artifacts_degrade_more_when_severe(artifact):
    t1, _, _ = mni.load_template()
    clean = mni._to_canvas(t1[:, :, 90], 240)
    diffs = {sev: np.mean([np.abs(mni.degrade(clean, artifact, sev, seed) - clean).mean() for seed in range(3)]) for sev in mni.SEVERITIES}
    assert diffs["mild"] > 1e-3 and diffs["severe"] > diffs["mild"]


def test_planted_truth_matches_data(mem_url):
    cfg = PlantedConfig(n_rows=3000, dim=64, n_concepts=128, n_parents=8, n_revealed=24, noise=0.05, seed=3)
    store, truth = make_planted(mem_url, cfg, progress=False, block_rows=1000)
    x = store.read_embeddings()
    clean = np.asarray(truth.codes @ truth.directions) + truth.offset
    rel = np.linalg.norm(x - clean, axis=1).mean() / np.linalg.norm(clean - truth.offset, axis=1).mean()
    assert 0.03 < rel < 0.07, "residual equals the configured noise level"
    np.testing.assert_allclose(np.linalg.norm(truth.directions, axis=1), 1, atol=1e-5)
    active = truth.codes.toarray() > 0
    for child in np.flatnonzero(truth.parents >= 0):
        assert active[active[:, child], truth.parents[child]].all(), "a child never fires without its parent"
    m = store.meta()
    for column, concepts in truth.revealed.items():
        sub = truth.codes[:, concepts].toarray()
        expected = np.where(sub.max(1) > 0, np.array([truth.names[c] for c in concepts], dtype=object)[sub.argmax(1)], "none")
        assert (m[column].to_numpy() == expected).all()
    for s in truth.slices:
        rate = m["failure"][s["rows"]].mean()
        assert abs(rate - s["failure_rate"]) < 0.15 and 0.005 < s["rows"].mean() < 0.12
    assert m["failure"][~np.any([s["rows"] for s in truth.slices], axis=0)].mean() < 0.06
    assert len(set(truth.names)) == cfg.n_concepts


def test_planted_is_deterministic_and_sized(mem_url):
    cfg = PlantedConfig(n_rows=1000, dim=32, n_concepts=96, n_parents=4, n_revealed=16, dtype="float16")
    a, ta = make_planted(mem_url, cfg, progress=False)
    b, tb = make_planted(mem_url.replace("store", "other"), cfg, progress=False)
    assert a.fingerprint == b.fingerprint and a.dtype == "float16" and a.n_rows == 1000
    assert (ta.codes != tb.codes).nnz == 0


def test_planted_bad_config(mem_url):
    with pytest.raises(SaeError, match="too small"):
        make_planted(mem_url, PlantedConfig(n_rows=10, n_concepts=20), progress=False)
    with pytest.raises(SaeError, match="unknown slice kind"):
        make_planted(mem_url, PlantedConfig(n_rows=10, dim=8, n_concepts=96, slices=(SliceSpec("weird"),)), progress=False)


def test_planted_hierarchy_shares_the_parent_direction(mem_url):
    cfg = PlantedConfig(n_rows=4000, dim=48, n_concepts=160, n_parents=8, children_per_parent=5, child_cos=0.6,
                        exclusive_siblings=True, n_revealed=16, slices=(), seed=2)
    store, truth = make_planted(mem_url, cfg, progress=False, block_rows=1500)
    kids = np.flatnonzero(truth.parents >= 0)
    assert np.array_equal(np.bincount(truth.parents[kids]), [5] * 8), "every parent has exactly 5 children"
    assert set(kids) <= set(range(8, 160)) and (truth.parents[:8] == -1).all()
    np.testing.assert_allclose(np.linalg.norm(truth.directions, axis=1), 1, atol=1e-5)
    cos = (truth.directions[kids] * truth.directions[truth.parents[kids]]).sum(1)
    np.testing.assert_allclose(cos, 0.6, atol=1e-5)
    active = truth.codes.toarray() > 0
    for p in range(8):
        family = kids[truth.parents[kids] == p]
        assert active[active[:, family].any(1), p].all(), "a child never fires without its parent"
        assert active[:, family].sum(1).max() <= 1, "siblings never share a row"
        assert (active[:, p] & ~active[:, family].any(1)).sum() > 20, "parents also appear alone"
    x = store.read_embeddings()
    clean = np.asarray(truth.codes @ truth.directions) + truth.offset
    assert np.linalg.norm(x - clean, axis=1).mean() / np.linalg.norm(clean - truth.offset, axis=1).mean() < 0.07


def test_hierarchy_options_off_give_the_original_data(mem_url):
    """child_cos=0, children_per_parent=0 and exclusive_siblings=False draw nothing extra: same data as the defaults."""
    from dataclasses import replace

    cfg = PlantedConfig(n_rows=1500, dim=32, n_concepts=96, n_parents=4, n_revealed=16)
    a, ta = make_planted(mem_url, cfg, progress=False)
    b, tb = make_planted(mem_url.replace("store", "b"), replace(cfg, child_cos=0.0, children_per_parent=0, exclusive_siblings=False), progress=False)
    assert a.fingerprint == b.fingerprint and np.array_equal(ta.directions, tb.directions)
    c, tc = make_planted(mem_url.replace("store", "c"), replace(cfg, child_cos=0.5), progress=False)
    assert np.array_equal(ta.parents, tc.parents) and (ta.codes != tc.codes).nnz == 0, "child_cos moves directions only"
    free = ta.parents < 0
    assert np.array_equal(ta.directions[free], tc.directions[free]) and not np.array_equal(ta.directions, tc.directions)


def test_hierarchical_config_preset(mem_url):
    from sae.datasets.planted import hierarchical_config

    cfg = hierarchical_config(n_rows=6000, dim=32)
    assert (cfg.n_rows, cfg.dim, cfg.n_concepts, cfg.n_parents, cfg.children_per_parent, cfg.child_cos) == (6000, 32, 1024, 64, 6, 0.6)
    assert hierarchical_config(child_cos=0.0).child_cos == 0.0 and hierarchical_config().n_rows == 100_000
    _, truth = make_planted(mem_url, cfg, progress=False)
    l0 = float((truth.codes > 0).sum(1).mean())
    assert 7.0 < l0 < 8.2, f"about 7.5 true concepts per row, got {l0:.2f}"


def test_planted_bad_hierarchy(mem_url):
    with pytest.raises(SaeError, match="child_cos"):
        make_planted(mem_url, PlantedConfig(n_rows=10, dim=8, n_concepts=96, child_cos=1.0), progress=False)
    with pytest.raises(SaeError, match="children_per_parent"):
        make_planted(mem_url, PlantedConfig(n_rows=10, dim=8, n_concepts=96, n_parents=8, children_per_parent=12), progress=False)
