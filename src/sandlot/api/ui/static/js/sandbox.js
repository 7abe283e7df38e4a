// One sandbox: its state and actions, CPU and memory charts, and tabs for its terminal,
// files, processes, network and checkpoints.
import * as api from "./api.js";
import { Terminal } from "../vendor/xterm/xterm.mjs";
import { FitAddon } from "../vendor/xterm/addon-fit.mjs";
import { act, ago, badge, bytes, chart, dialog, empty, failed, field, fill, h, loading, toast, until, when } from "./ui.js";

const TABS = [
  ["terminal", "Terminal"],
  ["files", "Files"],
  ["processes", "Processes"],
  ["network", "Network & ports"],
  ["checkpoints", "Checkpoints"],
  ["activity", "Activity"],
];
//: tabs that work on an ended or paused sandbox too
const ALWAYS = ["checkpoints", "activity"];

export function sandboxPage(main, id) {
  const base = `/sandboxes/${encodeURIComponent(id)}`;
  const actionSlot = h("div.tools");
  const head = h("header.page-head", h("div", h("a.back", { href: "#/sandboxes" }, "← Sandboxes"), h("h1.mono", id)), actionSlot);
  const summary = h("div.summary", loading("the sandbox"));
  const charts = h("div.charts");
  const tabBar = h("div.tabs", { role: "tablist" });
  const panel = h("div.panel");
  main.append(head, summary, charts, tabBar, panel);
  let sbx = null;
  let tab = null;
  let tabStop = null;

  async function refresh() {
    try {
      const was = sbx?.state;
      sbx = await api.get(base);
      renderSummary();
      if (tab && was !== sbx.state) show(tab);  // e.g. paused or killed meanwhile: the tab says so
    } catch (e) {
      if (!sbx) fill(summary, failed(e, refresh));
    }
  }

  function renderSummary() {
    const live = sbx.state === "running" || sbx.state === "paused";
    fill(actionSlot,
      sbx.state === "running" ? h("button.btn#pause", { onclick: (e) => act(e.target, () => api.post(base + "/pause"), "Paused").then(refresh) }, "Pause") : null,
      sbx.state === "paused" || sbx.state === "hibernated" ? h("button.btn#resume", { onclick: (e) => act(e.target, () => api.post(base + "/resume"), "Resumed").then(refresh) }, "Resume") : null,
      sbx.state !== "killed" ? h("button.btn.danger#kill", {
        onclick: (e) => confirm(`Kill ${id}? Its processes and files are gone.`) && act(e.target, () => api.del(base), "Killed").then(refresh),
      }, "Kill") : null,
    );
    fill(summary,
      h("dl.facts",
        fact("State", badge(sbx.state), sbx.exit_reason ? h("small.muted", ` ${sbx.exit_reason}`) : null),
        fact("Template", sbx.template), fact("Runtime", sbx.runtime),
        fact("Limits", `${sbx.cpu} CPU · ${sbx.memory_mb} MiB · ${sbx.disk_mb} MiB disk`),
        fact("Age", h("span#age", { title: when(sbx.created_at) }, ago(sbx.created_at))),
        fact(live ? "Ends in" : "Ended", live ? (sbx.persistent ? "never (persistent)" : until(sbx.ends_at)) : when(sbx.ends_at)),
        fact("Node", sbx.node),
        Object.keys(sbx.metadata).length ? fact("Metadata", Object.entries(sbx.metadata).map(([k, v]) => h("span.tag", `${k}=${v}`))) : null,
      ));
    if (!tab) show("terminal");
  }

  async function metrics() {
    if (!sbx) return; // not found (yet): the summary says why
    const age = summary.querySelector("#age");
    if (age && sbx.state !== "killed") age.textContent = ago(sbx.created_at);
    try {
      const m = (await api.get(`${base}/metrics?start=${Date.now() / 1000 - 900}`)).metrics;
      const last = m[m.length - 1];
      fill(charts,
        h("div.chart-card#cpu-card", h("div.chart-head", h("span", "CPU"), h("strong", last ? `${last.cpu_used_pct.toFixed(1)}%` : "–")),
          chart(m.map((x) => x.cpu_used_pct), { width: 400, height: 80, label: "CPU % of its limit" })),
        h("div.chart-card#mem-card", h("div.chart-head", h("span", "Memory"), h("strong", last ? `${bytes(last.mem_used)} / ${bytes(last.mem_total)}` : "–")),
          chart(m.map((x) => x.mem_used), { width: 400, height: 80, max: last?.mem_total || 1, cls: "mem", label: "memory used" })),
        h("div.chart-card", h("div.chart-head", h("span", "Disk"), h("strong", last ? `${bytes(last.disk_used)} / ${bytes(last.disk_total)}` : "–")),
          h("div.chart-head", h("span", "Network"), h("strong", last ? `↓ ${bytes(last.net_rx_bytes)} ↑ ${bytes(last.net_tx_bytes)}` : "–")),
          h("small.muted", m.length ? `${m.length} samples, every 5 s` : "The first sample comes within seconds.")),
      );
    } catch (e) {
      if (!charts.firstChild) fill(charts, failed(e));
    }
  }

  // The terminal outlives tab switches (its element is moved, not rebuilt): one shell per visit.
  let term = null;
  function show(name) {
    if (tabStop) tabStop();
    tabStop = null;
    tab = name;
    fill(tabBar, TABS.map(([t, label]) => h("button.tab", { role: "tab", "aria-selected": t === name ? "true" : "false", dataset: { tab: t }, onclick: () => show(t) }, label)));
    panel.replaceChildren();
    const live = sbx.state === "running";
    if (!live && term) {
      term.stop();
      term = null;
    }
    if (!live && !ALWAYS.includes(name)) {
      panel.append(empty(sbx.state === "killed" ? "This sandbox has ended." : `This sandbox is ${sbx.state}: resume it first.`));
      return;
    }
    if (name === "terminal") {
      if (!term) {
        const el = h("div");
        term = { el, stop: terminal(el, base, id) };
      }
      panel.append(term.el);
      return;
    }
    tabStop = { files, processes, network, checkpoints, activity }[name](panel, base, id) || null;
  }

  refresh().then(metrics);
  const mt = setInterval(metrics, 5000);
  const rt = setInterval(refresh, 10000);
  const unwatch = api.watchEvents(refresh, { sandbox_id: id });
  return () => {
    clearInterval(mt);
    clearInterval(rt);
    unwatch();
    if (tabStop) tabStop();
    if (term) term.stop();
  };
}

const fact = (k, ...v) => h("div", h("dt", k), h("dd", ...v));

// ------------------------------------------------------------------ terminal

// The shell's pid is kept for this tab's session: coming back to the sandbox reattaches to it.
function terminal(panel, base, id) {
  const saved = `sandlot.pty.${id}`;
  const status = h("span.term-status", "connecting…");
  const again = h("button.btn.small", { hidden: true }, "New terminal");
  const box = h("div.term#terminal");
  panel.append(h("div.term-bar", status, again), box);
  const term = new Terminal({
    fontFamily: "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace",
    fontSize: 13,
    cursorBlink: true,
    theme: { background: "#0f1419", foreground: "#e6e1cf" },
  });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(box);
  fit.fit();
  let ws = null;
  let closed = false;

  async function connect(attach = true) {
    again.hidden = true;
    status.textContent = "connecting…";
    let t;
    try {
      t = await api.ticket();
    } catch (e) {
      status.textContent = e.message;
      again.hidden = false;
      return;
    }
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const pid = attach ? sessionStorage.getItem(saved) : null;
    const query = api.qs({ ticket: t, rows: term.rows, cols: term.cols, pid });
    ws = new WebSocket(`${proto}//${location.host}${base}/pty${query}`);
    let started = false;
    ws.binaryType = "arraybuffer";
    ws.onmessage = (m) => {
      if (typeof m.data !== "string") return term.write(new Uint8Array(m.data));
      const ev = JSON.parse(m.data);
      if (ev.type === "start") {
        started = true;
        sessionStorage.setItem(saved, ev.pid);
        status.textContent = pid ? `reattached · pid ${ev.pid}` : `connected · pid ${ev.pid}`;
        if (pid) ws.send(JSON.stringify({ type: "input", data: "\f" })); // ^L: the shell redraws its prompt
        box.dataset.ready = "1";
        term.focus();
      } else if (ev.type === "exit") {
        sessionStorage.removeItem(saved);
        status.textContent = `exited (${ev.exit_code ?? ev.signal ?? ""})`;
      } else if (ev.type === "error" && !started && pid) {
        sessionStorage.removeItem(saved); // that shell is gone: start a new one
        ws.onclose = null;
        connect(false);
      } else if (ev.type === "error") status.textContent = `error: ${ev.message}`;
    };
    ws.onclose = () => {
      delete box.dataset.ready;
      if (closed) return;
      if (!status.textContent.startsWith("exited") && !status.textContent.startsWith("error")) status.textContent = "disconnected";
      again.hidden = false;
    };
  }
  again.onclick = () => {
    term.reset();
    connect(false);
  };
  term.onData((d) => ws?.readyState === 1 && ws.send(JSON.stringify({ type: "input", data: d })));
  term.onResize(({ rows, cols }) => ws?.readyState === 1 && ws.send(JSON.stringify({ type: "resize", rows, cols })));
  const ro = new ResizeObserver(() => fit.fit());
  ro.observe(box);
  connect();
  return () => {
    closed = true;
    ro.disconnect();
    ws?.close();
    term.dispose();
  };
}

// ------------------------------------------------------------------ files

const EDITABLE = 512 * 1024;

function files(panel, base) {
  let dir = "/";
  const crumbs = h("div.crumbs");
  const upload = h("input#upload.offscreen", { type: "file", multiple: true, tabIndex: -1 });
  const list = h("div");
  panel.append(h("div.files-bar", crumbs, h("div.tools",
    h("button.btn.small", { onclick: () => newFolder() }, "New folder"),
    h("button.btn.small", { onclick: () => edit(null) }, "New file"),
    h("button.btn.small.primary", { onclick: () => upload.click() }, "Upload"), upload)), list);
  const join = (d, n) => (d.endsWith("/") ? d : d + "/") + n;

  async function open(path) {
    dir = path;
    const parts = path.split("/").filter(Boolean);
    fill(crumbs, h("a", { href: "#", onclick: (e) => (e.preventDefault(), open("/")) }, "/"),
      parts.map((p, i) => [h("a", { href: "#", onclick: (e) => (e.preventDefault(), open("/" + parts.slice(0, i + 1).join("/"))) }, p), "/"]));
    fill(list, loading(path));
    try {
      const entries = (await api.get(`${base}/files/list${api.qs({ path })}`)).entries;
      entries.sort((a, b) => (a.type === "dir") === (b.type === "dir") ? a.name.localeCompare(b.name) : a.type === "dir" ? -1 : 1);
      if (!entries.length) return fill(list, empty("This directory is empty. Upload files here."));
      fill(list, h("table.grid.files#files", h("thead", h("tr", ["Name", "Size", "Modified", "Owner", ""].map((t) => h("th", t)))),
        h("tbody", entries.map((e) => h("tr", { dataset: { name: e.name } },
          h("td", e.type === "dir"
            ? h("a.dir", { href: "#", onclick: (x) => (x.preventDefault(), open(e.path)) }, e.name + "/")
            : h("span", e.name, e.type === "symlink" ? h("span.muted", ` → ${e.symlink_target || ""}`) : null)),
          h("td", e.type === "dir" ? "" : bytes(e.size)),
          h("td", { title: when(e.mtime_ms / 1000) }, ago(e.mtime_ms / 1000) + " ago"),
          h("td.small", e.owner || e.uid),
          h("td.actions",
            e.type === "file" ? h("button.btn.small", { onclick: (x) => act(x.target, () => api.download(`${base}/files${api.qs({ path: e.path })}`, e.name)) }, "Download") : null,
            e.type === "file" && e.size <= EDITABLE ? h("button.btn.small", { onclick: () => edit(e) }, "Edit") : null,
            h("button.btn.small.danger", { onclick: (x) => confirm(`Delete ${e.path}?`) && act(x.target, () => api.del(`${base}/files${api.qs({ path: e.path })}`), "Deleted").then(() => open(dir)) }, "Delete")))))));
    } catch (e) {
      fill(list, failed(e, () => open(dir)));
    }
  }

  upload.addEventListener("change", async () => {
    for (const f of upload.files) {
      const ok = await act(null, () => api.request("PUT", `${base}/files${api.qs({ path: join(dir, f.name) })}`, { body: f, headers: { "Content-Type": "application/octet-stream" } }), `Uploaded ${f.name}`);
      if (ok === undefined) break;
    }
    upload.value = "";
    open(dir);
  });

  function newFolder() {
    const name = prompt("New folder's name");
    if (name) act(null, () => api.post(`${base}/files/mkdir`, { path: join(dir, name) })).then(() => open(dir));
  }

  async function edit(entry) {
    let text = "";
    if (entry) {
      try {
        const r = await api.request("GET", `${base}/files${api.qs({ path: entry.path })}`, { raw: true });
        const buf = new Uint8Array(await r.arrayBuffer());
        text = new TextDecoder("utf-8", { fatal: true }).decode(buf);
      } catch (e) {
        return toast(e instanceof TypeError ? `${entry.name} is not UTF-8 text: download it instead.` : e.message, "error");
      }
    }
    await dialog(entry ? `Edit ${entry.path}` : "New file", (close) => {
      const path = h("input", { value: entry ? entry.path : join(dir, ""), required: true });
      const area = h("textarea.editor", { spellcheck: false, value: text });
      return h("form.form.wide", {
        onsubmit: async (e) => {
          e.preventDefault();
          const ok = await act(e.submitter, () => api.request("PUT", `${base}/files${api.qs({ path: path.value })}`, { body: area.value, headers: { "Content-Type": "application/octet-stream" } }), "Saved");
          if (ok !== undefined) {
            close();
            open(dir);
          }
        },
      }, field("Path", path), area,
      h("div.buttons", h("button.btn", { type: "button", onclick: () => close() }, "Cancel"), h("button.btn.primary", { type: "submit" }, "Save")));
    });
  }

  open(dir);
}

// ------------------------------------------------------------------ processes

function processes(panel, base) {
  const list = h("div", loading("processes"));
  panel.append(h("div.files-bar", h("span.muted", "Processes started through the API (commands, terminals) and the template's own."),
    h("button.btn.small", { onclick: () => load() }, "Refresh")), list);
  async function load() {
    try {
      const ps = (await api.get(`${base}/processes`)).processes;
      if (!ps.length) return fill(list, empty("No processes."));
      fill(list, h("table.grid#processes", h("thead", h("tr", ["PID", "Command", "User", "Kind", "Started", "State", ""].map((t) => h("th", t)))),
        h("tbody", ps.map((p) => h("tr",
          h("td.mono", p.pid), h("td.mono.small", p.cmd || p.argv.join(" ")), h("td", p.user), h("td", p.pty ? "terminal" : p.tag || "command"),
          h("td", p.started_at_ms ? ago(p.started_at_ms / 1000) + " ago" : ""),
          h("td", p.running ? badge("running") : `exited ${p.exit?.exit_code ?? ""}`),
          h("td.actions", p.running ? h("button.btn.small.danger", { onclick: (e) => act(e.target, () => api.del(`${base}/processes/${p.pid}`), `Killed ${p.pid}`).then(load) }, "Kill") : null))))));
    } catch (e) {
      fill(list, failed(e, load));
    }
  }
  load();
  const t = setInterval(load, 5000);
  return () => clearInterval(t);
}

// ------------------------------------------------------------------ network

function network(panel, base) {
  const body = h("div", loading("network"));
  panel.append(body);
  const urlFor = (n, port) => {
    let host = n.port_host.replace("{port}", port);
    if (!host.includes(":") && location.port) host += ":" + location.port;
    return `${location.protocol}//${host}/`;
  };
  async function load() {
    try {
      const n = await api.get(`${base}/network`);
      const port = h("input", { type: "number", min: 1, max: 65535, placeholder: "8000" });
      fill(body,
        h("dl.facts",
          fact("Mode", n.mode), fact("Address", n.address || "–"),
          fact("Allowed", n.allow.length ? n.allow.join(", ") : "–"), fact("Denied", n.deny.length ? n.deny.join(", ") : "–"),
          fact("Egress limit", n.egress_bytes_per_s ? `${bytes(n.egress_bytes_per_s)}/s` : "none"),
          fact("Max connections", n.max_connections)),
        h("button.btn.small.spaced#edit-network", { onclick: () => editPolicy(n) }, "Edit policy"),
        h("h3", "Ports"),
        h("p.muted", "Any port a process listens on is reachable at its URL with the header X-Sandlot-Access-Token; a public port needs no token."),
        h("p", "Access token: ", h("code.secret", n.access_token)),
        n.public_ports.length
          ? h("table.grid#ports", h("thead", h("tr", h("th", "Public port"), h("th", "URL"), h("th", ""))),
            h("tbody", n.public_ports.map((p) => h("tr", h("td", p), h("td", h("a", { href: urlFor(n, p), target: "_blank", rel: "noopener" }, urlFor(n, p))),
              h("td.actions", h("button.btn.small", { onclick: (e) => act(e.target, () => api.del(`${base}/public-ports/${p}`), "Made private").then(load) }, "Make private"))))))
          : empty("No public ports."),
        h("form.inline", {
          onsubmit: async (e) => {
            e.preventDefault();
            await act(e.submitter, () => api.put(`${base}/public-ports/${Number(port.value)}`), `Port ${port.value} is public`);
            load();
          },
        }, port, h("button.btn.small.primary", { type: "submit" }, "Make public")),
        h("p.muted.small", `Private port URL pattern: ${urlFor(n, "{port}")}`));
    } catch (e) {
      fill(body, failed(e, load));
    }
  }
  function editPolicy(n) {
    return dialog("Network policy", (close) => {
      const mode = h("select", ["none", "egress", "full"].map((m) => h("option", { selected: m === n.mode }, m)));
      const allow = h("textarea", { rows: 4, value: n.allow.join("\n"), placeholder: "pypi.org\n10.0.0.0/8" });
      const deny = h("textarea", { rows: 3, value: n.deny.join("\n") });
      const rate = h("input", { type: "number", min: 1, value: n.egress_bytes_per_s ? Math.round(n.egress_bytes_per_s / 1024) : "" });
      const conns = h("input", { type: "number", min: 1, value: n.max_connections });
      const lines = (t) => t.value.split(/[\s,]+/).filter(Boolean);
      return h("form.form", {
        onsubmit: async (e) => {
          e.preventDefault();
          const body = { mode: mode.value, allow: lines(allow), deny: lines(deny), max_connections: Number(conns.value) };
          if (rate.value) body.egress_bytes_per_s = Number(rate.value) * 1024;
          if (await act(e.submitter, () => api.put(`${base}/network`, body), "Policy applied")) {
            close();
            load();
          }
        },
      },
      h("p.muted", "egress: only what Allowed names. full: anything but Denied and the host's own networks. It applies at once."),
      field("Mode", mode), field("Allowed (host names or CIDRs, one a line)", allow), field("Denied", deny),
      h("div.row", field("Egress limit (KiB/s)", rate, "empty: none"), field("Max connections", conns)),
      h("div.buttons", h("button.btn", { type: "button", onclick: () => close() }, "Cancel"), h("button.btn.primary", { type: "submit" }, "Apply")));
    });
  }
  load();
}

// ------------------------------------------------------------------ checkpoints

function checkpoints(panel, base, id) {
  const list = h("div", loading("checkpoints"));
  const name = h("input", { placeholder: "name, e.g. clean", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9._-]*" });
  const memory = h("input", { type: "checkbox" });
  panel.append(h("form.inline", {
    onsubmit: async (e) => {
      e.preventDefault();
      if (await act(e.submitter, () => api.post(`${base}/checkpoints`, { name: name.value, memory: memory.checked }), "Checkpoint taken")) {
        name.value = "";
        load();
      }
    },
  }, name, h("label.check", memory, " with memory"), h("button.btn.small.primary", { type: "submit" }, "Create checkpoint")), list);
  async function load() {
    try {
      const cks = (await api.get(`${base}/checkpoints`)).checkpoints;
      if (!cks.length) return fill(list, empty("No checkpoints. A checkpoint freezes the filesystem: restore it here, or fork new sandboxes from it."));
      fill(list, h("table.grid#checkpoints", h("thead", h("tr", ["Checkpoint", "Name", "Size", "Memory", "Taken", ""].map((t) => h("th", t)))),
        h("tbody", cks.map((c) => h("tr",
          h("td.mono.small", c.checkpoint_id), h("td", c.name), h("td", bytes(c.size_bytes)), h("td", c.memory ? "yes" : ""),
          h("td", { title: when(c.created_at) }, ago(c.created_at) + " ago"),
          h("td.actions",
            h("button.btn.small", { onclick: (e) => confirm(`Roll ${id} back to ${c.name}? Its processes start afresh.`) && act(e.target, () => api.post(`${base}/restore`, { checkpoint_id: c.checkpoint_id }), "Restored") }, "Restore"),
            h("button.btn.small.fork", { onclick: (e) => fork(e.target, c) }, "Fork"),
            h("button.btn.small.danger", { onclick: (e) => confirm(`Delete checkpoint ${c.name}?`) && act(e.target, () => api.del(`/checkpoints/${c.checkpoint_id}`), "Deleted").then(load) }, "Delete")))))));
    } catch (e) {
      fill(list, failed(e, load));
    }
  }
  async function fork(btn, c) {
    const out = await act(btn, () => api.post(`/checkpoints/${c.checkpoint_id}/fork`, { count: 1 }));
    const kid = out?.sandboxes?.[0];
    if (kid) {
      toast(`Forked ${kid.sandbox_id}`, "ok");
      location.hash = `#/sandboxes/${kid.sandbox_id}`;
    }
  }
  load();
}

// ------------------------------------------------------------------ activity

function activity(panel, base, id) {
  const list = h("div", loading("events"));
  panel.append(list);
  let events = [];
  const render = () => {
    if (!events.length) return fill(list, empty("No events yet."));
    fill(list, h("table.grid#events", h("thead", h("tr", ["When", "Event", "Detail"].map((t) => h("th", t)))),
      h("tbody", [...events].reverse().map((e) => h("tr", h("td", { title: when(e.at) }, ago(e.at) + " ago"), h("td", badge(e.type)), h("td.small", e.detail || ""))))));
  };
  (async () => {
    try {
      events = (await api.get("/events" + api.qs({ sandbox_id: id, limit: 1000 }))).events;
      render();
    } catch (e) {
      fill(list, failed(e));
    }
  })();
  return api.watchEvents((e) => {
    if (!events.some((x) => x.event_id === e.event_id)) {
      events.push(e);
      render();
    }
  }, { sandbox_id: id });
}
