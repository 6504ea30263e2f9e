// FailureExplorer side panel: slices (name, validation), the lasso selection (failure rate, items, concepts), export.
function render({ model, el }) {
  let urls = [];
  const root = h("div", { class: "saew saew-audit", "data-widget": "failure-explorer", style: "width:420px;max-height:560px;overflow:auto" });
  const summary = h("div", { class: "saew-muted" });
  const slices = h("div", { class: "saew-list saew-slices", style: "max-height:180px" });
  const sel = h("div", { class: "saew-selection" });
  const error = h("div", { class: "saew-error" });
  const exportInfo = h("span", { class: "saew-muted saew-export" });
  root.append(summary, h("h4", { text: "failure slices" }), slices,
    h("div", { class: "saew-row" },
      h("button", { text: "export look-alike queue", onclick: () => model.send({ type: "export" }) }),
      h("button", { text: "clear selection", onclick: () => model.send({ type: "clear" }) }), exportInfo),
    error, sel);
  el.append(root);

  function drawSlices() {
    summary.textContent = model.get("summary");
    const active = model.get("selected_slice");
    slices.replaceChildren(...model.get("slices").map((s) =>
      h("div", { class: s.slice === active ? "saew-active" : "", "data-slice": s.slice, title: s.why_not || "validated on held-out items",
                 onclick: () => model.send({ type: "slice", slice: s.slice }) },
        h("span", { class: "saew-fid", text: s.slice }),
        h("span", { class: "saew-grow", text: s.llm_name || s.name }),
        h("span", { class: "saew-badge" + (s.validated ? "" : " saew-no"), text: s.validated ? "validated" : "not validated" }),
        h("span", { class: "saew-muted", text: pct(s.holdout_failure_rate) + " · ×" + fmt(s.holdout_lift, 1) }))));
  }

  function drawSelection() {
    const s = model.get("selection");
    urls = imageUrls(model.get("thumbs"), urls);
    if (!s || !s.n) { sel.replaceChildren(h("div", { class: "saew-muted", text: "lasso items on the map (drag) or click a slice" })); return; }
    sel.replaceChildren(
      h("h4", { class: "saew-selection-title", text: s.n + " items selected" }),
      h("div", { text: "failure rate " + pct(s.rate) + " (" + s.n_failed + " failing) vs " + pct(s.base_rate) + " overall" }),
      h("div", { class: "saew-thumbs" }, ...s.items.map((it, i) =>
        thumb(urls[i], (it.failed ? "✗ " : "✓ ") + it.caption, { "data-row": it.row }))),
      h("h4", { text: "concepts enriched in the selection" }),
      s.concepts.length ? h("div", { class: "saew-list" }, ...s.concepts.map((c) =>
        h("div", { "data-feature": c.feature },
          h("span", { class: "saew-fid", text: "#" + c.feature, style: "cursor:pointer", onclick: () => model.send({ type: "open_feature", feature: c.feature }) }),
          h("span", { class: "saew-grow", text: c.label || "(no label)", title: c.label }),
          h("span", { class: "saew-muted", text: "×" + fmt(c.lift, 1) + " · n " + c.n_active }),
          h("button", { text: "+", title: "add to the search plan", onclick: () => model.send({ type: "add_concept", feature: c.feature }) }))))
        : h("div", { class: "saew-muted", text: "no concept is significantly enriched" }));
  }

  model.on("change:slices", drawSlices);
  model.on("change:selected_slice", drawSlices);
  model.on("change:selection", drawSelection);
  model.on("change:export_path", () => { exportInfo.textContent = model.get("export_path") ? "written: " + model.get("export_path") : ""; });
  model.on("change:error", () => { error.textContent = model.get("error"); });
  drawSlices(); drawSelection();
  // the WebGL map cannot read CSS variables: tell Python when JupyterLab's theme is (or turns) dark
  let dark = null;
  const theme = () => {
    const now = document.body.dataset.jpThemeLight === "false";
    if (now !== dark) { dark = now; model.send({ type: "theme", dark }); }
  };
  const watch = new MutationObserver(theme);
  watch.observe(document.body, { attributes: true, attributeFilter: ["data-jp-theme-light"] });
  theme();
  return () => { watch.disconnect(); imageUrls([], urls); };
}
export default { render };
