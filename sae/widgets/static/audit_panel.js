// FailureExplorer side panel: slices (name, validation), colouring, the lasso selection (failure rate, a paged table
// of its items, concepts), exports and "add selection as slice"; a table thumbnail opens the shared item viewer
// (common.js). Every action is a message or a synced trait; Python does the work.

// Styles of this view only, scoped under its root class (the shared sheet is common.css). The root holds the viewer
// overlay and does not scroll (an overlay in a scrolled box would sit out of sight); its inner box scrolls.
const AP_CSS = `
.saew-audit { position: relative; }
.saew-audit .saew-at-scroll { overflow: auto; }
.saew-audit .saew-at-table { width: 100%; table-layout: fixed; font-size: 11px; }
.saew-audit .saew-at-table td { vertical-align: middle; overflow-wrap: anywhere; padding: 2px 4px; }
.saew-audit .saew-at-table th { font-size: 10px; padding: 1px 4px; }
.saew-audit .saew-at-thumb { width: 48px; height: 48px; display: block; cursor: pointer; border-radius: 2px; overflow: hidden; }
.saew-audit img.saew-at-thumb { object-fit: contain; background: #000; }
.saew-audit div.saew-at-thumb { font-size: 9px; line-height: 1.1; border: 1px solid var(--jp-border-color2, #ddd); padding: 1px; }
.saew-audit .saew-at-fail { color: var(--jp-error-color1, #d32f2f); }
.saew-audit .saew-at-pager { justify-content: space-between; flex-wrap: nowrap; margin: 4px 0; }
.saew-audit .saew-at-feature { cursor: pointer; }
`;

// The selection table: thumbnail (click: the item viewer), id, failing / status, strongest feature; paged by Python.
function selectionTable(model, viewer) {
  let urls = [];
  const body = h("div", { "data-role": "selection-table" });
  const text = h("span", { class: "saew-muted", "data-role": "table-page-text" });
  const go = (d) => { model.set("table_page", Math.max(0, (model.get("table").page || 0) + d)); model.save_changes(); };
  const prev = h("button", { text: "‹ previous", "aria-label": "previous items", onclick: () => go(-1) });
  const next = h("button", { text: "next ›", "aria-label": "next items", onclick: () => go(1) });
  const pager = h("div", { class: "saew-row saew-at-pager" }, prev, text, next);
  const node = h("div", {}, pager, body);
  function cell(it, url) {
    const open = () => viewer.open(it.row, url);
    const props = { class: "saew-at-thumb", "data-row": it.row, tabindex: 0, role: "button", title: "open " + it.id,
                    onclick: open, onkeydown: (e) => { if (e.key === "Enter") open(); } };
    return url ? h("img", { ...props, src: url, alt: it.id }) : h("div", { ...props, text: it.caption || it.id });
  }
  function draw() {
    const t = model.get("table") || {};
    urls = imageUrls(t.images ? model.get("thumbs") : [], urls);
    const rows = t.rows || [];
    node.hidden = !rows.length;
    text.textContent = t.text || "";
    prev.disabled = !(t.page > 0);
    next.disabled = !(t.page + 1 < t.n_pages);
    body.replaceChildren(h("table", { class: "saew-at-table" },
      h("tr", {}, h("th", { text: "item", style: "width:56px" }), h("th", { text: "id", style: "width:32%" }),
        h("th", { text: "status", style: "width:24%" }), h("th", { text: "top feature" })),
      ...rows.map((it, i) => h("tr", { "data-row": it.row },
        h("td", {}, cell(it, urls[i] || "")),
        h("td", { text: it.id, title: it.caption }),
        h("td", { class: it.failed ? "saew-at-fail" : "", text: (it.failed ? "✗ " : "✓ ") + it.status }),
        it.feature >= 0 ? h("td", { class: "saew-at-feature", "data-feature": it.feature, title: it.label,
                                    onclick: () => model.send({ type: "open_feature", feature: it.feature }) },
          h("span", { class: "saew-fid", text: "#" + it.feature + " " }), it.label || "(no label)")
          : h("td", { class: "saew-muted", text: "none fires" })))));
  }
  return { node, draw, release: () => imageUrls([], urls) };
}

function render({ model, el }) {
  const root = h("div", { class: "saew saew-audit", "data-widget": "failure-explorer", style: "width:420px" });
  const scroll = h("div", { class: "saew-at-scroll" });
  const viewer = itemViewer(model, root);
  const table = selectionTable(model, viewer);
  const summary = h("div", { class: "saew-muted" });
  const slices = h("div", { class: "saew-list saew-slices", style: "max-height:180px" });
  const sel = h("div", { class: "saew-selection" });
  const error = h("div", { class: "saew-error" });
  const exportInfo = h("div", { class: "saew-muted saew-export" });
  const colorBy = h("select", { class: "saew-color-by", "aria-label": "colour the map by",
                                onchange: () => model.send({ type: "color", what: colorBy.value }) });
  const sliceName = h("input", { class: "saew-slice-name", "aria-label": "name of the new slice", size: 16 });
  scroll.append(summary, h("h4", { text: "failure slices" }), slices,
    h("div", { class: "saew-row" }, h("label", { text: "colour by" }), colorBy),
    h("div", { class: "saew-row" },
      h("button", { text: "export look-alike queue", onclick: () => model.send({ type: "export" }) }),
      h("button", { text: "export selection (CSV)", onclick: () => model.send({ type: "export_selection" }) }),
      h("button", { text: "clear selection", onclick: () => model.send({ type: "clear" }) })),
    h("div", { class: "saew-row" }, sliceName,
      h("button", { text: "add selection as slice", title: "listed with the slices; not validated (you chose the items)",
                    onclick: () => model.send({ type: "add_selection", name: sliceName.value }) })),
    exportInfo, error, sel);
  root.append(h("style", { text: AP_CSS }), scroll, viewer.node);
  el.append(root);

  function drawSlices() {
    summary.textContent = model.get("summary");
    const active = model.get("selected_slice");
    slices.replaceChildren(...model.get("slices").map((s) =>
      h("div", { class: s.slice === active ? "saew-active" : "", "data-slice": s.slice, title: s.why_not || "validated on held-out items",
                 onclick: () => model.send({ type: "slice", slice: s.slice }) },
        h("span", { class: "saew-fid", text: s.slice }),
        h("span", { class: "saew-grow", text: s.llm_name || s.name }),
        s.kind === "selection" ? h("span", { class: "saew-muted", text: "hand-made" }) : null,
        h("span", { class: "saew-badge" + (s.validated ? "" : " saew-no"), text: s.validated ? "validated" : "not validated" }),
        h("span", { class: "saew-muted", text: pct(s.holdout_failure_rate) + " · ×" + fmt(s.holdout_lift, 1) }))));
  }

  function drawColors() {
    const now = model.get("color");
    const choices = model.get("color_choices");
    const known = choices.some((c) => c.value === now);
    colorBy.replaceChildren(...choices.map((c) => h("option", { value: c.value, text: c.label })),
      known ? null : h("option", { value: now, text: now }));
    colorBy.value = now;
  }

  function concept(c) {
    return h("div", { "data-feature": c.feature },
      h("span", { class: "saew-fid", text: "#" + c.feature, style: "cursor:pointer", onclick: () => model.send({ type: "open_feature", feature: c.feature }) }),
      h("span", { class: "saew-grow", text: c.label || "(no label)", title: c.label }),
      h("span", { class: "saew-muted saew-counts", text: "×" + fmt(c.lift, 1) + " · " + c.n_in_selection + " / " + c.n_overall,
                  title: c.n_in_selection + " items in the selection / " + c.n_overall + " items overall show this concept" }),
      h("button", { text: "+", title: "add to the search plan", onclick: () => model.send({ type: "add_concept", feature: c.feature }) }));
  }

  function drawSelection() {
    const s = model.get("selection");
    if (!s || !s.n) { sel.replaceChildren(h("div", { class: "saew-muted", text: "lasso items on the map (drag) or click a slice" })); return; }
    sel.replaceChildren(
      h("h4", { class: "saew-selection-title", text: s.n + " items selected" }),
      h("div", { text: "failure rate " + pct(s.rate) + " (" + s.n_failed + " failing) vs " + pct(s.base_rate) + " overall" }),
      h("div", { class: "saew-muted", text: "failing items first, then by row; click a thumbnail to see the item" }),
      table.node,
      h("h4", { text: "concepts enriched in the selection" }),
      s.concepts.length ? h("div", { class: "saew-list saew-concepts" },
        h("div", { class: "saew-head" }, h("span", { class: "saew-fid", text: "feature" }), h("span", { class: "saew-grow", text: "label" }),
          h("span", { class: "saew-muted", text: "lift · n in selection / n overall" })),
        ...s.concepts.map(concept))
        : h("div", { class: "saew-muted", text: "no concept is significantly enriched" }));
  }

  model.on("change:slices", drawSlices);
  model.on("change:selected_slice", drawSlices);
  model.on("change:summary", drawSlices);
  model.on("change:selection", drawSelection);
  model.on("change:table", table.draw);
  model.on("change:thumbs", table.draw);
  model.on("change:color_choices", drawColors);
  model.on("change:color", drawColors);
  model.on("change:next_name", () => { sliceName.value = model.get("next_name"); });
  model.on("change:height", () => { scroll.style.maxHeight = model.get("height") + "px"; });
  model.on("change:export_path", () => { exportInfo.textContent = model.get("export_path") ? "written: " + model.get("export_path") : ""; });
  model.on("change:error", () => { error.textContent = model.get("error"); });
  sliceName.value = model.get("next_name");
  scroll.style.maxHeight = model.get("height") + "px";
  drawSlices(); drawColors(); drawSelection(); table.draw(); viewer.draw();
  // the WebGL map cannot read CSS variables: tell Python when JupyterLab's theme is (or turns) dark
  let dark = null;
  const theme = () => {
    const now = document.body.dataset.jpThemeLight === "false";
    if (now !== dark) { dark = now; model.send({ type: "theme", dark }); }
  };
  const watch = new MutationObserver(theme);
  watch.observe(document.body, { attributes: true, attributeFilter: ["data-jp-theme-light"] });
  theme();
  return () => { watch.disconnect(); table.release(); };
}
export default { render };
