"""Polarity-safe planning, "or" and attributes, the language check, non-saturating scores and hybrid ranking.

The planner tests use the real MiniLM encoder over small hand-written label sets: the failures they
guard against ("lower brain" -> "superior region", "A or B" planned as A AND B) came from the real
encoder, so a fake one could not show them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sae.errors import SaeError
from sae.search.language import QueryLanguageError, check_english, guess_foreign
from sae.search.lexicon import Lexicon
from sae.search.parse import Clause, normalise, parse_query

LABELS = {
    0: "inferior region, axial orientation", 1: "superior region, axial orientation", 2: "anterior region, coronal orientation",
    3: "posterior region, coronal orientation", 4: "lateral region, sagittal orientation", 5: "medial region, sagittal orientation",
    6: "ghosting artifact", 7: "spike artifact", 8: "motion artifact, severe severity", 9: "blur artifact, mild severity",
    10: "low brain fraction", 11: "high brain fraction", 12: "noise artifact", 13: "sagittal orientation", 14: "coronal orientation",
    15: "mild severity", 16: "severe severity",
}
REGION = {0: "inferior", 1: "superior", 2: "anterior", 3: "posterior", 4: "lateral", 5: "medial"}


@pytest.fixture(scope="module")
def planner():
    from sae.search.planner import EmbeddingPlanner

    return EmbeddingPlanner(LABELS)


def _groups(plan) -> list[set[int]]:
    return [{c.feature for c in g} for g in plan.groups()]


# -- the lexicon -------------------------------------------------------------------------------------
def test_lexicon_reads_poles_longest_first_and_finds_conflicts():
    lex = Lexicon()
    assert lex.poles("slices near the skull base")["vertical"] == {"inferior"}
    assert lex.poles("far from the midline")["mediolateral"] == {"lateral"}  # not "midline" -> medial
    assert lex.poles("off-midline sections")["mediolateral"] == {"lateral"}
    assert lex.poles("enlarged heart")["normality"] == {"abnormal"}  # a degree word implies a finding
    assert lex.conflicts(lex.poles("lower brain"), lex.poles("superior region")) == [("vertical", "inferior", "superior")]
    assert lex.conflicts(lex.poles("lower brain"), lex.poles("inferior region")) == []
    assert lex.conflicts(lex.query_poles("enlarged heart"), lex.poles("heart size is normal"))
    assert lex.query_poles("pleural effusion")["normality"] == {"abnormal"} and lex.query_poles("normal chest")["normality"] == {"normal"}
    assert lex.canonical("the uppermost slices") == "the superior slices"


@given(st.sampled_from(sorted({(a, p) for a, ps in Lexicon().opposites.items() for p in ps})))
@settings(max_examples=40, deadline=None)
def test_every_pole_word_contradicts_every_word_of_the_other_pole(axis_pole):
    lex = Lexicon()
    axis, pole = axis_pole
    other = next(p for p in lex.opposites[axis] if p != pole)
    for word in lex.opposites[axis][pole]:
        for opposite in lex.opposites[axis][other]:
            mine, theirs = lex.poles(word), lex.poles(opposite)
            if mine.get(axis) == {pole} and theirs.get(axis) == {other}:
                assert (axis, pole, other) in lex.conflicts(mine, theirs)


# -- parsing ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("query,expected", [
    ("ringing or ghosting artefacts in sagittal views", [Clause(("ringing", "ghosting artefacts in sagittal views"))]),
    ("pacemaker or other implanted cardiac device", [Clause(("pacemaker", "other implanted cardiac device"))]),
    ("axial slices without motion or blur", [Clause(("axial slices",)), Clause(("motion", "blur"), True)]),
    ("hardening and calcification of the aorta", [Clause(("hardening and calcification of the aorta",))]),
    ("neither motion nor blur", [Clause(("motion", "blur"), True)]),
    ("nodule with no calcification, and spiculated margin",
     [Clause(("nodule",)), Clause(("calcification",), True), Clause(("spiculated margin",))]),
    ("axial sections free of blur", [Clause(("axial sections",)), Clause(("blur",), True)]),
])
def test_parse_query_makes_or_alternatives_and_keeps_and_inside_a_phrase(query, expected):
    assert parse_query(query) == expected


def test_normalise_spells_out_contractions_and_free_of():
    assert normalise("slices that aren't blurry") == "slices that are not blurry"
    assert normalise("artefact-free slices near the vertex") == "slices near the vertex without artefact"


# -- the language check ----------------------------------------------------------------------------
@pytest.mark.parametrize("query,language", [("des images floues", "French"), ("IRM sans contraste", "French"),
                                            ("imágenes con artefacto de movimiento", "Spanish"), ("Bilder mit Bewegungsartefakt", "German")])
def test_non_english_queries_are_refused_naming_the_language(query, language):
    assert guess_foreign(query) == language
    with pytest.raises(QueryLanguageError, match=language):
        check_english(query)


@pytest.mark.parametrize("query", ["cardiomegaly", "axial T1", "sagittal slices with motion but not the vertex", "T2 FLAIR"])
def test_english_and_content_word_queries_pass(query):
    check_english(query)


# -- the planner -----------------------------------------------------------------------------------
@pytest.mark.parametrize("query,region", [
    ("lower brain", 0), ("bottom of the brain", 0), ("the lower part of the brain", 0), ("slices near the skull base", 0),
    ("slices near the top of the head", 1), ("the upper part of the brain", 1), ("towards the front of the head", 2),
    ("the back of the head", 3), ("far from the midline", 4), ("close to the midline", 5),
])
def test_direction_phrases_never_map_to_another_direction(planner, query, region):
    plan = planner.plan(query)
    named = {c.feature for c in plan.concepts}
    assert region in named, str(plan)
    assert not named & (set(REGION) - {region}), str(plan)
    assert 10 not in named and 11 not in named  # "lower brain" is not "low brain fraction"


def test_a_dropped_contradicting_candidate_is_noted(planner):
    plan = planner.plan("severe blur")
    assert any("dropped #9" in n and "mild contradicts severe" in n for n in plan.notes), plan.notes
    # the embedding ranks "low brain fraction" first for "lower brain"; the lexicon drops it, with the reason
    m = planner.match("lower brain")
    assert m.members[0][0] == 0 and any(d.feature == 10 and "does not state inferior" in d.reason for d in m.dropped)


def test_or_makes_one_group_of_alternatives_and_a_shared_attribute_is_required(planner):
    plan = planner.plan("ghosting or spike artifacts in sagittal views")
    groups = _groups(plan)
    assert any({6, 7} <= g for g in groups), str(plan)  # one OR-group holds both alternatives
    assert any(13 in g or 4 in g for g in groups if not g & {6, 7}), str(plan)  # the plane is its own requirement
    assert len([g for g in groups if g & {6, 7}]) == 1


def test_an_alternative_that_matches_nothing_is_noted_not_guessed_from_the_head_noun(planner):
    plan = planner.plan("ringing or ghosting artefacts")
    named = {c.feature for c in plan.concepts}
    assert 6 in named and 7 not in named, str(plan)  # "ringing artefacts" is not "spike artifact"
    assert any("ringing" in n for n in plan.notes)


def test_adjectival_attributes_are_required_concepts(planner):
    groups = _groups(planner.plan("blurry coronal images"))
    assert len(groups) == 2 and any(9 in g for g in groups) and any(14 in g or 2 in g for g in groups)


def test_one_concept_is_not_split_into_its_words(planner):
    plan = planner.plan("motion artifact")
    assert len(plan.groups()) == 1 and plan.concepts[0].feature == 8


def test_degree_words_never_map_to_the_opposite_degree(planner):
    named = {c.feature for c in planner.plan("severe blur").concepts}
    assert 9 not in named or 15 not in named  # "mild" labels never answer "severe"
    assert all("mild" not in LABELS[f] for f in named), named


def test_an_exclusion_takes_its_features_from_a_broad_request(planner):
    plan = planner.plan("any artefact other than ghosting")
    assert {c.feature for c in plan.negatives} >= {6} and 6 not in {c.feature for c in plan.positives}


def test_the_planner_refuses_a_french_query(planner):
    with pytest.raises(SaeError, match="French"):
        planner.plan("des images floues")


def test_a_normal_label_never_answers_a_finding():
    from sae.search.planner import EmbeddingPlanner

    planner = EmbeddingPlanner({0: "heart size is normal", 1: "cardiomegaly", 2: "clear lungs", 3: "pleural effusion"})
    named = {c.feature for c in planner.plan("enlarged heart").concepts}
    assert 0 not in named
    assert 0 in {c.feature for c in planner.plan("normal heart size").concepts}


# -- scores and hybrid ranking -----------------------------------------------------------------------
def test_weights_move_the_order_because_scores_do_not_saturate(run_ws):
    from sae.search import ConceptIndex, QueryPlan

    _, run = run_ws
    index = ConceptIndex(run.codes)
    counts = np.diff(index._ptr)
    a, b = np.argsort(-counts)[:2]
    scores = index.score(QueryPlan("q").add(int(a)).add(int(b), required=False)).score
    assert scores.max() < 1.0 and len(np.unique(np.round(scores, 6))) > 0.9 * len(scores)
    top = lambda wa, wb: index.search(QueryPlan("q").add(int(a), wa).add(int(b), wb, required=False), top=12)
    assert list(top(1.0, 0.2).hits["row"]) != list(top(0.2, 1.0).hits["row"])


def test_hybrid_contributions_sum_to_the_score_and_dense_is_the_cosine():
    from sae.search.hybrid import dense_result, fuse
    from sae.search.index import Contribution, Scored
    from sae.search.plan import QueryPlan

    rng = np.random.default_rng(0)
    n = 50
    rows = np.sort(rng.choice(n, 20, replace=False))
    c0, c1 = Contribution(0, 1, "a", False), Contribution(1, 2, "b", True)
    part0, part1 = rng.uniform(0.2, 1.0, 20), -rng.uniform(0, 0.1, 20)
    scored = Scored(rows, part0 + part1, np.zeros(20), {c0: part0, c1: part1}, True, [])
    sims = rng.uniform(-1, 1, n)
    best_both = int(rows[np.argmax(scored.score)])
    sims[best_both] = 1.5  # first in both rankings: first in the fused one
    res = fuse(QueryPlan("q"), scored, sims, None, top=n)
    hits = res.hits
    assert np.allclose(hits[[c0.column, c1.column, "dense"]].sum(axis=1), hits["score"])
    assert (hits[c1.column] <= 0).all() and not res.strict and "reciprocal-rank" in res.notes[0]
    assert hits["row"].iloc[0] == best_both and len(hits) == n  # every row: the dense half ranks them all
    dense = dense_result(QueryPlan("q"), sims, None, top=5).hits
    assert list(dense["row"]) == list(np.argsort(-sims)[:5]) and np.allclose(dense["score"], np.sort(sims)[::-1][:5])


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """A small report store embedded by MiniLM (so the query can be embedded into its space), trained and labeled."""
    from sae.encoders import MiniLMEncoder
    from sae.interpret.labels import label_run
    from sae.interpret.term_labeler import MetadataLabeler
    from sae.models import SAEConfig
    from sae.pipeline import train_run
    from sae.run import Workspace
    from sae.store import Store
    from sae.train import TrainConfig

    rng = np.random.default_rng(0)
    findings = ["cardiomegaly, the heart is enlarged", "small left pleural effusion", "right lower lobe pneumonia",
                "lungs are clear, no acute disease", "healed rib fracture on the left", "pacemaker leads in the right ventricle",
                "hiatal hernia behind the heart", "degenerative changes of the thoracic spine"]
    kind = rng.integers(0, len(findings), 240)
    texts = [f"{findings[k]}. {rng.choice(['stable', 'unchanged', 'new'])} since prior study." for k in kind]
    enc = MiniLMEncoder()
    x = enc.encode(texts, progress=False).astype(np.float32)
    ws = Workspace(tmp_path_factory.mktemp("text") / "ws")
    ws.path.mkdir()
    meta = pd.DataFrame({"finding": [findings[k] for k in kind]})
    with Store.create(ws.store_path, x.shape[1], encoder=enc.describe(), provenance={"label_exclude": ["finding"]}) as store:
        store.append(x, [f"r{i}" for i in range(len(x))], meta, texts=texts)
    run = train_run(ws, SAEConfig(d_in=x.shape[1], n_latents=32, k=4), TrainConfig(batch_size=64, epochs=20), progress=False,
                    evaluate=False)
    label_run(run, MetadataLabeler(), judge=None, progress=False)
    return run, meta


def test_hybrid_and_dense_modes_on_a_text_store(text_run):
    from sae.search.searcher import Searcher

    run, meta = text_run
    s = Searcher(run)
    for mode in ("concept", "hybrid", "dense"):
        res = s.search("pacemaker", top=10, mode=mode)
        assert len(res.hits) == 10, mode
        assert (meta["finding"].iloc[res.hits["row"]] == "pacemaker leads in the right ventricle").mean() >= 0.8, (mode, res.plan)
    hybrid = s.search("pacemaker", top=10, mode="hybrid").hits
    parts = [c for c in hybrid if c.startswith("concept.")] + ["dense"]
    assert np.allclose(hybrid[parts].sum(axis=1), hybrid["score"])
    fallback = s.search("zzqv kkwx", top=5, mode="hybrid")  # nothing to plan: the dense half answers and says so
    assert len(fallback.hits) == 5 and "fell back to dense" in fallback.notes[0]
    with pytest.raises(SaeError, match="French"):
        s.search("des images floues", mode="hybrid")


def test_hybrid_on_an_image_store_says_why_not(run_ws):
    from sae.interpret.labels import label_run
    from sae.interpret.term_labeler import MetadataLabeler
    from sae.search.searcher import Searcher

    _, run = run_ws
    label_run(run, MetadataLabeler(), judge=None, progress=False, with_baselines=False)
    s = Searcher(run)
    with pytest.raises(SaeError, match="does not embed text"):
        s.search("axial slices", mode="hybrid")
    with pytest.raises(SaeError, match="unknown search mode"):
        s.search("axial slices", mode="fuzzy")
