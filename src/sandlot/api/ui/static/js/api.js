// The HTTP API, exactly as the SDK calls it: the key in the Authorization header.
// The key lives in sessionStorage (this tab, until it closes) and never in a URL:
// terminals open with a single-use ticket (POST /ws-tickets).

const KEY = "sandlot.key";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const auth = {
  key: () => sessionStorage.getItem(KEY),
  set: (key) => sessionStorage.setItem(KEY, key),
  clear: () => sessionStorage.removeItem(KEY),
  onLost: () => {},
};

export async function request(method, path, { json, body, headers = {}, signal, raw = false } = {}) {
  const h = { Authorization: `Bearer ${auth.key() || ""}`, ...headers };
  if (json !== undefined) {
    h["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  let r;
  try {
    r = await fetch(path, { method, headers: h, body, signal });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "network", "cannot reach the server: " + e.message);
  }
  if (!r.ok) {
    let err = {};
    try { err = await r.json(); } catch { /* not JSON */ }
    const detail = typeof err.detail === "string" ? err.detail : "";
    const e = new ApiError(r.status, err.code || "", err.message || detail || `${r.status} ${r.statusText}`);
    if (r.status === 401) auth.onLost(e);
    throw e;
  }
  if (raw) return r;
  if (r.status === 204) return null;
  return r.json();
}

export const get = (path, opts) => request("GET", path, opts);
export const post = (path, json, opts = {}) => request("POST", path, { ...opts, json });
export const put = (path, json, opts = {}) => request("PUT", path, { ...opts, json });
export const del = (path, opts) => request("DELETE", path, opts);

export function qs(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === "") continue;
    for (const x of Array.isArray(v) ? v : [v]) q.append(k, x);
  }
  const s = q.toString();
  return s ? "?" + s : "";
}

// Lines of a streamed body (NDJSON, SSE), as they arrive; fetch, because EventSource
// cannot send the Authorization header.
export async function* lines(response) {
  const reader = response.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      yield buf.slice(0, i);
      buf = buf.slice(i + 1);
    }
  }
  if (buf) yield buf;
}

// The events of an NDJSON body (a pull's or a build's progress), parsed, as they arrive.
export async function* ndjson(response) {
  for await (const line of lines(response)) {
    if (line.trim()) yield JSON.parse(line);
  }
}

// Lifecycle events as they happen (GET /events/stream). One stream per browser tab,
// shared by every subscriber and filtered here: browsers allow six HTTP/1.1 connections
// per host across all tabs, and a long-lived stream holds one. It reconnects (resuming
// after the last event seen) until the last subscriber leaves.
const subscribers = new Set();
let streamStop = null;

function openStream() {
  const ctl = new AbortController();
  const stop = () => ctl.abort();
  let after = null;
  (async () => {
    while (!ctl.signal.aborted) {
      try {
        const r = await request("GET", "/events/stream" + qs({ after }), { signal: ctl.signal, raw: true });
        let data = null;
        for await (const line of lines(r)) {
          if (line.startsWith("data: ")) data = line.slice(6);
          else if (line === "" && data) {
            const ev = JSON.parse(data);
            after = ev.event_id;
            for (const s of subscribers) s(ev);
            data = null;
          }
        }
      } catch (e) {
        if (ctl.signal.aborted) return;
        if (e instanceof ApiError && e.status === 401) {
          if (streamStop === stop) streamStop = null; // a new key opens a new stream
          return;
        }
      }
      await new Promise((res) => setTimeout(res, 3000));
    }
  })();
  return stop;
}

export function watchEvents(onEvent, { sandbox_id } = {}) {
  const sub = (ev) => (!sandbox_id || ev.sandbox_id === sandbox_id) && onEvent(ev);
  subscribers.add(sub);
  streamStop ||= openStream();
  return () => {
    subscribers.delete(sub);
    if (!subscribers.size && streamStop) {
      streamStop();
      streamStop = null;
    }
  };
}

export async function ticket() {
  return (await post("/ws-tickets")).ticket;
}

// Save a response's body as a file (the download needs the header, so no plain link).
export async function download(path, name) {
  const r = await request("GET", path, { raw: true });
  const url = URL.createObjectURL(await r.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
