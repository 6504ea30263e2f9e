"""JupyterLab in a real browser (Debian's chromium driven by Playwright): run the quickstart notebook,
type into ConceptSearch, exclude a feature of an OR-group from FeatureBrowser (only it turns NOT), see a
refused query's reason, check FailureExplorer's layout (the map fills the width left of its panel, the
legend covers no point), lasso in it, colour it by a metadata column, export the selection and add it as a
slice, open the item viewer, edit a label with HTML in it, switch to the dark theme, save and reopen twice:
with the widget state saved (the restored views say they are not live) and as JupyterLab's default
settings save it, without widget state (every view's static copy shows). Screenshots and the measured
keystroke-to-grid latency go to ``artifacts/screenshots/``.

Skipped (with the reason) when chromium or Playwright is missing, except under CI (``CI`` set), where
that is a failure. ``SAE_BROWSER_WORKSPACE`` / ``SAE_BROWSER_FULL=1`` run it on the full demo (used
for the committed screenshots); the default is the small demo, built if missing.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("SAE_CHROMIUM", "/usr/bin/chromium")
SHOTS_ROOT = ROOT / "artifacts" / "screenshots"  # demo/ (full demo, committed) or demo-small/ (CI)
XSS = "<img src=x onerror=alert(1)>"
QUERIES = ["sagittal slices with noise artifact", "axial slices with a spike artifact", "coronal slices with ghosting",
           "blurry axial slices", "bias field artifact but not sagittal"]

pytestmark = pytest.mark.slow


def _require_browser():
    why = None
    if not Path(CHROMIUM).exists():
        why = f"no chromium at {CHROMIUM} (apt-get install chromium; setup.sh --dev does it)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            why = "playwright is not installed (./setup.sh --dev)"
    if why and os.environ.get("CI"):
        pytest.fail(why)
    if why:
        pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lab_settings(folder: Path) -> None:
    """User settings: widget state saved with the notebook, every cell rendered (no windowing)."""
    for plugin, settings in {"@jupyter-widgets/jupyterlab-manager/plugin": {"saveState": True},
                             "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
                             "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False}}.items():
        path = folder / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 with a token, serving a copy of the quickstart notebook."""
    _require_browser()
    full = os.environ.get("SAE_BROWSER_FULL") == "1"
    src = Path(os.environ.get("SAE_BROWSER_WORKSPACE", ROOT / "artifacts" / ("demo" if full else "demo-small")))
    if not (src / "store.zarr").exists():
        from sae.cli.demo import ensure_demo

        ensure_demo(src, small=not full)
    base = tmp_path_factory.mktemp("lab")
    ws = base / "ws"
    shutil.copytree(src, ws, ignore=shutil.ignore_patterns("figures"))  # label edits below stay in this copy
    shutil.copy(ROOT / "notebooks" / "01_quickstart.ipynb", base / "01_quickstart.ipynb")
    _lab_settings(base / "settings")
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "SAE_WORKSPACE": str(ws), "SAE_NOTEBOOK_SMALL": "0" if full else "1", "JUPYTER_PLATFORM_DIRS": "1"}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={base}", "--LabApp.expose_app_in_browser=True",
           f"--LabApp.user_settings_dir={base / 'settings'}", f"--LabApp.workspaces_dir={base / 'lab-ws'}",
           "--ServerApp.allow_root=True"]
    log = open(base / "lab.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=base)
    url = f"http://127.0.0.1:{port}"
    _wait_http(f"{url}/api/status?token={token}", proc, base / "lab.log")
    shots = SHOTS_ROOT / ("demo" if full else "demo-small")
    yield {"url": url, "token": token, "root": base, "full": full, "shots": shots, "env": env}
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def _wait_http(url: str, proc, log: Path, timeout: float = 120) -> None:
    import urllib.request

    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"jupyter lab did not answer in {timeout} s:\n{log.read_text()[-3000:]}")


NB_DONE = """() => {
  const nb = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  if (!nb || !nb.content || !nb.sessionContext.session || !nb.sessionContext.session.kernel) return false;
  const cells = nb.content.widgets.filter((c) => c.model.type === 'code');
  const errors = cells.flatMap((c) => c.model.outputs.toJSON().filter((o) => o.output_type === 'error'));
  if (errors.length) return 'error: ' + errors[0].ename + ': ' + errors[0].evalue;
  return cells.every((c) => c.model.executionCount !== null) && nb.sessionContext.session.kernel.status === 'idle';
}"""


def _run_notebook(page, lab) -> None:
    page.goto(f"{lab['url']}/lab/tree/01_quickstart.ipynb?token={lab['token']}")
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget && window.jupyterapp.shell.currentWidget.sessionContext "
                           "&& window.jupyterapp.shell.currentWidget.sessionContext.session "
                           "&& window.jupyterapp.shell.currentWidget.sessionContext.session.kernel "
                           "&& window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'", timeout=120_000)
    # the file browser closed, as for work in a notebook (with it open, the output is 1,068 px wide in this 1,500 px window)
    page.evaluate("() => { const s = window.jupyterapp.shell; if (s.collapseLeft && !s.leftCollapsed) s.collapseLeft(); }")
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    done = page.wait_for_function(NB_DONE, timeout=900_000, polling=1000).json_value()
    assert done is True, done


def _type_queries(page) -> list[float]:
    """Type each query (30 ms per key, like a fast typist); the view records last keystroke -> grid drawn."""
    search = page.locator("[data-widget=concept-search]").first
    latencies = []
    for q in QUERIES:
        latencies.append(_type(page, q, delay=30))
        assert search.locator(".saew-hit").count() > 0 or search.locator(".saew-error").inner_text()
    assert search.locator(".saew-chip").count() > 0
    return latencies


def _lasso(page) -> str:
    """Draw a lasso over the middle of the concept map; Python answers with the selection's summary."""
    box_el = page.locator(".widget-hbox:has([data-widget=failure-explorer]) canvas").first
    box_el.scroll_into_view_if_needed()
    b = box_el.bounding_box()
    # most of the map (its points sit in the middle of a large canvas; a small lasso caught 1 of 262 on the small demo)
    cx, cy, rx, ry = b["x"] + b["width"] / 2, b["y"] + b["height"] / 2, b["width"] * 0.45, b["height"] * 0.42
    page.mouse.move(cx - rx, cy - ry)
    page.mouse.down()
    for x, y in [(cx + rx, cy - ry), (cx + rx, cy + ry), (cx - rx, cy + ry), (cx - rx, cy - ry)]:
        page.mouse.move(x, y, steps=12)
    page.mouse.up()
    title = page.locator("[data-widget=failure-explorer] .saew-selection-title")
    title.wait_for(timeout=60_000)
    return title.inner_text()


EXPLORER = ".widget-hbox:has([data-widget=failure-explorer])"


def _type(page, query: str, delay: int) -> float:
    """Empty ConceptSearch's box and type ``query`` (``delay`` ms per key); the keystroke-to-grid latency the view measured."""
    search = page.locator("[data-widget=concept-search]").first
    box = search.locator("input.saew-query")
    search.evaluate("el => { el.dataset.latency = ''; }")
    box.click()
    box.press("Control+a")
    box.press("Backspace")
    box.press_sequentially(query, delay=delay)
    page.wait_for_function("el => el.dataset.latency !== ''", arg=search.element_handle(), timeout=60_000)
    return float(search.get_attribute("data-latency"))  # type: ignore[arg-type]  # set: waited for above


def _retype(page, query: str) -> None:
    """Type a query quickly and wait until the view has settled (a step before the next one)."""
    _type(page, query, delay=10)
    _settle(page.locator("[data-widget=concept-search]").first)


SETTLE = """(el) => new Promise((done) => {  // resolves once the view has not changed for 500 ms (at most 10 s)
  let timer = null;
  const o = new MutationObserver(() => { clearTimeout(timer); timer = setTimeout(finish, 500); });
  const finish = () => { o.disconnect(); done(true); };
  o.observe(el, {childList: true, subtree: true, attributes: true, characterData: true});
  timer = setTimeout(finish, 500);
  setTimeout(finish, 10000);
})"""


def _settle(locator) -> None:
    """Wait until a view stops redrawing (the full demo's kernel answers a few late messages after the grid)."""
    locator.evaluate(SETTLE)


CHIPS = """el => [...el.querySelectorAll('.saew-chips > .saew-chip, .saew-chips > .saew-chipgroup > .saew-chip:first-child')].map((c) => ({
  feature: Number(c.dataset.feature), group: c.dataset.group, negated: c.classList.contains('saew-neg'),
  more: c.querySelector('.saew-more') ? c.querySelector('.saew-more').textContent : ''}))"""


def _exclude_from_browser(page) -> dict:
    """Open the strongest member of an OR-group in FeatureBrowser (its chip's #id) and press "exclude in search":
    that one feature becomes a NOT chip; the group stays required, led by its next member, one alternative fewer."""
    _retype(page, "axial slices with a spike artifact")
    search = page.locator("[data-widget=concept-search]").first
    before = search.evaluate(CHIPS)
    group = next(c for c in before if c["more"] and not c["negated"])
    search.locator(f".saew-chip[data-feature='{group['feature']}'] .saew-fid").first.click()
    fb = page.locator("[data-widget=feature-browser]")
    page.wait_for_function("([el, f]) => el.querySelector('.saew-card-title') && el.querySelector('.saew-card-title').textContent.startsWith('#' + f + ' ')",
                           arg=[fb.element_handle(), group["feature"]], timeout=30_000)
    fb.get_by_role("button", name="exclude in search").click()
    page.wait_for_function("([el, f]) => !!el.querySelector(`.saew-chip.saew-neg[data-feature='${f}']`)",
                           arg=[search.element_handle(), group["feature"]], timeout=30_000)
    after = search.evaluate(CHIPS)
    negated = [c for c in after if c["negated"] and c["feature"] == group["feature"]]
    rest = [c for c in after if c["group"] == group["group"]]
    assert len(negated) == 1 and rest and not rest[0]["negated"] and rest[0]["feature"] != group["feature"], (group, after)
    assert sum(c["negated"] for c in after) == sum(c["negated"] for c in before) + 1, (before, after)
    return {"excluded": group["feature"], "group_before": group["more"], "group_after": rest[0]["more"]}


def _refusal(page) -> str:
    """A query no label matches: no hits, and the reason stays shown."""
    _retype(page, "qqzx vvkj")
    search = page.locator("[data-widget=concept-search]").first
    assert search.locator(".saew-hit").count() == 0
    text = search.locator(".saew-error").inner_text()
    assert text.startswith("no results: no feature label matches"), text
    _retype(page, "axial slices with a spike artifact")
    return text


def _item_viewer(page, shots: Path) -> dict:
    """Click a thumbnail in FeatureBrowser's card: the viewer shows the item's id and metadata; Escape closes it."""
    fb = page.locator("[data-widget=feature-browser]")
    fb.scroll_into_view_if_needed()
    fb.locator(".saew-thumb").first.click()
    viewer = fb.locator("[data-role=item-viewer]")
    viewer.locator("table").wait_for(timeout=30_000)
    rows = viewer.locator("tr").count()
    fb.screenshot(path=str(shots / "item-viewer-light.png"))
    page.keyboard.press("Escape")
    page.wait_for_function("el => el.querySelector('[data-role=item-viewer]').hidden", arg=fb.element_handle(), timeout=10_000)
    return {"viewer_metadata_rows": rows}


def _map_layout(page) -> dict:
    """The explorer's rendered sizes, read from the DOM: the map canvas, the side panel and the output area."""
    page.evaluate("() => { const s = window.jupyterapp.shell; if (s.collapseLeft && !s.leftCollapsed) s.collapseLeft(); }")
    box = page.locator(EXPLORER).first
    box.scroll_into_view_if_needed()
    box.locator(".legend").first.wait_for(timeout=60_000)
    page.wait_for_timeout(500)
    return box.evaluate("""el => {
      const w = (n) => n.getBoundingClientRect().width;
      const canvas = el.querySelector('canvas');
      return {map_width: w(canvas), map_height: canvas.getBoundingClientRect().height, output_width: w(el.closest('.jp-OutputArea-output')),
              panel_width: w(el.querySelector('[data-widget=failure-explorer]')),
              legend_height: el.querySelector('.legend').getBoundingClientRect().height};
    }""")


def _inked(png: bytes) -> int:
    """Pixels of a screenshot that are not the (white) map background: drawn points."""
    import io

    import numpy as np
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    return int((rgb.min(axis=2) < 245).sum())


def _legend_covers(page) -> tuple[int, int]:
    """(point pixels under the legend, point pixels on the whole map), from a screenshot of the map with the legend
    hidden: the first must be 0, the second shows that the check sees the points at all."""
    import io

    from PIL import Image

    box = page.locator(EXPLORER).first
    legend, canvas = box.locator(".legend").first, box.locator("canvas").first
    lb, cb = legend.bounding_box(), canvas.bounding_box()
    assert lb and cb and cb["x"] <= lb["x"] and lb["x"] + lb["width"] <= cb["x"] + cb["width"] + 1 and cb["y"] <= lb["y"]
    legend.evaluate("e => { e.style.visibility = 'hidden'; }")
    page.wait_for_timeout(300)
    shot = canvas.screenshot()
    legend.evaluate("e => { e.style.visibility = ''; }")
    img = Image.open(io.BytesIO(shot))
    k = img.width / cb["width"]  # device pixels per CSS pixel
    x0, y0 = (lb["x"] - cb["x"]) * k, (lb["y"] - cb["y"]) * k
    out = io.BytesIO()
    img.crop((int(x0), int(y0), int(x0 + lb["width"] * k) + 1, int(y0 + lb["height"] * k) + 1)).save(out, format="PNG")
    return _inked(out.getvalue()), _inked(shot)


def _colour_by_column(page) -> tuple[int, int]:
    """Colour the map by a metadata column from the panel's select box, then back by status; (point pixels under
    its legend, point pixels on the map) while coloured by the column."""
    panel = page.locator("[data-widget=failure-explorer]")
    panel.locator("select.saew-color-by").select_option("artifact")
    page.wait_for_function("() => [...document.querySelectorAll('.legend')].some((e) => e.textContent.includes('artifact'))",
                           timeout=30_000)  # the legend is rebuilt for the new colouring
    page.wait_for_timeout(1500)  # the points move down when the legend grows
    covers = _legend_covers(page)
    panel.locator("select.saew-color-by").select_option("status")
    page.wait_for_function("() => ![...document.querySelectorAll('.legend')].some((e) => e.textContent.includes('artifact'))",
                           timeout=30_000)
    page.wait_for_timeout(1000)
    return covers


def _export_and_add_slice(page, selected: int) -> dict:
    """Export the lasso selection from the panel (the CSV lists exactly the selected items) and add it as a slice."""
    panel = page.locator("[data-widget=failure-explorer]")
    panel.get_by_role("button", name="export selection (CSV)").click()
    page.wait_for_function("el => el.querySelector('.saew-export').textContent.includes('selection-export.csv')",
                           arg=panel.element_handle(), timeout=30_000)
    written = Path(panel.locator(".saew-export").inner_text().removeprefix("written: ").strip())
    lines = written.read_text().splitlines()
    assert lines[0] == "id,row,failing,status" and len(lines) == selected + 1
    panel.locator("input.saew-slice-name").fill("browser lasso")
    panel.get_by_role("button", name="add selection as slice").click()
    added = panel.locator(".saew-slices > div", has_text="browser lasso")
    added.wait_for(timeout=30_000)
    assert "hand-made" in added.inner_text() and "not validated" in added.inner_text() and not panel.locator(".saew-error").inner_text()
    return {"exported_rows": len(lines) - 1, "added_slice": added.inner_text()}


def _edit_label_with_html(page, dialogs: list) -> float:
    """Save a label with HTML in it: shown as text, never parsed; returns the seconds the save took to show."""
    fb = page.locator("[data-widget=feature-browser]")
    fb.scroll_into_view_if_needed()
    first = fb.locator(".saew-list > div").first
    feature = first.get_attribute("data-feature")
    first.click()
    page.wait_for_function("([el, f]) => { const t = el.querySelector('.saew-card-title'); return t && t.textContent.startsWith('#' + f + ' '); }",
                           arg=[fb.element_handle(), feature], timeout=60_000)  # its card, not the one open before
    fb.locator("input[aria-label=label]").fill(XSS + " bright rim")
    t0 = time.time()
    fb.get_by_role("button", name="save label").click()
    page.wait_for_function("el => el.querySelector('.saew-card-title').textContent.includes('onerror')", arg=fb.element_handle(), timeout=120_000)
    took = time.time() - t0
    assert XSS in fb.locator(".saew-card-title").inner_text()  # shown as text ...
    assert fb.locator("img[src='x']").count() == 0 and not dialogs  # ... never parsed as HTML
    return round(took, 2)


def _shots(page, theme: str, shots: Path) -> None:
    shots.mkdir(parents=True, exist_ok=True)
    panel = page.locator("[data-widget=failure-explorer]")
    if theme == "light" and panel.locator(".saew-slices > div").count():  # a slice selected: its table shows
        panel.locator(".saew-slices > div").first.click()
        panel.locator(".saew-selection-title").wait_for(timeout=30_000)
        page.wait_for_timeout(500)
    for name, sel in [("feature-browser", "[data-widget=feature-browser]"), ("concept-search", "[data-widget=concept-search]"),
                      ("failure-explorer", ".widget-hbox:has([data-widget=failure-explorer])")]:
        el = page.locator(sel).first
        el.scroll_into_view_if_needed()
        el.evaluate("e => e.querySelectorAll('.saew-panel').forEach((p) => { p.scrollTop = 0; })")
        el.screenshot(path=str(shots / f"{name}-{theme}.png"))


def _on_dialog(dialogs: list):
    """Leaving the page (a reload) is allowed; any other dialog (an alert from injected HTML) is recorded and dismissed."""
    def handle(d) -> None:
        if d.type == "beforeunload":
            d.accept()
            return
        dialogs.append(d.message)
        d.dismiss()
    return handle


def test_quickstart_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1500, "height": 2000})
        dialogs: list = []
        page.on("dialog", _on_dialog(dialogs))
        blob_errors: list = []  # each query used to log ~24 failed loads of revoked thumbnail URLs
        page.on("console", lambda m: blob_errors.append(m.text) if m.type == "error" and "blob:" in m.text else None)
        page.on("requestfailed", lambda r: blob_errors.append(r.url) if r.url.startswith("blob:") else None)
        t0 = time.time()
        _run_notebook(page, lab)
        run_s = time.time() - t0
        latencies = _type_queries(page)
        assert not blob_errors, blob_errors[:5]
        excluded = _exclude_from_browser(page)
        refused = _refusal(page)
        blob_at = {"search": len(blob_errors)}
        layout = _map_layout(page)
        assert layout["map_width"] > 0.6 * layout["output_width"], layout  # the map fills the width left of the panel ...
        assert layout["map_width"] >= layout["output_width"] - layout["panel_width"] - 48, layout  # ... but jscatter's toolbar
        assert layout["map_height"] >= 500 and abs(layout["panel_width"] - 420) <= 2, layout
        under, control = _legend_covers(page)
        assert under == 0 and control > 0, (under, control)  # the legend covers no point ...
        under, control = _colour_by_column(page)
        assert under == 0 and control > 0, (under, control)  # ... coloured by a metadata column either
        selected = _lasso(page)
        assert "items selected" in selected and int(selected.split()[0]) > 0
        explorer = _export_and_add_slice(page, int(selected.split()[0]))
        blob_at["explorer"] = len(blob_errors)
        viewer = _item_viewer(page, lab["shots"])
        label_save_s = _edit_label_with_html(page, dialogs)
        blob_at["browser"] = len(blob_errors)
        _shots(page, "light", lab["shots"])
        page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
        page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'", timeout=30_000)
        page.wait_for_timeout(1000)
        _shots(page, "dark", lab["shots"])
        page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})")
        blob_at["themes"] = len(blob_errors)
        assert not blob_errors, (blob_at, blob_errors[:4])  # no view loads a thumbnail URL it already revoked
        reopened = _save_and_reopen(page, lab)
        browser.close()
    lat = sorted(latencies)
    report = {"queries": QUERIES, "latency_ms": latencies, "p50_ms": lat[len(lat) // 2], "max_ms": lat[-1],
              "notebook_run_s": round(run_s, 1), "lasso": selected, "reopened": reopened, "full_demo": lab["full"],
              "exclude_in_search": excluded, "refusal": refused, **viewer, "label_save_s": label_save_s,
              "blob_url_errors": len(blob_errors), "blob_url_errors_by_step": blob_at, "blob_url_error_examples": blob_errors[:4],
              "map_layout_px": layout, "map_share_of_output": round(layout["map_width"] / layout["output_width"], 3), **explorer}
    (lab["shots"] / "browser-test.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report))


REOPENED = """() => {
  const shown = (n) => !!(n.offsetWidth || n.offsetHeight || n.getClientRects().length);
  const outs = [...document.querySelectorAll('.jp-OutputArea-output')];
  return {copies: [...document.querySelectorAll('.saew-fallback')].filter(shown).length,
          copy_tables: [...document.querySelectorAll('.saew-fallback table')].filter(shown).length,
          not_found: outs.filter((o) => o.textContent.includes('model not found')).length,
          loading: outs.filter((o) => o.textContent.trim() === 'Loading widget...').length,
          dead_hints: [...document.querySelectorAll('[data-role=dead-hint]')].filter((n) => !n.hidden && shown(n)).length,
          live_views: document.querySelectorAll('[data-widget]').length,
          hits: document.querySelectorAll('[data-widget=concept-search] .saew-hit').length};
}"""
VIEWS_SHOWN = 4  # FeatureBrowser, ConceptSearch, FailureExplorer and the SearchResult's live view


def _reload(page, lab, shot: str) -> dict:
    page.evaluate("() => { const w = window.jupyterapp.shell.currentWidget; if (w && w.context) w.context.model.dirty = false; }")
    page.goto(f"{lab['url']}/lab/tree/01_quickstart.ipynb?token={lab['token']}&reset")
    page.wait_for_selector(".jp-Notebook", timeout=60_000)
    page.wait_for_timeout(9000)  # the widget manager restores (or gives up), and a restored view waits 5 s for the kernel
    found = page.evaluate(REOPENED)
    first = page.locator(".saew-fallback:visible, [data-role=dead-hint]:visible").first  # the first view's copy, or its banner
    if first.count():
        first.scroll_into_view_if_needed()
        page.wait_for_timeout(500)
    page.screenshot(path=str(lab["shots"] / shot))
    return found


def _save_and_reopen(page, lab) -> dict:
    """Save, stop the kernel and reload twice. With the widget state saved (this test's setting), the views come
    back and say they are not live; saved as JupyterLab's default settings save it (no widget state), every view's
    output says "model not found" and its static copy shows beside it."""
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    page.wait_for_function("() => !window.jupyterapp.shell.currentWidget.context.model.dirty", timeout=60_000)
    path = lab["root"] / "01_quickstart.ipynb"
    saved = json.loads(path.read_text())
    state = saved["metadata"].get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    assert state, "the widget state was not saved with the notebook"
    copies = [o for c in saved["cells"] for o in c.get("outputs", []) if "saew-fallback" in "".join(o.get("data", {}).get("text/html", ""))]
    assert len(copies) >= VIEWS_SHOWN, f"{len(copies)} static copies saved"
    page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")
    restored = _reload(page, lab, "reopened-saved-state.png")
    assert restored["live_views"] >= VIEWS_SHOWN and restored["dead_hints"] >= VIEWS_SHOWN - 1, restored  # restored, and they say so
    assert restored["copies"] == 0, restored  # a drawn view hides its copy
    page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")
    saved["metadata"].pop("widgets")
    path.write_text(json.dumps(saved))  # what the default settings ("saveState": false) save ...
    subprocess.run([sys.executable, "-m", "jupyter", "trust", str(path)], env=lab["env"], check=True, capture_output=True)  # ... signed
    default = _reload(page, lab, "reopened.png")
    assert default["copies"] >= VIEWS_SHOWN and default["copy_tables"] >= 3, default
    assert default["copies"] >= default["not_found"], default  # every "model not found" has its copy beside it
    return {"saved_state": restored, "default_settings": default}
