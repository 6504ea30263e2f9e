// ConceptSearch view: a debounced query box, plan chips (drop / weight / negate), a hit grid and a hit's features.
function render({ model, el }) {
  let urls = [];
  let seq = model.get("query_seq");
  let keyTime = null;
  const root = h("div", { class: "saew saew-search", "data-widget": "concept-search" });
  const box = h("input", { type: "search", class: "saew-query", placeholder: "describe what you are looking for, e.g. axial slices with a motion artifact but no bias field", value: model.get("query"), style: "flex:1" });
  const status = h("span", { class: "saew-muted saew-status" });
  const chips = h("div", { class: "saew-chips" });
  const notes = h("div", { class: "saew-notes" });
  const error = h("div", { class: "saew-error" });
  const grid = h("div", { class: "saew-grid", style: "flex:1" });
  const side = h("div", { class: "saew-panel saew-hitinfo", style: "width:300px;max-height:520px;overflow:auto" });
  let timer = null;
  box.addEventListener("input", () => {
    keyTime = performance.now();
    clearTimeout(timer);
    timer = setTimeout(() => {
      seq += 1;
      model.set("query_seq", seq);
      model.set("query", box.value);
      model.save_changes();
    }, 150);
  });
  root.append(h("div", { class: "saew-row" }, box), chips, notes, error, status,
    h("div", { class: "saew-row", style: "align-items:flex-start;flex-wrap:nowrap;margin-top:6px" }, grid, side));
  el.append(root);

  // One chip per OR-group (its strongest member named, the alternatives behind "+N"); actions apply to the group.
  const open = new Set();
  function drawChips() {
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
        onclick: () => { open.has(key) ? open.delete(key) : open.add(key); drawChips(); } }) : null;
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

  function drawGrid() {
    urls = imageUrls(model.get("thumbs"), urls);
    const sel = model.get("selected_row");
    grid.replaceChildren(...model.get("hits").map((hit, i) => {
      const bars = hit.concepts.filter((c) => c.value).map((c) =>
        h("div", { title: c.name + ": " + fmt(c.value, 3) },
          h("div", { class: "saew-muted saew-grow", text: c.name }),
          h("div", { class: "saew-bar" + (c.value < 0 ? " saew-neg" : ""), style: "width:" + Math.min(100, Math.abs(c.value) * 100).toFixed(0) + "%" })));
      return h("div", { class: "saew-hit" + (hit.row === sel ? " saew-active" : ""), "data-row": hit.row,
                        onclick: () => { model.set("selected_row", hit.row); model.save_changes(); } },
        urls[i] ? h("img", { src: urls[i], alt: hit.id }) : h("div", { class: "saew-text", text: hit.caption }),
        h("div", { class: "saew-row" }, h("b", { text: "#" + (i + 1) }), h("span", { class: "saew-muted", text: "score " + fmt(hit.score) })),
        h("div", { class: "saew-muted saew-grow", text: hit.id, title: hit.caption }), ...bars);
    }));
    status.textContent = model.get("status");
    const answered = model.get("answered_seq");
    if (keyTime !== null && answered === seq) {
      const ms = performance.now() - keyTime;
      keyTime = null;
      root.dataset.latency = ms.toFixed(1);
      root.dataset.answered = String(answered);
      model.send({ type: "latency", ms });
    }
  }

  function drawSide() {
    const row = model.get("selected_row");
    if (row < 0) { side.replaceChildren(h("div", { class: "saew-muted", text: "click a hit to see its concepts" })); return; }
    side.replaceChildren(h("h4", { text: "item " + row + ": its strongest concepts" }),
      h("div", { class: "saew-list" }, ...model.get("hit_features").map((f) =>
        h("div", { "data-feature": f.feature },
          h("span", { class: "saew-fid", text: "#" + f.feature, style: "cursor:pointer", onclick: () => model.send({ type: "open_feature", feature: f.feature }) }),
          h("span", { class: "saew-grow", text: f.label || "(no label)", title: f.label }),
          h("span", { class: "saew-muted", text: fmt(f.presence) }),
          f.in_plan ? h("span", { class: "saew-muted", text: "in plan" })
            : h("button", { text: "+", title: "add to the plan", class: "saew-add", onclick: (e) => { e.stopPropagation(); model.send({ type: "add", feature: f.feature }); } })))));
  }

  const drawError = () => { error.textContent = model.get("error"); if (model.get("error")) drawGrid(); };
  model.on("change:chips", drawChips);
  model.on("change:notes", drawChips);
  model.on("change:hits", drawGrid);
  model.on("change:answered_seq", drawGrid);
  model.on("change:selected_row", () => { drawGrid(); drawSide(); });
  model.on("change:hit_features", drawSide);
  model.on("change:status", () => { status.textContent = model.get("status"); });
  model.on("change:error", drawError);
  model.on("change:query", () => { open.clear(); if (document.activeElement !== box) box.value = model.get("query"); });
  drawChips(); drawGrid(); drawSide(); drawError();
  return () => imageUrls([], urls);
}
export default { render };
