"""Distributed paths equal the single-process ones: Dask encode/index/stats/enrichment/map, DDP training and resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from sae.codes import STAT_NAMES, encode_store
from sae.models import SAEConfig, SparseAutoencoder
from sae.store import Store

pytest.importorskip("distributed")

from sae.codes import encode_store_dask
from sae.compute import DaskConfig, dask_client

ARRAYS = ["rows/ptr", "rows/latent", "rows/value", "features/ptr", "features/row", "features/value"] + [f"stats/{n}" for n in STAT_NAMES]


@pytest.fixture(scope="module")
def client():
    """One 2-worker LocalCluster for the module (starting one costs seconds)."""
    with dask_client(DaskConfig(n_workers=2, cluster_memory_gb=2.0)) as c:
        yield c


def _store(tmp_path, n_rows: int, dim: int, chunk_rows: int, seed: int = 0, dtype: str = "float32") -> Store:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n_rows, dim)) + 0.5 * rng.standard_normal(dim)).astype(np.float32)
    with Store.create(tmp_path / "s.zarr", dim, chunk_rows=chunk_rows, dtype=dtype) as s:
        s.append(x, meta=__import__("pandas").DataFrame({"failed": rng.random(n_rows) < 0.2}))
    return Store.open(tmp_path / "s.zarr")


def _assert_same_codes(a_path, b_path) -> None:
    a, b = zarr.open_group(str(a_path), mode="r"), zarr.open_group(str(b_path), mode="r")
    for name in ARRAYS:
        x, y = a[name], b[name]
        assert x.dtype == y.dtype, name
        np.testing.assert_array_equal(x[:], y[:], err_msg=name)
    assert a.attrs.asdict() == b.attrs.asdict()


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_dask_encode_identical_small(tmp_path, client, arch):
    """Many tasks and many tiny chunks: every array of codes.zarr is bit-identical."""
    store = _store(tmp_path, 700, 12, chunk_rows=128)
    model = SparseAutoencoder(SAEConfig(d_in=12, n_latents=40, k=4, arch=arch), seed=2)
    with torch.no_grad():
        model.threshold.fill_(0.5)
        model.b_enc.fill_(-0.2)
    ref = encode_store(store, model, tmp_path / "ref.zarr", batch_size=100, progress=False)
    for budget in (2.0, 1e-5):  # 1e-5 GB: one index task per Zarr chunk
        out = encode_store_dask(store, model, tmp_path / "dask.zarr", compute=DaskConfig(cluster_memory_gb=budget), client=client,
                                batch_size=100, progress=False, chunk_entries=64)
        _assert_same_codes(ref.path, out.path)
        assert not list(tmp_path.glob(".dask.zarr.partial-*"))


def test_dask_encode_identical_realistic(tmp_path, client):
    """Wider data (multi-threaded matmuls, float16 store) through ``encode_store(compute=...)``."""
    store = _store(tmp_path, 3000, 96, chunk_rows=512, dtype="float16")
    model = SparseAutoencoder(SAEConfig(d_in=96, n_latents=512, k=16), seed=1)
    ref = encode_store(store, model, tmp_path / "ref.zarr", batch_size=256, progress=False)
    out = encode_store(store, model, tmp_path / "dask.zarr", batch_size=256, progress=False, compute=DaskConfig(n_workers=2, cluster_memory_gb=2.0))
    _assert_same_codes(ref.path, out.path)


def test_dask_enrichment_and_map_identical(tmp_path, client):
    from sae.audit.concept_map import concept_map
    from sae.audit.dask import concept_enrichment_dask, concept_map_dask
    from sae.audit.enrichment import concept_enrichment
    from sae.audit.firm import FirmIndex
    from sae.search.index import ConceptIndex

    store = _store(tmp_path, 900, 16, chunk_rows=128)
    model = SparseAutoencoder(SAEConfig(d_in=16, n_latents=48, k=4), seed=3)
    codes = encode_store(store, model, tmp_path / "codes.zarr", batch_size=128, progress=False)
    index = ConceptIndex(codes)
    failed = store.column("failed").astype(bool)
    labels = {f: f"feature {f}" for f in range(48)}
    pd_testing = __import__("pandas").testing
    ref = concept_enrichment(index, failed, labels)
    got = concept_enrichment_dask(codes, failed, labels, compute=DaskConfig(cluster_memory_gb=1e-5), client=client)
    pd_testing.assert_frame_equal(ref, got, check_exact=True)
    rows = np.arange(0, 900, 3)
    pd_testing.assert_frame_equal(concept_enrichment(index, failed, rows=rows), concept_enrichment_dask(codes, failed, rows=rows, client=client),
                                  check_exact=True)
    firm = FirmIndex.view(index, 0.3)  # the audit's reading: only activations >= 30% of the feature's q90 count
    ref_firm = concept_enrichment(firm, failed, labels)
    pd_testing.assert_frame_equal(ref_firm, concept_enrichment_dask(codes, failed, labels, client=client, index=firm), check_exact=True)
    assert (ref_firm.set_index("feature")["n_active"] <= ref.set_index("feature")["n_active"].reindex(ref_firm["feature"]).fillna(0)).all()
    assert ref_firm["n_active"].sum() < ref["n_active"].sum()
    ref_map = concept_map(index, codes, sample=300, seed=0, block=200)
    got_map = concept_map_dask(index, codes, sample=300, seed=0, block=200, client=client, cache_dir=tmp_path / "maps", key="k")
    pd_testing.assert_frame_equal(ref_map, got_map, check_exact=True)
    assert len(list((tmp_path / "maps").glob("map-*.parquet"))) == 1


# ---------------------------------------------------------------------------------------------- DDP
SAE = {"d_in": 32, "n_latents": 512, "k": 2}
# dead_window=1: latents go dead, so AuxK runs
TRAIN = {"batch_size": 256, "max_samples": 256 * 12, "holdout_frac": 0.0, "seed": 3, "log_every": 4, "warmup_steps": 2, "dead_window": 1}
DDP_ATOL = 2e-5
"""Parameters of 1- and 2-rank training agree to this absolute tolerance (weights are O(0.1-1)): only
float rounding differs (the reduction order of the gradient sums and of the FVU denominator)."""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(tmp_path, args: dict, nproc: int = 2) -> dict:
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(root / "tests" / "ddp_train_script.py"), json.dumps(args)]
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return dict(np.load(args["out"]))


def _train_here(store, run_dir, train=TRAIN, resume=False):
    from sae.train import TrainConfig
    from sae.train.ddp import DistributedTrainer

    trainer = DistributedTrainer(SAEConfig(**SAE), TrainConfig(**train), run_dir=run_dir, progress=False)
    model = trainer.fit(store, resume=resume)
    assert trainer.world == 1
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}, trainer


@pytest.fixture(scope="module")
def ddp_store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    return _store(tmp, 2048, 32, chunk_rows=128)  # 128 rows = one rank's slice of a global batch: disjoint chunk shards


def test_ddp_two_ranks_match_one_process(tmp_path, ddp_store):
    ref, trainer = _train_here(ddp_store, tmp_path / "one")
    assert trainer.state_.step == 12 and trainer.state_.epoch == 1  # crossed an epoch boundary
    got = _torchrun(tmp_path, {"sae": SAE, "train": TRAIN, "store": ddp_store.url, "run_dir": str(tmp_path / "two"), "out": str(tmp_path / "two.npz")})
    assert int(got["world"]) == 2 and int(got["step"]) == 12
    for name, value in ref.items():
        np.testing.assert_allclose(got[name], value, atol=DDP_ATOL, rtol=0, err_msg=name)
    assert np.abs(ref["W_dec"] - SparseAutoencoder(SAEConfig(**SAE), seed=3).W_dec.detach().numpy()).max() > 100 * DDP_ATOL  # it did train
    log1 = __import__("json").loads((tmp_path / "one" / "train_log.json").read_text())["log"]
    log2 = __import__("json").loads((tmp_path / "two" / "train_log.json").read_text())["log"]
    np.testing.assert_allclose([e["fvu"] for e in log2], [e["fvu"] for e in log1], rtol=1e-4)


def test_ddp_checkpoint_resumes_at_another_world_size(tmp_path, ddp_store):
    ref, _ = _train_here(ddp_store, tmp_path / "ref")
    run_dir = tmp_path / "run"
    part = _torchrun(tmp_path, {"sae": SAE, "train": TRAIN, "store": ddp_store.url, "run_dir": str(run_dir), "out": str(tmp_path / "part.npz"),
                                "stop_after": 5})
    assert int(part["step"]) == 5 and (run_dir / "checkpoint.pt").exists() and not (run_dir / "model.safetensors").exists()
    got, trainer = _train_here(ddp_store, run_dir, resume=True)  # 2 ranks -> 1 process
    assert trainer.state_.step == 12 and (run_dir / "model.safetensors").exists()
    for name, value in ref.items():
        np.testing.assert_allclose(got[name], value, atol=DDP_ATOL, rtol=0, err_msg=name)


def test_sharded_data_is_world_size_independent(ddp_store):
    from sae.train.sharded import ShardedData

    rows = slice(0, 2000)
    one = ShardedData(ddp_store, rows, 200, seed=1, rank=0, world=1)
    parts = [ShardedData(ddp_store, rows, 200, seed=1, rank=r, world=4) for r in range(4)]
    assert one.batches_per_epoch == 10
    for b1, *bs in zip(one.epoch(2, skip=3), *(p.epoch(2, skip=3) for p in parts)):
        np.testing.assert_array_equal(b1.numpy(), np.concatenate([b.numpy() for b in bs]))
    seen = np.concatenate([b.numpy() for b in one.epoch(0)])
    assert len(np.unique(seen, axis=0)) == 2000
    with pytest.raises(Exception, match="divisible"):
        ShardedData(ddp_store, rows, 201, seed=1, rank=0, world=2)


def test_cli_encode_and_audit_with_dask(run_ws, capsys):
    """``sae encode --dask --workers 2`` rewrites the same codes; ``sae audit --dask`` gives the same concepts."""
    import pandas as pd

    from sae.cli import main

    ws, run = run_ws
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workers: with 1280-d inputs and 48 latents BLAS splits the sums by thread
    try:
        encode_store(ws.open_store(), run.model, ws.path / "ref-codes.zarr", sae_id=run.name, model_digest=run.model_digest, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert main(["encode", str(ws.path), "--dask", "--workers", "2"]) == 0
    _assert_same_codes(ws.path / "ref-codes.zarr", run.path / "codes.zarr")
    from sae.interpret import MetadataLabeler, label_run

    label_run(run, MetadataLabeler(), judge=None, progress=False)
    column = next(c for c, k in ws.open_store().columns.items() if k == "bool")
    assert main(["audit", str(ws.path), "--failure", column, "--name", "single"]) == 0
    assert main(["audit", str(ws.path), "--failure", column, "--name", "dask", "--dask", "--workers", "2"]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(run.path / "audits" / "single" / "concepts.parquet"),
                                  pd.read_parquet(run.path / "audits" / "dask" / "concepts.parquet"), check_exact=True)
