// FailureExplorer side panel: slices (name, validation), colouring, the lasso selection (failure rate, items,
// concepts), exports and "add selection as slice". Every action is a message; Python does the work.
function render({ model, el }) {
  let urls = [];
  const root = h("div", { class: "saew saew-audit", "data-widget": "failure-explorer", style: "width:420px;overflow:auto" });
  const summary = h("div", { class: "saew-muted" });
  const slices = h("div", { class: "saew-list saew-slices", style: "max-height:180px" });
  const sel = h("div", { class: "saew-selection" });
  const error = h("div", { class: "saew-error" });
  const exportInfo = h("div", { class: "saew-muted saew-export" });
  const colorBy = h("select", { class: "saew-color-by", "aria-label": "colour the map by",
                                onchange: () => model.send({ type: "color", what: colorBy.value }) });
  const sliceName = h("input", { class: "saew-slice-name", "aria-label": "name of the new slice", size: 16 });
  root.append(summary, h("h4", { text: "failure slices" }), slices,
    h("div", { class: "saew-row" }, h("label", { text: "colour by" }), colorBy),
    h("div", { class: "saew-row" },
      h("button", { text: "export look-alike queue", onclick: () => model.send({ type: "export" }) }),
      h("button", { text: "export selection (CSV)", onclick: () => model.send({ type: "export_selection" }) }),
      h("button", { text: "clear selection", onclick: () => model.send({ type: "clear" }) })),
    h("div", { class: "saew-row" }, sliceName,
      h("button", { text: "add selection as slice", title: "listed with the slices; not validated (you chose the items)",
                    onclick: () => model.send({ type: "add_selection", name: sliceName.value }) })),
    exportInfo, error, sel);
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
    urls = imageUrls(model.get("thumbs"), urls);
    if (!s || !s.n) { sel.replaceChildren(h("div", { class: "saew-muted", text: "lasso items on the map (drag) or click a slice" })); return; }
    sel.replaceChildren(
      h("h4", { class: "saew-selection-title", text: s.n + " items selected" }),
      h("div", { text: "failure rate " + pct(s.rate) + " (" + s.n_failed + " failing) vs " + pct(s.base_rate) + " overall" }),
      h("div", { class: "saew-thumbs" }, ...s.items.map((it, i) =>
        thumb(urls[i], (it.failed ? "✗ " : "✓ ") + it.caption, { "data-row": it.row }))),
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
  model.on("change:color_choices", drawColors);
  model.on("change:color", drawColors);
  model.on("change:next_name", () => { sliceName.value = model.get("next_name"); });
  model.on("change:height", () => { root.style.maxHeight = model.get("height") + "px"; });
  model.on("change:export_path", () => { exportInfo.textContent = model.get("export_path") ? "written: " + model.get("export_path") : ""; });
  model.on("change:error", () => { error.textContent = model.get("error"); });
  sliceName.value = model.get("next_name");
  root.style.maxHeight = model.get("height") + "px";
  drawSlices(); drawColors(); drawSelection();
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
