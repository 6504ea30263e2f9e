// FeatureBrowser view: filters + a paged feature list on the left, the selected feature's card on the right,
// and the shared item viewer (common.js) opened by clicking a thumbnail.

// Styles of this view only, scoped under its root class (the shared sheet is common.css).
const FB_CSS = `
.saew-features { position: relative; }
.saew-features .saew-thumb { flex: 0 0 86px; width: 86px; min-width: 0; overflow: hidden; }
.saew-features .saew-thumb > .saew-grow { flex: none; width: 100%; max-width: 100%; white-space: normal;
  overflow-wrap: anywhere; text-overflow: ellipsis; overflow: hidden; text-align: center; line-height: 1.2;
  display: -webkit-box; -webkit-line-clamp: 2; -webkit-box-orient: vertical; }
.saew-features .saew-fb-label { flex: 1; min-width: 0; white-space: normal; overflow-wrap: anywhere; }
.saew-features .saew-fb-pager { justify-content: space-between; margin-top: 4px; flex-wrap: nowrap; }
.saew-features .saew-fb-facet { max-width: 16em; }
`;

// The facet select: "any metadata value", then each value some feature is enriched for, with how many features of
// the list (filtered by the other filters) carry it; a value none of them carries is disabled (unless chosen).
function facetSelect(model) {
  const node = h("select", { class: "saew-fb-facet", "aria-label": "only features enriched for a metadata value",
                             title: "only features enriched for a metadata value (count: features of the list carrying it)" });
  node.addEventListener("change", () => { model.set("facet", Number(node.value)); model.save_changes(); });
  function draw() {
    const now = model.get("facet");
    node.replaceChildren(h("option", { value: -1, text: "metadata: any value" }),
      ...(model.get("facets") || []).map((f) => h("option", { value: f.term, "data-count": f.count,
        disabled: f.count === 0 && f.term !== now, text: f.column + " = " + f.value + " (" + f.count + ")" })));
    node.value = String(now);
  }
  return { node, draw };
}

// "Nice" tick values 0, step, 2*step ... <= max for a count axis (1, 2 or 5 times a power of ten).
function countTicks(max, wanted = 4) {
  if (max <= 0) return [0];
  const raw = max / wanted;
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = Math.max(1, [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw));
  const ticks = [];
  for (let v = 0; v <= max; v += step) ticks.push(v);
  return ticks;
}

// The activation histogram with a y axis (item counts, ticks and labels) and the x range below.
function axisHistogram(hist, width = 300, height = 80) {
  const ns = "http://www.w3.org/2000/svg";
  const el = (tag, attrs, text) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = String(text);
    return n;
  };
  const left = 34, top = 6;
  const plotW = width - left;
  const svg = el("svg", { width, height: height + top + 14, "data-role": "histogram" });
  const counts = (hist && hist.counts) || [];
  const edges = (hist && hist.edges) || [];
  const ticks = countTicks(Math.max(0, ...counts));
  const max = Math.max(1, ticks[ticks.length - 1], ...counts);
  const y = (c) => top + height - (height * c) / max;
  const axis = el("g", { "data-role": "y-axis" });
  axis.append(el("line", { x1: left, x2: left, y1: top, y2: top + height, stroke: "var(--jp-ui-font-color2, #666)" }));
  for (const t of ticks) {
    axis.append(el("line", { x1: left - 3, x2: left, y1: y(t), y2: y(t), stroke: "var(--jp-ui-font-color2, #666)" }));
    axis.append(el("text", { x: left - 5, y: y(t) + 3, "text-anchor": "end" }, t));
  }
  axis.append(el("text", { x: 0, y: top + 3, "text-anchor": "start" }, "n"));
  svg.append(axis);
  const bw = plotW / Math.max(counts.length, 1);
  counts.forEach((c, i) => svg.append(el("rect", { x: left + i * bw, y: y(c), width: Math.max(bw - 1, 1),
    height: y(0) - y(c), fill: "var(--jp-brand-color1, #1976d2)" })));
  const lo = edges[0], hi = edges[edges.length - 1];
  if (hist && hist.q90 !== undefined && hist.q90 !== null && edges.length > 1) {
    const x = left + (plotW * (hist.q90 - lo)) / (hi - lo || 1);
    svg.append(el("line", { x1: x, x2: x, y1: top, y2: top + height, stroke: "var(--jp-ui-font-color1, #222)", "stroke-dasharray": "3,2" }));
  }
  for (const [x, anchor, v] of [[left, "start", lo], [width, "end", hi]]) {
    if (v !== undefined) svg.append(el("text", { x, y: top + height + 12, "text-anchor": anchor }, fmt(v, 2)));
  }
  return svg;
}

// The paged list: full labels (wrapped, full text in title), "features 101-200 of 512", previous / next.
function featureList(model) {
  const list = h("div", { class: "saew-list", style: "flex:1;min-height:0" });
  const text = h("span", { class: "saew-muted", "data-role": "page-text" });
  const go = (d) => { model.set("page", Math.max(0, model.get("page") + d)); model.save_changes(); };
  const prev = h("button", { text: "‹ previous", "aria-label": "previous page", onclick: () => go(-1) });
  const next = h("button", { text: "next ›", "aria-label": "next page", onclick: () => go(1) });
  const node = h("div", { style: "display:flex;flex-direction:column;height:460px;width:340px;flex:none" },
    list, h("div", { class: "saew-row saew-fb-pager" }, prev, text, next));
  let shownPage = -1;
  function draw() {
    const sel = model.get("selected");
    list.replaceChildren(...model.get("rows").map((r) =>
      h("div", { class: r.feature === sel ? "saew-active" : "", "data-feature": r.feature,
                 onclick: () => model.send({ type: "select", feature: r.feature }) },
        h("span", { class: "saew-fid", text: "#" + r.feature }),
        h("span", { class: "saew-fb-label", text: (r.edited ? "✎ " : "") + (r.label || "(no label)"), title: r.label }),
        h("span", { class: "saew-muted", text: fmt(r.score) + " · " + pct(r.rate) }))));
    const page = model.get("page"), size = model.get("page_size");
    text.textContent = model.get("page_text");
    prev.disabled = page <= 0;
    next.disabled = (page + 1) * size >= model.get("n_matched");
    if (page !== shownPage) { list.scrollTop = 0; shownPage = page; }
  }
  return { node, draw };
}

function render({ model, el }) {
  let urls = [];
  let shownFeature = null;
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
  const list = featureList(model);
  const facet = facetSelect(model);
  const viewer = itemViewer(model, root);
  const card = h("div", { class: "saew-panel", "data-role": "card", style: "flex:1;min-width:360px;height:460px;overflow:auto" });
  const error = h("div", { class: "saew-error" });
  root.append(
    h("style", { text: FB_CSS }),
    h("div", { class: "saew-row" }, search, h("label", { class: "saew-muted", text: "score ≥" }), minScore,
      h("label", { class: "saew-muted", text: "density ≤" }), maxRate, sort, facet.node),
    error,
    h("div", { class: "saew-row", style: "align-items:stretch;margin-top:6px;flex-wrap:nowrap" }, list.node, card),
    viewer.node,
  );
  el.append(root);

  function items(title, rows, images) {
    return h("div", {}, h("h4", { text: title }), h("div", { class: "saew-thumbs" },
      ...rows.map((it, i) => thumb(images[i], fmt(it.activation) + " " + it.caption, {
        "data-row": it.row, tabindex: 0, role: "button",
        onclick: () => viewer.open(it.row, images[i]),
        onkeydown: (e) => { if (e.key === "Enter") viewer.open(it.row, images[i]); } }))));
  }

  function drawCard() {
    const c = model.get("card");
    if (!c || c.feature === undefined) { card.replaceChildren(h("div", { class: "saew-muted", text: "select a feature" })); shownFeature = null; return; }
    urls = imageUrls([...model.get("top_images"), ...model.get("quantile_images")], urls);
    const nTop = model.get("top_images").length;
    const topUrls = c.images ? urls.slice(0, nTop) : [];
    const qUrls = c.images ? urls.slice(nTop) : [];
    const labelInput = h("input", { value: c.label, style: "flex:1", "aria-label": "label" });
    const descInput = h("textarea", { rows: 2, style: "width:100%", "aria-label": "description" });
    descInput.value = c.description || "";
    const scores = c.score_note || Object.entries(c.scores || {}).map(([k, v]) => k + " " + fmt(v)).join(" · ");
    const s = c.stats || {};
    card.replaceChildren(
      h("div", { class: "saew-row" }, h("h4", { class: "saew-card-title", text: "#" + c.feature + "  " + c.label, style: "overflow-wrap:anywhere" })),
      h("div", { class: "saew-muted", text: c.description }),
      (c.coverage || []).length ? h("div", { class: "saew-muted", "data-role": "coverage",
        text: "each term's share of the items where it fires: " + c.coverage.map((t) => t.term + " " + pct(t.share)).join(" · ") }) : h("span", {}),
      (c.unsupported || []).length ? h("div", { class: "saew-muted", "data-role": "unsupported",
        text: "words no evidence supports: " + c.unsupported.join(", ") }) : h("span", {}),
      h("div", { class: "saew-muted", "data-role": "scores", text: (scores ? scores + " · " : "") + "fires on " + pct(s.rate) + " (" + (s.count || 0) + " items) · max " + fmt(s.max) + (c.edited_by ? " · edited by " + c.edited_by + " " + c.edited_at : "") }),
      h("div", { class: "saew-row" },
        h("button", { text: "search with it", onclick: () => model.send({ type: "search", feature: c.feature }) }),
        h("button", { text: "exclude in search", onclick: () => model.send({ type: "search", feature: c.feature, negated: true }) })),
      items("top activations (click to enlarge)", c.top || [], topUrls),
      items("across the activation range", c.quantiles || [], qUrls),
      h("h4", { text: "activation histogram (items per bin; dashed: q90 = presence 1)" }), axisHistogram(c.hist),
      h("h4", { text: "enriched metadata" }),
      (c.enriched || []).length ? h("table", {}, h("tr", {}, ...["term", "where it fires", "all items", "lift"].map((t) => h("th", { text: t }))),
        ...c.enriched.map((e) => h("tr", {}, h("td", { text: e.text }), h("td", { text: pct(e.active_frac) }), h("td", { text: pct(e.base_frac) }), h("td", { text: "×" + fmt(e.lift, 1) }))))
        : h("div", { class: "saew-muted", text: "no enriched metadata term" }),
      h("h4", { text: "siblings" }),
      h("div", { class: "saew-list" }, ...(c.siblings || []).map((sb) =>
        h("div", { "data-feature": sb.feature, onclick: () => model.send({ type: "open_feature", feature: sb.feature }) },
          h("span", { class: "saew-fid", text: "#" + sb.feature }), h("span", { class: "saew-fb-label", text: sb.label || "", title: sb.label || "" }),
          h("span", { class: "saew-muted", text: "jaccard " + fmt(sb.jaccard) + (sb.decoder_cos !== undefined ? " · cos " + fmt(sb.decoder_cos) : "") })))),
      h("h4", { text: "edit the label" }),
      h("div", { class: "saew-row" }, labelInput,
        h("button", { text: "save label", onclick: () => model.send({ type: "edit", label: labelInput.value, description: descInput.value }) })),
      descInput,
    );
    if (c.feature !== shownFeature) { card.scrollTop = 0; shownFeature = c.feature; }  // a new card opens at its top
  }

  const drawError = () => { error.textContent = model.get("error"); };
  for (const name of ["rows", "selected", "page_text", "n_matched"]) model.on("change:" + name, list.draw);
  model.on("change:card", drawCard);
  model.on("change:facets", facet.draw);
  model.on("change:facet", facet.draw);
  model.on("change:error", drawError);
  list.draw(); drawCard(); drawError(); viewer.draw(); facet.draw();
  return () => imageUrls([], urls);
}
export default { render };
