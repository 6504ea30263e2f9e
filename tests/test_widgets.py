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
        published: list = []
        monkeypatch.setattr("IPython.display.display", lambda obj, raw=False: published.append(obj))
        for obj in (res, wb.labels, report):
            b = obj._repr_mimebundle_()
            # the live view, and the static copy published as its own output just before it (sae.widgets.fallback)
            assert display.WIDGET_MIME in b and "text/html" not in b
            copy = published.pop()["text/html"]
            assert "saew-fallback" in copy and obj._repr_html_() in copy
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


def _own_report(report):
    """The module's report with its own slice list: a test may add slices without changing the others' report."""
    import dataclasses

    return dataclasses.replace(report, slices=list(report.slices))


def test_add_selection_slice_lists_exactly_the_rows_and_is_never_validated(report, tmp_path):
    import dataclasses

    import pandas as pd

    from sae.audit.hand import NOT_VALIDATED, add_selection_slice, next_selection_name
    from sae.audit.slices import describe_members, slice_rows
    from sae.errors import SaeError

    rep = _own_report(report)
    failed, hold = rep.signal.failed, rep.holdout
    rows = np.concatenate([np.flatnonzero(failed)[:25], np.flatnonzero(~failed)[:15]])
    assert np.isin(rows, hold).any() and (~np.isin(rows, hold)).any()  # both sides of the split
    before = len(rep.slices)
    assert next_selection_name(rep) == "selection 1"
    s = add_selection_slice(rep, rows[::-1], "  my lasso  ")
    assert rep.slices[-1] is s and s.id == before and len(report.slices) == before
    assert s.kind == "selection" and s.name == "my lasso" and s.concepts == [] and not s.stats.validated
    assert s.stats.why_not == NOT_VALIDATED and "looking at the items" in s.stats.why_not
    want = np.unique(rows)
    assert s.mask is not None and s.mask.dtype == bool and len(s.mask) == len(failed) and s.mask.sum() == len(want)
    assert np.array_equal(slice_rows(rep.index, s), want)
    assert np.array_equal(np.sort(rep.members(s.id)["row"].to_numpy()), want)
    disc_rows, held_rows = want[~np.isin(want, hold)], want[np.isin(want, hold)]
    assert s.stats.discovery == describe_members(failed, disc_rows) and s.stats.holdout == describe_members(failed, held_rows)
    assert s.stats.holdout_lift == pytest.approx(failed[held_rows].mean() / failed[hold].mean())
    assert s.stats.cluster_size == len(s.cluster_rows) == int(failed[disc_rows].sum())
    assert 0 < s.stats.holdout_p < 1 and np.isnan(s.stats.holdout_q)
    assert next_selection_name(rep) == "selection 2"

    table = rep.slice_table().iloc[-1]
    assert (table["slice"], table["kind"], table["validated"], table["holdout_members"]) == (s.id, "selection", False, len(held_rows))
    members = rep.member_table()
    mine = members[members["slice"] == s.id]
    assert mine["row"].tolist() == want.tolist() and not mine["validated"].any()
    assert mine["side"].tolist() == np.where(np.isin(want, hold), "holdout", "discovery").tolist()
    assert (mine["failing"].to_numpy() == failed[want]).all()
    folder = rep.save(tmp_path / "with-selection")
    saved = pd.read_parquet(folder / "members.parquet")
    assert saved[saved["slice"] == s.id]["row"].tolist() == want.tolist()
    assert pd.read_parquet(folder / "slices.parquet")["kind"].tolist()[-1] == "selection"

    n = len(rep.slices)
    for bad, match in (([], "empty"), ([len(failed)], "within 0.."), ([-1], "within 0.."), ([0.5], "integers")):
        with pytest.raises(SaeError, match=match):
            add_selection_slice(rep, bad, "x")
    with pytest.raises(SaeError, match="name"):
        add_selection_slice(rep, rows, "   ")
    with pytest.raises(SaeError, match="held-out rows"):
        add_selection_slice(dataclasses.replace(rep, holdout=None), rows, "x")
    assert len(rep.slices) == n  # a refusal adds nothing


def test_failure_explorer_fills_the_width_and_keeps_the_legend_off_the_points(wb, report):
    from sae.errors import SaeError
    from sae.widgets import FailureExplorer
    from sae.widgets.explorer_map import LEGEND_PAD_PX, LEGEND_ROW_PX
    from sae.widgets.failure_explorer import PANEL_PX

    fe = FailureExplorer(report, wb)
    assert fe.scatter.height() == fe.panel.height == 560 and fe.scatter.width() == "auto"
    assert fe.scatter.widget.layout.flex == "1 1 0%" and fe.panel.layout.flex == f"0 0 {PANEL_PX}px"
    assert fe.scatter.legend()["position"] == "top-right" and not fe.scatter.widget.axes

    def free_band_ok(entries: int) -> bool:  # every point lies below the band the legend needs
        band = ((1 + entries) * LEGEND_ROW_PX + LEGEND_PAD_PX) / fe.scatter.height()
        ys = np.asarray(fe.scatter.widget.points)[:, 1]
        return bool(ys.max() <= 1 - 2 * band + 1e-9 and ys.min() >= -1)

    legend = fe.scatter.widget.legend_encoding["color"]["values"]
    assert free_band_ok(len(legend))
    first = np.asarray(fe.scatter.widget.points).copy()
    sent: list = []  # the map drops a points update that arrives while it draws the previous one: one per colouring
    fe.scatter.widget.observe(lambda ch: sent.append(np.asarray(ch["new"]).copy()), names="points")
    fe.color_by("region")
    entries = len(fe.scatter.widget.legend_encoding["color"]["values"])
    assert entries == wb.meta["region"].nunique() > len(legend) and free_band_ok(entries)
    assert len(sent) == 1 and np.asarray(fe.scatter.widget.points)[:, 1].max() < first[:, 1].max()  # the points moved down
    assert not fe.scatter.widget.transition_points  # drawn at once: the map takes no update while it animates
    moved = sent[-1].copy()
    fe.color_by("artifact")  # as many legend entries: the same band, the colours alone change (one update)
    assert wb.meta["artifact"].nunique() == entries and len(sent) == 2 and np.allclose(sent[-1][:, :2], moved[:, :2])
    assert not np.allclose(sent[-1][:, 2], moved[:, 2])
    fe.color_by("brain_fraction")  # another band: again one update
    assert len(sent) == 3 and free_band_ok(5)
    fe.color_by("status")
    assert len(sent) == 4 and free_band_ok(len(legend))
    assert np.allclose(np.asarray(fe.scatter.widget.points)[:, :2], first[:, :2])  # back where they were
    tall = FailureExplorer(report, wb, height=720)
    assert tall.scatter.height() == tall.panel.height == 720
    for bad in (50, "tall", True):
        with pytest.raises(SaeError, match="height"):
            FailureExplorer(report, wb, height=bad)


def test_failure_explorer_colors_by_status_metadata_and_features(wb, report):
    from sae.errors import SaeError
    from sae.views import status_colors
    from sae.widgets import FailureExplorer
    from sae.widgets.failure_explorer import MAX_CATEGORIES, _categories

    fe = FailureExplorer(report, wb)
    status_legend = fe.scatter.widget.legend_encoding["color"]["values"]
    assert fe.coloring == fe.panel.color == "status" and {v[0] for v in status_legend} <= set(status_colors(report))
    values = [c["value"] for c in fe.panel.color_choices]
    concepts = list(dict.fromkeys(f for s in report.slices for f in s.concepts))
    assert values == ["status", *[c for c in wb.meta.columns if c != "id"], *[f"feature #{f}" for f in concepts]] and concepts

    _send(fe.panel, type="color", what="artifact")  # categorical: a palette, one entry per value
    enc = fe.scatter.widget.legend_encoding["color"]
    assert fe.panel.error == "" and fe.coloring == fe.panel.color == "artifact" and enc["categorical"]
    assert [v[0] for v in enc["values"]] == sorted(wb.meta["artifact"].unique()) and enc["variable"] == "artifact"
    assert fe.scatter.color_data.astype(str).tolist() == wb.meta["artifact"].astype(str).tolist()

    _send(fe.panel, type="color", what="brain_fraction")  # numeric: a continuous colormap over its range
    enc, data = fe.scatter.widget.legend_encoding["color"], wb.meta["brain_fraction"].to_numpy(float)
    assert not enc["categorical"] and np.allclose(fe.scatter.color_data.to_numpy(), data)
    assert enc["values"][0][0] == pytest.approx(data.min()) and enc["values"][-1][0] == pytest.approx(data.max())

    f = concepts[0]
    _send(fe.panel, type="color", what=f"feature #{f}")  # a feature: its activation, 0 where it does not fire
    acts = fe.scatter.color_data.to_numpy()
    assert fe.panel.error == "" and fe.coloring == f"feature #{f}"
    assert np.allclose(acts, wb.index.ratio_at(f, np.arange(len(acts))))
    assert np.array_equal(np.flatnonzero(acts > 0), wb.index.active_rows(f)) and (acts == 0).any()
    assert fe.color_by(int(concepts[-1])) == f"feature #{concepts[-1]}" and fe.color_by("#3") == "feature #3"

    for bad in ("nope", "id", 10_000, "feature #-1"):
        with pytest.raises(SaeError, match="status.*artifact.*feature number 0..47"):
            fe.color_by(bad)
    _send(fe.panel, type="color", what="nope")
    assert "cannot colour by 'nope'" in fe.panel.error and fe.coloring == "feature #3"
    _send(fe.panel, type="color", what="status")
    assert fe.scatter.widget.legend_encoding["color"]["values"] == status_legend and fe.panel.error == ""

    import pandas as pd

    many = pd.Series([f"v{i % 12}" for i in range(120)] + ["v0"] * 30 + [None] * 25)  # 13 values: 12 + missing
    cats, cmap = _categories(many)
    assert len(cmap) == MAX_CATEGORIES and list(cmap)[-1] == "other (6 values)" and "(missing)" in cmap
    assert list(cats.categories) == list(cmap) and (cats == "v0").sum() == 40 and (cats == "(missing)").sum() == 25
    assert (cats == "other (6 values)").sum() == 60 and len(set(cmap.values())) == len(cmap)


def test_failure_explorer_exports_and_adds_the_selection(wb, report, tmp_path):
    import pandas as pd

    from sae.errors import SaeError
    from sae.widgets import FailureExplorer

    rep = _own_report(report)
    fe = FailureExplorer(rep, wb)
    with pytest.raises(SaeError, match="nothing is selected"):
        fe.export_selection(tmp_path / "empty.csv")
    _send(fe.panel, type="export_selection")
    assert "nothing is selected" in fe.panel.error and not (tmp_path / "empty.csv").exists()
    _send(fe.panel, type="add_selection", name="x")
    assert "empty" in fe.panel.error and len(rep.slices) == len(report.slices)

    failed = rep.signal.failed
    rows = np.concatenate([np.flatnonzero(failed)[:12], np.flatnonzero(~failed)[5:20]])
    fe.scatter.widget.selection = rows  # a lasso
    concepts = fe.selected_concepts()
    assert {"n_in_selection", "n_overall"} <= set(concepts.columns) and len(concepts)
    for c in concepts.itertuples():
        firm = rep.index.active_rows(c.feature)  # the audit's reading of "fires" (firm activations)
        assert c.n_in_selection == np.isin(firm, rows).sum() and c.n_in_selection <= c.n_overall == len(firm)
    assert fe.panel.selection["concepts"][0]["n_in_selection"] == concepts["n_in_selection"].iloc[0]

    path = fe.export_selection(tmp_path / "sel" / "picked.csv")
    out = pd.read_csv(path)
    want = np.unique(rows)
    assert path == tmp_path / "sel" / "picked.csv" and fe.panel.export_path == str(path)
    assert out.columns.tolist() == ["id", "row", "failing", "status"] and out["row"].tolist() == want.tolist()
    assert out["id"].astype(str).tolist() == [str(i) for i in rep.ids[want]] and out["failing"].tolist() == failed[want].tolist()
    assert out["status"].tolist() == fe.status.to_numpy()[want].tolist()
    assert not [p for p in path.parent.iterdir() if p.name != "picked.csv"]  # written atomically: no temporary left
    _send(fe.panel, type="export_selection")
    assert fe.panel.error == "" and fe.panel.export_path.endswith("selection-export.csv")
    assert pd.read_csv(fe.panel.export_path)["row"].tolist() == want.tolist()
    queue = pd.read_csv(fe.export_queue(tmp_path / "queue.csv"))
    assert len(queue) == len(rep.queue) and queue.columns.tolist() == rep.queue.columns.tolist()  # still the queue

    assert fe.panel.next_name == "selection 1"
    _send(fe.panel, type="add_selection", name="  ")
    assert "name" in fe.panel.error and len(rep.slices) == len(report.slices)
    _send(fe.panel, type="add_selection", name="lasso A")
    added = rep.slices[-1]
    assert fe.panel.error == "" and added.name == "lasso A" and added.kind == "selection" and len(report.slices) == len(rep.slices) - 1
    row = fe.panel.slices[-1]
    assert (row["slice"], row["name"], row["kind"], row["validated"]) == (added.id, "lasso A", "selection", False)
    assert fe.panel.selected_slice == added.id and fe.panel.next_name == "selection 2" and "looking at the items" in row["why_not"]
    _send(fe.panel, type="clear")
    _send(fe.panel, type="slice", slice=added.id)
    assert np.array_equal(fe.selection, want)
    assert fe.add_selection().name == "selection 2" and fe.panel.next_name == "selection 3"


def test_widget_and_figure_show_the_same_evidence(wb, report):
    """The browser's card and the feature figure draw one FeatureCard; the explorer's slice selection and the slice
    figure one membership (sae.views): they cannot disagree on a feature's enriched terms or a slice's members."""
    from sae.views import feature_card, slice_members
    from sae.widgets import FailureExplorer, FeatureBrowser

    f = int(wb.feature_table().sort_values("count")["feature"].iloc[-1])
    fb = FeatureBrowser(wb, feature=f)
    card = feature_card(wb.evidence, wb.labels, f)
    assert [e["text"] for e in fb.card["enriched"]] == card.enriched["text"].tolist() and len(card.enriched)
    ex = FailureExplorer(report, wb)
    for s in report.slices:
        ex.select_slice(s.id)
        assert sorted(ex.selection.tolist()) == sorted(slice_members(report, s.id)["row"].tolist())


def test_a_tall_legend_goes_beside_the_points_with_short_labels(wb, report, monkeypatch):
    """With more legend values than fit in a band above the points (the full demo's 19 validated slices), the legend
    moves right of them: the x domain keeps its band free, its labels are cut to "slice 12"; before, the band was
    capped and the legend covered points."""
    from sae.widgets import FailureExplorer
    from sae.widgets.explorer_map import NARROWEST_MAP_PX, SIDE_LEGEND_PX, legend_on_top, legend_scales

    x, y = np.array([0.0, 1.0]), np.array([0.0, 2.0])
    assert legend_on_top(3, 560) and not legend_on_top(21, 560)
    (x0, x1), (y0, y1) = legend_scales(x, y, 21, 560)
    assert (1.0 - x0) / (x1 - x0) <= 1 - SIDE_LEGEND_PX / NARROWEST_MAP_PX + 1e-9 and y1 < 2.2  # points left of the band
    (x0, x1), (y0, y1) = legend_scales(x, y, 3, 560)
    assert x1 < 1.1 and (2.0 - y0) / (y1 - y0) < 0.9  # a short legend: above the points
    monkeypatch.setattr("sae.widgets.explorer_map.TOP_BAND_MAX", 0.05)  # the small demo's few slices, as if they were many
    fe = FailureExplorer(report, wb)
    legend = fe.scatter.widget.legend_encoding["color"]["values"]
    names = [name for name, _, _ in legend]
    assert all(n in ("passing", "failing") or (n.split(" ")[0] == "slice" and ":" not in n) for n in names)
    xs = np.asarray(fe.scatter.widget.points)[:, 0]
    assert xs.max() <= 1 - 2 * SIDE_LEGEND_PX / NARROWEST_MAP_PX + 1e-6
