"""Reopened notebooks show something true (issue 19): a static copy published beside every view, hidden only
while the live view draws, and a banner on a view no kernel answers (sae.widgets.fallback, ``live`` in common.js)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import traitlets

XSS = "<img src=x onerror=alert(1)>"


def _view_class():
    from sae.widgets._base import View, asset

    class Dummy(View):
        _esm = traitlets.Unicode(asset("common.js")).tag(sync=True)
        text = "plain"

        def static_html(self) -> str:
            import html

            return f"<p>{html.escape(self.text)}</p>"

    return Dummy


@pytest.fixture
def kernel(monkeypatch):
    """A pretend kernel: displays are collected instead of sent."""
    from sae import display

    published: list = []
    monkeypatch.setattr(display, "in_kernel", lambda: True)
    monkeypatch.setattr("IPython.display.display", lambda obj, raw=False: published.append(obj))
    return published


def test_a_view_publishes_its_escaped_copy_paired_by_token(kernel):
    from sae.display import WIDGET_MIME

    view = _view_class()()
    view.text = XSS
    bundle = view._repr_mimebundle_()[0]
    assert WIDGET_MIME in bundle and "text/html" not in bundle  # JupyterLab would never show it there
    (copy,) = kernel
    html = copy["text/html"]
    assert view._fallback_id and f"saew-fallback-{view._fallback_id}" in html
    assert XSS not in html and "&lt;img src=x onerror=alert(1)&gt;" in html and "run the cell again" in html
    first = view._fallback_id
    view._repr_mimebundle_()  # displayed again: a new copy with a new token
    assert len(kernel) == 2 and view._fallback_id != first


def test_outside_a_kernel_nothing_is_published(monkeypatch):
    from sae import display

    monkeypatch.setattr(display, "in_kernel", lambda: False)
    shown: list = []
    monkeypatch.setattr("IPython.display.display", lambda obj, raw=False: shown.append(obj))
    view = _view_class()()
    assert display.WIDGET_MIME in view._repr_mimebundle_()[0] and not shown and view._fallback_id == ""


def test_a_view_answers_the_ping():
    view = _view_class()()
    sent: list = []
    view.send = lambda content, buffers=None: sent.append(content)
    view._dispatch(view, {"type": "ping"}, [])
    assert sent == [{"type": "pong"}] and view.error == ""


def test_every_view_render_is_wrapped():
    from sae.widgets import ConceptSearch, FeatureBrowser
    from sae.widgets.failure_explorer import AuditPanel

    for cls in (ConceptSearch, FeatureBrowser, AuditPanel):
        esm = cls.class_traits()["_esm"].default_value
        assert esm.rstrip().endswith("export default { render: live(render) };"), cls.__name__


HARNESS = r"""
class Node {
  constructor(tag) { this.tag = tag; this.children = []; this.attrs = {}; this.style = {}; this.hidden = false;
    this.text = ""; this.parent = null; this.classes = []; }
  setAttribute(k, v) { this.attrs[k] = String(v); if (k === "class") this.classes = String(v).split(" "); }
  addEventListener() {}
  append(...c) { for (const x of c) { x.parent = this; this.children.push(x); } }
  prepend(x) { x.parent = this; this.children.unshift(x); }
  set className(v) { this.classes = v.split(" "); }
  set textContent(v) { this.text = String(v); }
  get textContent() { return this.text; }
  closest(sel) { let n = this; while (n) { if (sel.split(", ").some((s) => n.classes.includes(s.slice(1)))) return n; n = n.parent; } return null; }
}
const outputs = new Node("div"); outputs.classes = ["jp-OutputArea-child"];
const copy = new Node("div"); copy.classes = ["saew-fallback", "saew-fallback-tok"]; outputs.append(copy);
globalThis.document = { createElement: (t) => new Node(t), createTextNode: (t) => { const n = new Node("#text"); n.text = t; return n; },
  querySelectorAll: (sel) => (sel === ".saew-fallback-tok" ? [copy] : []) };
globalThis.Node = Node;
function model(answers) {
  const handlers = [];
  return { get: (k) => (k === "_fallback_id" ? "tok" : undefined), on: (e, cb) => handlers.push(cb),
           send: (m) => { if (answers && m.type === "ping") setTimeout(() => handlers.forEach((cb) => cb({ type: "pong" })), 10); } };
}
const liveEl = new Node("div"), deadEl = new Node("div");
const rendered = [];
live(({ el }) => { rendered.push(el); return () => {}; })({ model: model(true), el: liveEl });
const deadBanner = watchLiveness(model(false), deadEl, 50);
setTimeout(() => {
  console.log(JSON.stringify({ rendered: rendered.length, copyHidden: outputs.style.display === "none",
    liveBannerHidden: liveEl.children[0].hidden, liveBannerRole: liveEl.children[0].attrs["data-role"],
    deadBannerHidden: deadBanner.hidden, deadText: deadBanner.text }));
  process.exit(0);
}, 400);
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_liveness_banner_and_hidden_copy_under_node(tmp_path):
    from sae.widgets._base import STATIC

    script = tmp_path / "live.js"
    script.write_text((STATIC / "common.js").read_text() + HARNESS)
    out = json.loads(subprocess.run(["node", str(script)], capture_output=True, text=True, check=True, timeout=60).stdout)
    assert out["rendered"] == 1 and out["copyHidden"]  # the live view hides the copy paired with it
    assert out["liveBannerHidden"] and out["liveBannerRole"] == "dead-hint"  # a kernel answered: no banner
    assert not out["deadBannerHidden"] and "Not live" in out["deadText"]  # no answer: the view says it is not live


@pytest.fixture(scope="module")
def wb(labeled_ws_template, tmp_path_factory):
    from sae.widgets import Workbench
    from tests.conftest import labeled_copy

    return Workbench(labeled_copy(labeled_ws_template, tmp_path_factory.mktemp("fallback"))[1])


def test_the_browser_and_the_dashboard_publish_what_they_show(wb, kernel):
    from sae.widgets import FeatureBrowser, dashboard

    f = int(wb.feature_table().sort_values("count")["feature"].iloc[-1])
    fb = FeatureBrowser(wb, feature=f)
    fb.edit_label(f, f"{XSS} rim")
    fb._repr_mimebundle_()
    html = kernel.pop()["text/html"]
    assert f"#{f} &lt;img src=x onerror=alert(1)&gt; rim" in html and XSS not in html
    assert fb.page_text in html and "<table" in html and f"saew-fallback-{fb._fallback_id}" in html
    tabs = dashboard(wb)
    tabs._repr_mimebundle_()
    html = kernel.pop()["text/html"]
    assert "<h4>Features</h4>" in html and tabs.children[0]._fallback_id in html  # the first tab hides it
