"""A minimal DOM for running a view's JS under Node (tests of the views without a browser): elements with
attributes, children, listeners and text; ``document``; a no-op ``MutationObserver``."""

FAKE_DOM = r"""
class Node {
  constructor(tag) {
    this.tag = tag; this.children = []; this.attrs = {}; this.listeners = {}; this.text = ""; this.style = {};
    this.scrollTop = 0; this.hidden = false; this.disabled = false; this.value = "";
  }
  setAttribute(k, v) { this.attrs[k] = String(v); if (k === "hidden") this.hidden = true; }
  append(...cs) { for (const c of cs) this.children.push(c instanceof Node ? c : document.createTextNode(String(c))); }
  prepend(...cs) { this.children.unshift(...cs); }
  replaceChildren(...cs) { this.children = []; this.append(...cs); }
  addEventListener(k, f) { (this.listeners[k] = this.listeners[k] || []).push(f); }
  fire(k, e = {}) { for (const f of this.listeners[k] || []) f({ target: this, stopPropagation() {}, preventDefault() {}, ...e }); }
  focus() {}
  set textContent(v) { this.text = String(v); this.children = []; }
  get textContent() { return this.text + this.children.map((c) => c.textContent).join(""); }
  all(pred) { const out = pred(this) ? [this] : []; for (const c of this.children) out.push(...c.all(pred)); return out; }
}
globalThis.Node = Node;
globalThis.document = { createElement: (t) => new Node(t), createElementNS: (_, t) => new Node(t),
  createTextNode: (s) => { const n = new Node("#text"); n.text = s; return n; }, body: { dataset: {} } };
globalThis.MutationObserver = class { observe() {} disconnect() {} };
"""
