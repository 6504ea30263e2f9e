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
