// FeatureBrowser view: filters + feature list on the left, the selected feature's card on the right.
function render({ model, el }) {
  let urls = [];
  const root = h("div", { class: "saew saew-features", "data-widget": "feature-browser" });
  const search = h("input", { type: "search", placeholder: "filter labels or #feature", value: model.get("filter_text"), style: "flex:1;min-width:12em" });
  const minScore = h("input", { type: "number", min: 0, max: 1, step: 0.05, value: model.get("min_score"), title: "minimum label score", style: "width:5em" });
  const maxRate = h("input", { type: "number", min: 0, max: 1, step: 0.01, value: model.get("max_rate"), title: "maximum density (share of items)", style: "width:5em" });
  const sort = h("select", {}, ...["score", "rate", "feature", "label"].map((s) => h("option", { value: s, text: "sort: " + s })));
  sort.value = model.get("sort_by");
  let timer = null;
  search.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => { model.set("filter_text", search.value); model.save_changes(); }, 200);
  });
  minScore.addEventListener("change", () => { model.set("min_score", Number(minScore.value) || 0); model.save_changes(); });
  maxRate.addEventListener("change", () => { model.set("max_rate", Number(maxRate.value) || 1); model.save_changes(); });
  sort.addEventListener("change", () => { model.set("sort_by", sort.value); model.save_changes(); });
  const count = h("span", { class: "saew-muted" });
  const list = h("div", { class: "saew-list", style: "height:460px;width:330px" });
  const card = h("div", { class: "saew-panel", style: "flex:1;min-width:360px;height:460px;overflow:auto" });
  const error = h("div", { class: "saew-error" });
  root.append(
    h("div", { class: "saew-row" }, search, h("label", { class: "saew-muted", text: "score ≥" }), minScore,
      h("label", { class: "saew-muted", text: "density ≤" }), maxRate, sort, count),
    error,
    h("div", { class: "saew-row", style: "align-items:stretch;margin-top:6px;flex-wrap:nowrap" }, list, card),
  );
  el.append(root);

  function drawList() {
    const sel = model.get("selected");
    list.replaceChildren(...model.get("rows").map((r) =>
      h("div", { class: r.feature === sel ? "saew-active" : "", "data-feature": r.feature,
                 onclick: () => model.send({ type: "select", feature: r.feature }) },
        h("span", { class: "saew-fid", text: "#" + r.feature }),
        h("span", { class: "saew-grow", text: (r.edited ? "✎ " : "") + (r.label || "(no label)"), title: r.label }),
        h("span", { class: "saew-muted", text: fmt(r.score) + " · " + pct(r.rate) }))));
    count.textContent = model.get("n_matched") + " features" + (model.get("n_matched") > model.get("rows").length ? " (first " + model.get("rows").length + " shown)" : "");
  }

  function items(title, rows, images) {
    return h("div", {}, h("h4", { text: title }), h("div", { class: "saew-thumbs" },
      ...rows.map((it, i) => thumb(images[i], fmt(it.activation) + " " + it.caption, { "data-row": it.row }))));
  }

  function drawCard() {
    const c = model.get("card");
    if (!c || c.feature === undefined) { card.replaceChildren(h("div", { class: "saew-muted", text: "select a feature" })); return; }
    urls = imageUrls([...model.get("top_images"), ...model.get("quantile_images")], urls);
    const nTop = model.get("top_images").length;
    const topUrls = c.images ? urls.slice(0, nTop) : [];
    const qUrls = c.images ? urls.slice(nTop) : [];
    const labelInput = h("input", { value: c.label, style: "flex:1", "aria-label": "label" });
    const descInput = h("textarea", { rows: 2, style: "width:100%", "aria-label": "description" });
    descInput.value = c.description || "";
    const scores = Object.entries(c.scores || {}).map(([k, v]) => k + " " + fmt(v)).join(" · ");
    const s = c.stats || {};
    card.replaceChildren(
      h("div", { class: "saew-row" }, h("h4", { class: "saew-card-title", text: "#" + c.feature + "  " + c.label })),
      h("div", { class: "saew-muted", text: c.description }),
      (c.coverage || []).length ? h("div", { class: "saew-muted", "data-role": "coverage",
        text: "each term's share of the items where it fires: " + c.coverage.map((t) => t.term + " " + pct(t.share)).join(" · ") }) : h("span", {}),
      (c.unsupported || []).length ? h("div", { class: "saew-muted", "data-role": "unsupported",
        text: "words no evidence supports: " + c.unsupported.join(", ") }) : h("span", {}),
      h("div", { class: "saew-muted", text: (scores ? scores + " · " : "") + "fires on " + pct(s.rate) + " (" + (s.count || 0) + " items) · max " + fmt(s.max) + (c.edited_by ? " · edited by " + c.edited_by + " " + c.edited_at : "") }),
      h("div", { class: "saew-row" },
        h("button", { text: "search with it", onclick: () => model.send({ type: "search", feature: c.feature }) }),
        h("button", { text: "exclude in search", onclick: () => model.send({ type: "search", feature: c.feature, negated: true }) })),
      items("top activations", c.top || [], topUrls),
      items("across the activation range", c.quantiles || [], qUrls),
      h("h4", { text: "activation histogram (dashed: q90 = presence 1)" }), histogram(c.hist),
      h("h4", { text: "enriched metadata" }),
      (c.enriched || []).length ? h("table", {}, h("tr", {}, ...["term", "where it fires", "all items", "lift"].map((t) => h("th", { text: t }))),
        ...c.enriched.map((e) => h("tr", {}, h("td", { text: e.text }), h("td", { text: pct(e.active_frac) }), h("td", { text: pct(e.base_frac) }), h("td", { text: "×" + fmt(e.lift, 1) }))))
        : h("div", { class: "saew-muted", text: "no enriched metadata term" }),
      h("h4", { text: "siblings" }),
      h("div", { class: "saew-list" }, ...(c.siblings || []).map((sb) =>
        h("div", { "data-feature": sb.feature, onclick: () => model.send({ type: "open_feature", feature: sb.feature }) },
          h("span", { class: "saew-fid", text: "#" + sb.feature }), h("span", { class: "saew-grow", text: sb.label || "" }),
          h("span", { class: "saew-muted", text: "jaccard " + fmt(sb.jaccard) + (sb.decoder_cos !== undefined ? " · cos " + fmt(sb.decoder_cos) : "") })))),
      h("h4", { text: "edit the label" }),
      h("div", { class: "saew-row" }, labelInput,
        h("button", { text: "save label", onclick: () => model.send({ type: "edit", label: labelInput.value, description: descInput.value }) })),
      descInput,
    );
  }

  const drawError = () => { error.textContent = model.get("error"); };
  model.on("change:rows", drawList);
  model.on("change:selected", drawList);
  model.on("change:card", drawCard);
  model.on("change:error", drawError);
  drawList(); drawCard(); drawError();
  return () => imageUrls([], urls);
}
export default { render };
