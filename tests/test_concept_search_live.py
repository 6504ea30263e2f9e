"""ConceptSearch in a kernel: the live view of a SearchResult shows that result (not a re-planned one), the item
viewer, the metadata facets (counts and filters), and the plan's grouped HTML."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from tests.conftest import labeled_copy

XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def wb(labeled_ws_template, tmp_path_factory):
    from sae.widgets import Workbench

    return Workbench(labeled_copy(labeled_ws_template, tmp_path_factory.mktemp("cslive"))[1])


def _send(widget, **msg):
    widget._dispatch(widget, msg, [])


def test_live_result_view_shows_the_results_hits_and_query_without_planning_again(wb, monkeypatch):
    """The live view of a result shows its hits (same rows, same order, as many), its plan and its query text; the
    text is not planned again (a composed result, whose example item is left out, would come back different)."""
    from sae.widgets.live import search_result_view

    plan = wb.searcher.plan("axial orientation")
    extra = next(f for f in range(wb.searcher.codes.n_latents) if f not in {c.feature for c in plan.concepts})
    plan = plan.add(extra, 0.3, label="added by hand")  # an edited plan: planning the text again would lose #extra
    res = wb.searcher.search(plan, top=7, like=[0])  # the example (row 0) left out of the hits
    assert len(res.hits) == 7

    def no_planning(*_a, **_k):
        raise AssertionError("the live view planned the query text again")

    monkeypatch.setattr(wb.searcher, "plan", no_planning)
    view = search_result_view(res)
    assert view.error == "" and view.plan is res.plan and view.result is res
    assert [h["row"] for h in view.hits] == res.hits["row"].tolist() and view.top == 7 and len(view.thumbs) == 7
    assert view.query == res.plan.query and extra in [c["feature"] for c in view.chips]
    assert abs(view.hits[0]["score"] - float(res.hits["score"].iloc[0])) < 1e-9
    copy = view.static_html()  # the static copy published beside the live view: the same hits, escaped
    assert all(str(i) in copy for i in res.hits["id"]) and "sae-plan-group" in copy
    monkeypatch.undo()
    _send(view, type="drop", feature=extra)  # an edit runs the plan again, in the view
    assert extra not in [c["feature"] for c in view.chips] and len(view.hits) == 7 and view.query == res.plan.query


def test_an_item_message_opens_the_viewer_with_the_items_details(wb):
    from sae.widgets import ConceptSearch
    from sae.widgets.items import ItemViewing

    cs = ConceptSearch(wb, query="axial orientation")
    assert isinstance(cs, ItemViewing)
    row = cs.hits[0]["row"]
    _send(cs, type="item", row=row)
    assert cs.error == "" and cs.item == wb.item_details(row) and cs.selected_row == -1  # enlarging is not selecting
    _send(cs, type="item", row=-1)
    assert cs.item == {}
    _send(cs, type="item", row="x")
    assert "integer row" in cs.error
    shown = ConceptSearch(wb, query=XSS, plan=cs.plan)  # the text only shown in the box, the plan run
    assert shown.query == XSS and shown.hits and XSS not in shown.static_html()


def _brute_counts(wb, plan) -> dict[str, dict]:
    """Per column, pandas' count of each value over the items the plan scores above 0 (under its filters)."""
    from sae.search.searcher import filter_mask

    allowed = filter_mask(wb.meta, plan.filters) if plan.filters else None
    s = wb.index.score(plan, allowed)
    matched = wb.meta.iloc[s.rows[s.score > 0]]
    return {col: matched[col].value_counts().to_dict() for col in wb.meta.columns}


def _check_counts(cs, wb) -> None:
    brute = _brute_counts(wb, cs.plan)
    for f in cs.facets:
        got = {v["value"]: v["count"] for v in f["values"]}
        want = brute[f["column"]]
        assert {k: c for k, c in got.items() if c} == {k: c for k, c in want.items() if c}, f["column"]
        counts = [v["count"] for v in f["values"]]
        assert counts == sorted(counts, reverse=True)  # most first


def test_facets_count_the_plans_matches_and_filter_the_hits(wb):
    from sae.widgets import ConceptSearch

    cs = ConceptSearch(wb, query="axial orientation")
    meta = wb.meta
    cols = [f["column"] for f in cs.facets]
    assert cols and "id" not in cols
    facet_like = {c for c in meta.columns if c != "id" and 2 <= meta[c].nunique() <= 30 and not pd.api.types.is_float_dtype(meta[c])}
    assert set(cols) == facet_like
    _check_counts(cs, wb)
    n_matched = sum(v["count"] for v in cs.facets[0]["values"])
    col, value = next((f["column"], v["value"]) for f in cs.facets for v in f["values"] if 0 < v["count"] < n_matched)
    _send(cs, type="facet", column=col, value=value)
    assert cs.error == "" and cs.hits and (col, "==", value) in cs.plan.filters
    assert all(meta[col].iloc[h["row"]] == value for h in cs.hits)  # every hit has the value
    assert [f["column"] for f in cs.filters] == [col]
    assert next(v for f in cs.facets if f["column"] == col for v in f["values"] if v["value"] == value)["active"]
    _check_counts(cs, wb)  # the counts follow the filter
    cs.query = "axial orientation with a noise artifact"  # new text is planned again; the filter stays
    assert (col, "==", value) in cs.plan.filters and all(meta[col].iloc[h["row"]] == value for h in cs.hits)
    cs.query = "qqqzzx vvv"  # refused text: the filter is kept for the next query, and can be removed
    assert cs.plan is None and [f["column"] for f in cs.filters] == [col]
    cs.query = "axial orientation"
    assert (col, "==", value) in cs.plan.filters and cs.hits
    _send(cs, type="unfilter", index=0)
    assert cs.error == "" and cs.filters == [] and cs.plan.filters == ()
    assert [h["row"] for h in cs.hits] == wb.searcher.search(cs.plan, top=cs.top).hits["row"].tolist()
    _send(cs, type="unfilter", index=3)
    assert "no filter 3" in cs.error
    _send(cs, type="facet", column="id", value="item-00001")
    assert "not a facet column" in cs.error
    _send(cs, type="facet", column=col, value=value)
    cs.query = "qqqzzx vvv"
    _send(cs, type="unfilter", index=0)  # with no plan, the kept filter is forgotten
    assert cs.filters == [] and cs.error.startswith("no results: ")
    cs.query = "axial orientation"
    assert cs.plan.filters == ()


def test_plan_html_is_grouped_folds_long_or_groups_and_escapes():
    from sae.search.plan import Concept, QueryPlan

    wide = tuple(Concept(100 + i, 1.0 - i / 100, False, f"noise {i}", phrase="noise", group=0) for i in range(30))
    plan = QueryPlan("noisy <b>scans</b>", (Concept(1, 1.0, False, XSS),) + wide
                     + (Concept(2, 0.5, True, "bias field"), Concept(3, 0.2, False, "like row 4", group=1, required=False)),
                     filters=(("site", "==", XSS),), notes=(f"dropped {XSS}",))
    out = plan._repr_html_()
    assert XSS not in out and out.count("&lt;img src=x onerror=alert(1)&gt;") == 3 and "<b>scans</b>" not in out
    groups = re.findall(r"<span class='sae-plan-group' data-kind='(\w+)'.*?(?=<span class='sae-plan-group'|<b class='sae-plan-and'>|</div>)", out)
    assert groups == ["and", "and", "not", "soft"]  # one box per group of plan.groups()
    assert out.count("sae-plan-and") == 3  # joined by AND
    wide_box = out[out.rindex("<span class='sae-plan-group'", 0, out.index("noise 0")):out.index("sae-plan-and", out.index("noise 0"))]
    visible = wide_box.split("<details")[0]
    assert visible.count("sae-plan-chip") == 3 and visible.count("<i>or</i>") == 2  # the strongest 3, joined by "or"
    assert "noise 0" in visible and "noise 2" in visible and "noise 3" not in visible
    assert "<summary>+27 more</summary>" in wide_box and wide_box.count("sae-plan-chip") == 30
    assert "NOT</b>" in out and "soft (example)" in out and "<b>where</b>" in out and "note: dropped" in out


def test_without_filter_removes_one_filter():
    from sae.errors import SaeError
    from sae.search.plan import Concept, QueryPlan

    plan = QueryPlan("q", (Concept(1),)).where("a", "==", 1).where("b", "!=", "x")
    assert plan.without_filter(0).filters == (("b", "!=", "x"),) and plan.without_filter(1).filters == (("a", "==", 1),)
    with pytest.raises(SaeError):
        plan.without_filter(2)
