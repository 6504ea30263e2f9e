"""Fault injection on SAE runs: concurrent writers, retraining over a labeled run, a kill mid-retrain,
artifacts of another model, memory budgets and stale state in ``sae info`` (issue 20)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from sae.errors import LockedError, SaeError, StaleArtifactError

SMALL_SAE = {"n_latents": 48, "k": 8}


def _configs(run, **train):
    from sae.models import SAEConfig
    from sae.train import TrainConfig

    return SAEConfig(d_in=run.store.dim, **SMALL_SAE), TrainConfig(**{"batch_size": 64, "epochs": 2, **train})


def _hold_lock(target, seconds: float = 30.0) -> subprocess.Popen:
    """Another process holding the exclusive lock of ``target`` (as a running command would)."""
    code = textwrap.dedent(f"""
        import sys, time
        from sae._lock import exclusive
        with exclusive({str(target)!r}, "sae train (test holder)"):
            print("locked", flush=True)
            time.sleep({seconds})
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_writer_of_a_run_is_refused_with_the_holder_named(run_ws):
    from sae.pipeline import encode_run, train_run

    ws, run = run_ws
    holder = _hold_lock(run.path)
    try:
        with pytest.raises(LockedError, match=r"in use by pid \d+ \(sae train \(test holder\)"):
            encode_run(run, progress=False)
        sae_cfg, train_cfg = _configs(run)
        with pytest.raises(LockedError):
            train_run(ws, sae_cfg, train_cfg, name=run.name, overwrite=True, progress=False, evaluate=False)
        from sae.interpret import MetadataLabeler, label_run

        with pytest.raises(LockedError):
            label_run(run, MetadataLabeler(), judge=None, progress=False)
    finally:
        holder.kill()
        holder.wait()
    encode_run(run, progress=False)  # the holder died: its flock went with it, no stale lock


def test_retraining_over_a_labeled_run_is_refused_then_replaces_every_derived_artifact(run_ws):
    from sae.interpret import MetadataLabeler, label_run
    from sae.pipeline import train_run

    ws, run = run_ws
    label_run(run, MetadataLabeler(), judge=None, progress=False)
    run.labels().edit(0, "a hand label", author="test")
    (run.path / "audits" / "quality").mkdir(parents=True)
    old_digest = run.model_digest
    sae_cfg, train_cfg = _configs(run, epochs=3)
    with pytest.raises(SaeError, match="exists; give --resume .* --overwrite"):
        train_run(ws, sae_cfg, train_cfg, name=run.name, progress=False, evaluate=False)
    new = train_run(ws, sae_cfg, train_cfg, name=run.name, overwrite=True, progress=False, evaluate=False)
    assert new.path == run.path and new.model_digest != old_digest
    assert not list(new.path.glob("labels-*")) and not (new.path / "label-edits.jsonl").exists() and not (new.path / "audits").exists()
    assert new.codes.model_digest == new.model_digest
    assert not any(p.name.endswith(".building") for p in new.path.parent.iterdir())


def test_a_kill_during_a_retrain_leaves_the_old_run_whole_and_resume_finishes_it(run_ws):
    from sae.interpret import MetadataLabeler, label_run
    from sae.run import Run

    ws, run = run_ws
    label_run(run, MetadataLabeler(), judge=None, progress=False)
    before = (run.model_digest, run.labels().frame["label"].tolist())
    code = textwrap.dedent(f"""
        from sae.models import SAEConfig
        from sae.pipeline import train_run
        from sae.run import Workspace
        from sae.train import TrainConfig
        ws = Workspace({str(ws.path)!r})
        train_run(ws, SAEConfig(d_in={run.store.dim}, n_latents=48, k=8), TrainConfig(batch_size=16, epochs=400, checkpoint_every=5),
                  name={run.name!r}, overwrite=True, progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code])
    building = run.path.with_name(f".{run.name}.building")
    deadline = time.time() + 120
    while not (building / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (building / "checkpoint.pt").exists()
    again = Run.open(ws.path, run.name)  # the old run, untouched: its model, codes and labels agree
    assert (again.model_digest, again.labels().frame["label"].tolist()) == before
    assert again.codes.model_digest in ("", again.model_digest)


def test_artifacts_of_another_model_are_refused(run_ws):
    from sae.interpret import MetadataLabeler, label_run
    from sae.models import SparseAutoencoder
    from sae.models.io import save_sae
    from sae.pipeline import evaluate_run
    from sae.run import Run

    ws, run = run_ws
    evaluate_run(run, progress=False)
    label_run(run, MetadataLabeler(), judge=None, progress=False)
    other = SparseAutoencoder(run.model.cfg, seed=123)
    save_sae(other, run.path, {k: v for k, v in run.config.items() if k in ("train", "store_fingerprint", "split", "steps")})
    fresh = Run.open(ws.path, run.name)
    with pytest.raises(StaleArtifactError, match="encoded by another model"):
        _ = fresh.codes
    assert fresh.metrics() == {}
    with pytest.raises(StaleArtifactError, match="another model"):
        fresh.labels()
    status = fresh.status()
    assert status["codes"].startswith("stale") and status["metrics"].startswith("stale") and status["labels"].startswith("stale")


def test_default_run_names_differ_when_the_training_differs():
    from sae.models import SAEConfig
    from sae.pipeline import run_name
    from sae.train import TrainConfig

    cfg = SAEConfig(d_in=16, n_latents=64, k=4)
    names = {run_name(cfg, TrainConfig(epochs=e, batch_size=b, lr=lr)) for e in (1, 2) for b in (64, 128) for lr in (None, 1e-3)}
    assert len(names) == 8
    assert run_name(cfg, TrainConfig(device="cpu", threads=1)) == run_name(cfg, TrainConfig())  # same model, same name


@pytest.mark.parametrize("name", ["../evil", "/tmp/x", ".hidden", "a/b"])
def test_run_names_are_one_plain_folder_name(run_ws, name):
    from sae.pipeline import train_run

    ws, run = run_ws
    sae_cfg, train_cfg = _configs(run)
    with pytest.raises(SaeError, match="one plain folder name"):
        train_run(ws, sae_cfg, train_cfg, name=name, progress=False)


def test_a_tiny_memory_budget_gives_the_same_postings(run_ws, tmp_path):
    from sae.codes import encode_store

    _, run = run_ws
    a = encode_store(run.store, run.model, tmp_path / "a.zarr", progress=False)
    b = encode_store(run.store, run.model, tmp_path / "b.zarr", progress=False, memory_budget_gb=1e-4, batch_size=8192)
    # smaller batches change float rounding in the last bits (values), never which rows a feature has
    for name in ("features/ptr", "features/row"):
        assert np.array_equal(a._group[name][:], b._group[name][:])
    assert np.allclose(a._group["features/value"][:], b._group["features/value"][:], rtol=1e-5, atol=1e-6)
    assert np.allclose(a.to_csr().toarray(), b.to_csr().toarray(), atol=1e-5)


def test_info_reports_codes_and_labels_made_stale_by_an_append(run_ws):
    from sae.interpret import MetadataLabeler, label_run
    from sae.store import Store

    ws, run = run_ws
    label_run(run, MetadataLabeler(), judge=None, progress=False)
    assert {r["codes"] for r in ws.info()["saes"]} == {"ok"}
    store = Store.open(ws.store_path, mode="a")
    store.append(np.ones((1, store.dim), np.float32), ["extra"], store.meta(rows=[0]).drop(columns="id"), images=store.previews([0]))
    (info,) = ws.info()["saes"]
    assert info["model"].startswith("stale") and info["codes"].startswith("stale") and info["labels"].startswith("stale")
