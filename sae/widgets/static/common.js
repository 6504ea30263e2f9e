// Shared helpers for sae-workbench widgets. Every piece of text goes through textContent: labels,
// ids and metadata are untrusted data and are never parsed as HTML.
function h(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = String(v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "style") node.setAttribute("style", v);
    else node.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// PNG thumbnails arrive as binary buffers (DataView); each becomes an object URL. The previous set is revoked a while
// after the redraw that replaced it, not at once: an <img> still loading one (a lazy image, one of a draw replaced by
// the next trait of the same answer, the item viewer's) would fail ("blob: ... ERR_FILE_NOT_FOUND" in the console).
const REVOKE_AFTER_MS = 30000;
function imageUrls(views, previous) {
  const old = previous || [];
  if (old.length) setTimeout(() => { for (const u of old) URL.revokeObjectURL(u); }, REVOKE_AFTER_MS);
  return (views || []).map((v) => (v && v.byteLength ? URL.createObjectURL(new Blob([v], { type: "image/png" })) : ""));
}

function fmt(x, digits = 2) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  return Number(x).toFixed(digits);
}

function pct(x) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  return (100 * x).toFixed(x < 0.01 ? 2 : 1) + "%";
}

function histogram(hist, width = 260, height = 70) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", width); svg.setAttribute("height", height + 14);
  const counts = (hist && hist.counts) || [];
  const edges = (hist && hist.edges) || [];
  const max = Math.max(1, ...counts);
  const bw = width / Math.max(counts.length, 1);
  counts.forEach((c, i) => {
    const r = document.createElementNS(ns, "rect");
    const bh = (height * c) / max;
    r.setAttribute("x", i * bw); r.setAttribute("y", height - bh);
    r.setAttribute("width", Math.max(bw - 1, 1)); r.setAttribute("height", bh);
    r.setAttribute("fill", "var(--jp-brand-color1, #1976d2)");
    svg.append(r);
  });
  if (hist && hist.q90 !== undefined && edges.length > 1) {
    const x = (width * (hist.q90 - edges[0])) / (edges[edges.length - 1] - edges[0] || 1);
    const l = document.createElementNS(ns, "line");
    l.setAttribute("x1", x); l.setAttribute("x2", x); l.setAttribute("y1", 0); l.setAttribute("y2", height);
    l.setAttribute("stroke", "var(--jp-ui-font-color1, #222)"); l.setAttribute("stroke-dasharray", "3,2");
    svg.append(l);
  }
  for (const [x, anchor, v] of [[0, "start", edges[0]], [width, "end", edges[edges.length - 1]]]) {
    if (v === undefined) continue;
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", x); t.setAttribute("y", height + 11); t.setAttribute("text-anchor", anchor);
    t.textContent = fmt(v, 2);
    svg.append(t);
  }
  return svg;
}

function thumb(url, caption, extra = {}) {
  const body = url ? h("img", { src: url, alt: caption, loading: "lazy" }) : h("div", { class: "saew-text", text: caption });
  return h("div", { class: "saew-thumb", title: caption, ...extra }, body, h("span", { class: "saew-grow", text: caption }));
}

// The item viewer every view shares (an overlay inside the view's root, which must be position: relative): the image
// large (the thumbnail the view already has), the id, every metadata column and the top concepts. The Python side is
// sae.widgets.items.ItemViewing (the synced "item" trait, the "item" message).
function itemViewer(model, root) {
  const overlay = h("div", { class: "saew-viewer", "data-role": "item-viewer", hidden: true, role: "dialog", "aria-modal": "true" });
  let url = "";
  const close = () => {
    overlay.hidden = true;
    if (Object.keys(model.get("item") || {}).length) model.send({ type: "item", row: -1 });
  };
  const closeBtn = h("button", { text: "close ✕", "aria-label": "close the item viewer", onclick: close });
  overlay.addEventListener("click", (e) => { if (e.target === overlay) close(); });
  root.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && !overlay.hidden) { e.stopPropagation(); e.preventDefault(); close(); }
  });
  function draw() {
    const it = model.get("item") || {};
    if (it.row === undefined) { overlay.hidden = true; overlay.replaceChildren(); return; }
    const meta = Object.entries(it.metadata || {});
    overlay.replaceChildren(h("div", { class: "saew-panel saew-viewer-dialog" },
      url ? h("img", { src: url, alt: it.id }) : h("div", { class: "saew-text", text: it.caption || it.id }),
      h("div", { style: "flex:1;min-width:240px" },
        h("div", { class: "saew-row", style: "justify-content:space-between;flex-wrap:nowrap" },
          h("h4", { class: "saew-viewer-id", text: it.id, style: "overflow-wrap:anywhere" }), closeBtn),
        h("div", { class: "saew-muted", text: "row " + it.row }),
        h("h4", { text: "metadata" }),
        meta.length ? h("table", {}, ...meta.map(([k, v]) => h("tr", {}, h("th", { text: k }), h("td", { text: v }))))
          : h("div", { class: "saew-muted", text: "no metadata" }),
        h("h4", { text: "top concepts" }),
        h("div", { class: "saew-list" }, ...(it.concepts || []).map((c) =>
          h("div", { "data-feature": c.feature, onclick: () => model.send({ type: "open_feature", feature: c.feature }) },
            h("span", { class: "saew-fid", text: "#" + c.feature }), h("span", { class: "saew-viewer-label", text: c.label || "(no label)" }),
            h("span", { class: "saew-muted", text: "presence " + fmt(c.presence) })))))));
    overlay.hidden = false;
    closeBtn.focus();
  }
  model.on("change:item", draw);
  return { node: overlay, draw, open: (row, u) => { url = u || ""; model.send({ type: "item", row }); } };
}

// Every view's render runs wrapped (sae.widgets._base.asset): the static copy published beside the view
// (sae.widgets.fallback) is hidden while the live view is drawn, and a view no kernel answers says so.
function live(render) {
  return (ctx) => {
    const cleanup = render(ctx);
    watchLiveness(ctx.model, ctx.el);
    return cleanup;
  };
}

// Hide the output holding the static copy with this token; how many were hidden.
function hideFallback(token) {
  if (!token || typeof document === "undefined" || !document.querySelectorAll) return 0;
  let n = 0;
  for (const node of document.querySelectorAll(".saew-fallback-" + token)) {
    const box = (node.closest && node.closest(".jp-OutputArea-child, .output_area")) || node;
    box.style.display = "none";
    n += 1;
  }
  return n;
}

const DEAD_HINT = "Not live: no answer from the kernel. If this notebook was reopened, this view shows the state it was " +
  "saved with and does nothing; run the cell again to use it. (A kernel busy with another cell answers when it is done.)";

// Ping the kernel: the Python view answers "pong" (View._dispatch). No answer within waitMs shows the banner;
// a late answer (a busy kernel) removes it.
function watchLiveness(model, el, waitMs = 5000) {
  const token = model.get("_fallback_id");
  hideFallback(token);
  for (const ms of [300, 2000]) setTimeout(() => hideFallback(token), ms);  // the copy may be drawn after the view
  const banner = h("div", { class: "saew-dead", role: "status", "data-role": "dead-hint", text: DEAD_HINT });
  banner.hidden = true;
  el.prepend(banner);
  let answered = false;
  model.on("msg:custom", (msg) => {
    if (msg && msg.type === "pong") { answered = true; banner.hidden = true; }
  });
  const timer = setTimeout(() => { if (!answered) banner.hidden = false; }, waitMs);
  try { model.send({ type: "ping" }); } catch (e) { clearTimeout(timer); banner.hidden = false; }
  return banner;
}
