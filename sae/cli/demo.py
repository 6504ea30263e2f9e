"""``sae demo``: build the MNI152 demo workspace and run every stage that exists, printing each headline.

Later stages (train, label, search, audit) register themselves in :data:`STAGES`; each takes the
workspace and the run options and returns a one-line headline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sae.run import Workspace


@dataclass(frozen=True)
class DemoOptions:
    small: bool = False
    rebuild: bool = False


def stage_store(ws: Workspace, opts: DemoOptions) -> str:
    """Stage 1: the MNI152 slices with torchio artifacts, embedded with EfficientNet-Lite0."""
    from sae.datasets.mni import MNIDemoConfig, build_mni_demo

    cfg = MNIDemoConfig.small() if opts.small else MNIDemoConfig()
    store = build_mni_demo(ws.store_path, cfg, overwrite=opts.rebuild)
    meta = store.meta(["orientation", "artifact", "quality_fail"])
    n_art = int((meta["artifact"] != "none").sum())
    return (
        f"{store.n_rows:,} MRI slices ({', '.join(f'{k} {v}' for k, v in meta['orientation'].value_counts().items())}), "
        f"{store.dim}-d {store.encoder.get('name')} embeddings, {n_art:,} with torchio artifacts "
        f"({int(meta['quality_fail'].sum()):,} fail QC)"
    )


DEMO_SAE: dict[str, Any] = {"arch": "topk", "n_latents": 512, "k": 8}
DEMO_TRAIN: dict[str, Any] = {"batch_size": 256, "epochs": 25}
DEMO_TARGETS = ("orientation", "artifact", "region", "quality_fail")


def stage_train(ws: Workspace, opts: DemoOptions) -> str:
    """Stage 2: a TopK SAE on the demo embeddings, the store encoded into codes.zarr, every metric."""
    from sae.models import SAEConfig
    from sae.pipeline import evaluate_run, run_name, train_run
    from sae.run import Run
    from sae.train import TrainConfig

    store = ws.open_store()
    sae_cfg = SAEConfig(d_in=store.dim, **DEMO_SAE)
    train_cfg = TrainConfig(**{**DEMO_TRAIN, "epochs": 8 if opts.small else DEMO_TRAIN["epochs"]})
    name = run_name(sae_cfg, train_cfg)
    existing = ws.path / "saes" / name
    run = Run(ws, existing)
    if opts.rebuild or not (existing / "metrics.json").exists() or run.config.get("store_fingerprint") != store.fingerprint:
        run = train_run(ws, sae_cfg, train_cfg, name=name, overwrite=True, evaluate=False)
        evaluate_run(run, targets=[t for t in DEMO_TARGETS if t in store.columns])
    m = run.metrics()
    rec, base = m["reconstruction"], m.get("baselines", {}).get("random_sae", {})
    rand_r2 = base.get("reconstruction", {}).get("r2", float("nan"))
    acc = {(p["target"], p["probe"]): p["balanced_accuracy"] for p in m["probes"]}
    probe_text = ", ".join(f"{t} {acc[(t, 'sae_top10')]:.2f} (random SAE {acc.get((t, 'random_sae_top10'), float('nan')):.2f}, "
                           f"10 raw dims {acc.get((t, 'raw_top10'), float('nan')):.2f}, dense {acc[(t, 'dense')]:.2f})"
                           for t in dict.fromkeys(t for t, p in acc if p == "sae_top10"))
    return (f"{run.name}: held-out R2 {rec['r2']:.3f} (random SAE {rand_r2:.3f}) at L0 {rec['l0']:.0f}, dead {m['sparsity']['dead_frac']:.1%}; "
            f"balanced accuracy of a probe on 10 features: {probe_text}; fingerprint fidelity@10 {m['fingerprint_fidelity@10']:.2f} "
            f"(random SAE {base.get('fingerprint_fidelity@10', float('nan')):.2f})")


def stage_label(ws: Workspace, opts: DemoOptions) -> str:
    """Stage 3: every feature labeled offline from the metadata most of its items share (never from the audited
    quality_fail column), scored by the MiniLM judge beside shuffled labels and a random SAE."""
    import pandas as pd

    from sae.cli.label import print_labels
    from sae.interpret import EvidenceConfig, MetadataLabeler, label_run
    from sae.interpret.naming import value_naming
    from sae.run import Run

    run = Run.find(ws)
    labels = label_run(run, MetadataLabeler(), evidence=EvidenceConfig(exclude_columns=("quality_fail",)))  # always recomputed
    print_labels(labels, n=5)
    naming = pd.concat([value_naming(labels, run, c) for c in ("artifact", "orientation")], ignore_index=True)
    naming = naming[naming["value"] != "none"]
    for r in naming.itertuples():
        print(f"  {r.column}={r.value}: {r.features_naming} features name it; best #{r.best_feature}, "
              f"top-50 purity {r.top50_purity:.2f}")
    s, nan = labels.summary, float("nan")
    rnd, sh = s.get("baselines", {}).get("random_sae", {}), s.get("baselines", {}).get("shuffled_labels", {})
    return (f"{s['ok']} of {s['features']} features labeled offline ({s['unexplained']} unexplained, {s['dead']} dead), every term "
            f"covering >= {s.get('min_term_coverage', nan):.0%} of its feature's items; median detection "
            f"{s.get('detection_median', nan):.2f} vs random items, {s.get('detection_sibling', nan):.2f} vs sibling features' items (chance 0.50; "
            f"shuffled labels {sh.get('detection', float('nan')):.2f}, random SAE {rnd.get('detection', float('nan')):.2f}); "
            f"duplicates {s.get('duplicate_rate', nan):.1%}, collisions {s.get('collision_rate', nan):.1%} (random SAE "
            f"{rnd.get('duplicate_rate', nan):.1%}); artifacts and orientations named by a feature with >= 80% top-50 "
            f"purity: {int(naming['named'].sum())} of {len(naming)}")


DEMO_QUERIES = ("sagittal slices with ghosting artifact", "axial slices with noise but not inferior region",
                "spike artifact but not coronal", "bottom of the brain without intensity inhomogeneity")


def stage_search(ws: Workspace, opts: DemoOptions) -> str:
    """Stage 4: text queries become plans over the labels; precision against the demo metadata, vs SAIL's method."""
    import numpy as np

    from sae.run import Run
    from sae.search.baseline import SAILBaseline
    from sae.search.evaluate import DEMO_VOCABULARY, QueryCase, evaluate_methods, metadata_cases, precision_at, summarize
    from sae.search.searcher import Searcher
    from sae.search.suites import suite_cases

    s = Searcher(Run.find(ws), "metadata")
    truth = {DEMO_QUERIES[0]: QueryCase("", "", (("orientation", "sagittal"), ("artifact", "ghosting"))),
             DEMO_QUERIES[1]: QueryCase("", "", (("orientation", "axial"), ("artifact", "noise")), (("region", "inferior"),)),
             DEMO_QUERIES[2]: QueryCase("", "", (("artifact", "spike"),), (("orientation", "coronal"),)),
             DEMO_QUERIES[3]: QueryCase("", "", (("region", "inferior"),), (("artifact", "bias_field"),))}
    for q, case in truth.items():
        res = s.search(q, top=10)
        print(f"  {q!r}: P@10 {precision_at(res.hits['row'].to_numpy(), case.relevant(s.meta)):.1f}\n    plan: {res.plan.summary()}")
    row = int(np.flatnonzero((s.meta["artifact"] == "none").to_numpy())[len(s.meta) // 3])
    cmp = s.compare_example(row)
    print(f"  like row {row} ({', '.join(s.meta[c].loc[row] for c in ('orientation', 'region'))}): "
          f"top-10 sparse fingerprint vs dense overlap {cmp.overlap:.0%}")
    cases = metadata_cases(DEMO_VOCABULARY, s.meta)
    methods = {"ours": lambda q: s.search(q, top=100).hits["row"].to_numpy(), "sail": SAILBaseline(s.index, s.planner).rank}
    t = summarize(evaluate_methods(methods, cases, s.meta, progress="metadata queries")).set_index(["method", "kind"])
    p10 = {k: t["p10"].loc[("ours", k)] for k in ("single", "negation", "pair") if ("ours", k) in t.index}
    paraphrases = suite_cases()
    u = summarize(evaluate_methods(methods, paraphrases, s.meta, progress="paraphrase suites")).set_index(["method", "kind"])
    kinds = ("direction", "or", "attribute", "negation")
    print("  paraphrase suites (sae.search.suites: wording written apart from the planner), P@10 ours vs SAIL: " + ", ".join(
        f"{k} {u['p10'].loc[('ours', k)]:.2f} vs {u['p10'].loc[('sail', k)]:.2f}" for k in kinds if ("ours", k) in u.index))
    return (f"{len(cases)} metadata queries (3 paraphrases each): P@10 " + ", ".join(f"{k} {v:.2f}" for k, v in p10.items())
            + f"; mAP@100 {t['map100'].loc[('ours', 'all')]:.2f} vs {t['map100'].loc[('sail', 'all')]:.2f} for SAIL's 3-feature cosine; "
            f"{len(paraphrases)} paraphrases: P@10 {u['p10'].loc[('ours', 'all')]:.2f} vs {u['p10'].loc[('sail', 'all')]:.2f} for SAIL")


ARTIFACTS = ("motion", "ghosting", "spike", "bias_field", "noise", "blur")


def artifact_agreement(report, meta) -> list[dict]:
    """Per slice: the artifact most of its failing members carry, precision and recall against the artifact column."""
    import numpy as np

    art = meta["artifact"].to_numpy()
    failed = report.signal.failed
    out = []
    for s in report.slices:
        rows = report.members(s.id)["row"].to_numpy()
        rows = rows[failed[rows]]
        if len(rows) == 0:
            continue
        values, counts = np.unique(art[rows], return_counts=True)
        top = values[np.argmax(counts)]
        out.append({"slice": s.id, "name": s.name, "validated": bool(s.stats.validated), "artifact": str(top),
                    "precision": counts.max() / len(rows), "recall": counts.max() / max(int(((art == top) & failed).sum()), 1),
                    "named": str(top).replace("_", " ") in s.name.replace("_", " ")})
    return out


def stage_audit(ws: Workspace, opts: DemoOptions) -> str:
    """Stage 5: which concepts explain quality_fail; failure slices validated on held-out volumes, named by labels."""
    from sae.audit import AuditConfig
    from sae.audit.report import audit_run
    from sae.run import Run

    run = Run.find(ws)
    # the small demo has a few hundred items: smaller slices are allowed so the stage still shows some
    config = AuditConfig(min_slice_size=5) if opts.small else AuditConfig()
    report = audit_run(run, failure="quality_fail", labeler="metadata", with_map=True, config=config)
    rows = artifact_agreement(report, run.meta)
    for r in rows:
        print(f"  slice {r['slice']} {'validated' if r['validated'] else 'not validated'}: {r['name']!r} -> {r['artifact']} "
              f"(precision {r['precision']:.2f}, recall {r['recall']:.2f})")
    named = sorted({r["artifact"] for r in rows if r["named"] and r["validated"]})
    concepts = report.significant_concepts(len(report.concepts))
    by_concept = sorted(a for a in ARTIFACTS if a not in named and concepts["label"].str.contains(a.replace("_", " ") + "|" + a).any())
    v = sum(r["validated"] for r in rows)
    assert report.path is not None, "audit_run saves the report"
    return (f"{report.summary().split(';')[0]}; {len(report.slices)} slices ({v} validated on held-out volumes); artifacts named by a "
            f"validated slice: {', '.join(named) or 'none'}; by an enriched concept only: {', '.join(by_concept) or 'none'}; "
            f"{len(report.queue)} look-alikes queued in {report.path / 'queue.csv'}")


STAGES: list[tuple[str, Callable[[Workspace, DemoOptions], str]]] = [
    ("store", stage_store), ("train", stage_train), ("label", stage_label), ("search", stage_search), ("audit", stage_audit)]


def run_demo(workspace: Path, *, small: bool = False, rebuild: bool = False) -> dict[str, str]:
    """Run every registered stage on the demo workspace; returns {stage: headline}."""
    from sae.cli.common import print_info

    ws = Workspace(workspace)
    opts = DemoOptions(small=small, rebuild=rebuild)
    headlines = {}
    t_all = time.perf_counter()
    for name, stage in STAGES:
        t0 = time.perf_counter()
        headlines[name] = stage(ws, opts)
        print(f"[{name}] {headlines[name]}  ({time.perf_counter() - t0:.1f} s)", flush=True)
    print(f"demo finished in {time.perf_counter() - t_all:.1f} s; workspace {ws.path}\n")
    print_info(ws)
    return headlines


def ensure_demo(workspace: Path, *, small: bool = False) -> Workspace:
    """The demo workspace with its store, SAE and offline labels, building only what is missing
    (the notebooks start with this, so each runs on its own)."""
    from sae.run import Run

    ws = Workspace(workspace)
    opts = DemoOptions(small=small)
    for name, stage in STAGES[:2]:  # both are cached: same config + store fingerprint = no work
        print(f"[{name}] {stage(ws, opts)}", flush=True)
    if not (Run.find(ws).path / "labels-metadata.parquet").exists():
        print(f"[label] {stage_label(ws, opts)}", flush=True)
    return ws
