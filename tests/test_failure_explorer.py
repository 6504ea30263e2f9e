"""FailureExplorer: thumbnails in the map's tooltips, the paged selection table (failing items first, then by row),
the shared item viewer in the side panel, and the panel's JS run under Node on a minimal DOM."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest

from tests.conftest import labeled_copy
from tests.fake_dom import FAKE_DOM

XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def wb(labeled_ws_template, tmp_path_factory):
    from sae.widgets import Workbench

    return Workbench(labeled_copy(labeled_ws_template, tmp_path_factory.mktemp("explorer"))[1])


@pytest.fixture(scope="module")
def report(wb):
    from sae.audit import AuditConfig, FailureSignal
    from sae.audit.report import audit

    rep = audit(wb.index, wb.searcher.codes, FailureSignal.from_column(wb.meta, "quality_fail"), wb.labels.mapping(),
                wb.meta["id"].to_numpy(), config=AuditConfig(min_slice_size=5), with_map=True)
    rep.run = wb.run
    return rep


@pytest.fixture(scope="module")
def fe(wb, report):
    from sae.widgets import FailureExplorer

    return FailureExplorer(report, wb)


def _send(widget, **msg):
    widget._dispatch(widget, msg, [])


def test_map_tooltips_show_each_items_thumbnail(wb, fe):
    from PIL import Image

    from sae.widgets.explorer_map import PREVIEW

    w = fe.scatter.widget
    assert fe.preview == "image" and w.tooltip_enable and w.tooltip_preview == PREVIEW and w.tooltip_preview_type == "image"
    assert w.tooltip_preview_image_height == 96 and {"status", "id"} <= set(w.tooltip_properties)
    column = fe.scatter._data[PREVIEW]
    assert len(column) == len(fe.status) and column.str.startswith("data:image/png;base64,").all()
    for r in (0, len(column) // 2, len(column) - 1):
        png = base64.b64decode(column.iloc[r].split(",", 1)[1])
        assert png == wb.thumbnails([r])[0]  # the item's own thumbnail ...
        assert Image.open(io.BytesIO(png)).size == wb.store.previews([r])[0].shape[::-1]  # ... a valid PNG
    assert column.str.len().max() < 24_000 and "(" not in "".join(column) and " " not in "".join(column)  # css url() safe
    sent: list = []  # what the map's hover asks for: the row's preview, answered from the scatter's data
    w.send = sent.append
    try:
        w._handle_tooltip({"index": 7, "preview": PREVIEW, "properties": ["id"]})
    finally:
        del w.send
    assert sent[0]["preview"] == column.iloc[7] and sent[0]["properties"]["id"] == str(fe.report.ids[7])


def test_tooltip_preview_follows_the_stores_previews():
    from sae.widgets import explorer_map as em

    texts = SimpleNamespace(has_images=False, store=SimpleNamespace(has_text_previews=True),
                            captions=lambda rows, width=140: [f"text {r}" if r else "  " for r in rows])
    bare = SimpleNamespace(has_images=False, store=SimpleNamespace(has_text_previews=False))
    assert em.preview_kind(texts, 10) == "text" and em.preview_values(texts, 3, "text") == [em.NO_TEXT, "text 1", "text 2"]
    assert em.tooltip_options("text") == {"tooltip_preview": em.PREVIEW, "tooltip_preview_type": "text", "tooltip_preview_text_lines": 3}
    assert em.preview_kind(bare, 10) is None and em.tooltip_options(None) == {} and em.preview_values(bare, 2, None) == ["", ""]
    assert em.preview_kind(texts, em.MAX_PREVIEW_ITEMS + 1) is None  # too many items: id and status only
    big = SimpleNamespace(store=SimpleNamespace(previews=lambda rows: np.random.default_rng(0).integers(0, 255, (len(rows), 200, 200))))
    assert em.preview_values(big, 2, "image") == [em.BLANK_PNG] * 2  # a thumbnail too large for a tooltip: a blank one


def test_selection_table_pages_failing_items_first(wb, report, fe):
    from sae.widgets.explorer_map import TABLE_PAGE

    failed = report.signal.failed
    rows = np.concatenate([np.flatnonzero(~failed)[:40], np.flatnonzero(failed)[:30]])
    fe.select(rows[::-1])
    want = np.concatenate([np.sort(np.flatnonzero(failed)[:30]), np.sort(np.flatnonzero(~failed)[:40])])
    assert fe.selected_items()["row"].tolist() == want.tolist()
    t = fe.panel.table
    assert t["page"] == 0 and t["n"] == 70 and t["n_pages"] == 3 and t["text"] == f"items 1-{TABLE_PAGE} of 70"
    seen = []
    for p in range(3):
        fe.panel.table_page = p  # what the view's previous / next set
        t = fe.panel.table
        assert t["page"] == p and len(t["rows"]) == len(fe.panel.thumbs) == min(TABLE_PAGE, 70 - TABLE_PAGE * p)
        assert fe.panel.thumbs == wb.thumbnails([r["row"] for r in t["rows"]])
        seen += t["rows"]
    assert t["text"] == f"items {2 * TABLE_PAGE + 1}-70 of 70"
    assert [r["row"] for r in seen] == want.tolist()  # every selected item once, failing first, then by row
    status = fe.status.to_numpy()
    for r in seen[:: 7]:
        top = wb.item_features(r["row"], 1)
        assert r["id"] == str(report.ids[r["row"]]) and r["failed"] == bool(failed[r["row"]]) and r["status"] == status[r["row"]]
        assert (r["feature"], r["label"]) == (int(top["feature"].iloc[0]), top["label"].iloc[0])
    fe.panel.table_page = 99  # past the last page: the last one
    assert fe.panel.table["page"] == fe.panel.table_page == 2
    fe.select(rows[:5])  # a new selection starts at the first page
    assert fe.panel.table["page"] == 0 and fe.panel.table["n"] == 5 and fe.panel.table["text"] == "items 1-5 of 5"
    _send(fe.panel, type="slice", slice=0)
    assert [r["row"] for r in fe.panel.table["rows"]] == fe.selected_items()["row"].head(TABLE_PAGE).tolist()
    _send(fe.panel, type="clear")
    assert fe.panel.table == {} and fe.panel.thumbs == [] and fe.selected_items().empty


def test_item_viewer_in_the_panel(wb, fe):
    from sae.widgets.items import ItemViewing

    assert isinstance(fe.panel, ItemViewing) and fe.panel.wb is fe.wb
    fe.select(np.arange(10))
    row = fe.panel.table["rows"][0]["row"]
    _send(fe.panel, type="item", row=row)
    assert fe.panel.error == "" and fe.panel.item == wb.item_details(row)
    json.dumps(fe.panel.item)
    _send(fe.panel, type="item", row=-1)  # close / Escape
    assert fe.panel.item == {}
    _send(fe.panel, type="item", row=row)
    fe.select(np.arange(3))  # a new selection closes the viewer
    assert fe.panel.item == {}
    _send(fe.panel, type="item", row=len(wb.meta))
    assert "unknown item row" in fe.panel.error and fe.panel.item == {}


PRELUDE = FAKE_DOM + r"""
let nUrl = 0;
globalThis.URL.createObjectURL = () => "blob:" + (nUrl += 1);
globalThis.URL.revokeObjectURL = () => {};
const state = %(state)s;
const handlers = {}, sent = [], saved = [];
const model = { get: (k) => state[k], set: (k, v) => { state[k] = v; }, save_changes() { saved.push({ ...state }); },
  send: (m) => sent.push(m), on: (e, f) => { (handlers[e] = handlers[e] || []).push(f); } };
const change = (k, v) => { state[k] = v; for (const f of handlers["change:" + k] || []) f(); };
const el = new Node("div");
"""

PANEL_SCRIPT = r"""
render({ model, el });
const root = el.children[0];
const role = (r) => root.all((n) => n.attrs["data-role"] === r)[0];
const out = {};
out.rootClass = root.className;
out.styleScoped = root.children[0].tag === "style";
out.pageText = role("table-page-text").textContent;
const buttons = root.all((n) => n.tag === "button" && /items/.test(n.attrs["aria-label"] || ""));
out.prevDisabled = buttons[0].disabled; out.nextDisabled = buttons[1].disabled;
const cells = root.all((n) => (n.className || "").split(" ").includes("saew-at-thumb"));
out.nCells = cells.length; out.imgSrc = cells[0].attrs.src; out.cellTags = cells.map((c) => c.tag);
out.tableText = role("selection-table").textContent;
out.imgs = role("selection-table").all((n) => n.tag === "img").length;
cells[1].fire("click");
out.sentOnClick = sent[sent.length - 1];
change("item", %(item)s);
const viewer = role("item-viewer");
out.viewerInRoot = root.children.includes(viewer);
out.viewerOpen = !viewer.hidden; out.viewerText = viewer.textContent;
out.viewerImg = viewer.all((n) => n.tag === "img").map((n) => n.attrs.src);
root.fire("keydown", { key: "Escape" });
out.closedByEscape = viewer.hidden; out.sentOnEscape = sent[sent.length - 1];
buttons[1].fire("click");
out.pageAsked = saved.length ? saved[saved.length - 1].table_page : null;
root.all((n) => n.attrs["data-feature"] === "4")[0].fire("click");
out.sentOnFeature = sent[sent.length - 1];
console.log(JSON.stringify(out));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_panel_view_opens_the_viewer_from_the_table(tmp_path):
    from sae.widgets._base import STATIC

    rows = [{"row": 5, "id": "item-5", "failed": True, "status": "failing", "feature": 4, "label": "axial", "caption": "item-5"},
            {"row": 9, "id": XSS, "failed": False, "status": "passing", "feature": -1, "label": "", "caption": XSS}]
    state = {"summary": "s", "slices": [], "selected_slice": -1, "color_choices": [{"value": "status", "label": "status"}],
             "color": "status", "next_name": "selection 1", "height": 560, "export_path": "", "error": "", "item": {},
             "selection": {"n": 30, "n_failed": 12, "rate": 0.4, "base_rate": 0.2, "concepts": []},
             "table": {"rows": rows, "page": 0, "n_pages": 2, "n": 30, "text": "items 1-24 of 30", "images": True},
             "thumbs": [{"byteLength": 10}, {"byteLength": 10}], "table_page": 0, "_fallback_id": ""}
    item = {"row": 9, "id": XSS, "caption": "", "metadata": {"site": XSS}, "concepts": [{"feature": 4, "label": "axial", "presence": 0.9}]}
    src = (STATIC / "common.js").read_text() + (STATIC / "audit_panel.js").read_text().replace("export default { render };", "")
    script = tmp_path / "panel.js"
    script.write_text(PRELUDE % {"state": json.dumps(state)} + src + PANEL_SCRIPT % {"item": json.dumps(item)})
    out = json.loads(subprocess.run(["node", str(script)], capture_output=True, text=True, check=True, timeout=60).stdout)
    assert out["rootClass"] == "saew saew-audit" and out["styleScoped"]
    assert out["pageText"] == "items 1-24 of 30" and out["prevDisabled"] and not out["nextDisabled"]
    assert out["nCells"] == 2 and out["cellTags"] == ["img", "img"] and out["imgSrc"].startswith("blob:")
    assert XSS in out["tableText"] and "item-5" in out["tableText"] and "#4 axial" in out["tableText"] and "none fires" in out["tableText"]
    assert out["imgs"] == 2  # the thumbnails only: the id that looks like an <img> is text
    assert out["sentOnClick"] == {"type": "item", "row": 9}
    assert out["viewerInRoot"] and out["viewerOpen"] and XSS in out["viewerText"] and "axial" in out["viewerText"]
    assert len(out["viewerImg"]) == 1 and out["viewerImg"][0].startswith("blob:")  # the clicked thumbnail, large
    assert out["closedByEscape"] and out["sentOnEscape"] == {"type": "item", "row": -1}
    assert out["pageAsked"] == 1 and out["sentOnFeature"] == {"type": "open_feature", "feature": 4}


def test_panel_source_keeps_its_css_scoped():
    from sae.widgets._base import STATIC

    js = (STATIC / "audit_panel.js").read_text()
    css = js.split("const AP_CSS = `")[1].split("`;")[0]
    assert all(rule.startswith(".saew-audit") for rule in css.split("\n") if rule and not rule.startswith(" "))
    assert "itemViewer(model, root)" in js and "viewer.open(" in js and "innerHTML" not in js
