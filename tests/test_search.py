"""Query parsing, editable plans, and ranking from the inverted index (checked against a dense computation)."""

from __future__ import annotations

import numpy as np
import pytest

from sae.errors import SaeError
from sae.search import ConceptIndex, QueryPlan, split_query


@pytest.mark.parametrize("query,expected", [
    ("sagittal slices with motion artifact but no bias field", [("sagittal slices", False), ("motion artifact", False), ("bias field", True)]),
    ("axial slices without motion or blur", [("axial slices", False), ("motion", True), ("blur", True)]),
    ("without motion, blur or noise", [("motion", True), ("blur", True), ("noise", True)]),
    ("Knee MRI not showing effusion", [("Knee MRI", False), ("effusion", True)]),
    ("nodule with no calcification, and spiculated margin", [("nodule", False), ("calcification", True), ("spiculated margin", False)]),
    ("coronal, superior region and noise", [("coronal", False), ("superior region", False), ("noise", False)]),
    ("   ", []),
])
def test_split_query(query, expected):
    assert split_query(query) == expected


def test_plans_are_immutable_and_editable():
    p = QueryPlan("q").add(3, label="a").add(5, 2.0, label="b")
    q = p.negate(5).reweight(3, 0.5).where("orientation", "==", "axial")
    assert [c.feature for c in p.positives] == [3, 5] and p.filters == ()
    assert [c.feature for c in q.negatives] == [5] and q.concepts[0].weight == 0.5 and q.planner == "manual+edited"
    assert "NOT #5" in str(q) and "WHERE orientation == 'axial'" in str(q)
    assert list(q.drop(3).frame()["feature"]) == [5]
    with pytest.raises(SaeError, match="already in the plan"):
        p.add(3)
    with pytest.raises(SaeError, match="not in the plan"):
        p.drop(99)
    with pytest.raises(SaeError, match="weights must be positive"):
        p.reweight(3, 0)
    with pytest.raises(SaeError, match="unknown filter operator"):
        p.where("x", "~", 1)
    assert "&lt;img" in QueryPlan("<img src=x onerror=alert(1)>")._repr_html_()


def _dense_presence(index: ConceptIndex, codes) -> np.ndarray:
    dense = codes.to_csr().toarray()
    return np.clip(dense / index.scale[None, :], 0, 1)


def _dense_ranking_presence(codes) -> np.ndarray:
    """activation / (activation + the feature's median active strength), computed directly from the codes."""
    dense = codes.to_csr().toarray()
    q50 = codes.stats()["q50"].to_numpy()
    return np.where(dense > 0, dense / (dense + q50[None, :]), 0.0)


def test_ranking_matches_a_dense_computation(run_ws):
    ws, run = run_ws
    codes = run.codes
    index = ConceptIndex(codes)
    pres = _dense_presence(index, codes)
    counts = (pres > 0).sum(0)
    a, b, c = np.argsort(-counts)[:3]
    plan = QueryPlan("q").add(a, 1.0).add(b, 2.0).add(c, 1.0, negated=True)
    res = index.search(plan, top=15)
    rank = _dense_ranking_presence(codes)
    both = np.flatnonzero((pres[:, a] > 0) & (pres[:, b] > 0))
    # positives: the unclipped squashed presence; the negated concept: the clipped ratio
    expected = (rank[both, a] + 2 * rank[both, b]) / 3 - pres[both, c]
    assert np.all(rank[both][:, [a, b]] < 1.0)  # never saturates
    order = np.lexsort((both, -expected))[:15]
    assert res.strict and list(res.hits["row"]) == list(both[order])
    assert np.allclose(res.hits["score"], expected[order])
    assert np.allclose(res.hits.iloc[:, 3:].sum(axis=1), res.hits["score"])  # contributions add up
    allowed = np.zeros(codes.n_rows, bool)
    allowed[both[::2]] = True
    assert set(index.search(plan, top=1000, allowed=allowed).hits["row"]) <= set(both[::2])


def test_no_item_with_every_concept_falls_back_with_a_note(run_ws):
    ws, run = run_ws
    codes = run.codes
    index = ConceptIndex(codes)
    pres = _dense_presence(index, codes)
    active = pres > 0
    alive = np.flatnonzero(active.sum(0) > 0)
    pair = next(((f, g) for f in alive for g in alive if f < g and not (active[:, f] & active[:, g]).any()), None)
    if pair is None:
        pytest.skip("every pair of features co-fires somewhere in this small demo")
    res = index.search(QueryPlan("q").add(pair[0]).add(pair[1]), top=5)
    assert not res.strict and "no item shows every required concept" in res.notes[0] and len(res.hits) == 5
    with pytest.raises(SaeError, match="has no concepts"):
        index.search(QueryPlan("empty"))
    with pytest.raises(SaeError, match="unknown feature"):
        index.search(QueryPlan("q").add(10_000))


def test_embedding_planner_maps_phrases_to_labels_and_refuses_gibberish():
    from sae.search import EmbeddingPlanner

    labels = {0: "motion artifact", 1: "bias field artifact", 2: "sagittal orientation", 3: "axial orientation"}
    planner = EmbeddingPlanner(labels)
    plan = planner.plan("sagittal slices with motion artifact but no bias field")
    assert [(c.feature, c.negated) for c in plan.concepts] == [(2, False), (0, False), (1, True)]
    assert all(c.match >= planner.min_match for c in plan.concepts) and plan.planner == "embedding-minilm"
    with pytest.raises(SaeError, match="no feature label matches 'qwxz zzkv'.*nearest"):
        planner.plan("qwxz zzkv")
    with pytest.raises(SaeError, match="empty query"):
        planner.plan("  ")
    with pytest.raises(SaeError, match="no labels yet"):
        EmbeddingPlanner({})


@pytest.mark.parametrize("combine", ["max", "noisy_or"])
def test_or_groups_combine_their_members(run_ws, combine):
    from sae.search import Concept

    ws, run = run_ws
    codes = run.codes
    index = ConceptIndex(codes, combine=combine)
    pres = _dense_presence(index, codes)
    a, b, c = np.argsort(-(pres > 0).sum(0))[:3]
    plan = QueryPlan("q", (Concept(int(a), group=0), Concept(int(b), group=0), Concept(int(c), group=1)))
    assert "OR" in str(plan) and len(plan.groups()) == 2
    res = index.search(plan, top=10)
    rows = res.hits["row"].to_numpy()
    pres = _dense_ranking_presence(codes)
    pa, pb = pres[rows, a], pres[rows, b]
    either = np.maximum(pa, pb) if combine == "max" else 1 - (1 - pa) * (1 - pb)
    assert np.allclose(res.hits["score"], (either + pres[rows, c]) / 2)
    eligible = np.flatnonzero(((pres[:, a] > 0) | (pres[:, b] > 0)) & (pres[:, c] > 0))
    assert set(rows) <= set(eligible)


def test_soft_concepts_rank_the_union_and_sorted_lookups_agree(run_ws):
    ws, run = run_ws
    codes = run.codes
    index = ConceptIndex(codes)
    pres = _dense_presence(index, codes)
    a, b = np.argsort(-(pres > 0).sum(0))[:2]
    plan = QueryPlan("q").add(a, 1.0, required=False).add(b, 0.5, required=False)
    assert "(soft)" in str(plan)
    scored = index.score(plan)
    union = np.flatnonzero((pres[:, a] > 0) | (pres[:, b] > 0))
    assert np.array_equal(scored.rows, union)
    rank = _dense_ranking_presence(codes)
    assert np.allclose(scored.score, (rank[union, a] + 0.5 * rank[union, b]) / 1.5)
    rng = np.random.default_rng(0)
    for f in range(index.n_latents):
        rows = np.unique(rng.integers(0, index.n_rows, 300))
        assert np.array_equal(index.ratio_at(f, rows, rows_sorted=True), index.ratio_at(f, rows))


def test_group_ranking_pools_item_scores(run_ws):
    import pandas as pd

    ws, run = run_ws
    codes = run.codes
    index = ConceptIndex(codes)
    meta = ws.open_store().meta()
    gcodes, names = pd.factorize(meta["volume"])
    f = int(np.argmax(np.diff(index._ptr)))
    plan = QueryPlan("q").add(f)
    scored = index.score(plan)
    full = np.zeros(index.n_rows)
    full[scored.rows] = scored.score
    for pool in ("max", "mean"):
        out = index.rank_groups(plan, gcodes, np.asarray(names, dtype=object), pool=pool, top=50)
        expect = pd.Series(full).groupby(gcodes).agg(pool)
        for g, v in zip(out["group"], out["score"]):
            assert v == pytest.approx(expect[list(names).index(g)])
        assert list(out["score"]) == sorted(out["score"], reverse=True) and set(out["pooling"]) == {pool}
    with pytest.raises(SaeError, match="unknown pooling"):
        index.rank_groups(plan, gcodes, np.asarray(names, dtype=object), pool="median")


def test_thesaurus_rewrites_synonyms_and_helps_the_planner():
    from sae.search import EmbeddingPlanner
    from sae.search.thesaurus import Thesaurus

    t = Thesaurus()
    assert t.rewrite("lower brain with intensity inhomogeneity") == "inferior brain with bias field"
    assert t.rewrite("haemorrhagic oedema") == "hemorrhagic edema" and t.rewrite("kneecap") == "kneecap"
    assert t.rewrite("fluid around the lungs") == "pleural effusion" and t.rewrite("enlarged heart") == "cardiomegaly"
    labels = {0: "inferior region, axial orientation", 1: "superior region", 2: "bias field artifact", 3: "noise artifact"}
    plan = EmbeddingPlanner(labels, min_match=0.5).plan("bottom of the brain without intensity inhomogeneity")
    assert [(c.feature, c.negated) for c in plan.concepts][:1] == [(0, False)] and (2, True) in [(c.feature, c.negated) for c in plan.concepts]


def test_evaluation_metrics_and_cases():
    import pandas as pd

    from sae.search.evaluate import QueryCase, average_precision, metadata_cases, precision_at

    rel = np.array([1, 0, 1, 0, 0, 1], bool)
    assert precision_at(np.array([0, 1, 2]), rel, k=3) == pytest.approx(2 / 3)
    assert precision_at(np.array([0]), rel, k=10) == pytest.approx(0.1)  # missing slots are misses
    assert average_precision(np.array([0, 1, 2, 5]), rel) == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    assert average_precision(np.array([1, 3]), rel) == 0.0
    meta = pd.DataFrame({"o": ["a", "a", "b", "b"] * 10, "x": ["m", "n", "m", "n"] * 10})
    vocab = {"o": {"a": ("a1", "a2"), "b": ("b1", "b2")}, "x": {"m": ("m1", "m2"), "n": ("n1", "n2")}}
    cases = metadata_cases(vocab, meta, min_relevant=5)
    kinds = {c.kind for c in cases}
    assert kinds == {"single", "pair", "negation"} and all(c.paraphrase in (0, 1) for c in cases)
    neg = next(c for c in cases if c.kind == "negation")
    assert " but not " in neg.text
    q = QueryCase("a with m", "pair", (("o", "a"), ("x", "m")))
    assert q.relevant(meta).sum() == 10
    with pytest.raises(SaeError, match="lacks"):
        metadata_cases({"nope": {}}, meta)


def test_sail_baseline_ranks_by_cosine_over_three_features(run_ws):
    from sae.search.baseline import SAILBaseline

    ws, run = run_ws
    codes = run.codes
    index = ConceptIndex(codes)

    class Fixed:
        def nearest(self, q, n):
            return [(0, "", 1.0), (1, "", 1.0), (2, "", 1.0)][:n]

    ranked = SAILBaseline(index, Fixed()).rank("q", top=20)
    dense = codes.to_csr().toarray()[:, :3]
    fires = np.flatnonzero(dense.sum(1) > 0)
    cos = dense[fires].sum(1) / (np.linalg.norm(dense[fires], axis=1) * np.sqrt(3))
    expect = fires[np.lexsort((fires, -cos))][:20]
    assert np.array_equal(ranked, expect)


def test_cli_search_prints_plan_and_hits_and_explains_bad_input(run_ws, capsys):
    from sae.cli import main
    from sae.interpret import MetadataLabeler, label_run
    from sae.search.searcher import filter_mask

    ws, run = run_ws
    assert main(["search", str(ws.path), "axial slices"]) == 2  # no labels yet
    assert "no labels" in capsys.readouterr().err
    label_run(run, MetadataLabeler(), judge=None, progress=False)
    assert main(["search", str(ws.path), "axial orientation", "--top", "3", "--where", "orientation=axial"]) == 0
    out = capsys.readouterr().out
    assert "plan (embedding-minilm+edited)" in out and "WHERE orientation == 'axial'" in out
    lines = [ln for ln in out.splitlines() if "axial" in ln and "_axi_" in ln]
    assert len(lines) == 3  # every hit passes the filter
    assert main(["search", str(ws.path), "zzqx vvkw"]) == 2
    assert "nearest" in capsys.readouterr().err
    assert main(["search", str(ws.path), "axial orientation", "--where", "nope=1"]) == 2
    assert "unknown column 'nope'" in capsys.readouterr().err
    meta = ws.open_store().meta()
    assert filter_mask(meta, [("quality_fail", "==", "true")]).sum() == meta["quality_fail"].sum()
    assert filter_mask(meta, [("slice_index", ">", "100")]).sum() == (meta["slice_index"] > 100).sum()


@pytest.fixture
def searcher(run_ws):
    from sae.interpret import MetadataLabeler, label_run
    from sae.search.searcher import Searcher

    ws, run = run_ws
    label_run(run, MetadataLabeler(), judge=None, progress=False)
    return Searcher(run)


def test_query_by_example_composed_queries_dense_and_groups(searcher):
    s = searcher
    row = int(np.argmax(s.codes.l0()))
    cmp = s.compare_example(row, top=5)
    assert all(not c.required for c in cmp.plan.concepts) and 0.0 <= cmp.overlap <= 1.0
    assert row not in set(cmp.sparse["row"]) and row not in set(cmp.dense["row"]) and len(cmp.dense) == 5
    assert "sparse fingerprint" in cmp._repr_html_()
    fp = s.examples.fingerprint([row])
    assert set(fp["feature"]) == set(s.codes.rows([row]).indices) and fp["presence"].is_monotonic_decreasing
    # a composed query: the example's soft concepts plus a negated text concept
    example_feats = [c.feature for c in cmp.plan.concepts]
    target = s.labels.mapping()[example_feats[0]].split(",")[0]
    plan = s.plan(f"like this one without {target}", like=[s.meta["id"].iloc[row]])
    negated = {c.feature for c in plan.negatives}
    assert example_feats[0] in negated and not negated & {c.feature for c in plan.positives}
    assert plan.query.startswith("like this one") and "+" in plan.planner
    res = s.search(plan, top=5, like=row)
    assert row not in set(res.hits["row"])
    with pytest.raises(SaeError, match="unknown item id"):
        s.plan(like=["no-such-id"])
    groups = s.search_groups(s.labels.mapping()[example_feats[0]], pool="mean", top=3)
    assert list(groups.columns[:3]) == ["rank", "volume", "score"] and (groups["items_with_concepts"] > 0).all()


def test_results_html_shows_thumbnails_and_escapes_labels(searcher):
    from sae.search.plan import QueryPlan

    s = searcher
    f = int(np.argmax(np.diff(s.index._ptr)))
    res = s.search(QueryPlan("<script>x</script>").add(f, label="<img src=x onerror=alert(1)>"), top=3)
    page = res._repr_html_()
    assert page.count("<img src='data:image/png;base64,") == 3
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page and "<script>" not in page


def test_bad_queries_get_clear_messages(searcher):
    from sae.search.plan import QueryPlan

    s = searcher
    for query in ["", "   ", "qwxz zzkv vvq", "矢状位切片运动伪影", "Σαγιτταλ τομές"]:
        with pytest.raises(SaeError, match="empty query|no feature label matches"):
            s.search(query)
    with pytest.raises(SaeError, match="unknown feature 99999"):
        s.search(QueryPlan("q").add(99999))
    with pytest.raises(SaeError, match="no item passes"):
        s.search(QueryPlan("q").add(0), orientation="nonexistent")
    with pytest.raises(SaeError, match="boolean"):
        s.search(QueryPlan("q").add(0).where("quality_fail", "==", "maybe"))


def test_llm_planner_validates_caches_and_groups(searcher, fake_openai, tmp_path):
    import json

    from sae.llm import LLMClient, LLMConfig
    from sae.search.llm_planner import LLMPlanner

    s = searcher
    labels = s.labels.mapping()
    axial = [f for f, lab in labels.items() if "axial" in lab][:2]
    art = next(f for f, lab in labels.items() if "artifact" in lab and f not in axial)

    def answer(body):
        listing = body["messages"][-1]["content"]
        assert "<data>" in listing and "Concepts" in listing
        return json.dumps({"concepts": [{"feature": axial[0], "weight": 2, "negated": False, "phrase": "axial"},
                                        {"feature": axial[1], "weight": 1, "negated": False, "phrase": "axial"},
                                        {"feature": art, "negated": True, "phrase": "artifact"},
                                        {"feature": 99999, "negated": False, "phrase": "junk"}], "unmatched": ["pediatric"]})

    fake_openai.responder = answer
    client = LLMClient(LLMConfig(model="fake", base_url=fake_openai.base_url, cache_dir=str(tmp_path / "c"), backoff_s=0.01), api_key="sk-x")
    planner = LLMPlanner(s.planner, client, candidates=500)
    plan = planner.plan("axial slices without artifacts, pediatric")
    assert [c.feature for c in plan.positives] == axial and [c.feature for c in plan.negatives] == [art]
    assert len(plan.groups()) == 2 and plan.concepts[0].weight == 2.0 and plan.planner == "llm:fake"
    assert any("99999" in n for n in plan.notes) and any("pediatric" in n for n in plan.notes)
    calls = len(fake_openai.chat_requests())
    planner.plan("axial slices without artifacts, pediatric")
    assert len(fake_openai.chat_requests()) == calls  # cached
    fake_openai.responder = lambda body: json.dumps({"concepts": [], "unmatched": ["everything"]})
    with pytest.raises(SaeError, match="matched no labeled feature"):
        planner.plan("something else entirely")


def test_cli_search_by_example_groups_and_dense(searcher, capsys):
    from sae.cli import main

    s = searcher
    ws = s.run.ws
    item = s.meta["id"].iloc[int(np.argmax(s.codes.l0()))]
    assert main(["search", str(ws.path), "--like", item, "--top", "3", "--dense"]) == 0
    out = capsys.readouterr().out
    assert "plan (example)" in out and "dense-embedding neighbours" in out
    assert main(["search", str(ws.path), "axial orientation", "--groups", "max", "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "by max pooling" in out and "volume" in out
    assert main(["search", str(ws.path)]) == 2
    assert "give a text query" in capsys.readouterr().err


def test_dense_index_numpy_and_faiss_agree():
    from sae.search.example import DenseIndex, overlap

    x = np.random.default_rng(0).standard_normal((500, 16)).astype(np.float32)
    plain = DenseIndex(x, use_faiss=False)
    got = plain.search([3, 7], top=5)
    q = (x[3] / np.linalg.norm(x[3]) + x[7] / np.linalg.norm(x[7])) / 2
    sims = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ q
    sims[[3, 7]] = -np.inf
    assert list(got) == list(np.argsort(-sims)[:5])
    pytest.importorskip("faiss")
    assert overlap(DenseIndex(x, use_faiss=True).search([3, 7], top=5), got) == 1.0
