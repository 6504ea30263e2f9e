// ConceptSearch view: a debounced query box, plan chips (drop / weight / negate), the plan's filters (removable), a facet
// panel (metadata values with live counts), a hit grid (click: explain a hit; ⤢: the shared item viewer, common.js)
// and a hit's features.

// Styles of this view only, scoped under its root class (the shared sheet is common.css).
const CS_CSS = `
.saew-search { position: relative; }
.saew-search .saew-hit { position: relative; }
.saew-search .saew-cs-enlarge { position: absolute; top: 2px; right: 2px; padding: 0 5px; line-height: 1.4; opacity: 0.85; }
.saew-search .saew-cs-facets { width: 190px; flex: none; max-height: 520px; overflow: auto; }
.saew-search .saew-cs-facet-col { margin-bottom: 6px; }
.saew-search .saew-cs-facet-name { font-weight: 600; margin: 2px 0; overflow-wrap: anywhere; }
.saew-search .saew-cs-facet-value { display: flex; width: 100%; gap: 4px; justify-content: space-between;
  text-align: left; border: none; background: none; padding: 1px 2px; cursor: pointer; }
.saew-search .saew-cs-facet-value:hover { background: var(--jp-layout-color2, #eee); }
.saew-search .saew-cs-facet-value > .saew-grow { min-width: 0; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.saew-search .saew-cs-facet-value.saew-active { font-weight: 600; cursor: default; }
.saew-search .saew-cs-filters { display: flex; flex-wrap: wrap; gap: 4px; margin: 2px 0; }
.saew-search .saew-cs-filters:empty { display: none; }
.saew-search .saew-cs-filter { background: var(--jp-layout-color2, #eef3fb); }
`;
const DEBOUNCE_MS = 40;  // stale answers are ignored (query_seq / answered_seq) and sending is latest-only, so a short pause is enough
const STUCK_MS = 3000;
const FACET_SHOWN = 8;   // values of a facet listed before "+N more"

// The hits' thumbnails as object URLs, one per row: made only when the thumbs trait is a new array (a hit's row keeps
// its URL across queries), and revoked only once the grid no longer shows the row (and the viewer does not either),
// oldest first, when more than `cap` are held. `take` runs before the grid is rebuilt, `trim` after it replaced the old.
function thumbUrls(cap = 64) {
  const byRow = new Map();  // row -> url, least recently shown first
  let views = null, hitsSeen = null, urls = [];
  return {
    take(hits, thumbs) {
      if (thumbs === views && hits === hitsSeen) return urls;
      views = thumbs; hitsSeen = hits;
      urls = hits.map((hit, i) => {
        let u = byRow.get(hit.row);
        const v = (thumbs || [])[i];
        if (u === undefined && v && v.byteLength) u = URL.createObjectURL(new Blob([v], { type: "image/png" }));
        if (u === undefined) return "";
        byRow.delete(hit.row); byRow.set(hit.row, u);
        return u;
      });
      return urls;
    },
    trim(inUse) {
      for (const [row, u] of byRow) {
        if (byRow.size <= Math.max(cap, 2 * urls.length)) break;
        if (inUse.has(row)) continue;
        URL.revokeObjectURL(u);
        byRow.delete(row);
      }
    },
    clear() { for (const u of byRow.values()) URL.revokeObjectURL(u); byRow.clear(); },
  };
}

// The facet panel: per metadata column, its values with how many items the plan matches have each (most first);
// clicking one adds the filter column == value (computed in Python: the facets trait).
function facetPanel(model) {
  const node = h("div", { class: "saew-panel saew-cs-facets", "data-role": "facets" });
  const expanded = new Set();
  function column(col) {
    const vals = col.values.filter((v) => v.count > 0 || v.active);
    if (!vals.length) return null;
    const open = expanded.has(col.column);
    return h("div", { class: "saew-cs-facet-col", "data-column": col.column },
      h("div", { class: "saew-cs-facet-name", text: col.column }),
      ...(open ? vals : vals.slice(0, FACET_SHOWN)).map((v) => h("button", {
        class: "saew-cs-facet-value" + (v.active ? " saew-active" : ""), "data-value": String(v.value), disabled: v.active,
        title: col.column + " = " + v.value + ": " + v.count + " matching items" + (v.active ? " (filtered on)" : ""),
        onclick: () => model.send({ type: "facet", column: col.column, value: v.value }) },
        h("span", { class: "saew-grow", text: String(v.value) }), h("span", { class: "saew-muted", text: String(v.count) }))),
      vals.length > FACET_SHOWN ? h("button", { class: "saew-more", text: open ? "fewer" : "+" + (vals.length - FACET_SHOWN) + " more",
        onclick: () => { open ? expanded.delete(col.column) : expanded.add(col.column); draw(); } }) : null);
  }
  function draw() {
    const cols = (model.get("facets") || []).map(column).filter(Boolean);
    node.replaceChildren(h("h4", { text: "filter by metadata" }),
      ...(cols.length ? cols : [h("div", { class: "saew-muted", text: "no metadata values to filter by" })]));
  }
  return { node, draw };
}

// The plan's filters as chips, each with × (removing one runs the plan again without it).
function filterChips(model, node) {
  return () => node.replaceChildren(...(model.get("filters") || []).map((f, i) => {
    const text = f.column + " " + f.op + " " + f.value;
    return h("span", { class: "saew-chip saew-cs-filter", "data-filter": i, title: "filter: " + text },
      h("span", { text }), h("button", { text: "×", "aria-label": "remove the filter " + text, class: "saew-drop",
        onclick: () => model.send({ type: "unfilter", index: i }) }));
  }));
}

// One chip per OR-group (its strongest member named, the alternatives behind "+N"); actions apply to the group.
function planChips(model, chips, notes) {
  const open = new Set();
  function draw() {
    const groups = new Map();
    for (const c of model.get("chips")) {
      // the same grouping as QueryPlan.groups(): an excluded (or soft) member of an OR-group is a group of its own
      const key = c.group >= 0 ? "g" + c.group + (c.negated ? "-not" : "") + (c.required ? "" : "-soft") : "f" + c.feature;
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(c);
    }
    chips.replaceChildren(...[...groups.entries()].map(([key, members]) => {
      members.sort((a, b) => b.weight - a.weight);
      const top = members[0];
      const feats = members.map((m) => m.feature);
      const w = h("input", { type: "number", step: 0.1, min: 0.1, value: top.weight, title: "weight" });
      w.addEventListener("change", () => model.send({ type: "weight", features: feats, weight: w.value }));
      const cls = "saew-chip" + (top.negated ? " saew-neg" : "") + (top.required ? "" : " saew-soft");
      const more = members.length > 1 ? h("button", { class: "saew-more", text: (open.has(key) ? "−" : "+") + (members.length - 1),
        title: "alternatives (OR): " + members.slice(1).map((m) => "#" + m.feature + " " + m.label).join("; "),
        onclick: () => { open.has(key) ? open.delete(key) : open.add(key); draw(); } }) : null;
      const chip = h("span", { class: cls, "data-feature": top.feature, "data-group": key,
                               title: (top.phrase ? "from “" + top.phrase + "”; " : "") + (top.required ? "required" : "soft") },
        h("span", { class: "saew-fid", text: "#" + top.feature, onclick: () => model.send({ type: "open_feature", feature: top.feature }), style: "cursor:pointer" }),
        h("span", { text: (top.negated ? "NOT " : "") + (top.phrase && members.length > 1 ? top.phrase + ": " : "") + top.label }), more, w,
        h("button", { text: top.negated ? "+" : "¬", title: top.negated ? "require it" : "exclude it", onclick: () => model.send({ type: "negate", features: feats }) }),
        h("button", { text: "×", title: "drop it", class: "saew-drop", onclick: () => model.send({ type: "drop", features: feats }) }));
      if (!open.has(key) || members.length < 2) return chip;
      return h("span", { class: "saew-chipgroup" }, chip, ...members.slice(1).map((m) =>
        h("span", { class: "saew-chip saew-alt" + (m.negated ? " saew-neg" : ""), "data-feature": m.feature },
          h("span", { class: "saew-fid", text: "#" + m.feature }), h("span", { text: m.label }),
          h("span", { class: "saew-muted", text: fmt(m.weight) }),
          h("button", { text: "×", title: "drop this alternative", onclick: () => model.send({ type: "drop", feature: m.feature }) }))));
    }));
    notes.replaceChildren(...model.get("notes").map((n) => h("div", { class: "saew-note", text: n })));
  }
  return { draw, reset: () => open.clear() };
}

// The hit grid: a hit's thumbnail (or caption), rank, score, id and per-concept bars; clicking it selects it, its ⤢
// button (click or Enter) opens the item viewer. Rebuilt only when the hits (or their thumbnails) changed: a selection
// or an answer only marks it; `onDrawn` runs after every draw (the status line, the latency report).
function hitGrid(model, viewer, onDrawn) {
  const node = h("div", { class: "saew-grid", style: "flex:1" });
  const thumbs = thumbUrls();
  let opened = -1;  // the row last sent to the viewer (its URL stays valid while the viewer may show it)
  let drawn = null, drawnThumbs = null, nodes = [];
  const select = (row) => { model.set("selected_row", row); model.save_changes(); };
  const enlarge = (row, url) => { opened = row; viewer.open(row, url); };
  function hitNode(hit, i, url) {
    const bars = hit.concepts.filter((c) => c.value).map((c) =>
      h("div", { title: c.name + ": " + fmt(c.value, 3) },
        h("div", { class: "saew-muted saew-grow", text: c.name }),
        h("div", { class: "saew-bar" + (c.value < 0 ? " saew-neg" : ""), style: "width:" + Math.min(100, Math.abs(c.value) * 100).toFixed(0) + "%" })));
    const hitEl = h("div", { class: "saew-hit", "data-row": hit.row, tabindex: 0, onclick: () => select(hit.row),
                             onkeydown: (e) => { if (e.key === "Enter" && e.target === hitEl) select(hit.row); } },
      h("button", { class: "saew-cs-enlarge", text: "⤢", "aria-label": "enlarge", title: "see it large, with its metadata and concepts",
        onclick: (e) => { e.stopPropagation(); enlarge(hit.row, url); },
        onkeydown: (e) => { if (e.key === "Enter") { e.preventDefault(); e.stopPropagation(); enlarge(hit.row, url); } } }),
      url ? h("img", { src: url, alt: hit.id }) : h("div", { class: "saew-text", text: hit.caption }),
      h("div", { class: "saew-row" }, h("b", { text: "#" + (i + 1) }), h("span", { class: "saew-muted", text: "score " + fmt(hit.score) })),
      h("div", { class: "saew-muted saew-grow", text: hit.id, title: hit.caption }), ...bars);
    return hitEl;
  }
  function draw() {
    const hits = model.get("hits"), views = model.get("thumbs");
    if (hits !== drawn || views !== drawnThumbs) {
      const urls = thumbs.take(hits, views);
      nodes = hits.map((hit, i) => hitNode(hit, i, urls[i]));
      node.replaceChildren(...nodes);
      drawn = hits; drawnThumbs = views;
      thumbs.trim(new Set([...hits.map((x) => x.row), opened, (model.get("item") || {}).row]));  // after the swap
    }
    const sel = model.get("selected_row");
    hits.forEach((hit, i) => { nodes[i].className = "saew-hit" + (hit.row === sel ? " saew-active" : ""); });
    onDrawn();
  }
  return { node, draw, clear: () => thumbs.clear() };
}

// The selected hit's strongest concepts, each addable to the plan.
function hitSide(model) {
  const node = h("div", { class: "saew-panel saew-hitinfo", style: "width:300px;max-height:520px;overflow:auto" });
  function draw() {
    const row = model.get("selected_row");
    if (row < 0) { node.replaceChildren(h("div", { class: "saew-muted", text: "click a hit to see its concepts" })); return; }
    node.replaceChildren(h("h4", { text: "item " + row + ": its strongest concepts" }),
      h("div", { class: "saew-list" }, ...model.get("hit_features").map((f) =>
        h("div", { "data-feature": f.feature },
          h("span", { class: "saew-fid", text: "#" + f.feature, style: "cursor:pointer", onclick: () => model.send({ type: "open_feature", feature: f.feature }) }),
          h("span", { class: "saew-grow", text: f.label || "(no label)", title: f.label }),
          h("span", { class: "saew-muted", text: fmt(f.presence) }),
          f.in_plan ? h("span", { class: "saew-muted", text: "in plan" })
            : h("button", { text: "+", title: "add to the plan", class: "saew-add", onclick: (e) => { e.stopPropagation(); model.send({ type: "add", feature: f.feature }); } })))));
  }
  return { node, draw };
}

function render({ model, el }) {
  let seq = model.get("query_seq");
  let keyTime = null;  // the last keystroke ...
  let awaiting = null;  // ... and the query sent after it (null while the debounce still waits): only its answer counts
  const root = h("div", { class: "saew saew-search", "data-widget": "concept-search" });
  const box = h("input", { type: "search", class: "saew-query", placeholder: "describe what you are looking for, e.g. axial slices with a motion artifact but no bias field", value: model.get("query"), style: "flex:1" });
  const status = h("span", { class: "saew-muted saew-status" });
  const chips = h("div", { class: "saew-chips" });
  const filters = h("div", { class: "saew-cs-filters", "data-role": "filters" });
  const notes = h("div", { class: "saew-notes" });
  const error = h("div", { class: "saew-error" });
  const facets = facetPanel(model);
  const viewer = itemViewer(model, root);
  const side = hitSide(model);
  // once the grid shows the answer to the query sent after the last keystroke: report the keystroke-to-grid latency
  // (an earlier query's answer arriving during the debounce, e.g. the emptied box's, is not it). Checked in a microtask:
  // one answer changes several traits, and "answered_seq" may fire before "hits" has redrawn the grid.
  let checking = false;
  const grid = hitGrid(model, viewer, () => {
    status.textContent = model.get("status");
    if (checking) return;
    checking = true;
    queueMicrotask(() => { checking = false; reportLatency(); });
  });
  function reportLatency() {
    const answered = model.get("answered_seq");
    if (keyTime === null || awaiting === null || answered !== awaiting) return;
    const ms = performance.now() - keyTime;
    keyTime = null; awaiting = null;
    root.dataset.latency = ms.toFixed(1);
    root.dataset.answered = String(answered);
    model.send({ type: "latency", ms });
  }
  // Latest-only sending: a short pause after a keystroke sends the box's text, unless the kernel is still answering an
  // earlier query; then the text waits and goes the moment that answer lands (no queue of stale queries builds up
  // behind a slow one). A query unanswered after STUCK_MS (a kernel error) no longer holds the next one back.
  let timer = null, inFlight = null, inFlightSince = 0, waiting = false;
  const send = () => {
    if (box.value === model.get("query")) {  // the grid already answers this text (the kernel would not answer again)
      waiting = false; inFlight = null; awaiting = model.get("answered_seq");
      reportLatency();
      return;
    }
    seq += 1;
    awaiting = seq; inFlight = seq; inFlightSince = performance.now(); waiting = false;
    model.set("query_seq", seq);
    model.set("query", box.value);
    model.save_changes();
  };
  const busy = () => inFlight !== null && performance.now() - inFlightSince < STUCK_MS;
  box.addEventListener("input", () => {
    keyTime = performance.now();
    awaiting = null;
    clearTimeout(timer);
    timer = setTimeout(() => {
      if (!busy()) { send(); return; }
      waiting = true;
      timer = setTimeout(() => { if (waiting) send(); }, STUCK_MS);  // the earlier query never answered: send anyway
    }, DEBOUNCE_MS);
  });
  model.on("change:answered_seq", () => {
    if (inFlight === null || model.get("answered_seq") < inFlight) return;
    inFlight = null;
    if (waiting) send();
  });
  root.append(h("style", { text: CS_CSS }), h("div", { class: "saew-row" }, box), chips, filters, notes, error, status,
    h("div", { class: "saew-row", style: "align-items:flex-start;flex-wrap:nowrap;margin-top:6px" }, facets.node, grid.node, side.node),
    viewer.node);
  el.append(root);
  const plan = planChips(model, chips, notes);
  const drawFilters = filterChips(model, filters);
  const drawError = () => { error.textContent = model.get("error"); if (model.get("error")) grid.draw(); };
  model.on("change:chips", plan.draw);
  model.on("change:notes", plan.draw);
  model.on("change:filters", drawFilters);
  model.on("change:facets", facets.draw);
  for (const k of ["hits", "thumbs", "answered_seq"]) model.on("change:" + k, grid.draw);
  model.on("change:selected_row", () => { grid.draw(); side.draw(); });
  model.on("change:hit_features", side.draw);
  model.on("change:status", () => { status.textContent = model.get("status"); });
  model.on("change:error", drawError);
  model.on("change:query", () => { plan.reset(); if (document.activeElement !== box) box.value = model.get("query"); });
  plan.draw(); drawFilters(); facets.draw(); grid.draw(); side.draw(); drawError(); viewer.draw();
  return grid.clear;
}
export default { render };
