"""Runs in a workspace: train -> codes -> metrics, the sweep and the CLI commands around them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sae.cli import main
from sae.errors import SaeError, StaleArtifactError
from sae.estimator import SAE
from sae.models import SAEConfig
from sae.pipeline import evaluate_run, metrics_frame, train_run
from sae.run import Run, Workspace
from sae.store import Store
from sae.sweep import pareto_front, sweep
from sae.train import TrainConfig


@pytest.fixture
def demo_ws(demo_small, tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.path.mkdir()
    shutil.copytree(Path(demo_small.url), ws.store_path)
    return ws


def test_train_run_writes_everything(demo_ws):
    run = train_run(demo_ws, SAEConfig(d_in=1280, n_latents=128, k=8), TrainConfig(batch_size=64, epochs=3), progress=False, evaluate=False)
    evaluate_run(run, targets=["orientation", "artifact"], progress=False)
    for f in ("model.safetensors", "config.json", "metrics.json", "train_log.json", "codes.zarr"):
        assert (run.path / f).exists(), f
    m = run.metrics()
    assert 0 < m["reconstruction"]["r2"] < 1 and m["reconstruction"]["l0"] == 8
    targets = {p["target"] for p in m["probes"]}
    assert {"orientation", "artifact"} <= targets
    assert 0 <= m["fingerprint_fidelity@10"] <= 1 and m["monosemanticity"]["features"] > 0
    assert run.config["store_fingerprint"] == demo_ws.open_store().fingerprint
    assert set(metrics_frame(m)["metric"]) >= {"reconstruction/r2", "probe/orientation/dense", "probe/orientation/sae_top10", "fingerprint_fidelity@10"}
    df = evaluate_run(run, targets=["orientation"], probe_ns=(1, 10), progress=False)
    head = df.set_index("metric")
    # every headline metric sits beside its random-SAE baseline; the trained SAE beats it where it should
    assert head.loc["held-out R2", "sae"] > head.loc["held-out R2", "random_sae"]
    assert head.loc["fingerprint fidelity@10", "random_sae"] >= 0
    probe = head.loc["probe orientation: top-10 balanced acc"]
    assert 0 <= probe["random_sae"] <= 1 and 0 <= probe["raw_dims"] <= 1 and 0 <= probe["dense"] <= 1
    m = run.metrics()
    assert m["baselines"]["random_sae"]["k"] == 8 and m["evaluation"]["mode"] == "full"
    assert {p["probe"] for p in m["probes"]} == {"dense", "sae_top1", "sae_top10", "random_sae_top1", "random_sae_top10", "raw_top1", "raw_top10"}
    assert Run.find(demo_ws).name == run.name
    with pytest.raises(SaeError, match="no SAE run 'nope'"):
        Run.find(demo_ws, "nope")


def test_stale_run_is_refused(demo_ws):
    run = train_run(demo_ws, SAEConfig(d_in=1280, n_latents=64, k=4), TrainConfig(batch_size=64, epochs=1), progress=False, evaluate=False)
    store = Store.open(demo_ws.store_path, mode="a")
    store.append(np.ones((1, 1280), np.float32), ["extra"], store.meta(rows=[0]).drop(columns="id"), images=store.previews([0]))
    with pytest.raises(StaleArtifactError):
        evaluate_run(run, progress=False)


def test_sweep_and_pareto(demo_ws):
    cfgs = [(SAEConfig(d_in=1280, n_latents=64, k=k), TrainConfig(batch_size=64, epochs=1)) for k in (4, 8)]
    df = sweep(demo_ws, cfgs, progress=False)
    assert list(df["k"]) == [4, 8] and df["pareto"].any()
    assert (demo_ws.path / "saes" / "sweep.csv").exists() and (demo_ws.path / "saes" / "pareto.png").exists()
    import pandas as pd

    from sae.run import Run
    from sae.sweep import runs_table

    again = runs_table([Run(demo_ws, demo_ws.path / "saes" / r) for r in df["run"]])  # what `sae figures` plots
    pd.testing.assert_frame_equal(again.drop(columns="train_s"), df.drop(columns="train_s"))

    toy = pd.DataFrame({"l0": [1, 2, 3, 2], "fvu": [0.5, 0.4, 0.45, 0.6]})
    assert pareto_front(toy).tolist() == [True, True, False, False]


def test_estimator_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 10)).astype(np.float32)
    est = SAE("batchtopk", n_latents=40, k=4, batch_size=100, epochs=3, progress=False).fit(x)
    codes = est.transform(x)
    assert codes.shape == (600, 40) and 1 < codes.getnnz(axis=1).mean() < 12
    recon = est.inverse_transform(codes)
    assert recon.shape == x.shape and ((x - recon) ** 2).sum() < ((x - x.mean(0)) ** 2).sum()
    est.save(tmp_path / "m")
    again = SAE.load(tmp_path / "m")
    diff = abs(again.transform(x) - codes)  # the saved model has the input scale folded in: float rounding may flip
    assert (diff > 1e-4).nnz <= 0.01 * codes.nnz  # a value sitting exactly on the JumpReLU threshold, nothing more
    with pytest.raises(SaeError, match="not fitted"):
        SAE().transform(x)


def test_cli_train_evaluate_encode_resume(demo_ws, capsys):
    ws = str(demo_ws.path)
    args = ["train", ws, "--n", "64", "--k", "4", "--epochs", "1", "--batch-size", "64", "--name", "cli-run"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "held-out R2" in out and "probe orientation" in out
    assert "evaluation: quick" in out and "random_sae" in out  # the bounded evaluation, baselines beside every metric
    assert main(["evaluate", ws, "--run", "cli-run", "--targets", "artifact"]) == 0
    out = capsys.readouterr().out
    assert "probe artifact: top-10 balanced acc" in out and "raw_dims" in out and "evaluation: full" in out
    assert main(["encode", ws]) == 0
    assert "encoded" in capsys.readouterr().out
    assert main(args + ["--resume", "--k", "5"]) == 2
    assert "different configuration" in capsys.readouterr().err
    assert main(["train", ws, "--n", "64", "--k", "64"]) == 2
    assert "0 < k < n_latents" in capsys.readouterr().err
    assert main(["info", ws]) == 0
    assert "cli-run" in capsys.readouterr().out


def test_rerunning_a_sweep_reuses_current_runs_and_retrains_stale_ones(demo_ws):
    from sae.run import Run

    cfgs = [(SAEConfig(d_in=1280, n_latents=64, k=4), TrainConfig(batch_size=64, epochs=1, seed=7))]
    first = sweep(demo_ws, cfgs, progress=False, figure=False)
    run = Run(demo_ws, demo_ws.path / "saes" / first["run"].iloc[0])
    digest, mtime = run.model_digest, (run.path / "model.safetensors").stat().st_mtime_ns
    again = sweep(demo_ws, cfgs, progress=False, figure=False)  # nothing to do: the same run, untouched
    assert list(again["run"]) == list(first["run"]) and (run.path / "model.safetensors").stat().st_mtime_ns == mtime
    (run.path / "metrics.json").unlink()  # not evaluated: retrained in its place
    sweep(demo_ws, cfgs, progress=False, figure=False)
    assert Run(demo_ws, run.path).model_digest == digest and (run.path / "metrics.json").exists()


def test_cli_train_at_defaults_prints_and_records_its_choices(demo_ws, capsys):
    """No flags: n, batch, steps and the plateau stop are chosen from the rows, printed once and saved."""
    ws = str(demo_ws.path)
    assert main(["train", ws, "--k", "4", "--no-eval", "--name", "auto"]) == 0
    out = capsys.readouterr().out
    assert out.count("plan: ") == 1 and "latents" in out and "batch" in out and "plateaus" in out
    assert "evaluation skipped" in out and "held-out R2" not in out
    run = Run.open(ws, "auto")
    cfg = run.config
    rows = demo_ws.open_store().n_rows
    assert cfg["train"]["batch_size"] >= 1 and cfg["train"]["stop_on_plateau"] is True and cfg["n_latents"] == 128
    assert cfg["split"]["validation_rows"][1] == cfg["split"]["holdout_rows"][0] and cfg["split"]["train_rows"][1] == cfg["split"]["validation_rows"][0]
    assert any("latents" in n for n in cfg["plan"]) and cfg["stopped"].startswith(("plateau", "step cap"))
    assert not (run.path / "metrics.json").exists() and rows > 0
    log = json.loads((run.path / "train_log.json").read_text())
    assert log["validation"] and log["train"]["steps"] == cfg["steps"]


def test_cli_planted_hierarchy_reports_recovery_beside_a_random_decoder(tmp_path, capsys):
    ws = str(tmp_path / "h")
    assert main(["planted", ws, "--hierarchy", "--rows", "3000", "--dim", "32"]) == 0
    capsys.readouterr()
    assert main(["train", ws, "--k", "8", "--steps", "300", "--name", "h"]) == 0
    out = capsys.readouterr().out
    assert "MMCS parents" in out and "MMCS children" in out and "ground-truth recovery (MMCS)" in out
    m = Run.open(ws, "h").metrics()
    hier = m["hierarchy"]
    assert hier["n_parents"] == 64 and hier["n_children"] == 384 and "mmcs_children_residual" in hier
    assert m["ground_truth_recovery"] > m["baselines"]["random_sae"]["ground_truth_recovery"]
