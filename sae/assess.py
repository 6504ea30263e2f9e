"""Evaluate a run: every metric that applies, each beside the baseline that says what it is worth.

Baselines, computed in the same pass on the same rows:

- a **random SAE** of the same size (random unit decoder rows, the encoder their transpose, the trained
  model's decoder bias, TopK with the same k): reconstruction, probes, fingerprint fidelity,
  monosemanticity and ground-truth recovery;
- **k-sparse probes on the raw embedding dimensions** (the N dimensions that best separate the classes)
  beside the probes on the top-N SAE features.

``quick=True`` (what ``sae train`` runs after training) bounds the work: reconstruction on at most
20,000 held-out rows, probes and monosemanticity on a 5,000-row sample, probes with 1 and 10 features.
``sae evaluate`` runs the full evaluation (20,000-row probe sample, 1/3/10/50 features).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from sae import evaluate as ev
from sae._io import atomic_write_text
from sae._progress import tqdm
from sae.compute import MEMORY_BUDGET_GB, batch_rows
from sae.errors import SaeError
from sae.run import METRICS, Run
from sae.store import Store
from sae.truth import recovery_report, sae_codes


@dataclass(frozen=True)
class EvalBounds:
    """How much of the store an evaluation reads."""

    reconstruction_rows: int | None
    """Held-out rows for FVU / R2 (an evenly spaced subset when there are more); None: all."""
    probe_rows: int
    """Rows sampled for probes, fingerprint fidelity and monosemanticity."""
    probe_ns: tuple[int, ...]


QUICK = EvalBounds(20_000, 5_000, (1, 10))
FULL = EvalBounds(None, 20_000, (1, 3, 10, 50))


def default_targets(store: Store, max_values: int = 20, limit: int = 6, min_rows: int = 10) -> list[str]:
    """Categorical metadata columns worth probing: str/bool with 2..max_values distinct values, each of the
    two most common held by at least ``min_rows`` rows. The group key (volume, patient...) is skipped:
    held-out rows are whole groups, so it cannot transfer."""
    out = []
    group_key = store.provenance.get("group_key")
    for name, kind in store.columns.items():
        if kind in ("str", "bool") and name != group_key:
            counts = pd.Series(store.column(name)).value_counts()
            if 2 <= len(counts) <= max_values and counts.iloc[1] >= min_rows:
                out.append(name)
    return out[:limit]


def _evenly(rows: slice, at_most: int | None) -> np.ndarray:
    n = rows.stop - rows.start
    if at_most is None or n <= at_most:
        return np.arange(rows.start, rows.stop)
    return np.unique(np.linspace(rows.start, rows.stop - 1, at_most).round().astype(np.int64))


def _reconstruction(models: dict[str, Any], store: Store, rows: np.ndarray, batch: int) -> dict[str, dict]:
    """FVU / R2 / L0 of every model on the same batches of ``rows``."""
    accs = {name: ev.ReconstructionAccumulator() for name in models}
    for a in range(0, len(rows), batch):
        x = store.read_embeddings(rows[a : a + batch])
        xt = torch.from_numpy(x)
        for name, model in models.items():
            vals, idx = model.encode(xt)
            accs[name].update(x, model.decode_codes(vals, idx).numpy(), (vals > 0).sum(1).numpy())
    return {name: acc.result() for name, acc in accs.items()}


def _probes(store: Store, sample: np.ndarray, is_train: np.ndarray, dense: np.ndarray, codes: dict[str, sp.csr_matrix],
            targets: Sequence[str], ns: Sequence[int], seed: int) -> list[dict]:
    probes: list[dict] = []
    for col in targets:
        labels = store.column(col, rows=sample)
        try:
            df = ev.probe_recovery(dense, codes["sae"], labels, is_train, ns=ns, seed=seed, baselines={"random_sae": codes["random_sae"]})
        except SaeError:
            continue  # fewer than two classes among the training rows of the sample
        probes.extend({"target": col, **r} for r in df.to_dict("records"))
    return probes


def _monosemanticity(store: Store, codes: sp.csr_matrix, sample: np.ndarray, columns: Sequence[str], seed: int, top: int = 50) -> dict[str, Any]:
    """Monosemanticity over the metadata columns, on the sampled rows (features firing on >= 5 of them)."""
    if not columns:
        return {}
    meta = store.meta(list(columns), rows=sample).reset_index(drop=True)
    csc = codes.tocsc()
    top_rows, active = {}, {}
    for f in np.flatnonzero(np.diff(csc.indptr) >= 5).tolist():
        a, b = csc.indptr[f], csc.indptr[f + 1]
        rows, vals = csc.indices[a:b], csc.data[a:b]
        top_rows[f], active[f] = rows[np.argsort(-vals, kind="stable")[:top]], rows
    df = ev.monosemanticity(top_rows, active, meta, columns, seed=seed)
    if df.empty:
        return {}
    return {"mean": float(df["score"].mean()), "median": float(df["score"].median()), "features": int(len(df)),
            "by_column": df.groupby("column")["score"].agg(["count", "mean"]).reset_index().to_dict("records")}


def _ground_truth(run: Run, random_decoder: np.ndarray) -> dict[str, Any]:
    """Recovery of the planted directions (a planted workspace keeps its ``truth.npz``), with the random SAE's."""
    truth = run.ws.path / "truth.npz"
    if not truth.exists():
        return {}
    doc = np.load(truth)
    directions = doc["directions"]
    if directions.shape[1] != run.model.cfg.d_in:
        return {}
    decoder = run.model.W_dec.detach().numpy()
    out: dict[str, Any] = {"ground_truth_recovery": ev.ground_truth_recovery(directions, decoder)[0],
                           "random_ground_truth_recovery": ev.ground_truth_recovery(directions, random_decoder)[0]}
    if "parents" in doc and (doc["parents"] >= 0).any():
        out["hierarchy"] = recovery_report(directions, doc["parents"], decoder)
    return out


def evaluate_run(run: Run, *, targets: Sequence[str] | None = None, quick: bool = False, bounds: EvalBounds | None = None,
                 seed: int = 0, progress: bool = True, extra: dict | None = None, memory_budget_gb: float = MEMORY_BUDGET_GB,
                 probe_ns: Sequence[int] | None = None) -> pd.DataFrame:
    """Compute every metric that applies beside its baselines, write ``metrics.json`` (with the model's
    digest) and return the headline table (:func:`headline_table`). ``quick`` bounds the work (:data:`QUICK`)."""
    t0 = time.perf_counter()
    bounds = bounds or (QUICK if quick else FULL)
    ns = tuple(probe_ns) if probe_ns is not None else bounds.probe_ns
    store, codes, model = run.verify().store, run.codes, run.model
    holdout = run.holdout()
    if holdout.stop <= holdout.start:  # nothing held out: evaluate on every row
        holdout = slice(0, store.n_rows)
    rand = ev.random_sae(model, k=max(1, round(float(codes.l0().mean()))), seed=seed)
    metrics: dict[str, Any] = {**(extra or {}), "model_digest": run.model_digest}
    stages = tqdm(total=5, desc=f"evaluate {run.name}", unit="stage", disable=not progress)
    batch = batch_rows(memory_budget_gb, store.dim + 2 * codes.n_latents, 8192)
    recon_rows = _evenly(holdout, bounds.reconstruction_rows)
    recon = _reconstruction({"sae": model, "random_sae": rand}, store, recon_rows, batch)
    metrics["reconstruction"] = {**recon["sae"], "rows": f"held-out {holdout.start}:{holdout.stop}" + (
        f" ({len(recon_rows):,} evenly spaced)" if len(recon_rows) < holdout.stop - holdout.start else "")}
    stages.update()
    metrics["sparsity"] = {"l0_all_rows": float(codes.l0().mean()), **ev.sparsity(codes.stats()["rate"].to_numpy())}
    n_probe = batch_rows(memory_budget_gb, store.dim, bounds.probe_rows, copies=8)  # the dense probe copies its sample
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(store.n_rows, size=min(store.n_rows, n_probe), replace=False))
    is_train = (sample < holdout.start) | (sample >= holdout.stop)
    dense = store.read_embeddings(sample)
    sample_codes = {"sae": codes.rows(sample), "random_sae": sae_codes(rand, dense)}
    targets = list(targets) if targets is not None else default_targets(store)
    metrics["probes"] = _probes(store, sample, is_train, dense, sample_codes, targets, ns, seed)
    stages.update()
    queries = np.flatnonzero(~is_train)[:200] if (~is_train).any() else np.arange(min(200, len(sample)))
    fidelity: dict[str, float | None] = dict.fromkeys(sample_codes)
    if len(sample) > 10:  # ten neighbours per query need more than ten rows
        fidelity = {name: ev.fingerprint_fidelity(dense, c, queries, k=10, top_features=8) for name, c in sample_codes.items()}
        metrics["fingerprint_fidelity@10"] = fidelity["sae"]
    stages.update()
    mono = {name: _monosemanticity(store, c, sample, targets, seed) for name, c in sample_codes.items()}
    metrics["monosemanticity"] = mono["sae"]
    stages.update()
    truth = _ground_truth(run, rand.W_dec.detach().numpy())
    metrics.update({k: v for k, v in truth.items() if not k.startswith("random_")})
    metrics["baselines"] = {"random_sae": {"reconstruction": recon["random_sae"], "fingerprint_fidelity@10": fidelity["random_sae"],
                                           "monosemanticity": mono["random_sae"], "k": rand.cfg.k,
                                           **({"ground_truth_recovery": truth["random_ground_truth_recovery"]} if truth else {})}}
    stages.update()
    stages.close()
    metrics["evaluation"] = {"mode": "quick" if bounds is QUICK else "full", "reconstruction_rows": len(recon_rows),
                             "sample_rows": len(sample), "probe_features": list(ns), "seconds": time.perf_counter() - t0}
    atomic_write_text(run.path / METRICS, json.dumps(metrics, indent=2, default=float))
    return headline_table(metrics)


def _probe_value(probes: list[dict], target: str, name: str) -> float | None:
    hit = [p["balanced_accuracy"] for p in probes if p["target"] == target and p["probe"] == name]
    return hit[0] if hit else None


def headline_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """Each headline metric beside its baselines: columns metric, sae, random_sae, raw_dims, dense."""
    base = metrics.get("baselines", {}).get("random_sae", {})
    rec, rrec = metrics.get("reconstruction", {}), base.get("reconstruction", {})
    rows: list[dict[str, Any]] = [
        {"metric": "held-out R2", "sae": rec.get("r2"), "random_sae": rrec.get("r2")},
        {"metric": "L0 (active latents per row)", "sae": rec.get("l0"), "random_sae": rrec.get("l0")},
        {"metric": "dead latents", "sae": metrics.get("sparsity", {}).get("dead_frac")},
    ]
    probes = metrics.get("probes", [])
    for target in dict.fromkeys(p["target"] for p in probes):
        sizes = {int(p["probe"][7:]) for p in probes if p["target"] == target and p["probe"].startswith("sae_top")}
        for n in sorted(sizes & {1, 10} or set(sorted(sizes)[-1:])):  # the top-1 and top-10 probes are the headline
            rows.append({"metric": f"probe {target}: top-{n} balanced acc", "sae": _probe_value(probes, target, f"sae_top{n}"),
                         "random_sae": _probe_value(probes, target, f"random_sae_top{n}"), "raw_dims": _probe_value(probes, target, f"raw_top{n}"),
                         "dense": _probe_value(probes, target, "dense")})
    if "fingerprint_fidelity@10" in metrics:
        rows.append({"metric": "fingerprint fidelity@10", "sae": metrics["fingerprint_fidelity@10"], "random_sae": base.get("fingerprint_fidelity@10")})
    if metrics.get("monosemanticity"):
        rows.append({"metric": "monosemanticity (mean)", "sae": metrics["monosemanticity"].get("mean"),
                     "random_sae": (base.get("monosemanticity") or {}).get("mean")})
    if "ground_truth_recovery" in metrics:
        rows.append({"metric": "ground-truth recovery (MMCS)", "sae": metrics["ground_truth_recovery"], "random_sae": base.get("ground_truth_recovery")})
    hier = metrics.get("hierarchy") or {}
    for group in ("parents", "children"):
        if f"mmcs_{group}" in hier:
            rows.append({"metric": f"MMCS {group}", "sae": hier[f"mmcs_{group}"], "random_sae": hier.get("random", {}).get(f"mmcs_{group}")})
    return pd.DataFrame(rows, columns=["metric", "sae", "random_sae", "raw_dims", "dense"])


def metrics_frame(metrics: dict[str, Any]) -> pd.DataFrame:
    """Flatten a metrics document into (metric, value) rows (probes as probe/<target>/<probe>)."""
    rows = []
    for key, value in metrics.items():
        if key == "probes":
            rows += [{"metric": f"probe/{p['target']}/{p['probe']}", "value": p["balanced_accuracy"], "ratio_to_dense": p["ratio_to_dense"]} for p in value]
        elif isinstance(value, dict):
            rows += [{"metric": f"{key}/{k}", "value": v} for k, v in value.items() if isinstance(v, (int, float))]
        elif isinstance(value, (int, float)):
            rows.append({"metric": key, "value": value})
    return pd.DataFrame(rows)
