"""Widgets over the real API on the small demo: filters, cards, plan edits, lasso, linking, escaping, fallbacks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import labeled_copy

XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def wb(labeled_ws_template, tmp_path_factory):
    from sae.widgets import Workbench

    return Workbench(labeled_copy(labeled_ws_template, tmp_path_factory.mktemp("widgets"))[1])


@pytest.fixture(scope="module")
def report(wb):
    from sae.audit import AuditConfig, FailureSignal
    from sae.audit.report import audit

    # split by item: the small demo's 3 volumes are too few for a volume split (as in test_audit)
    rep = audit(wb.index, wb.searcher.codes, FailureSignal.from_column(wb.meta, "quality_fail"), wb.labels.mapping(),
                wb.meta["id"].to_numpy(), config=AuditConfig(min_slice_size=5), with_map=True)
    rep.run = wb.run
    rep.save(wb.run.path / "audits" / "quality_fail")
    return rep


def _send(widget, **msg):
    widget._dispatch(widget, msg, [])


def test_feature_browser_filters_and_card(wb):
    import io

    from PIL import Image

    from sae.widgets import FeatureBrowser

    fb = FeatureBrowser(wb)
    table = wb.feature_table()
    alive = table[table["count"] > 0]
    assert fb.n_matched == len(alive)
    scores = [r["score"] for r in fb.rows]
    assert scores == sorted(scores, key=lambda s: -1 if s is None else s, reverse=True)  # best first
    fb.filter_text = "axial"
    assert fb.n_matched == alive["label"].str.contains("axial").sum() and all("axial" in r["label"] for r in fb.rows)
    fb.filter_text, fb.max_rate = "", 0.05
    assert all(r["rate"] <= 0.05 for r in fb.rows) and fb.n_matched == int((alive["rate"] <= 0.05).sum())
    fb.max_rate, fb.filter_text = 1.0, f"#{alive['feature'].iloc[0]}"
    assert [r["feature"] for r in fb.rows] == [int(alive["feature"].iloc[0])]

    f = int(alive.sort_values("count")["feature"].iloc[-1])
    _send(fb, type="select", feature=f)
    card, pack = fb.card, wb.evidence.pack(f)
    assert card["feature"] == f and card["label"] == wb.labels.get(f)["label"]
    assert [t["row"] for t in card["top"]] == pack.top["row"].head(12).tolist()
    assert sum(card["hist"]["counts"]) == pack.stats["count"]
    assert len(fb.top_images) == len(card["top"])
    img = Image.open(io.BytesIO(fb.top_images[0]))  # binary PNG buffers, not base64 strings
    assert img.size == wb.store.previews([card["top"][0]["row"]])[0].shape[::-1]
    _send(fb, type="select", feature=10_000)
    assert "unknown feature" in fb.error or "features 0.." in fb.error
    json.dumps(fb.card)  # the card state is plain JSON


def test_label_edit_is_recorded_and_used(wb):
    from sae.interpret import load_labels
    from sae.interpret.edits import read_edits
    from sae.widgets import FeatureBrowser

    fb = FeatureBrowser(wb)
    f = fb.rows[0]["feature"]
    old = wb.labels.get(f)["label"]
    fb.selected = f
    _send(fb, type="edit", label="  hand-written   label  ", description="checked by eye")
    assert fb.error == "" and fb.card["label"] == "hand-written label" and fb.card["edited_by"]
    edits = read_edits(wb.run.path)
    assert edits.iloc[-1][["feature", "label", "replaced_label"]].tolist() == [f, "hand-written label", old]
    again = load_labels(wb.run)
    assert again.get(f)["label"] == "hand-written label" and again.get(f)["edited_by"]
    assert load_labels(wb.run, edits=False).get(f)["label"] == old
    assert "hand-written label" in wb.searcher.planner.labels.values()  # search sees the edit at once
    _send(fb, type="edit", label="   ")
    assert "empty" in fb.error
    fb.edit_label(f, old)  # put it back for the other tests


def test_concept_search_plans_edits_and_hits(wb):
    from sae.widgets import ConceptSearch

    cs = ConceptSearch(wb, query="axial slice with a spike artifact")
    assert cs.error == "" and cs.chips and cs.hits
    direct = wb.searcher.search(cs.plan, top=cs.top)
    assert [h["row"] for h in cs.hits] == direct.hits["row"].tolist()
    assert len(cs.thumbs) == len(cs.hits) and cs.answered_seq == cs.query_seq
    contrib = cs.hits[0]["concepts"]
    assert abs(sum(c["value"] for c in contrib) - cs.hits[0]["score"]) < 1e-6  # every hit explains its score

    first = cs.chips[0]["feature"]
    _send(cs, type="negate", feature=first)
    assert next(c for c in cs.chips if c["feature"] == first)["negated"] and cs.plan.planner.endswith("+edited")
    _send(cs, type="weight", feature=first, weight="0.5")
    assert next(c for c in cs.chips if c["feature"] == first)["weight"] == 0.5
    _send(cs, type="weight", feature=first, weight="heavy")
    assert "number" in cs.error
    _send(cs, type="drop", feature=first)
    assert first not in [c["feature"] for c in cs.chips]
    assert [h["row"] for h in cs.hits] == wb.searcher.search(cs.plan, top=cs.top).hits["row"].tolist()

    cs.selected_row = cs.hits[0]["row"]
    assert cs.hit_features and all(0 <= f["presence"] <= 1 for f in cs.hit_features)
    new = next(f["feature"] for f in cs.hit_features if not f["in_plan"])
    _send(cs, type="add", feature=new)
    assert new in [c["feature"] for c in cs.chips]
    assert next(f for f in cs.hit_features if f["feature"] == new)["in_plan"]

    cs.query = "qqqzzx vvv"
    assert "no feature" in cs.error and cs.hits == [] and cs.plan is None
    _send(cs, type="latency", ms=42.0)
    assert cs.latency_summary["p50"] == 42.0


def test_widgets_are_linked(wb):
    from sae.widgets import ConceptSearch, FeatureBrowser

    fb, cs = FeatureBrowser(wb), ConceptSearch(wb, query="sagittal orientation")
    f = fb.rows[3]["feature"]
    _send(fb, type="search", feature=f)  # "search with it" in the browser
    assert f in [c["feature"] for c in cs.chips]
    g = cs.chips[0]["feature"]
    _send(cs, type="open_feature", feature=g)  # clicking a chip's id opens the card
    assert fb.selected == g and fb.card["feature"] == g


def test_failure_explorer_lasso_slices_and_export(wb, report):
    import dataclasses

    from sae.audit.enrichment import concept_enrichment
    from sae.errors import SaeError
    from sae.widgets import FailureExplorer, FeatureBrowser

    with pytest.raises(SaeError, match="no concept map"):
        FailureExplorer(dataclasses.replace(report, map=None), wb)
    fe = FailureExplorer(report, wb)
    assert len(fe.panel.slices) == len(report.slices) >= 1
    with pytest.raises(SaeError, match="rows must be within"):
        fe.select([len(report.signal.failed)])
    failed = report.signal.failed
    lasso = np.flatnonzero(failed)[:30]
    fe.scatter.widget.selection = lasso  # what a lasso in the browser does
    sel = fe.panel.selection
    assert sel["n"] == 30 and sel["rate"] == 1.0 and len(fe.panel.thumbs) == min(30, 24)
    flag = np.zeros(len(failed), bool)
    flag[lasso] = True
    enr = concept_enrichment(wb.index, flag, wb.labels.mapping(), min_active=3)
    assert [c["feature"] for c in sel["concepts"]] == enr[(enr["q"] < 0.05) & (enr["lift"] > 1)]["feature"].head(12).tolist()

    _send(fe.panel, type="slice", slice=0)
    members = report.members(0)["row"].to_numpy()
    assert np.array_equal(fe.selection, np.unique(members)) and fe.panel.selected_slice == 0
    assert np.array_equal(np.sort(np.asarray(fe.scatter.widget.selection)), np.unique(members))
    _send(fe.panel, type="slice", slice=99)
    assert "unknown slice" in fe.panel.error
    _send(fe.panel, type="clear")
    assert fe.panel.selection == {}

    _send(fe.panel, type="theme", dark=True)  # the view reports JupyterLab's dark theme
    assert np.allclose(fe.scatter.widget.background_color, [17 / 255, 17 / 255, 17 / 255, 1.0]) and fe.panel.error == ""
    _send(fe.panel, type="export")
    path = fe.panel.export_path
    assert path.endswith("queue-export.csv") and open(path).read().splitlines()[0].startswith(report.queue.columns[0])

    fb = FeatureBrowser(wb)
    some = int(report.concepts["feature"].iloc[0])
    _send(fe.panel, type="open_feature", feature=some)
    assert fb.selected == some
    statuses = set(fe.status)
    assert {"passing", "failing"} <= statuses or any(s.startswith("slice") for s in statuses)


def test_static_fallbacks_escape_text_and_widgets_in_a_kernel(wb, report, monkeypatch):
    from sae import display

    f = int(wb.feature_table().query("count > 0")["feature"].iloc[0])
    wb.edit_label(f, f"{XSS} bright rim")
    try:
        res = wb.searcher.search(wb.searcher.plan("bright rim"), top=5)
        assert XSS in res.plan.summary() or any(XSS in c.label for c in res.plan.concepts)
        for obj in (res, wb.labels, report):
            b = obj._repr_mimebundle_()
            assert set(b) == {"text/plain", "text/html"}  # no kernel here: static view only
        html = res._repr_mimebundle_()["text/html"]
        assert XSS not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
        monkeypatch.setattr(display, "in_kernel", lambda: True)
        for obj in (res, wb.labels, report):
            b = obj._repr_mimebundle_()
            assert display.WIDGET_MIME in b and "text/html" in b  # the live view plus the fallback
    finally:
        wb.edit_label(f, "restored label")


def test_views_never_parse_data_as_html():
    """The views build DOM nodes and set text through textContent only (the browser test checks it live)."""
    from sae.widgets._base import STATIC

    for js in STATIC.glob("*.js"):
        src = js.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in src, f"{js.name} uses {sink}"


def test_concept_search_edits_whole_or_groups(wb):
    from sae.widgets import ConceptSearch

    cs = ConceptSearch(wb, query="sagittal orientation with a noise artifact")
    groups = {}
    for c in cs.chips:
        groups.setdefault(c["group"], []).append(c)
    gid, members = max(groups.items(), key=lambda kv: len(kv[1]))
    feats = [c["feature"] for c in members]
    assert len(feats) > 1  # a broad attribute spreads over several features (an OR-group)
    before = {c["feature"]: c["weight"] for c in members}
    _send(cs, type="weight", features=feats, weight=2.0)
    after = {c["feature"]: c["weight"] for c in cs.chips if c["feature"] in feats}
    top = max(before, key=before.get)
    assert after[top] == 2.0 and all(abs(after[f] / 2.0 - before[f] / before[top]) < 1e-3 for f in feats)  # ratios kept
    _send(cs, type="negate", features=feats)
    assert all(c["negated"] for c in cs.chips if c["feature"] in feats)
    _send(cs, type="drop", features=feats)
    assert not {c["feature"] for c in cs.chips} & set(feats) and cs.error == ""
    _send(cs, type="weight", features=[cs.chips[0]["feature"]], weight=0)
    assert "positive" in cs.error


def test_concept_search_keeps_a_refusal_until_a_good_search(wb):
    """A refused query clears the results and its reason stays shown through unrelated actions
    (the view's latency report, a new ``top``) until the next successful search clears it."""
    from sae.errors import SaeError
    from sae.widgets import ConceptSearch

    cs = ConceptSearch(wb, query="axial orientation")
    assert cs.error == "" and cs.hits and cs.chips
    cs.selected_row = cs.hits[0]["row"]
    with pytest.raises(SaeError) as refused:
        wb.searcher.plan("qqqzzx vvv")
    cs.query_seq += 1
    cs.query = "qqqzzx vvv"  # the planner refuses it: no labeled feature matches
    assert cs.error == f"no results: {refused.value}"
    assert cs.hits == [] and cs.thumbs == [] and cs.chips == [] and cs.notes == [] and cs.plan is None and cs.result is None
    assert cs.status == "" and cs.selected_row == -1 and cs.hit_features == [] and cs.answered_seq == cs.query_seq
    cs.search("qqqzzx vvv")  # the Python API shows the refusal too, it does not raise
    _send(cs, type="latency", ms=3.0)  # what the view sends once the (empty) grid is drawn
    cs.top = 12
    assert cs.error == f"no results: {refused.value}"
    _send(cs, type="drop", feature=1)  # another failure shows its own reason ...
    assert "no plan to edit" in cs.error
    _send(cs, type="latency", ms=3.0)  # ... and the refusal comes back after it
    assert cs.error.startswith("no results: ")
    cs.query = "axial orientation"
    assert cs.error == "" and cs.hits and cs.chips
    _send(cs, type="latency", ms=3.0)
    assert cs.error == ""
    cs.query = "qqqzzx vvv"
    cs.query = ""  # clearing the box withdraws the refusal as well
    assert cs.error == "" and cs.hits == []


def test_concept_search_refused_plan_edit_keeps_the_plan(wb):
    """A plan edit the index refuses (no positive concept left) keeps the chips, clears the hits and
    says why until a good search (here: the edit undone)."""
    from sae.widgets import ConceptSearch

    cs = ConceptSearch(wb, query="axial orientation")
    feats = [c["feature"] for c in cs.chips]
    _send(cs, type="negate", features=feats)
    assert cs.error.startswith("no results: ") and "positive concept" in cs.error
    assert cs.hits == [] and cs.thumbs == [] and [c["feature"] for c in cs.chips] == feats and all(c["negated"] for c in cs.chips)
    _send(cs, type="latency", ms=1.0)
    assert "positive concept" in cs.error
    _send(cs, type="negate", features=feats)
    assert cs.error == "" and cs.hits and not any(c["negated"] for c in cs.chips)


def test_concept_search_shows_the_plan_notes(wb):
    """The plan's notes (a candidate dropped as contradicting the query) reach the view, untouched
    (the view sets them as text, see test_views_never_parse_data_as_html); result notes follow them."""
    import dataclasses

    from sae.widgets import ConceptSearch

    note = f"dropped #12 {XSS!r} for 'lower brain': contradicts (inferior vs superior)"
    plan = wb.searcher.plan("axial orientation")
    plan = dataclasses.replace(plan, notes=plan.notes + (note,))
    cs = ConceptSearch(wb, plan=plan)
    assert cs.error == "" and cs.hits
    assert cs.notes[: len(plan.notes)] == list(plan.notes) and note in cs.notes
    assert cs.notes[len(plan.notes):] == list(cs.result.notes)
    _send(cs, type="negate", features=[c["feature"] for c in cs.chips])  # refused: the plan (and its notes) stay
    assert cs.hits == [] and cs.error.startswith("no results: ") and note in cs.notes
