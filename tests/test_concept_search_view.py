"""ConceptSearch's view (concept_search.js) run under Node on the minimal DOM of tests/test_feature_browser.py: the plan
chips group concepts exactly as ``QueryPlan.groups()`` does, and an expanded "+N" group closes for the next query."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.test_feature_browser import HARNESS

DOM = HARNESS.split("const state = %(state)s;")[0]
SCRIPT = r"""
const state = %(state)s;
const handlers = {}, sent = [];
const model = { get: (k) => state[k], set: (k, v) => { state[k] = v; }, save_changes() {}, send: (m) => sent.push(m),
  on: (e, f) => { (handlers[e] = handlers[e] || []).push(f); } };
const change = (k, v) => { state[k] = v; for (const f of handlers["change:" + k] || []) f(); };
globalThis.performance = globalThis.performance || { now: () => 0 };
const el = new Node("div");
render({ model, el });
const root = el.children[0];
const chips = () => root.all((n) => n.attrs["data-group"] !== undefined);
const out = {};
out.groups = chips().map((c) => [c.attrs["data-group"], (c.className || "").includes("saew-neg"), c.textContent.includes("NOT ")]);
const more = root.all((n) => (n.className || "") === "saew-more")[0];
more.fire("click");
out.openAlternatives = root.all((n) => (n.className || "").includes("saew-alt")).length;
change("query", "another query");
change("chips", state.chips);
out.afterNewQuery = root.all((n) => (n.className || "").includes("saew-alt")).length;
console.log(JSON.stringify(out));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_an_excluded_member_of_an_or_group_is_its_own_not_chip(tmp_path):
    """Excluding one feature of a 3-feature OR-group (as "exclude in search" does) draws one NOT chip for it and
    keeps the other two as the positive group; before, the whole group was drawn as NOT."""
    from sae.search.plan import Concept, QueryPlan
    from sae.widgets._base import STATIC

    plan = QueryPlan("q", (Concept(1, 1.0, False, "spike artifact", group=0), Concept(2, 0.9, False, "spike, axial", group=0),
                           Concept(3, 0.8, False, "spike, coronal", group=0))).negate(1)
    assert [tuple(c.feature for c in g) for g in plan.groups()] == [(1,), (2, 3)]  # Python: NOT #1, and (#2 or #3)
    chips = [{"feature": c.feature, "label": c.label, "weight": c.weight, "negated": c.negated, "required": c.required,
              "group": c.group, "phrase": c.phrase} for c in plan.concepts]
    state = {"query": "q", "query_seq": 0, "answered_seq": 0, "chips": chips, "notes": [], "hits": [], "thumbs": [],
             "selected_row": -1, "hit_features": [], "status": "", "error": ""}
    src = (STATIC / "common.js").read_text() + (STATIC / "concept_search.js").read_text().replace("export default { render };", "")
    script = tmp_path / "view.js"
    script.write_text(src + DOM + SCRIPT % {"state": json.dumps(state)})
    out = json.loads(subprocess.run(["node", str(script)], capture_output=True, text=True, check=True, timeout=60).stdout)
    negated = [g for g in out["groups"] if g[1]]
    assert len(out["groups"]) == 2 and len(negated) == 1 and negated[0][2], out  # one NOT chip (#1), one positive group
    assert out["openAlternatives"] == 1 and out["afterNewQuery"] == 0  # "+1" opened, closed again by the next query


URLS = r"""
let created = 0;
const revoked = new Set();
URL.createObjectURL = () => "blob:thumb-" + (++created);
URL.revokeObjectURL = (u) => { revoked.add(u); };
const state = %(state)s;
const hitsOf = (rows) => rows.map((r) => ({ row: r, id: "item-" + r, score: 1, caption: "c" + r, concepts: [] }));
const thumbsOf = (rows) => rows.map(() => new DataView(new ArrayBuffer(8)));
const first = [...Array(40).keys()];
state.hits = hitsOf(first); state.thumbs = thumbsOf(first);
const handlers = {}, sent = [];
const model = { get: (k) => state[k], set: (k, v) => { state[k] = v; }, save_changes() {}, send: (m) => sent.push(m),
  on: (e, f) => { (handlers[e] = handlers[e] || []).push(f); } };
const change = (k, v) => { state[k] = v; for (const f of handlers["change:" + k] || []) f(); };
// one message from the kernel: every trait set first, then one change event each (as Backbone does)
const message = (traits) => { Object.assign(state, traits); for (const k of Object.keys(traits)) for (const f of handlers["change:" + k] || []) f(); };
globalThis.performance = globalThis.performance || { now: () => 0 };
const el = new Node("div");
render({ model, el });
const root = el.children[0];
const hitNode = (row) => root.all((n) => n.attrs["data-row"] === String(row) && (n.className || "").includes("saew-hit"))[0];
const enlargeOf = (row) => hitNode(row).all((n) => n.tag === "button" && n.attrs["aria-label"] === "enlarge")[0];
const viewer = root.all((n) => n.attrs["data-role"] === "item-viewer")[0];
const srcs = () => root.all((n) => n.tag === "img").map((n) => n.attrs.src);
const out = { createdFirst: created };
enlargeOf(6).fire("keydown", { key: "Enter" });
out.sentOnEnter = sent[sent.length - 1];
enlargeOf(5).fire("click");
out.sentOnEnlarge = sent[sent.length - 1]; out.selectedAfterEnlarge = state.selected_row;
change("item", { row: 5, id: "item-5", caption: "", metadata: { site: "a" }, concepts: [] });
out.viewerOpen = !viewer.hidden;
const viewerSrc = viewer.all((n) => n.tag === "img").map((n) => n.attrs.src)[0];
out.viewerSrc = viewerSrc; out.gridSrc5 = hitNode(5).all((n) => n.tag === "img")[0].attrs.src;
hitNode(7).fire("click");
out.selectedOnClick = state.selected_row;
const second = [...Array(30).keys()].map((i) => 100 + i);
message({ hits: hitsOf(second), thumbs: thumbsOf(second), answered_seq: 1, status: "30 hits" });
out.createdSecond = created;
message({ answered_seq: 2 });
change("selected_row", 101);
out.createdAfterRedraws = created;
out.revoked = revoked.size;
out.revokedInDom = srcs().filter((u) => revoked.has(u));
out.viewerSrcRevoked = revoked.has(viewerSrc);
out.active = root.all((n) => (n.className || "").includes("saew-active") && n.attrs["data-row"] !== undefined).map((n) => n.attrs["data-row"]);
const back = [...Array(10).keys()].map((i) => 100 + i);  // rows still shown keep their URLs
message({ hits: hitsOf(back), thumbs: thumbsOf(back) });
out.createdBack = created;
out.revokedInDomBack = srcs().filter((u) => revoked.has(u));
const facetBtn = root.all((n) => (n.className || "").includes("saew-cs-facet-value"))[0];
facetBtn.fire("click");
out.sentOnFacet = sent[sent.length - 1];
out.facetText = facetBtn.textContent;
change("filters", [{ column: "site", op: "==", value: "<b>a</b>" }]);
root.all((n) => n.attrs["aria-label"] === "remove the filter site == <b>a</b>")[0].fire("click");
out.sentOnUnfilter = sent[sent.length - 1];
console.log(JSON.stringify(out));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_thumbnail_urls_are_made_once_and_never_revoked_while_shown_and_enlarge_opens_the_viewer(tmp_path):
    """A grid redraw (new hits, an answer, a selection) makes object URLs only for rows it has none for and never
    revokes one an <img> still shows (the grid's, the item viewer's); before, every redraw revoked them all and made
    new ones (~24 console errors a query). ⤢ (click or Enter) opens the viewer without selecting the hit."""
    from sae.widgets._base import STATIC

    state = {"query": "q", "query_seq": 0, "answered_seq": 0, "chips": [], "notes": [], "selected_row": -1,
             "hit_features": [], "status": "", "error": "", "item": {}, "filters": [],
             "facets": [{"column": "site", "values": [{"value": "a", "count": 12, "active": False},
                                                      {"value": "b", "count": 0, "active": False}]}]}
    src = (STATIC / "common.js").read_text() + (STATIC / "concept_search.js").read_text().replace("export default { render };", "")
    script = tmp_path / "urls.js"
    script.write_text(src + DOM + URLS % {"state": json.dumps(state)})
    out = json.loads(subprocess.run(["node", str(script)], capture_output=True, text=True, check=True, timeout=60).stdout)
    assert out["createdFirst"] == 40
    assert out["sentOnEnlarge"] == {"type": "item", "row": 5} and out["selectedAfterEnlarge"] == -1
    assert out["sentOnEnter"] == {"type": "item", "row": 6}
    assert out["viewerOpen"] and out["viewerSrc"] == out["gridSrc5"]  # the viewer shows the hit's own thumbnail
    assert out["selectedOnClick"] == 7  # clicking the hit elsewhere still selects it
    assert out["createdSecond"] == 70 and out["createdAfterRedraws"] == 70  # new rows only; none for redraws
    assert out["revoked"] > 0 and out["revokedInDom"] == [] and not out["viewerSrcRevoked"]
    assert out["active"] == ["101"]
    assert out["createdBack"] == 70 and out["revokedInDomBack"] == []
    assert out["sentOnFacet"] == {"type": "facet", "column": "site", "value": "a"} and out["facetText"] == "a12"
    assert out["sentOnUnfilter"] == {"type": "unfilter", "index": 0}


LATENCY = r"""
const state = %(state)s;
const handlers = {}, sent = [];
const model = { get: (k) => state[k], set: (k, v) => { state[k] = v; }, save_changes() {}, send: (m) => sent.push(m),
  on: (e, f) => { (handlers[e] = handlers[e] || []).push(f); } };
const message = (traits) => { Object.assign(state, traits); for (const k of Object.keys(traits)) for (const f of handlers["change:" + k] || []) f(); };
const el = new Node("div");
render({ model, el });
const root = el.children[0];
root.dataset = {};
const box = root.all((n) => n.tag === "input" && (n.className || "") === "saew-query")[0];
const latencies = () => sent.filter((m) => m.type === "latency").length;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
(async () => {
  const out = {};
  box.value = ""; box.fire("input");  // the box emptied, then a pause longer than the debounce: "" is sent
  await sleep(200);
  out.sentEmpty = [state.query, state.query_seq];
  box.value = "axial"; box.fire("input");  // typing resumes; the emptied box's answer arrives during the debounce
  message({ answered_seq: 1, hits: [] });
  await sleep(1);
  out.latencyForStaleAnswer = latencies();
  await sleep(200);
  out.sentTyped = [state.query, state.query_seq];
  message({ answered_seq: 2, hits: [] });
  await sleep(1);
  out.latencyForAnswer = latencies();
  out.answered = root.dataset.answered;
  box.value = "b"; box.fire("input"); await sleep(100);  // sent (3) and in flight ...
  box.value = "bc"; box.fire("input"); await sleep(100);
  box.value = "bcd"; box.fire("input"); await sleep(100);
  out.heldWhileBusy = [state.query, state.query_seq];  // ... so the next texts wait
  message({ answered_seq: 3, hits: [] });
  out.sentLatest = [state.query, state.query_seq];  // the answer lands: only the latest text goes
  console.log(JSON.stringify(out));
})();
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_latency_counts_only_the_answer_to_the_query_sent_after_the_last_keystroke(tmp_path):
    """Sending is latest-only (a text typed while the kernel answers waits, and only the newest goes). An earlier
    query's answer (the emptied box's) arriving while the debounce waits after the last keystroke is not the keystroke's
    answer: before, it was reported as the latency (and the browser test read a stale grid)."""
    from sae.widgets._base import STATIC

    state = {"query": "q", "query_seq": 0, "answered_seq": 0, "chips": [], "notes": [], "hits": [], "thumbs": [],
             "selected_row": -1, "hit_features": [], "status": "", "error": "", "item": {}, "filters": [], "facets": []}
    src = (STATIC / "common.js").read_text() + (STATIC / "concept_search.js").read_text().replace("export default { render };", "")
    script = tmp_path / "latency.js"
    script.write_text(src + DOM + LATENCY % {"state": json.dumps(state)})
    out = json.loads(subprocess.run(["node", str(script)], capture_output=True, text=True, check=True, timeout=60).stdout)
    assert out["sentEmpty"] == ["", 1] and out["sentTyped"] == ["axial", 2]
    assert out["latencyForStaleAnswer"] == 0 and out["latencyForAnswer"] == 1 and out["answered"] == "2"
    assert out["heldWhileBusy"] == ["b", 3] and out["sentLatest"] == ["bcd", 4]  # latest-only: no queue of stale queries
