"""Label scores that can tell: sibling distractors, collisions, shuffled labels and a random SAE as baselines.

Everything runs on a small planted store whose concepts are named by its metadata, so a trained SAE's
metadata labels are meaningful and the baselines must fall below them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sae.interpret.baselines import MemoryCodes, label_baselines, random_sae_label_baseline, shuffled_label_scores
from sae.interpret.evidence import EvidenceBuilder
from sae.interpret.labelers import MetadataLabeler
from sae.interpret.scoring import EmbeddingJudge, LabelScorer, ScoringConfig, collision_flags


@pytest.fixture(scope="module")
def judge():
    return EmbeddingJudge()


@pytest.fixture(scope="module")
def planted(tmp_path_factory, judge):
    """A planted store (every concept named by a metadata column), an SAE trained on it, its labels and scores."""
    from sae.datasets.planted import PlantedConfig, make_planted
    from sae.models import SAEConfig
    from sae.pipeline import train_run
    from sae.run import Workspace
    from sae.train import TrainConfig

    ws = Workspace(tmp_path_factory.mktemp("planted") / "ws")
    ws.path.mkdir()
    cfg = PlantedConfig(n_rows=3000, dim=64, n_concepts=32, n_parents=0, k_active=3, n_revealed=32, slices=(), seed=1)
    make_planted(ws.store_path, cfg, progress=False)
    run = train_run(ws, SAEConfig(d_in=64, n_latents=48, k=4), TrainConfig(batch_size=128, epochs=10), evaluate=False, progress=False)
    builder = EvidenceBuilder.of(run, progress=False)
    packs = {p.feature: p for p in builder.packs()}
    frame = pd.DataFrame([lab.record() for lab in MetadataLabeler().label_many(list(packs.values()), progress=False)])
    scorer = LabelScorer(builder, judge)
    scores = scorer.score(frame, packs, progress=False)
    return run, builder, packs, frame, scorer, scores


class CannotTell:
    """A judge that scores every item alike."""

    name = "cannot-tell"

    def detect(self, label, items):
        return np.ones(len(items))

    def intruder(self, items):
        return np.ones(len(items))


def test_scores_carry_sibling_detection_and_collisions(planted):
    run, builder, packs, frame, scorer, scores = planted
    assert {"detection", "detection_sibling", "intruder", "sail_top2", "metadata_agreement", "contradiction", "duplicate", "collision",
            "judge"} <= set(scores.columns)
    ok = scores[frame["status"].eq("ok").to_numpy()]
    sib = ok["detection_sibling"].dropna()
    assert len(sib) >= 0.8 * len(ok) and sib.between(0, 1).all()
    assert sib.mean() > 0.6  # planted concepts are told apart from their neighbours
    assert (scores["collision"] >= scores["duplicate"]).all()  # every duplicate is a collision
    assert scores.loc[~frame["status"].eq("ok").to_numpy(), "detection_sibling"].isna().all()


def test_sibling_distractors_are_unseen_silent_items_of_the_siblings(planted, judge):
    run, builder, packs, frame, scorer, scores = planted
    checked = 0
    for f, pack in list(packs.items())[:12]:
        rows = builder.top_rows(f)[0]
        hard = scorer._sibling_negatives(pack, rows, scorer.cfg.n_detect)
        pool = np.concatenate([builder.top_rows(int(g), top=scorer.cfg.sibling_pool)[0] for g in pack.siblings["feature"]] or [np.zeros(0, int)])
        assert not np.isin(hard, rows).any() and not np.isin(hard, pack.shown_rows()).any()
        assert not np.isin(hard, pack.negatives["row"]).any() and np.isin(hard, pool).all() and len(set(hard)) == len(hard)
        assert np.array_equal(hard, scorer._sibling_negatives(pack, rows, scorer.cfg.n_detect))  # seeded per feature
        checked += len(hard) > 0
    assert checked >= 8
    f = int(frame.loc[frame["status"] == "ok", "feature"].iloc[0])
    alone = dataclasses.replace(packs[f], siblings=packs[f].siblings.iloc[:0])  # no siblings: nothing to tell apart
    lonely = LabelScorer(builder, judge).score_one(alone, "anything", "")
    assert np.isnan(lonely["detection_sibling"]) and not np.isnan(lonely["detection"])
    blind = LabelScorer(builder, CannotTell(), embed=judge.embed).score_one(packs[f], "anything", "")
    assert blind["detection"] == 0.5 and blind["detection_sibling"] == 0.5  # a judge that cannot tell scores chance

    class Paid(CannotTell):
        client = object()  # an LLM judge: the sibling distractors cost one more call per feature, asked only when wanted

    assert np.isnan(LabelScorer(builder, Paid(), embed=judge.embed).score_one(packs[f], "anything", "")["detection_sibling"])
    asked = LabelScorer(builder, Paid(), ScoringConfig(llm_sibling_detection=True), embed=judge.embed).score_one(packs[f], "anything", "")
    assert asked["detection_sibling"] == 0.5


def test_shuffled_labels_score_below_the_true_labels(planted, judge):
    run, builder, packs, frame, scorer, scores = planted
    centre = judge._label_mean.copy()
    out = shuffled_label_scores(scorer, frame, packs, seed=0)
    assert np.array_equal(judge._label_mean, centre)  # the baseline leaves the judge as it found it
    ok = scores[frame["status"].eq("ok").to_numpy()]
    assert out["true_detection"] == pytest.approx(ok["detection"].mean())  # the same held-out items
    assert out["derangement"] == "labels" and out["same_label_share"] == 0.0
    assert out["detection"] < out["true_detection"] - 0.15 and out["detection"] < 0.6
    assert out["detection_sibling"] < out["true_detection_sibling"] - 0.1
    assert shuffled_label_scores(scorer, frame, packs, seed=0) == out


def test_a_random_sae_gets_fewer_and_worse_labels(planted, judge):
    run, builder, packs, frame, scorer, scores = planted
    ok = scores[frame["status"].eq("ok").to_numpy()]
    both = label_baselines(run, MetadataLabeler(), scorer, frame, packs, seed=0)
    rnd = both["random_sae"]
    assert set(both) == {"shuffled_labels", "random_sae"}
    assert rnd["features"] == run.model.cfg.n_latents and rnd["k"] == max(1, round(run.codes.nnz / run.codes.n_rows)) and rnd["rows"] == 3000
    assert rnd["labeled_share"] < len(ok) / len(frame)
    assert rnd["detection"] < ok["detection"].mean() - 0.1
    assert rnd["duplicate_rate"] > ok["duplicate"].mean() and rnd["collision_rate"] >= rnd["duplicate_rate"]
    small = random_sae_label_baseline(run, MetadataLabeler(), judge, max_rows=1000)
    assert small["rows"] == 1000 and "sample of 1,000" in small["rows_note"] and 0 <= small["labeled_share"] <= 1

    class Asks:
        id, client = "llm-x", object()

        def label_many(self, packs, on_label=None, progress=True):
            raise AssertionError("an LLM labeler must not be run on the baseline")

    assert "skipped" in random_sae_label_baseline(run, Asks(), judge)


def test_in_memory_codes_match_the_codes_on_disk(planted):
    run = planted[0]
    mem = MemoryCodes(run.codes.to_csr(), run.store.fingerprint)
    assert (mem.n_rows, mem.n_latents, mem.nnz) == (run.codes.n_rows, run.codes.n_latents, run.codes.nnz)
    pd.testing.assert_frame_equal(mem.stats(), run.codes.stats(), check_dtype=False, atol=1e-6)
    for f in range(run.codes.n_latents):
        rows, vals = run.codes.read_feature(f)
        assert np.array_equal(mem.postings.top(f)[0], rows) and np.allclose(mem.postings.top(f)[1], vals)


def test_collisions_on_real_label_pairs(judge):
    same = [("pleural effusion", "pleural effusions"), ("Pleural Effusion", "pleural effusion."), ("colour artefact", "color artefact"),
            ("sagittal orientation", "sagital orientation"), ("x ray chest", "xray chest"), ("masses", "mass"),
            ("motion artifact, axial", "axial, motion artifact")]
    different = [("sagittal orientation, superior region", "superior region, sagittal orientation, motion artifact"),
                 ("right-sided pleural effusion with adjacent atelectasis", "left-sided pleural effusion with adjacent atelectasis"),
                 ("sagittal orientation, superior region", "sagittal orientation, inferior region"), ("t1 hyperintense", "t2 hyperintense"),
                 ("quality fail", "not quality fail"), ("preoperative scan", "postoperative scan"), ("lesion 2mm", "lesion 3mm")]
    for a, b in same:
        assert collision_flags(pd.Series([a, b]), judge.embed).all(), (a, b)
    for a, b in different:
        assert not collision_flags(pd.Series([a, b]), judge.embed).any(), (a, b)
    flags = collision_flags(pd.Series(["pleural effusions", "cardiomegaly", "pleural effusion", ""], index=[5, 6, 7, 8]), judge.embed)
    assert flags.to_dict() == {5: True, 6: False, 7: True, 8: False}


_words = st.text("abcdefghijklmnop", min_size=2, max_size=8)
_terms = st.lists(st.lists(_words, min_size=1, max_size=3).map(" ".join), min_size=1, max_size=4)


@settings(max_examples=40, deadline=None)
@given(terms=_terms, extra=st.lists(_words, min_size=1, max_size=2).map(" ".join), data=st.data())
def test_the_same_label_always_collides_and_an_added_term_never(judge, terms, extra, data):
    label = ", ".join(terms)
    variant = ", ".join(data.draw(st.permutations(terms))).upper() + "."
    assert collision_flags(pd.Series([label, variant]), judge.embed).all()
    assert not collision_flags(pd.Series([label, f"{label}, {extra}"]), judge.embed).any()
