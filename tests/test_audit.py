"""Failure audit: statistics against references, bad signals, slices end to end on real stores, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sae.audit import AuditConfig, FailureSignal, FailureSignalError, audit, concept_enrichment, newcombe, wilson
from sae.audit.report import audit_run
from sae.audit.slices import slice_rows
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
    assert json.loads((run.path / "audits" / "qc" / "report.json").read_text())["config"]["min_ratio"] == AuditConfig().min_ratio
    assert main(["audit", str(ws.path), "--failure", "quality_fail", "--min-ratio", "0", "--name", "every-activation"]) == 0
    assert json.loads((run.path / "audits" / "every-activation" / "report.json").read_text())["config"]["min_ratio"] == 0
    capsys.readouterr()
    assert main(["audit", str(ws.path), "--failure", "quality_fail", "--min-ratio", "1.5"]) == 2
    assert "--min-ratio" in capsys.readouterr().err
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


def test_members_are_written_and_rare_failures_lower_the_slice_size_with_a_floor(run_ws):
    """members.parquet lists every slice's members; with few failures the minimum slice size scales down to a
    quarter of the failing discovery items (never below the floor) and the report says so; with none found it says why."""
    from sae.audit.report import audit_run
    from sae.audit.slices import effective_min_size
    from sae.interpret.labels import label_run
    from sae.interpret.term_labeler import MetadataLabeler

    cfg = AuditConfig()
    assert effective_min_size(cfg, 400) == (20, "")
    size, why = effective_min_size(cfg, 43)
    assert size == 10 and "lowered from 20 to 10" in why and "43 failing" in why
    assert effective_min_size(cfg, 8)[0] == cfg.min_slice_floor
    ws, run = run_ws
    label_run(run, MetadataLabeler(), judge=None, progress=False, with_baselines=False)
    report = audit_run(run, failure="quality_fail", labeler="metadata")
    members = pd.read_parquet(report.path / "members.parquet")
    assert list(members.columns) == ["slice", "row", "id", "failing", "validated", "side"]
    for s in report.slices:
        mine = members[members["slice"] == s.id]
        assert set(mine["row"]) == set(report.members(s.id)["row"]) and mine["validated"].eq(s.stats.validated).all()
    assert set(members["side"]) <= {"discovery", "holdout"}
    assert report.info["min_slice_size"] <= AuditConfig().min_slice_size
    if not any(s.stats.validated for s in report.slices):
        assert report.info["why_no_slices"] and report.info["why_no_slices"] in report.summary()


def test_redundancy_keeps_the_precise_slice_and_reports_nesting():
    """A broad slice whose failures the precise slice inside it explains is the redundant one."""
    from sae.audit.slices import Slice, SliceStats, describe_members
    from sae.audit.validate import _mark_redundant

    n = 2000
    failed = np.zeros(n, bool)
    precise = np.arange(0, 100)  # fails at 95%
    failed[precise[:95]] = True
    broad = np.arange(0, 400)  # contains the precise slice; outside it fails at the base rate
    failed[np.arange(100, 400, 20)] = True
    failed[np.arange(400, n, 20)] = True
    base = failed.mean()
    cfg = AuditConfig()

    def make(i, rows):
        s = Slice(i, f"s{i}", [i], [f"s{i}"], rows, rows[:3])
        s.stats = SliceStats(holdout=describe_members(failed, rows), validated=True)
        return s

    big, small = make(0, broad), make(1, precise)
    _mark_redundant([big, small], {0: broad, 1: precise}, failed, base, cfg)
    assert small.stats.validated and not big.stats.validated and "redundant" in big.stats.why_not
    assert "'s1' (which it contains)" in big.stats.why_not


def test_a_clean_cause_whose_failures_two_parts_explain_together_stays():
    """"artifact = blur" fails at 50%; its failures concentrate in two regions, each a more precise slice. Neither
    part alone explains it, so it stays validated (each part refines it) instead of vanishing behind the union."""
    from sae.audit.slices import Slice, SliceStats, describe_members
    from sae.audit.validate import _mark_redundant

    n = 3000
    failed = np.zeros(n, bool)
    cause, part_a, part_b = np.arange(0, 600), np.arange(0, 200), np.arange(200, 400)
    failed[np.concatenate([part_a[:180], part_b[:180]])] = True  # the parts fail at 90%
    failed[np.arange(400, 600, 20)] = True  # the rest of the cause near the base rate
    failed[np.arange(600, n, 20)] = True
    slices = []
    for i, rows in enumerate((cause, part_a, part_b)):
        sl = Slice(i, f"s{i}", [i], [f"s{i}"], rows, rows[:3])
        sl.stats = SliceStats(holdout=describe_members(failed, rows), validated=True)
        slices.append(sl)
    _mark_redundant(slices, {0: cause, 1: part_a, 2: part_b}, failed, failed.mean(), AuditConfig())
    assert all(sl.stats.validated for sl in slices), [sl.stats.why_not for sl in slices]
    assert slices[1].stats.refines == [0] and slices[2].stats.refines == [0]


def test_a_precise_slice_inside_a_broad_one_that_adds_failures_refines_it():
    from sae.audit.slices import Slice, SliceStats, describe_members
    from sae.audit.validate import _mark_redundant

    n = 2000
    failed = np.zeros(n, bool)
    precise, broad = np.arange(0, 100), np.arange(0, 400)
    failed[precise[:95]] = True
    failed[np.arange(100, 400, 2)] = True  # outside the precise slice the broad one still fails at 50%
    failed[np.arange(400, n, 20)] = True
    cfg = AuditConfig()
    slices = []
    for i, rows in enumerate((broad, precise)):
        s = Slice(i, f"s{i}", [i], [f"s{i}"], rows, rows[:3])
        s.stats = SliceStats(holdout=describe_members(failed, rows), validated=True)
        slices.append(s)
    _mark_redundant(slices, {0: broad, 1: precise}, failed, failed.mean(), cfg)
    assert all(s.stats.validated for s in slices) and slices[1].stats.refines == [0] and slices[0].stats.refines == []


class _Index:
    """A minimal concept index over a dense boolean matrix (what find_candidates reads)."""

    def __init__(self, active: np.ndarray):
        self.active, self.n_rows, self.n_latents = active, active.shape[0], active.shape[1]

    def active_rows(self, f: int) -> np.ndarray:
        return np.flatnonzero(self.active[:, f])

    def count_active(self, flag: np.ndarray, within: np.ndarray | None = None):
        a = self.active if within is None else self.active[within]
        fl = flag if within is None else flag[within]
        return a.sum(0), (a & fl[:, None]).sum(0)

    def ratio_at(self, f: int, rows: np.ndarray) -> np.ndarray:
        return self.active[rows, f].astype(float)


def test_rare_pairs_and_metadata_values_are_found_and_every_test_counts():
    """Two concepts each barely enriched whose pair fails 80%, and a site failing at 50%, are candidates;
    a value of the failure column itself is never tested."""
    from sae.audit.candidates import find_candidates, metadata_conditions

    rng = np.random.default_rng(0)
    n = 20000
    a, b = rng.random(n) < 0.2, rng.random(n) < 0.2  # 4% have both
    site = rng.choice(list("ABCDEF"), n)
    active = np.stack([a, b] + [rng.random(n) < 0.1 for _ in range(6)], axis=1)
    fail_p = np.full(n, 0.04)
    fail_p[a & b] = 0.8
    fail_p[site == "E"] = np.maximum(fail_p[site == "E"], 0.5)
    failed = rng.random(n) < fail_p
    meta = pd.DataFrame({"site": site, "age": rng.uniform(20, 90, n), "fail": failed})
    single_lift = [failed[x].mean() / failed.mean() for x in (a & (site != "E"), b & (site != "E"))]
    disc = np.arange(0, n, 2)
    cands = find_candidates(_Index(active), failed, meta, disc, AuditConfig(), exclude={"fail"})
    kinds = {(c.kind, c.concepts, tuple(x.text() for x in c.conditions)) for c in cands}
    assert ("pair", (0, 1), ()) in kinds, kinds
    assert ("metadata", (), ("site = E",)) in kinds
    assert not any("fail" in x.column for c in cands for x in c.conditions)
    assert all(c.q < 0.05 and c.lift >= 1.5 for c in cands)
    assert max(single_lift) < 2.0  # each half alone is weak
    assert any(x.low is not None for x in metadata_conditions(meta, {"fail"}))  # numeric columns are binned


def test_slice_names_use_only_terms_the_slice_carries():
    import scipy.sparse as sp

    from sae.audit.evidence_names import evidence_name
    from sae.interpret.describe import TermTable

    n = 100
    m = np.zeros((n, 3), bool)
    m[:60, 0] = True  # 'site E' on 60% of the slice's items (rows 0..59), rare elsewhere
    m[:, 1] = True  # 'mri-t1 modality' everywhere: no lift
    m[:30, 2] = True  # 'fail': the failure column
    rest = np.zeros((900, 3), bool)
    rest[:, 1] = True  # ... and on every other item too
    rest[::50, 0] = True
    terms = TermTable(sp.csr_matrix(np.vstack([m, rest])),
                      pd.DataFrame({"column": ["site", "modality", "fail"], "value": ["E", "mri-t1", "True"],
                                    "text": ["site E", "mri-t1 modality", "fail"], "kind": ["value", "value", "value"]}))
    rows = np.arange(100)
    name, ev = evidence_name(terms, rows, ["mri-t1 modality", "site E", "fail"], [12, 40], exclude_columns=("fail",))
    assert name == "site E" and ev[0]["coverage"] == pytest.approx(0.6)
    name, ev = evidence_name(terms, rows, ["mri-t1 modality"], [12, 40])
    assert name.startswith("unnamed slice (top concepts: #12, #40") and ev == []


def test_an_unknown_column_to_exclude_is_an_error_line(run_ws, capsys):
    from sae.cli import main
    from sae.interpret.labels import label_run
    from sae.interpret.term_labeler import MetadataLabeler

    ws, run = run_ws
    label_run(run, MetadataLabeler(), judge=None, progress=False, with_baselines=False)
    assert main(["audit", str(ws.path), "--failure", "quality_fail", "--exclude-column", "nope"]) == 2
    err = capsys.readouterr().err
    assert "error: unknown column(s) ['nope']" in err and "Traceback" not in err
    assert not (run.path / "audits" / "quality_fail").exists()


def test_firm_index_counts_only_firm_activations(run_ws):
    """The audit's reading of "a concept shows": ratio >= min_ratio, the same in rows, counts, ratios and scores."""
    from sae.audit.firm import FirmIndex

    _, run = run_ws
    index = ConceptIndex.of(run)
    firm = FirmIndex.view(index, 0.3)
    assert FirmIndex.view(index, 0.0) is index and FirmIndex.view(firm, 0.5).base is index
    everyone = np.arange(index.n_rows)
    flag = np.zeros(index.n_rows, bool)
    flag[::3] = True
    n_active, n_flag = firm.count_active(flag)
    weaker = 0
    for f in range(0, index.n_latents, 7):
        ratio = index.ratio_at(f, everyone)
        expect = np.flatnonzero(ratio >= np.float32(0.3))
        np.testing.assert_array_equal(firm.active_rows(f), expect)
        assert n_active[f] == len(expect) and n_flag[f] == flag[expect].sum()
        np.testing.assert_array_equal(firm.ratio_at(f, everyone), np.where(ratio >= np.float32(0.3), ratio, 0))
        weaker += int(((ratio > 0) & (ratio < 0.3)).sum())
    assert weaker > 0  # the run has weak activations for the view to drop
    with pytest.raises(SaeError, match="min_ratio"):
        AuditConfig(min_ratio=1.0)


def test_a_concept_spread_over_features_is_paired_as_its_label_term():
    """An SAE splits concept A over two features (one per site); the pair A x B is found as (A or A') & B, once,
    with more of the failures than either feature's pair."""
    from sae.audit.candidates import candidate_slices, find_candidates

    rng = np.random.default_rng(1)
    n = 30000
    a, b = rng.random(n) < 0.25, rng.random(n) < 0.2
    site = rng.random(n) < 0.5
    active = np.stack([a & site, a & ~site, b] + [rng.random(n) < 0.1 for _ in range(5)], axis=1)
    fail_p = np.full(n, 0.04)
    fail_p[a & b] = 0.8
    failed = rng.random(n) < fail_p
    disc = np.arange(0, n, 2)
    index = _Index(active)
    cands = find_candidates(index, failed, None, disc, AuditConfig(), exclude=set(), term_features={"A finding": [0, 1], "B finding": [2]})
    pairs = [c for c in cands if c.kind == "pair" and 2 in c.concepts]
    assert any(c.alternatives for c in pairs), [(c.concepts, c.alternatives) for c in pairs]
    labels = {0: "A finding, site 1", 1: "A finding, site 2", 2: "B finding"}
    slices = [s for s in candidate_slices(cands, [], labels, failed, disc, index, None, AuditConfig()) if s.kind == "pair"]
    assert len(slices) == 1  # A & B, A' & B and (A or A') & B are one finding
    s = slices[0]
    assert sorted([*s.concepts, *[x for alts in s.alternatives.values() for x in alts]]) == [0, 1, 2]
    assert "A finding" in s.labels and "B finding" in s.name
    rows = slice_rows(index, s)
    assert ((a & b)[rows]).all() and len(rows) == int((a & b).sum())


def test_weak_activations_do_not_widen_a_pair_slice(tmp_path):
    """On the planted benchmark's generator (which the audit never sees), a TopK SAE with k = 16 fills slots with
    weak activations; counted as "shows", they widen the pair rule to items failing at the base rate. The firm
    reading (the default) finds the pair at failing-member precision >= 0.8 and recall >= 0.5."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import audit_planted as ap

    from sae.interpret.evidence import EvidenceConfig

    st = ap.Setting(seed=1, rows=10000, dim=128, kinds=("pair", "concept"), noise=0.15, pair_rows=200, pair_rate=0.8, n_latents=256, k=16)
    x, meta, groups, _ = ap.generate(st)
    ws = ap.Workspace(tmp_path / "ws")
    ws.path.mkdir()
    with ap.Store.create(ws.store_path, st.dim, encoder={"name": "planted", "dim": st.dim}, provenance={"label_exclude": ["fail"]}) as store:
        store.append(x, [f"r{i}" for i in range(len(x))], meta)
    run = ap.train_run(ws, ap.SAEConfig(d_in=st.dim, n_latents=st.n_latents, k=st.k), ap.TrainConfig(seed=1), evaluate=False, progress=False)
    ap.label_run(run, ap.MetadataLabeler(), evidence=EvidenceConfig(exclude_columns=("fail",)), judge=None, progress=False, with_baselines=False)
    fail = meta["fail"].to_numpy(bool)
    concept_columns = [c for c in run.meta.columns if c not in ("id", "fail", "site", "scanner", "age")]

    def best_pair(min_ratio: float) -> tuple[float, float]:
        rep = audit_run(run, failure="fail", config=AuditConfig(seed=1, min_ratio=min_ratio), save=False, exclude_columns=concept_columns)
        masks = []
        for s in rep.slices:
            m = rep.members(s.id)
            mask = np.zeros(len(fail), bool)
            mask[m["row"].to_numpy()[m["failed"].to_numpy(bool)]] = True
            masks.append(mask)
        pr = ap.score_slices(masks, groups, fail)[:, list(groups).index("pair")]
        ok = [i for i, s in enumerate(rep.slices) if s.stats.validated]
        i = max(ok, key=lambda i: pr[i, 1])
        return float(pr[i, 0]), float(pr[i, 1])

    firm, loose = best_pair(AuditConfig().min_ratio), best_pair(0.0)
    assert firm[0] >= 0.8 and firm[1] >= 0.5, firm
    assert firm[0] >= loose[0] + 0.1, (firm, loose)


def test_a_cue_that_fails_only_without_its_cause_is_refined_by_the_causes_absence():
    """A cue fires on 300 rows alone (failing at 70%) and on 1,200 with a common cause (failing at the base rate):
    the rule becomes "cue without cause", although the cue's own rate tops out below 1 (a gap-to-purity test missed it)."""
    from sae.audit.discovery import _negation
    from sae.audit.slices import rule_rows, without_text

    rng = np.random.default_rng(2)
    n = 20000
    cause = rng.random(n) < 0.35
    cue = np.zeros(n, bool)
    cue[rng.choice(np.flatnonzero(~cause), 300, replace=False)] = True
    cue[rng.choice(np.flatnonzero(cause), 1200, replace=False)] = True
    active = np.stack([cue, cause] + [rng.random(n) < 0.1 for _ in range(4)], axis=1)
    failed = rng.random(n) < np.where(cue & ~cause, 0.7, 0.05)
    disc = np.arange(0, n, 2)
    index = _Index(active)
    rows = rule_rows(index, [0], disc)
    assert _negation(index, failed, rows, AuditConfig(), failed[disc].mean()) == 1
    # a concept whose presence does not lower the failure rate is never negated
    assert _negation(index, failed, rule_rows(index, [1], disc), AuditConfig(), failed[disc].mean()) is None
    assert without_text(["cue texture, cause shape"], ["cause shape"]) == " without cause shape"
    assert without_text(["edge slice, position 0.8"], ["edge slice, position 0.8, high slice index"]) == " without high slice index"
