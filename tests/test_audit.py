"""Failure audit: statistics against references, bad signals, slices end to end on real stores, CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from sae.audit import AuditConfig, FailureSignal, FailureSignalError, audit, concept_enrichment, newcombe, wilson
from sae.errors import SaeError
from sae.search.index import ConceptIndex


def test_wilson_and_newcombe_match_published_values():
    lo, hi = wilson(np.array([81]), np.array([263]))
    assert (round(float(lo[0]), 4), round(float(hi[0]), 4)) == (0.2553, 0.3662)  # Newcombe 1998, table I
    lo, hi = newcombe(np.array([56]), np.array([70]), np.array([48]), np.array([80]))
    assert (round(float(lo[0]), 4), round(float(hi[0]), 4)) == (0.0524, 0.3339)  # Newcombe 1998, method 10
    lo, hi = wilson(np.array([0]), np.array([0]))
    assert (lo[0], hi[0]) == (0.0, 1.0)


def test_concept_enrichment_matches_fisher_exact(run_ws):
    from scipy.stats import fisher_exact

    ws, run = run_ws
    codes = run.codes
    index = ConceptIndex(codes)
    dense = codes.to_csr().toarray() > 0
    rng = np.random.default_rng(0)
    failed = rng.random(index.n_rows) < np.where(dense[:, 0], 0.7, 0.1)
    enr = concept_enrichment(index, failed, {0: "zero"}).set_index("feature")
    for f in enr.index[:12]:
        a = int((dense[:, f] & failed).sum())
        b = int((dense[:, f] & ~failed).sum())
        c = int((~dense[:, f] & failed).sum())
        d = int((~dense[:, f] & ~failed).sum())
        row = enr.loc[f]
        assert row["n_active"] == a + b and row["n_failed"] == a
        p = fisher_exact([[a, b], [c, d]], alternative="greater")[1]
        if a > (a + b) * failed.mean():
            assert row["p"] == pytest.approx(p, rel=1e-6)
        assert row["ci_low"] <= row["risk_difference"] <= row["ci_high"] and row["q"] >= row["p"] - 1e-12
    assert enr.loc[0, "label"] == "zero" and enr.loc[0, "risk_difference"] > 0.3
    rows = np.arange(0, index.n_rows, 2)
    sub = concept_enrichment(index, failed, rows=rows).set_index("feature")
    assert sub.loc[0, "n_active"] == int(dense[rows, 0].sum())


def test_bad_failure_signals_get_clear_messages():
    meta = pd.DataFrame({"ok": [True] * 50, "bad": [True] * 50, "nan": [0.1] * 49 + [np.nan], "text": ["a"] * 50,
                         "dice": np.linspace(0, 1, 50), "few": [True] * 3 + [False] * 47})
    meta.loc[:, "ok"] = False
    with pytest.raises(FailureSignalError, match="no item fails"):
        FailureSignal.from_column(meta, "ok").check(10)
    with pytest.raises(FailureSignalError, match="every item fails"):
        FailureSignal.from_column(meta, "bad").check(10)
    with pytest.raises(FailureSignalError, match="missing values"):
        FailureSignal.from_column(meta, "nan")
    with pytest.raises(FailureSignalError, match="holds text"):
        FailureSignal.from_column(meta, "text")
    with pytest.raises(FailureSignalError, match="give a threshold"):
        FailureSignal.from_column(meta, "dice")
    with pytest.raises(FailureSignalError, match="fewer than the minimum slice size"):
        FailureSignal.from_column(meta, "few").check(10)
    with pytest.raises(FailureSignalError, match="fewer than twice the minimum slice size"):
        FailureSignal.from_column(meta, "dice", threshold=0.5).check(40)
    with pytest.raises(SaeError, match="unknown failure column"):
        FailureSignal.from_column(meta, "nope")
    sig = FailureSignal.from_column(meta, "dice", threshold=0.3, above=False)
    assert sig.failed.sum() == int((meta["dice"] < 0.3).sum()) and "< 0.3" in sig.source and sig.column == "dice"
    with pytest.raises(FailureSignalError, match="one value per item"):
        FailureSignal.from_values(np.zeros((3, 2)))


def test_probe_errors_are_the_misclassified_items():
    rng = np.random.default_rng(0)
    y = np.repeat(["a", "b"], 100)
    x = rng.standard_normal((200, 4)) + np.where(y == "a", 0.0, 2.0)[:, None]
    sig = FailureSignal.probe_errors(x, pd.Series(y, name="kind"), folds=4)
    assert 0 < sig.failed.sum() < 40 and "probe for 'kind'" in sig.source
    assert np.all(sig.score[sig.failed] <= 0.5 + 1e-9)


@pytest.fixture
def labeled_run(run_ws):
    from sae.interpret import MetadataLabeler, label_run

    ws, run = run_ws
    label_run(run, MetadataLabeler(), judge=None, progress=False)
    return ws, run


def _demo_audit(ws, run, labels: dict[int, str] | None = None):
    """Audit quality_fail on the small demo, split by item (its 3 volumes are too few for a volume split)."""
    from sae.interpret import load_labels

    meta = ws.open_store().meta()
    codes = run.codes
    index = ConceptIndex(codes)
    labels = load_labels(run).mapping() if labels is None else labels
    report = audit(index, codes, FailureSignal.from_column(meta, "quality_fail"), labels, meta["id"].to_numpy(),
                   config=AuditConfig(min_slice_size=5))
    return report, index, meta


def test_audit_end_to_end_on_the_demo(labeled_run, tmp_path):
    from sae.audit.report import audit_run

    ws, run = labeled_run
    report, index, meta = _demo_audit(ws, run)
    table = report.slice_table()
    assert len(table) >= 1 and set(table["validated"]) <= {True, False}
    assert all(bool(v) or w for v, w in zip(table["validated"], table["why_not"]))  # an unvalidated slice says why
    for s in report.slices:
        members = report.members(s.id, index)
        assert len(members) == s.stats.discovery_members + s.stats.holdout_members
        assert members["score"].is_monotonic_decreasing
    queue = report.queue
    assert len(queue) and not meta["quality_fail"].to_numpy()[queue["row"].to_numpy()].any()  # look-alikes come from the passing pool
    # the workspace path: volumes kept whole, saved atomically, map cached
    saved = audit_run(run, failure="quality_fail", config=AuditConfig(min_slice_size=5), with_map=True)
    assert {p.name for p in saved.path.iterdir()} >= {"concepts.parquet", "slices.parquet", "queue.csv", "report.json", "map.parquet"}
    assert json.loads((saved.path / "report.json").read_text())["signal"]["failed"] == int(meta["quality_fail"].sum())
    assert "quality fail" not in " ".join(saved.slice_table()["name"])  # the signal itself never names a slice
    assert saved.map is not None and len(saved.map) == len(meta) and np.isfinite(saved.map[["x", "y"]].to_numpy()).all()
    again = audit_run(run, failure="quality_fail", config=AuditConfig(min_slice_size=5), with_map=True, save=False)
    assert again.map.equals(saved.map)  # served from the cache
    assert again.slice_table()["name"].tolist() == saved.slice_table()["name"].tolist()  # seeded: same slices


def test_audit_html_escapes_labels(labeled_run):
    ws, run = labeled_run
    rep, _, _ = _demo_audit(ws, run, labels=dict.fromkeys(range(run.codes.n_latents), "<img src=x onerror=alert(1)>"))
    page = rep._repr_html_()
    assert "<img src=x" not in page and "Failure audit" in page


def test_audit_finds_and_names_a_planted_concept_slice(tmp_path):
    from sae.datasets.planted import PlantedConfig, SliceSpec, make_planted
    from sae.interpret import MetadataLabeler, label_run
    from sae.models import SAEConfig
    from sae.pipeline import train_run
    from sae.run import Workspace
    from sae.train import TrainConfig

    ws = Workspace(tmp_path / "ws")
    ws.path.mkdir()
    cfg = PlantedConfig(n_rows=6000, dim=128, n_concepts=96, n_parents=8, n_revealed=24, slices=(SliceSpec("concept", 0.06, 0.9),),
                        reveal_slice_concepts=True, seed=3)
    store, truth = make_planted(ws.store_path, cfg, progress=False)
    run = train_run(ws, SAEConfig(d_in=128, n_latents=256, k=12), TrainConfig(batch_size=256, epochs=20), evaluate=False, progress=False)
    labels = label_run(run, MetadataLabeler(), judge=None, progress=False).mapping()
    codes = run.codes
    index = ConceptIndex(codes)
    meta = store.meta()
    rep = audit(index, codes, FailureSignal.from_column(meta, "failure"), labels, meta["id"].to_numpy(),
                groups=meta["group"].to_numpy(), config=AuditConfig(min_slice_size=15))
    planted = np.asarray(truth.slices[0]["rows"], bool)
    name = truth.names[truth.slices[0]["concepts"][0]]
    best = max(rep.slices, key=lambda s: planted[rep.members(s.id, index)["row"].to_numpy()[:10]].mean())
    assert planted[rep.members(best.id, index)["row"].to_numpy()[:10]].mean() >= 0.8
    assert name in best.name and best.stats.validated
    q = rep.queue[rep.queue["slice"] == best.id]
    assert len(q) and planted[q["row"].to_numpy()].mean() > 4 * planted[~rep.signal.failed].mean()


def test_cli_audit(labeled_run, capsys):
    from sae.cli import main

    ws, run = labeled_run
    assert main(["audit", str(ws.path), "--failure", "quality_fail", "--min-slice-size", "5", "--name", "qc"]) == 0
    out = capsys.readouterr().out
    assert "items fail" in out and "concepts that explain the failures" in out and "audits/qc" in out
    assert main(["audit", str(ws.path), "--failure", "artifact"]) == 2
    assert "holds text" in capsys.readouterr().err
    assert main(["audit", str(ws.path), "--probe", "orientation", "--min-slice-size", "5"]) in (0, 2)


def test_llm_names_slices_through_the_shared_wrapper(labeled_run, fake_openai, tmp_path):
    from sae.audit.naming import name_slices
    from sae.llm import LLMClient, LLMConfig

    ws, run = labeled_run
    rep, _, _ = _demo_audit(ws, run)
    seen = []

    def answer(body):
        user = body["messages"][-1]["content"]
        seen.append(user)
        return json.dumps({"name": "noisy scans", "summary": "They fail often."})

    fake_openai.responder = answer
    fake_openai.script.append(("content", "not json at all"))
    fake_openai.script.append(("content", "still not json"))
    client = LLMClient(LLMConfig(model="fake", base_url=fake_openai.base_url, cache_dir=str(tmp_path / "c"), backoff_s=0.01, concurrency=1), api_key="k")
    errors = name_slices(rep, client)
    table = rep.slice_table()
    assert len(errors) == 1 and "malformed" in errors[0]  # one slice's answers stayed malformed after repair; the rest are named
    assert (table["llm_name"] == "noisy scans").sum() == len(table) - 1
    assert all("<data>" in u for u in seen if "Slice concepts" in u)


def test_figures_for_queries_slices_and_the_map(labeled_run, tmp_path):
    from sae.audit.report import audit_run
    from sae.search.searcher import Searcher
    from sae.viz import concept_map_figure, query_figure, save_figure, slice_figure

    ws, run = labeled_run
    s = Searcher(run)
    res = s.search("axial orientation without spike artifact", top=6)
    res.plan = res.plan.__class__(**{**res.plan.__dict__, "query": "cost $5 <img src=x>"})  # dataset text with mathtext / HTML
    fig = query_figure(res, s.store.previews(res.hits["row"].to_numpy()))
    paths = save_figure(fig, tmp_path / "query", formats=("png", "pdf", "svg"), dpi=80)
    assert all(p.stat().st_size > 1000 for p in paths)
    assert "cost $5" in (tmp_path / "query.svg").read_text()  # editable text in the SVG
    report = audit_run(run, failure="quality_fail", config=AuditConfig(min_slice_size=5), with_map=True, save=False)
    if report.slices:
        sl = report.slices[0]
        save_figure(slice_figure(report, sl.id, s.store.previews(sl.prototypes)), tmp_path / "slice", formats=("png",), dpi=80)
    save_figure(concept_map_figure(report), tmp_path / "map", formats=("png",), dpi=80)
    assert (tmp_path / "map.png").stat().st_size > 1000


def test_cli_figures_writes_the_standard_set(labeled_run, capsys):
    from sae.cli import main

    ws, run = labeled_run
    assert main(["figures", str(ws.path), "--features", "2", "--failure", "quality_fail", "--formats", "png", "svg", "--dpi", "60"]) == 0
    out = capsys.readouterr().out
    names = {p.name for p in (ws.path / "figures").iterdir()}
    assert {"query.png", "query.svg", "concept-map.png"} <= names and sum(n.startswith("feature-") for n in names) == 4
    assert "files in" in out
