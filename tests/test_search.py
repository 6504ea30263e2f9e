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


def test_ranking_matches_a_dense_computation(run_ws):
    ws, run = run_ws
    codes = run.codes()
    index = ConceptIndex(codes)
    pres = _dense_presence(index, codes)
    counts = (pres > 0).sum(0)
    a, b, c = np.argsort(-counts)[:3]
    plan = QueryPlan("q").add(a, 1.0).add(b, 2.0).add(c, 1.0, negated=True)
    res = index.search(plan, top=15)
    both = np.flatnonzero((pres[:, a] > 0) & (pres[:, b] > 0))
    expected = (pres[both, a] + 2 * pres[both, b]) / 3 - pres[both, c]
    order = np.lexsort((both, -expected))[:15]
    assert res.strict and list(res.hits["row"]) == list(both[order])
    assert np.allclose(res.hits["score"], expected[order])
    assert np.allclose(res.hits.iloc[:, 3:].sum(axis=1), res.hits["score"])  # contributions add up
    allowed = np.zeros(codes.n_rows, bool)
    allowed[both[::2]] = True
    assert set(index.search(plan, top=1000, allowed=allowed).hits["row"]) <= set(both[::2])


def test_no_item_with_every_concept_falls_back_with_a_note(run_ws):
    ws, run = run_ws
    codes = run.codes()
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


def test_or_groups_count_their_strongest_member(run_ws):
    from sae.search import Concept

    ws, run = run_ws
    codes = run.codes()
    index = ConceptIndex(codes)
    pres = _dense_presence(index, codes)
    a, b, c = np.argsort(-(pres > 0).sum(0))[:3]
    plan = QueryPlan("q", (Concept(int(a), group=0), Concept(int(b), group=0), Concept(int(c), group=1)))
    assert "OR" in str(plan) and len(plan.groups()) == 2
    res = index.search(plan, top=10)
    rows = res.hits["row"].to_numpy()
    expected = (np.maximum(pres[rows, a], pres[rows, b]) + pres[rows, c]) / 2
    assert np.allclose(res.hits["score"], expected)
    eligible = np.flatnonzero(((pres[:, a] > 0) | (pres[:, b] > 0)) & (pres[:, c] > 0))
    assert set(rows) <= set(eligible)


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
    lines = [l for l in out.splitlines() if "axial" in l and "_axi_" in l]
    assert len(lines) == 3  # every hit passes the filter
    assert main(["search", str(ws.path), "zzqx vvkw"]) == 2
    assert "nearest" in capsys.readouterr().err
    assert main(["search", str(ws.path), "axial orientation", "--where", "nope=1"]) == 2
    assert "unknown column 'nope'" in capsys.readouterr().err
    meta = ws.open_store().meta()
    assert filter_mask(meta, [("quality_fail", "==", "true")]).sum() == meta["quality_fail"].sum()
    assert filter_mask(meta, [("slice_index", ">", "100")]).sum() == (meta["slice_index"] > 100).sum()
