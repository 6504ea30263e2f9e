"""FeatureBrowser (issue 19): paging, the item viewer's data, cards rebuilt without stale scores after a hand edit,
facets (metadata values with live counts), and the view's JS run under Node on a minimal DOM (captions, viewer,
Escape, scroll reset, histogram y axis, the facet select)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pandas as pd
import pytest

from tests.conftest import labeled_copy
from tests.fake_dom import FAKE_DOM

XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def wb(labeled_ws_template, tmp_path_factory):
    from sae.widgets import Workbench

    return Workbench(labeled_copy(labeled_ws_template, tmp_path_factory.mktemp("browser"))[1])


def _send(widget, **msg):
    widget._dispatch(widget, msg, [])


def _busiest(wb) -> int:
    table = wb.feature_table()
    return int(table.sort_values("count")["feature"].iloc[-1])


def test_list_pages_through_every_match(wb):
    from sae.widgets import FeatureBrowser

    fb = FeatureBrowser(wb)
    n = len(fb.matches())
    assert fb.page_size == 100 and fb.page == 0 and fb.n_matched == n and len(fb.rows) == min(n, 100)
    assert fb.page_text == f"features 1-{min(n, 100)} of {n}"
    fb.page_size = 7
    assert n > 14 and len(fb.rows) == 7
    seen = []
    for p in range((n + 6) // 7):
        fb.page = p
        assert len(fb.rows) == min(7, n - 7 * p)
        seen += [r["feature"] for r in fb.rows]
    assert seen == fb.matches()["feature"].tolist()  # the pages cover every match once, in order
    fb.page = 1
    assert fb.page_text == f"features 8-14 of {n}"
    fb.page = 10_000  # past the last page: the last one
    assert fb.page == (n - 1) // 7 and fb.rows[-1]["feature"] == seen[-1]
    fb.sort_by = "feature"  # a filter change goes back to the first page
    assert fb.page == 0 and [r["feature"] for r in fb.rows] == fb.matches()["feature"].head(7).tolist()
    fb.page, fb.filter_text = 2, "qqqzzzx"
    assert fb.page == 0 and fb.rows == [] and fb.n_matched == 0 and fb.page_text == "no feature matches"
    fb.filter_text, fb.page = "", 1
    fb.page_size = 5
    assert fb.page == 0 and len(fb.rows) == 5


def test_item_details_and_the_item_message(wb):
    from sae.widgets import FeatureBrowser

    f = _busiest(wb)
    fb = FeatureBrowser(wb, feature=f)
    top = fb.card["top"][0]
    d = fb.item_details(top["row"])
    meta = wb.meta.iloc[top["row"]]
    assert d["row"] == top["row"] and d["id"] == top["id"] == str(meta["id"])
    assert set(d["metadata"]) == set(wb.meta.columns) - {"id"} and len(d["metadata"]) > 1
    shown = {c: "" if pd.isna(v) else f"{v:.6g}" if isinstance(v, float) else str(v) for c, v in meta.items() if c != "id"}
    assert d["metadata"] == shown and any("." in x for x in shown.values())  # floats to 6 significant digits
    strongest = wb.item_features(top["row"], 8)
    assert [c["feature"] for c in d["concepts"]] == strongest["feature"].tolist() and f in [c["feature"] for c in d["concepts"]]
    labels = wb.labels.mapping()
    assert all(c["label"] == labels.get(c["feature"], "") and 0 <= c["presence"] <= 1 for c in d["concepts"])

    _send(fb, type="item", row=top["row"])
    assert fb.error == "" and fb.item == d
    json.dumps(fb.item)  # plain JSON
    _send(fb, type="item", row=-1)  # the viewer's close button / Escape
    assert fb.item == {}
    _send(fb, type="item", row=top["row"])
    fb.selected = fb.card["siblings"][0]["feature"] if fb.card["siblings"] else -1
    assert fb.item == {}  # a new card closes the viewer
    _send(fb, type="item", row=len(wb.meta))
    assert "unknown item row" in fb.error and fb.item == {}
    _send(fb, type="item", row="first")
    assert "integer row" in fb.error


def test_hand_edit_rebuilds_the_card_without_the_old_scores(wb):
    from sae.widgets import FeatureBrowser

    fb = FeatureBrowser(wb)
    f = next(r["feature"] for r in fb.rows if not r["edited"] and r["score"] is not None)
    fb.selected = f
    assert fb.card["scores"] and fb.card["score_note"] == ""  # a scored label shows its scores ...
    _send(fb, type="edit", label="hand label with new words")
    card = fb.card
    assert fb.error == "" and card["feature"] == f and card["label"] == "hand label with new words" and card["edited_by"]
    assert card["scores"] == {} and card["score_note"] == "not scored (edited by hand)"  # ... an edited one none
    assert card["coverage"] == [] and card["unsupported"] == []
    row = next(r for r in fb.rows if r["feature"] == f)
    assert row["edited"] and row["label"] == "hand label with new words" and row["score"] is None
    assert pd.notna(wb.feature_table().set_index("feature").loc[f, "score"])  # the table still holds the old label's score


def test_static_source_of_the_fixes():
    """Captions fit the thumbnail's width, the viewer and paging are wired, new CSS stays in the view's scope."""
    from sae.widgets._base import STATIC

    js = (STATIC / "feature_browser.js").read_text()
    css = js.split("const FB_CSS = `")[1].split("`;")[0]
    thumb_rules = [line for line in css.splitlines() if ".saew-thumb" in line or line.startswith("  ")]
    assert "overflow-wrap: anywhere" in css and "text-overflow: ellipsis" in css and "width: 86px" in css and thumb_rules
    assert all(rule.startswith(".saew-features") for rule in css.split("\n") if rule and not rule.startswith(" "))
    common = (STATIC / "common.js").read_text()
    assert "viewer.open(" in js and 'type: "item"' in common and '"Escape"' in common
    assert "card.scrollTop = 0" in js and 'model.set("page"' in js
    assert "innerHTML" not in js + common


HARNESS = FAKE_DOM + r"""
const state = %(state)s;
const handlers = {}, sent = [];
const model = { get: (k) => state[k], set: (k, v) => { state[k] = v; }, save_changes() {}, send: (m) => sent.push(m),
  on: (e, f) => { (handlers[e] = handlers[e] || []).push(f); } };
const change = (k, v) => { state[k] = v; for (const f of handlers["change:" + k] || []) f(); };
const el = new Node("div");
render({ model, el });
const root = el.children[0];
const role = (r) => root.all((n) => n.attrs["data-role"] === r)[0];
const out = {};
const pager = root.all((n) => n.tag === "button" && /page/.test(n.attrs["aria-label"] || ""));
out.prevDisabled = pager[0].disabled; out.nextDisabled = pager[1].disabled; out.pageText = role("page-text").textContent;
out.labelTitles = root.all((n) => (n.className || "").split(" ").includes("saew-fb-label")).map((n) => [n.textContent, n.attrs.title]);
const svg = role("y-axis");
out.yLabels = svg.all((n) => n.tag === "text").map((n) => n.textContent);
const thumbs = root.all((n) => (n.className || "").split(" ").includes("saew-thumb"));
out.thumbTitle = thumbs[0].attrs.title;
thumbs[0].fire("click");
out.sentOnClick = sent[sent.length - 1];
change("item", %(item)s);
const viewer = role("item-viewer");
out.viewerOpen = !viewer.hidden; out.viewerText = viewer.textContent;
out.viewerImgs = viewer.all((n) => n.tag === "img").length;
root.fire("keydown", { key: "Escape" });
out.closedByEscape = viewer.hidden; out.sentOnEscape = sent[sent.length - 1];
const card = role("card");
card.scrollTop = 250; change("card", { ...state.card });
out.scrollSameCard = card.scrollTop;
change("card", { ...state.card, feature: 9 });
out.scrollNewCard = card.scrollTop;
console.log(JSON.stringify(out));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_view_runs_on_a_minimal_dom(tmp_path):
    from sae.widgets._base import STATIC

    label = "a label much longer than thirty characters, written out in full " * 2
    card = {"feature": 3, "label": "x", "images": False, "hist": {"counts": [0, 37, 120, 4], "edges": [0, 1, 2, 3, 4], "q90": 2.5},
            "top": [{"row": 5, "id": "item-5", "activation": 1.5, "caption": "a long caption " * 12}], "quantiles": [],
            "scores": {}, "score_note": "not scored (edited by hand)", "stats": {"rate": 0.1, "count": 161, "max": 4}}
    state = {"filter_text": "", "min_score": 0, "max_rate": 1, "sort_by": "score",
             "rows": [{"feature": 3, "label": label, "score": 0.5, "rate": 0.1, "edited": False}],
             "selected": 3, "page": 0, "page_size": 100, "n_matched": 150, "page_text": "features 1-100 of 150", "card": card,
             "top_images": [], "quantile_images": [], "item": {}, "error": ""}
    item = {"row": 5, "id": "item-5", "caption": "", "metadata": {"site": XSS, "age": "41"}, "concepts": [{"feature": 3, "label": "axial", "presence": 0.9}]}
    src = (STATIC / "common.js").read_text() + (STATIC / "feature_browser.js").read_text().replace("export default { render };", "")
    script = tmp_path / "view.js"
    script.write_text(src + HARNESS % {"state": json.dumps(state), "item": json.dumps(item)})
    out = json.loads(subprocess.run(["node", str(script)], capture_output=True, text=True, check=True, timeout=60).stdout)
    assert out["prevDisabled"] and not out["nextDisabled"] and out["pageText"] == "features 1-100 of 150"
    assert [label, label] in out["labelTitles"]  # the full label, and the same in its tooltip
    assert out["yLabels"][:3] == ["0", "50", "100"] and out["yLabels"][-1] == "n"  # count ticks on the y axis
    assert out["thumbTitle"] == "1.50 " + card["top"][0]["caption"]
    assert out["sentOnClick"] == {"type": "item", "row": 5}
    assert out["viewerOpen"] and XSS in out["viewerText"] and "item-5" in out["viewerText"] and "axial" in out["viewerText"]
    assert out["viewerImgs"] == 0  # the metadata is text: the <img> in it made no element
    assert out["closedByEscape"] and out["sentOnEscape"] == {"type": "item", "row": -1}
    assert out["scrollSameCard"] == 250 and out["scrollNewCard"] == 0


def _carries(wb, feature: int) -> set[int]:
    """Brute force: the metadata terms a feature's own evidence pack calls enriched (its card's test)."""
    from sae.interpret.describe import TEXT_KINDS

    e = wb.evidence.pack(feature).enriched()
    return set(e.loc[~e["kind"].isin(list(TEXT_KINDS)), "term"].astype(int))


def test_facets_count_and_narrow_the_list(wb):
    from sae.widgets import FeatureBrowser

    fb = FeatureBrowser(wb)
    carries = {int(f): _carries(wb, int(f)) for f in wb.feature_table()["feature"]}
    assert fb.facet == -1 and fb.facets and all(f["text"] and f["column"] for f in fb.facets)
    assert {f["term"] for f in fb.facets} == set().union(*carries.values())  # every enriched metadata value, once
    assert [(f["column"], f["value"]) for f in fb.facets] == sorted((f["column"], f["value"]) for f in fb.facets)

    def brute() -> dict[int, int]:
        listed = fb._filtered()["feature"].tolist()
        return {f["term"]: sum(f["term"] in carries[g] for g in listed) for f in fb.facets}

    assert {f["term"]: f["count"] for f in fb.facets} == brute() and any(f["count"] for f in fb.facets)
    fb.max_rate = 0.05  # the counts follow the other filters
    assert {f["term"]: f["count"] for f in fb.facets} == brute()
    fb.max_rate = 1.0
    chosen = max(fb.facets, key=lambda f: f["count"])
    fb.page_size, fb.page = 3, 1
    fb.facet = chosen["term"]
    matched = fb.matches()["feature"].tolist()
    assert fb.page == 0 and fb.n_matched == len(matched) == chosen["count"] > 0
    assert all(chosen["term"] in carries[g] for g in matched)  # only features carrying the value ...
    assert set(matched) == {g for g in fb._filtered()["feature"] if chosen["term"] in carries[int(g)]}  # ... all of them
    assert {f["term"]: f["count"] for f in fb.facets} == brute()  # a facet's counts are over the other filters
    fb.sort_by = "feature"  # combined with the other filters
    fb.filter_text = f"#{matched[0]}"
    assert [r["feature"] for r in fb.rows] == [matched[0]]
    fb.filter_text = ""
    fb.facet = 10_000
    assert "no feature is enriched" in fb.error
    fb.facet = -1
    assert fb.error == "" and fb.n_matched == len(fb._filtered())


FACET_SCRIPT = r"""
const model = { get: (k) => state[k], set: (k, v) => { state[k] = v; }, save_changes() { saved.push(state.facet); },
  send() {}, on() {} };
const saved = [];
const f = facetSelect(model);
f.draw();
const opts = f.node.children;
f.node.value = "12";
f.node.fire("change");
console.log(JSON.stringify({ texts: opts.map((o) => o.textContent), disabled: opts.map((o) => !!o.attrs.disabled),
                             value: state.facet, saved }));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_facet_select_on_a_minimal_dom(tmp_path):
    from sae.widgets._base import STATIC

    state = {"facet": 7, "facets": [{"term": 7, "column": "site", "value": XSS, "text": "x", "count": 0},
                                    {"term": 12, "column": "artifact", "value": "motion", "text": "motion artifact", "count": 5},
                                    {"term": 13, "column": "artifact", "value": "spike", "text": "spike artifact", "count": 0}]}
    prelude = HARNESS.split("const state =")[0]
    src = (STATIC / "common.js").read_text() + (STATIC / "feature_browser.js").read_text().replace("export default { render };", "")
    script = tmp_path / "facets.js"
    script.write_text(prelude + src + f"const state = {json.dumps(state)};" + FACET_SCRIPT)
    out = json.loads(subprocess.run(["node", str(script)], capture_output=True, text=True, check=True, timeout=60).stdout)
    assert out["texts"] == ["metadata: any value", f"site = {XSS} (0)", "artifact = motion (5)", "artifact = spike (0)"]
    assert out["disabled"] == [False, False, False, True]  # an empty value is disabled, unless it is the chosen one
    assert out["value"] == 12 and out["saved"] == [12]
