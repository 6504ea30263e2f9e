"""Evidence packs, enrichment statistics, labelers, label scores and resumable labeling runs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import fisher_exact

from sae.cli import main
from sae.errors import LabelError, SaeError, StaleArtifactError
from sae.interpret import EvidenceBuilder, LLMClient, LLMConfig, LLMLabeler, MetadataLabeler, label_run, load_labels
from sae.interpret.describe import build_terms, describe_items, label_key
from sae.interpret.enrichment import active_matrix, bh_qvalues, enrichment_table
from sae.interpret.evidence import FeatureEvidence
from sae.interpret.labels import LabelSet, labels_path
from sae.interpret.prompts import COMPACT_VERSION
from sae.interpret.scoring import argmax_accuracy, duplicate_flags, metadata_agreement, sail_top2, top_m_balanced_accuracy


# -- statistics ---------------------------------------------------------------------------------
def _bh_direct(p: np.ndarray) -> np.ndarray:
    m = len(p)
    q = np.empty(m)
    for i in range(m):
        q[i] = min(min(p[j] * m / (np.sum(p <= p[j])) for j in range(m) if p[j] >= p[i]), 1.0)
    return q


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=30))
def test_bh_matches_a_direct_computation(ps):
    p = np.array(ps)
    q = bh_qvalues(p)[0]
    assert np.allclose(q, _bh_direct(p))
    assert np.all(q >= p - 1e-12) and np.all(q <= 1)


def test_enrichment_matches_fisher_exact():
    rng = np.random.default_rng(0)
    n = 400
    meta = pd.DataFrame({"sex": rng.choice(["male", "female"], n), "site": rng.choice(["a", "b", "c"], n)})
    fires = (meta["sex"] == "female").to_numpy() & (rng.random(n) < 0.6) | (rng.random(n) < 0.05)
    codes = sp.csr_matrix(np.c_[fires, rng.random(n) < 0.3].astype(np.float32))
    terms = build_terms(meta, {"sex": "str", "site": "str"})
    df = enrichment_table(active_matrix(codes), terms)
    row = df[(df.feature == 0) & (df.value == "female")].iloc[0]
    a = int((fires & (meta.sex == "female")).sum())
    table = [[a, fires.sum() - a], [(meta.sex == "female").sum() - a, n - fires.sum() - (meta.sex == "female").sum() + a]]
    assert row["count"] == a
    assert row["p"] == pytest.approx(fisher_exact(table, alternative="greater")[1], rel=1e-6)
    assert row["q"] < 1e-6 and row["lift"] > 1.5
    assert df[(df.feature == 1)]["q"].min() > 0.01  # a random feature is enriched for nothing


def test_balanced_accuracy_and_intruder_accuracy_handle_ties():
    truth = np.array([1, 1, 0, 0], bool)
    assert top_m_balanced_accuracy(np.array([0.9, 0.8, 0.1, 0.2]), truth) == 1.0
    assert top_m_balanced_accuracy(np.array([0.1, 0.2, 0.9, 0.8]), truth) == 0.0
    assert top_m_balanced_accuracy(np.ones(4), truth) == 0.5  # a judge that cannot tell scores chance
    rng = np.random.default_rng(0)
    truth5 = np.r_[np.ones(3, bool), np.zeros(8, bool)]
    assert sail_top2(np.r_[np.ones(3), np.zeros(8)], truth5, rng) == 1.0
    assert sail_top2(np.r_[np.zeros(3), np.ones(8)], truth5, rng) == 0.0
    assert sail_top2(np.ones(11), truth5, rng) == pytest.approx(0.4)  # chance for a judge that cannot tell
    assert argmax_accuracy(np.array([0, 1, 0, 0, 0]), 1) == 1.0
    assert argmax_accuracy(np.zeros(5), 2) == pytest.approx(0.2)


def _pack_with(meta: pd.DataFrame, active_rows: np.ndarray, kinds: dict) -> tuple[FeatureEvidence, object]:
    terms = build_terms(meta, kinds)
    fires = np.zeros(len(meta), np.float32)
    fires[active_rows] = 1
    enr = enrichment_table(active_matrix(sp.csr_matrix(fires[:, None])), terms)
    empty = pd.DataFrame({"row": [], "terms": [], "description": []})
    return FeatureEvidence(0, {"count": len(active_rows), "rate": len(active_rows) / len(meta)}, empty, empty, empty,
                           pd.DataFrame({"feature": []}), enr), terms


def test_metadata_agreement_and_contradictions():
    rng = np.random.default_rng(1)
    meta = pd.DataFrame({"sex": rng.choice(["male", "female"], 500), "scanner": rng.choice(["ge", "siemens"], 500)})
    active = np.flatnonzero((meta.sex == "male").to_numpy() & (rng.random(500) < 0.8))
    pack, terms = _pack_with(meta, active, {"sex": "str", "scanner": "str"})
    agree, problem = metadata_agreement("male patients", pack, terms)
    assert agree == 1.0 and problem == ""
    agree, problem = metadata_agreement("female patients", pack, terms)  # "male" inside "female" must not count
    assert agree == 0.0 and "label says 'female sex' but 100% of active items are 'male sex'" in problem


def test_duplicate_flags_ignore_word_order_and_case():
    flags = duplicate_flags(pd.Series(["Motion artifact, axial", "axial, motion artifact", "bias field", ""]))
    assert list(flags) == [True, True, False, False]
    assert label_key("Axial  slices!") == label_key("slices axial")


def test_item_descriptions_state_presences_only():
    meta = pd.DataFrame({"artifact": ["none", "motion"], "fail": [False, True], "size": [1.0, 5.0]})
    terms = build_terms(meta, {"artifact": "str", "fail": "bool", "size": "numeric"})
    assert describe_items(terms, np.array([0, 1])) == ["low size", "motion artifact, fail, high size"]


# -- evidence packs on the demo -----------------------------------------------------------------
@pytest.fixture
def builder(run_ws):
    ws, run = run_ws
    store = ws.open_store()
    return EvidenceBuilder(store, run.codes, run.model.W_dec.detach().numpy(), progress=False)


def test_evidence_pack_contents(builder):
    stats = builder.codes.stats()
    f = int(stats["count"].idxmax())
    pack = builder.pack(f)
    rows, vals = builder.codes.read_feature(f)
    active = set(rows.tolist())
    assert len(pack.top) == builder.cfg.n_top and pack.top["activation"].is_monotonic_decreasing
    assert pack.top["activation"].iloc[0] == pytest.approx(vals[0])
    volumes = builder.meta["volume"].to_numpy()[pack.top["row"]]
    n_groups = builder.meta["volume"].nunique()  # 3 volumes: the cap fills up, then the best rest follow
    assert pd.Series(volumes).value_counts().min() >= min(builder.cfg.max_per_group, builder.cfg.n_top // n_groups)
    from sae.interpret.evidence import _cap_per_group

    assert list(_cap_per_group(np.arange(6), np.array(list("aaabbb")), 1, 4)) == [0, 1, 2, 3]
    assert list(_cap_per_group(np.arange(6), np.array(list("aaabbc")), 1, 3)) == [0, 3, 5]
    assert set(pack.quantiles["row"]) <= active and not set(pack.quantiles["row"]) & set(pack.top["row"])
    assert pack.quantiles["bin"].nunique() >= builder.cfg.n_quantile_bins - 1  # the top bin may be all shown already
    assert len(pack.negatives) and not set(pack.negatives["row"]) & active
    assert f not in set(pack.siblings["feature"]) and {"jaccard", "decoder_cos"} <= set(pack.siblings.columns)
    assert (pack.enrichment["feature"] == f).all() and pack.enrichment["q"].between(0, 1).all()
    assert pack.top["id"].tolist() == list(builder.ids[pack.top["row"]])
    assert "feature" in pack._repr_html_()
    with pytest.raises(SaeError, match="unknown feature"):
        builder.pack(10_000)


def test_metadata_labels_name_their_dominant_terms(builder):
    """Labels name enriched terms covering >= 50% of the active items, at most 3 and one per column, strongest
    (by z) first; a dominant term (>= 90% of the items) is named unless its column is already named or the
    label is full. A label renamed to tell it from another feature's may drop terms, so those are checked only
    for the rules."""
    packs = builder.packs()
    labeler = MetadataLabeler()
    labels = labeler.label_many(packs, progress=False)
    by_f = {p.feature: p for p in packs}
    checked = 0
    for lab in labels:
        if lab.status != "ok":
            continue
        pack = by_f[lab.feature]
        enr = pack.enriched()
        assert 1 <= len(lab.terms) <= labeler.max_terms and len(set(lab.term_columns)) == len(lab.terms)
        named = enr[enr["text"].isin(lab.terms)]
        assert set(named["text"]) == set(lab.terms) and (named["active_frac"] >= 0.5).all()
        assert 0 <= lab.confidence <= 1 and lab.evidence
        if list(lab.terms) == [t.text for t in labeler.choose(pack)]:  # not renamed by the de-duplication
            assert lab.terms[0] == labeler.qualifying(pack)[0].text  # the strongest term leads
            for col in enr[enr["active_frac"] >= 0.9]["column"]:
                assert col in lab.term_columns or len(lab.terms) == labeler.max_terms
            checked += 1
    assert checked > 0
    assert labels == MetadataLabeler().label_many(packs, progress=False)  # deterministic


# -- whole runs -----------------------------------------------------------------------------------
def test_metadata_label_run_scores_beat_shuffled_labels(run_ws, builder):
    ws, run = run_ws
    labels = label_run(run, MetadataLabeler(), builder=builder, progress=False)
    s = labels.summary
    assert s["features"] == run.model.cfg.n_latents and s["ok"] > 0.8 * s["features"]
    assert 0 <= s["duplicate_rate"] < 0.5 and s["metadata_agreement"] > 0.7
    ok = labels.frame[labels.frame["status"] == "ok"]
    # the same judge, given another feature's label, must do worse: the score measures the label
    from sae.interpret.scoring import EmbeddingJudge, LabelScorer

    packs = {p.feature: p for p in builder.packs(ok["feature"])}
    shuffled = ok.copy()
    shuffled["label"] = np.roll(ok["label"].to_numpy(), len(ok) // 2)
    scores = LabelScorer(builder, EmbeddingJudge()).score(shuffled, packs, progress=False)
    assert s["detection"] > scores["detection"].mean() + 0.05
    # the small demo (262 slices, 512 features at k=8) leaves a few held-out items per feature: the margin over
    # shuffled labels above is the test; the absolute level only guards against a judge that cannot read labels
    assert s["detection"] > 0.53 and s["intruder"] > 0.3
    loaded = load_labels(run)
    assert loaded.labeler == "metadata" and len(loaded.frame) == len(labels.frame)
    doc = json.loads(labels_path(run.path, "metadata").with_suffix(".json").read_text())
    assert doc["store_fingerprint"] == ws.open_store().fingerprint and doc["judge"] == "embedding-minilm"


def _llm_labeler(server, tmp_path, **kw) -> LLMLabeler:
    cfg = LLMConfig(model="fake", base_url=server.base_url, cache_dir=str(tmp_path / "cache"), backoff_s=0.01, concurrency=1, **kw)
    return LLMLabeler(LLMClient(cfg, api_key="sk-never-written-42", sleep=lambda s: None))


class Crash(Exception):
    pass


def test_llm_labeling_resumes_after_a_crash_and_a_cached_rerun_makes_no_call(run_ws, builder, fake_openai, tmp_path):
    ws, run = run_ws
    feats = list(range(12))
    labeler = _llm_labeler(fake_openai, tmp_path)
    real = labeler.label_many

    def crash_after_five(packs, on_label=None, progress=True):
        seen = []

        def counting(label):
            on_label(label)
            seen.append(label)
            if len(seen) == 5:
                raise Crash

        return real(packs, on_label=counting, progress=progress)

    labeler.label_many = crash_after_five
    with pytest.raises(Crash):
        label_run(run, labeler, features=feats, builder=builder, judge=None, progress=False)
    asked_before = len(fake_openai.chat_requests())
    assert not labels_path(run.path, labeler.id).exists()  # no half-written result
    fresh = _llm_labeler(fake_openai, tmp_path / "other-cache")  # no cache: only the progress file can help
    labels = label_run(run, fresh, features=feats, builder=builder, judge=None, progress=False)
    dead = int((labels.frame["status"] == "dead").sum())
    assert len(fake_openai.chat_requests()) - asked_before == len(feats) - 5 - dead
    assert (labels.frame["status"].isin(["ok", "dead"])).all() and len(labels.frame) == len(feats)
    assert labels.get(feats[0])["label"].startswith("concept") or labels.get(feats[0])["status"] == "dead"
    # forget the labels: the 7 answers in this cache are reused, the 5 from the crashed run are asked again
    labels_path(run.path, fresh.id).unlink()
    n = len(fake_openai.chat_requests())
    label_run(run, _llm_labeler(fake_openai, tmp_path / "other-cache"), features=feats, builder=builder, judge=None, progress=False)
    assert len(fake_openai.chat_requests()) - n == 5
    labels_path(run.path, fresh.id).unlink()
    n = len(fake_openai.chat_requests())
    again = _llm_labeler(fake_openai, tmp_path / "other-cache")
    label_run(run, again, features=feats, builder=builder, judge=None, progress=False)
    assert len(fake_openai.chat_requests()) == n and again.client.calls_made == 0  # fully cached: zero calls
    for path in list(ws.path.rglob("*")) + list(tmp_path.rglob("*")):
        if path.is_file() and path.suffix in (".json", ".jsonl", ".parquet", ".txt"):
            assert b"sk-never-written-42" not in path.read_bytes()


def test_llm_failures_are_recorded_and_retried_on_the_next_run(run_ws, builder, fake_openai, tmp_path):
    ws, run = run_ws
    fake_openai.script.extend([("content", "not json"), ("content", "still not json")])
    labeler = _llm_labeler(fake_openai, tmp_path)
    alive = [int(f) for f in np.flatnonzero(builder.codes.stats()["count"].to_numpy() > 0)[:3]]
    labels = label_run(run, labeler, features=alive, builder=builder, judge=None, progress=False)
    assert list(labels.frame["status"]).count("failed") == 1 and labels.summary["failed"] == 1
    again = label_run(run, _llm_labeler(fake_openai, tmp_path), features=alive, builder=builder, judge=None, progress=False)
    assert again.summary["failed"] == 0 and again.summary["labeled_now"] == 1


def test_vision_prompts_carry_thumbnails(run_ws, builder, fake_openai, tmp_path):
    ws, run = run_ws
    labeler = _llm_labeler(fake_openai, tmp_path)
    labeler.images = ws.open_store().previews
    f = int(builder.codes.stats()["count"].idxmax())
    label_run(run, labeler, features=[f], builder=builder, judge=None, progress=False)
    content = fake_openai.chat_requests()[-1]["body"]["messages"][-1]["content"]
    images = [p for p in content if p["type"] == "image_url"]
    assert len(images) == labeler.n_images and images[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert labeler.id.endswith("-vision")


def test_llm_confidence_percentages_are_rescaled():
    from sae.interpret.labelers import _confidence

    assert [_confidence(v) for v in (0.7, 70, 100, -1, 250)] == [0.7, 0.7, 1.0, 0.0, 1.0]


def test_label_html_is_escaped():
    frame = pd.DataFrame({"feature": [0], "label": ["<img src=x onerror=alert(1)>"], "status": ["ok"], "confidence": [1.0]})
    html = LabelSet(frame, {"labeler": "<b>x</b>"}, "t")._repr_html_()
    assert "<img src=x" not in html and "&lt;img" in html and "<b>x</b>" not in html


def test_stale_labels_are_refused(run_ws, builder):
    ws, run = run_ws
    label_run(run, MetadataLabeler(), builder=builder, judge=None, progress=False, features=[0, 1])
    doc_path = labels_path(run.path, "metadata").with_suffix(".json")
    doc = json.loads(doc_path.read_text())
    doc_path.write_text(json.dumps({**doc, "store_fingerprint": "other"}))
    with pytest.raises(StaleArtifactError):
        load_labels(run)
    with pytest.raises(LabelError, match="no labels from nope"):
        load_labels(run, "nope")


def test_cli_label_metadata_and_llm_dry_run(run_ws, fake_openai, tmp_path, capsys):
    ws, run = run_ws
    assert main(["label", str(ws.path), "--features", "0-7", "--judge", "none"]) == 0
    out = capsys.readouterr().out
    assert "labels metadata:" in out and "best:" in out
    assert main(["label", str(ws.path), "--labeler", "llm", "--dry-run", "--features", "0-3", "--model", "m",
                 "--base-url", fake_openai.base_url, "--cache-dir", str(tmp_path / "c"), "--price-in", "1"]) == 0
    out = capsys.readouterr().out
    est = json.loads(out[out.find("{"):])
    assert est["calls"] == est["requests"] > 0 and est["input_tokens"] > 0 and est["cost_usd_max"] > 0
    assert len(fake_openai.chat_requests()) == 0
    assert main(["label", str(ws.path), "--features", "0-x"]) == 2
    assert "--features takes numbers" in capsys.readouterr().err


def test_llm_judge_scores_through_the_wrapper(run_ws, builder, tmp_path):
    from tests.fake_openai import FakeOpenAI, label_answer

    def responder(body):
        system = body["messages"][0]["content"]
        if "matches" in system:
            n = body["messages"][-1]["content"].count("\n") and 20
            return json.dumps({"matches": list(range(n // 2))})
        if "intruder" in system:
            return json.dumps({"intruder": 0})
        return label_answer(body)

    ws, run = run_ws
    alive = [int(f) for f in np.flatnonzero(builder.codes.stats()["count"].to_numpy() >= 20)[:3]]
    with FakeOpenAI(responder) as server:
        labels = label_run(run, _llm_labeler(server, tmp_path), features=alive, builder=builder, judge="llm", progress=False)
        systems = [r["body"]["messages"][0]["content"] for r in server.chat_requests()]
    assert labels.frame["judge"].eq("llm").all()
    assert labels.frame["detection"].between(0, 1).all() and labels.frame["intruder"].between(0, 1).all()
    kinds = pd.Series(["detection" if "matches" in s else "intruder" if "intruder" in s else "label" for s in systems]).value_counts()
    # per feature: a label, 5 intruder trials and a detection, plus one detection of another feature's label (the
    # shuffled-label baseline; its true-label detections are the cached ones); no random-SAE baseline for an LLM labeler
    assert kinds.to_dict() == {"label": len(alive), "intruder": 5 * len(alive), "detection": 2 * len(alive)}
    assert "shuffled_labels" in labels.summary["baselines"]


def test_compact_prompt_for_small_models(run_ws, builder, fake_openai, tmp_path):
    ws, run = run_ws
    labeler = _llm_labeler(fake_openai, tmp_path)
    labeler.prompt = "compact"
    f = int(builder.codes.stats()["count"].idxmax())
    labels = label_run(run, labeler, features=[f], builder=builder, judge=None, progress=False)
    content = fake_openai.chat_requests()[-1]["body"]["messages"][-1]["content"]
    assert "A feature fires on items with:" in content and "pleural effusion" in content  # the worked examples
    assert f"Feature {f}" not in content and f"feature {f}" not in content  # small models copy numbers into labels
    assert labeler.id.endswith(COMPACT_VERSION) and labels.summary["ok"] == 1
    labeler.prompt = "poetic"
    with pytest.raises(SaeError, match="unknown prompt"):
        labeler.request(builder.pack(f))


def test_cli_llm_labeling_reads_the_key_from_the_named_variable(run_ws, fake_openai, tmp_path, capsys, monkeypatch):
    ws, run = run_ws
    monkeypatch.setenv("MY_LLM_KEY", "sk-from-env-77")
    assert main(["label", str(ws.path), "--labeler", "llm", "--features", "0-3", "--judge", "none", "--model", "m",
                 "--base-url", fake_openai.base_url, "--api-key-env", "MY_LLM_KEY", "--cache-dir", str(tmp_path / "c"),
                 "--prompt", "compact", "--response-format", "json_schema"]) == 0
    out = capsys.readouterr().out
    assert f"labels llm-m-{COMPACT_VERSION}:" in out
    sent = fake_openai.chat_requests()
    assert sent and all({k.lower(): v for k, v in r["headers"].items()}["authorization"] == "Bearer sk-from-env-77" for r in sent)
    assert sent[0]["body"]["response_format"]["type"] == "json_schema"
    assert load_labels(run, f"llm-m-{COMPACT_VERSION}").summary["ok"] >= 1


def test_text_stores_put_their_previews_in_the_evidence(tmp_path):
    """Report-like text previews travel into the item descriptions that labelers and judges read."""
    from sae.models import SAEConfig
    from sae.pipeline import train_run
    from sae.run import Workspace
    from sae.store import Store
    from sae.train import TrainConfig

    rng = np.random.default_rng(0)
    n, d = 600, 16
    finding = rng.choice(["nodule", "effusion", "normal"], n)
    centers = {"nodule": rng.normal(size=d) * 3, "effusion": rng.normal(size=d) * 3, "normal": np.zeros(d)}
    x = np.stack([centers[f] for f in finding]) + rng.normal(size=(n, d))
    texts = [f"report {i}: {f} seen" for i, f in enumerate(finding)]
    ws = Workspace(tmp_path / "ws")
    ws.path.mkdir()
    with Store.create(ws.store_path, d) as store:
        store.append(x.astype(np.float32), [f"r{i}" for i in range(n)], pd.DataFrame({"finding": finding}), texts=texts)
    run = train_run(ws, SAEConfig(d_in=d, n_latents=32, k=4), TrainConfig(batch_size=64, epochs=3), progress=False, evaluate=False)
    store = ws.open_store()
    builder = EvidenceBuilder(store, run.codes, run.model.W_dec.detach().numpy(), progress=False)
    f = int(builder.codes.stats()["count"].idxmax())
    pack = builder.pack(f)
    assert all("; text: report" in d or d.startswith("report") for d in pack.top["description"])
    labels = label_run(run, MetadataLabeler(), builder=builder, progress=False)
    named = labels.frame[labels.frame["status"] == "ok"]["label"]
    assert named.str.contains("nodule|effusion|normal").any()
