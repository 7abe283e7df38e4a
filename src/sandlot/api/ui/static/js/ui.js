// Small DOM helpers, formatting, charts, dialogs. No framework: views rebuild their part.

// h("div.card#x", {onclick, title}, child, ...): an element; strings become text (never HTML).
export function h(tag, attrs, ...children) {
  const [name, ...rest] = tag.split(/(?=[.#])/);
  const el = document.createElement(name || "div");
  for (const r of rest) {
    if (r[0] === ".") el.classList.add(r.slice(1));
    else el.id = r.slice(1);
  }
  if (attrs && (typeof attrs !== "object" || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k in el && k !== "list" && k !== "form") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
}

export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const loading = (what) => h("div.state.loading", h("span.spinner"), `Loading ${what}…`);
export const empty = (text, ...action) => h("div.state.empty", h("p", text), ...action);
export function failed(err, retry) {
  return h(
    "div.state.error",
    { role: "alert" },
    h("strong", "Something went wrong. "),
    h("span", err.message || String(err)),
    retry ? h("button.btn.small", { onclick: retry }, "Retry") : null,
  );
}

export function badge(state) {
  return h(`span.badge.s-${state}`, state);
}

export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n < 10 && i ? n.toFixed(1) : Math.round(n)} ${u[i]}`;
}

export function ago(ts) {
  const s = Math.max(0, Date.now() / 1000 - ts);
  if (s < 60) return `${Math.floor(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d`;
}

// how long until `ts` (Unix seconds), as ago() says how long since
export const until = (ts) => ago(2 * (Date.now() / 1000) - ts);

export const when = (ts) => new Date(ts * 1000).toLocaleString();

// A line chart as inline SVG: values in [0, max]; `data-last` holds the newest value
// (what a test, or a curious user, reads).
const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

export function chart(values, { max = 100, width = 120, height = 28, cls = "", label = "" } = {}) {
  const el = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: `chart ${cls}`, preserveAspectRatio: "none" });
  el.dataset.count = values.length;
  el.dataset.last = values.length ? values[values.length - 1].toFixed(2) : "";
  if (label) el.append(Object.assign(svg("title", {}), { textContent: label }));
  if (values.length < 2) {
    el.append(svg("line", { x1: 0, y1: height - 1, x2: width, y2: height - 1, class: "axis" }));
    return el;
  }
  const top = Math.max(max, ...values) || 1;
  const step = width / (values.length - 1);
  const pts = values.map((v, i) => `${(i * step).toFixed(1)},${(height - 1 - (v / top) * (height - 3)).toFixed(1)}`);
  el.append(svg("polygon", { points: `0,${height} ${pts.join(" ")} ${width},${height}`, class: "area" }));
  el.append(svg("polyline", { points: pts.join(" "), class: "line" }));
  return el;
}

export function toast(text, kind = "info") {
  const t = h(`div.toast.${kind}`, { role: kind === "error" ? "alert" : "status" }, text);
  document.getElementById("toasts").append(t);
  setTimeout(() => t.remove(), kind === "error" ? 8000 : 4000);
}

// Run an action from a button: disabled while it runs, its error as a toast.
export async function act(button, fn, done) {
  if (button) button.disabled = true;
  try {
    const out = await fn();
    if (done) toast(done, "ok");
    return out;
  } catch (e) {
    toast(e.message || String(e), "error");
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

// A modal dialog; `body(close)` builds its content. Resolves when closed.
export function dialog(title, body) {
  return new Promise((resolve) => {
    const back = h("div.modal-back");
    const close = (value) => {
      back.remove();
      resolve(value);
    };
    back.addEventListener("mousedown", (e) => e.target === back && close());
    back.addEventListener("keydown", (e) => e.key === "Escape" && close());
    back.append(h("div.modal", { role: "dialog", "aria-label": title }, h("h2", title), body(close)));
    document.body.append(back);
    back.querySelector("input, textarea, select, button")?.focus();
  });
}

export function field(label, input, hint) {
  return h("label.field", h("span", label), input, hint ? h("small", hint) : null);
}

// key=value pairs, one per line or comma-separated
export function parsePairs(text) {
  const out = {};
  for (const part of text.split(/[\n,]/)) {
    const s = part.trim();
    if (!s) continue;
    const i = s.indexOf("=");
    if (i <= 0) throw new Error(`"${s}" is not KEY=VALUE`);
    out[s.slice(0, i).trim()] = s.slice(i + 1).trim();
  }
  return out;
}
