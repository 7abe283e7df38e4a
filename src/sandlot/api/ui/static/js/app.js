// The dashboard's shell: sign-in, navigation (hash routes), and the list pages.
import * as api from "./api.js";
import { sandboxPage } from "./sandbox.js";
import { tar } from "./tar.js";
import {
  act, ago, badge, bytes, chart, dialog, empty, failed, field, fill, h, loading, parsePairs, toast, when,
} from "./ui.js";

const app = document.getElementById("app");
const session = { admin: false, nodes: 0, team: "" };
let cleanup = null;

api.auth.onLost = () => {
  api.auth.clear();
  signIn("Your API key is no longer valid: sign in again.");
};

function signIn(message) {
  stop();
  const key = h("input#key", { type: "password", autocomplete: "off", placeholder: "sl_…", required: true });
  const err = h("p.form-error", { role: "alert" }, message || "");
  const form = h(
    "form.signin",
    {
      onsubmit: async (e) => {
        e.preventDefault();
        const btn = form.querySelector("button");
        btn.disabled = true;
        err.textContent = "";
        api.auth.set(key.value.trim());
        try {
          await api.get("/sandboxes?limit=1");
          await start();
        } catch (x) {
          api.auth.clear();
          err.textContent = x.status === 401 ? "That API key is not valid." : x.message;
          btn.disabled = false;
        }
      },
    },
    h("div.logo", h("span.mark", "▣"), " Sandlot"),
    h("p.muted", "Sign in with an API key. It stays in this browser tab only."),
    field("API key", key, "An admin key is in the server's data directory (admin.key)."),
    err,
    h("button.btn.primary", { type: "submit" }, "Sign in"),
  );
  fill(app, h("div.signin-page", form));
  key.focus();
}

async function start() {
  // What this key may see: admin pages (GET /teams answers 403 to a team's key), nodes (a fleet)
  try {
    await api.get("/teams");
    session.admin = true;
  } catch {
    session.admin = false;
  }
  session.nodes = 0;
  if (session.admin) {
    try {
      session.nodes = (await api.get("/nodes")).nodes.length;
    } catch { /* no fleet: the server's own node only */ }
  }
  shell();
  route();
}

const PAGES = [
  ["sandboxes", "Sandboxes", () => true],
  ["templates", "Templates", () => true],
  ["volumes", "Volumes", () => true],
  ["keys", "API keys", () => session.admin],
  ["teams", "Teams", () => session.admin],
  ["nodes", "Nodes", () => session.admin && session.nodes > 1],
];

function shell() {
  const nav = h(
    "nav.side",
    h("a.logo", { href: "#/sandboxes" }, h("span.mark", "▣"), " Sandlot"),
    PAGES.filter(([, , show]) => show()).map(([id, label]) => h("a.nav", { href: `#/${id}`, dataset: { page: id } }, label)),
    h("div.grow"),
    h("p.muted.small", session.admin ? "admin key" : "team key"),
    h(
      "button.btn.ghost#signout",
      {
        onclick: () => {
          sessionStorage.clear(); // the key, and the terminals it opened
          signIn();
        },
      },
      "Sign out",
    ),
  );
  fill(app, h("div.layout", nav, h("main#main")));
}

function stop() {
  if (cleanup) cleanup();
  cleanup = null;
}

function route() {
  if (!api.auth.key()) return signIn();
  const main = document.getElementById("main");
  if (!main) return;
  stop();
  const [first, ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  const page = first || "sandboxes";
  for (const a of document.querySelectorAll("a.nav")) {
    a.classList.toggle("active", a.dataset.page === page);
  }
  const view = { sandboxes: rest.length ? sandboxPage : sandboxesPage, templates, volumes, keys, teams, nodes }[page];
  main.replaceChildren();
  if (!view) {
    main.append(empty("No such page."));
    return;
  }
  cleanup = view(main, decodeURIComponent(rest.join("/")), session) || null;
}

window.addEventListener("hashchange", route);

// ------------------------------------------------------------------ sandboxes

function sandboxesPage(main) {
  const filter = h("input#filter", { placeholder: "metadata: key=value, …", type: "search" });
  const showAll = h("input#all", { type: "checkbox" });
  const body = h("div", loading("sandboxes"));
  const head = h(
    "header.page-head",
    h("h1", "Sandboxes"),
    h("div.tools",
      filter,
      h("label.check", showAll, " ended too"),
      h("button.btn.primary#new-sandbox", { onclick: () => createSandbox() }, "New sandbox"),
    ),
  );
  main.append(head, body);
  const usage = new Map(); // sandbox id -> samples
  let rows = null;
  let more = false; // more than one page: the oldest are not shown
  let timer = 0;

  async function load() {
    let params;
    try {
      params = { metadata: Object.entries(parsePairs(filter.value)).map(([k, v]) => `${k}=${v}`), limit: 200 };
    } catch (e) {
      fill(body, failed(e));
      return;
    }
    if (showAll.checked) params.state = ["running", "paused", "hibernated", "killed"];
    try {
      const page = await api.get("/sandboxes" + api.qs(params));
      rows = page.sandboxes.reverse();
      more = Boolean(page.next_cursor);
      render();
      await metrics();
    } catch (e) {
      if (!rows) fill(body, failed(e, load));
      else toast(e.message, "error");
    }
  }

  async function metrics() {
    const since = Date.now() / 1000 - 600;
    const live = (rows || []).filter((s) => s.state === "running").slice(0, 50);
    await Promise.all(
      live.map(async (s) => {
        try {
          usage.set(s.sandbox_id, (await api.get(`/sandboxes/${s.sandbox_id}/metrics?start=${since}`)).metrics);
        } catch { /* gone meanwhile */ }
      }),
    );
    render();
  }

  function render() {
    if (!rows.length) {
      const msg = filter.value ? "No sandbox matches this filter." : "No sandboxes yet.";
      fill(body, empty(msg, h("button.btn.primary", { onclick: () => createSandbox() }, "Create a sandbox")));
      return;
    }
    const several = session.nodes > 1;
    fill(
      body,
      h(
        "table.grid#sandboxes",
        h("thead", h("tr", ["Sandbox", "State", "Template", "Runtime", several ? "Node" : null, "Age", "CPU", "Memory", ""].filter((x) => x !== null).map((t) => h("th", t)))),
        h(
          "tbody",
          rows.map((s) => {
            const m = usage.get(s.sandbox_id) || [];
            const last = m[m.length - 1];
            return h(
              "tr",
              { dataset: { id: s.sandbox_id, state: s.state } },
              h("td", h("a.mono", { href: `#/sandboxes/${s.sandbox_id}` }, s.sandbox_id),
                Object.keys(s.metadata).length
                  ? h("div.meta", Object.entries(s.metadata).map(([k, v]) => h("span.tag", `${k}=${v}`)))
                  : null),
              h("td", badge(s.state)),
              h("td", s.template),
              h("td", s.runtime),
              several ? h("td", s.node) : null,
              h("td", { title: when(s.created_at) }, ago(s.created_at)),
              h("td.spark", chart(m.map((x) => x.cpu_used_pct), { label: "CPU %" }), h("small", last ? `${last.cpu_used_pct.toFixed(0)}%` : "")),
              h("td.spark", chart(m.map((x) => x.mem_used), { max: last?.mem_total || 1, cls: "mem", label: "memory" }), h("small", last ? bytes(last.mem_used) : "")),
              h("td.actions", s.state === "killed" ? null : h("button.btn.small.danger", {
                title: "Kill",
                onclick: (e) => act(e.target, () => api.del(`/sandboxes/${s.sandbox_id}`), `Killed ${s.sandbox_id}`).then(load),
              }, "Kill")),
            );
          }),
        ),
      ),
      more ? h("p.muted.small", "Showing the first 200 (the oldest): narrow the list with a metadata filter.") : null,
    );
  }

  // at most one reload per half second, however many events or keystrokes come
  let debounce = 0;
  const soon = () => {
    debounce ||= setTimeout(() => {
      debounce = 0;
      load();
    }, 500);
  };
  filter.addEventListener("input", soon);
  showAll.addEventListener("change", load);
  load();
  const unwatch = api.watchEvents(soon);
  timer = setInterval(load, 10000);
  return () => {
    unwatch();
    clearInterval(timer);
    clearTimeout(debounce);
  };
}

async function createSandbox() {
  let templates = [];
  let runtimes = [];
  try {
    const [t, health] = await Promise.all([api.get("/templates"), api.get("/health")]);
    templates = t.templates;
    runtimes = Object.entries(health.runtimes || {}).filter(([, r]) => r.available).map(([name]) => name);
  } catch (e) {
    toast(e.message, "error");
  }
  await dialog("New sandbox", (close) => {
    const tpl = h("select#template", h("option", { value: "" }, "the server's default"),
      templates.map((t) => h("option", { value: t.name }, t.name)));
    const runtime = h("select#runtime", h("option", { value: "" }, "the server's default"), runtimes.map((r) => h("option", r)));
    const cpu = h("input", { type: "number", value: 1, min: 0.1, step: 0.1 });
    const mem = h("input", { type: "number", value: 512, min: 16, step: 16 });
    const timeout = h("input", { type: "number", value: 3600, min: 1 });
    const net = h("select", ["none", "egress", "full"].map((m) => h("option", m)));
    const meta = h("input", { placeholder: "key=value, …" });
    const err = h("p.form-error", { role: "alert" });
    const form = h("form.form", {
      onsubmit: async (e) => {
        e.preventDefault();
        const btn = form.querySelector("button[type=submit]");
        btn.disabled = true;
        err.textContent = "";
        try {
          const body = {
            cpu: Number(cpu.value), memory_mb: Number(mem.value), timeout: Number(timeout.value),
            network: net.value, metadata: parsePairs(meta.value),
          };
          if (tpl.value) body.template = tpl.value;
          if (runtime.value) body.runtime = runtime.value;
          btn.textContent = "Starting…";
          const s = await api.post("/sandboxes", body);
          close(s);
          location.hash = `#/sandboxes/${s.sandbox_id}`;
        } catch (x) {
          err.textContent = x.message;
          btn.disabled = false;
          btn.textContent = "Create";
        }
      },
    },
    h("div.row", field("Template", tpl), field("Runtime", runtime)),
    h("div.row", field("CPU cores", cpu), field("Memory (MiB)", mem), field("Timeout (s)", timeout)),
    h("div.row", field("Network", net), field("Metadata", meta)),
    err,
    h("div.buttons", h("button.btn", { type: "button", onclick: () => close() }, "Cancel"),
      h("button.btn.primary#create", { type: "submit" }, "Create")));
    return form;
  });
}

// ------------------------------------------------------------------ other lists

// A page that is one table, loaded in place, with its states.
function listPage(main, { title, what, load, columns, row, tools = [], emptyText }) {
  const body = h("div", loading(what));
  main.append(h("header.page-head", h("h1", title), h("div.tools", tools)), body);
  async function refresh() {
    try {
      const items = await load();
      if (!items.length) return fill(body, empty(emptyText));
      fill(body, h("table.grid", h("thead", h("tr", columns.map((c) => h("th", c)))), h("tbody", items.map((x) => row(x, refresh)))));
    } catch (e) {
      fill(body, failed(e, refresh));
    }
  }
  refresh();
  return refresh;
}

function templates(main) {
  const refresh = listPage(main, {
    title: "Templates",
    what: "templates",
    load: async () => (await api.get("/templates")).templates,
    columns: ["Name", "Source", "Size", "Layers", "Owner", "Created", ""],
    emptyText: "No templates yet: pull an image, or build one from a Dockerfile.",
    tools: [
      h("button.btn#build-template", { onclick: () => build(() => refresh()) }, "Build template"),
      h("button.btn.primary", { onclick: () => pull().then(() => refresh()) }, "Pull image"),
    ],
    row: (t, again) => h("tr",
      h("td.mono", t.name), h("td.mono.small", t.source), h("td", bytes(t.size)), h("td", t.layers),
      h("td", t.owner || "shared"), h("td", { title: when(t.created_at) }, ago(t.created_at) + " ago"),
      h("td.actions", h("button.btn.small.danger", {
        onclick: (e) => confirm(`Delete template ${t.name}?`) && act(e.target, () => api.del(`/templates/${encodeURIComponent(t.name)}`), "Deleted").then(again),
      }, "Delete"))),
  });
}

// A log panel's line; the panel follows the end unless its reader scrolled up.
function logLine(log, text, cls) {
  const atEnd = log.scrollHeight - log.scrollTop - log.clientHeight < 24;
  log.append(cls ? h(`span.${cls}`, text + "\n") : text + "\n");
  if (atEnd) log.scrollTop = log.scrollHeight;
}

// A pull's or a build's NDJSON stream (POST /images/pull, POST /templates/build) into `log`,
// each progress line as it comes. Resolves with the template made; throws the stream's
// `error` (a failed RUN step's message ends with the end of its output).
async function followTemplate(response, log) {
  for await (const ev of api.ndjson(response)) {
    if (ev.type === "progress") logLine(log, ev.message, /^Step \d+\/\d+ : /.test(ev.message) ? "step" : "");
    else if (ev.type === "template") return ev.template;
    else if (ev.type === "error") throw new api.ApiError(0, ev.code, ev.message);
  }
  throw new Error("the stream ended before a template was made (did the server restart?)");
}

const made = (t) => `${t.name} (${t.layers} layers, ${bytes(t.size)})`;

function pull() {
  return dialog("Pull an image", (close) => {
    const ref = h("input", { placeholder: "registry.example/repo:tag", required: true });
    const name = h("input", { placeholder: "(the reference)" });
    const log = h("pre.log");
    const form = h("form.form", {
      onsubmit: async (e) => {
        e.preventDefault();
        const btn = form.querySelector("button[type=submit]");
        btn.disabled = true;
        log.textContent = "";
        try {
          const body = { ref: ref.value.trim() };
          if (name.value.trim()) body.name = name.value.trim();
          const r = await api.request("POST", "/images/pull", { json: body, raw: true });
          logLine(log, "done: " + made(await followTemplate(r, log)), "ok");
        } catch (x) {
          logLine(log, "error: " + x.message, "err");
        }
        btn.disabled = false;
      },
    }, field("Image reference", ref), field("Template name", name), log,
    h("div.buttons", h("button.btn", { type: "button", onclick: () => close() }, "Close"), h("button.btn.primary", { type: "submit" }, "Pull")));
    return form;
  });
}

const EXAMPLE_DOCKERFILE = "FROM busybox\nRUN echo hello from a build > /hello.txt && cat /hello.txt\n";

// Build a template: the Dockerfile and the chosen files go up as a tar (the build's context),
// the steps' output streams into the log; the dialog stays open to read it, or to build again.
function build(onBuilt) {
  return dialog("Build a template", (close) => {
    const name = h("input#build-name", { required: true, maxLength: 128, placeholder: "my-template", autocomplete: "off" });
    const dockerfile = h("textarea.editor.dockerfile#build-dockerfile", { required: true, spellcheck: false, value: EXAMPLE_DOCKERFILE });
    const files = h("input#build-files", { type: "file", multiple: true });
    const network = h("select#build-network",
      h("option", { value: "full" }, "full (package installs work)"), h("option", { value: "none" }, "none"));
    const log = h("pre.log.build#build-log", { hidden: true, "aria-label": "build log" });
    const state = h("div.build-state#build-state", { role: "status" });
    const setState = (kind, ...children) => {
      state.dataset.state = kind;
      fill(state, ...children);
    };
    const form = h("form.form.wide", {
      onsubmit: async (e) => {
        e.preventDefault();
        const btn = form.querySelector("button[type=submit]");
        const tpl = name.value.trim();
        let context;
        try {
          const chosen = [...files.files];
          if (chosen.some((f) => f.name === "Dockerfile")) {
            throw new Error("a chosen file is named Dockerfile: the text above is the build's Dockerfile");
          }
          context = tar([{ name: "Dockerfile", data: dockerfile.value }, ...chosen.map((f) => ({ name: f.name, data: f }))]);
        } catch (x) {
          setState("failed", h("strong", "Cannot build: "), x.message);
          return;
        }
        btn.disabled = true;
        log.hidden = false;
        log.replaceChildren();
        setState("running", h("span.spinner"), ` Building ${tpl}…`);
        try {
          const r = await api.request("POST", "/templates/build" + api.qs({ name: tpl, network: network.value }), {
            body: context, headers: { "Content-Type": "application/x-tar" }, raw: true,
          });
          const t = await followTemplate(r, log);
          setState("ok", h("strong", "Built "), made(t));
          onBuilt(t);
        } catch (x) {
          setState("failed", h("strong", "Build failed"), h("pre.error-output", x.message));
        } finally {
          btn.disabled = false;
        }
      },
    },
    h("div.row", field("Template name", name), field("RUN steps' network", network)),
    field("Dockerfile", dockerfile),
    field("Files for the build context", files, "COPY and ADD take them by name, beside the Dockerfile."),
    state, log,
    h("div.buttons", h("button.btn", { type: "button", onclick: () => close() }, "Close"),
      h("button.btn.primary#build", { type: "submit" }, "Build")));
    return form;
  });
}

function volumes(main) {
  const refresh = listPage(main, {
    title: "Volumes",
    what: "volumes",
    load: async () => (await api.get("/volumes")).volumes,
    columns: ["Name", "Id", "Size", "Created", ""],
    emptyText: "No volumes. A volume keeps files across sandboxes.",
    tools: [h("button.btn.primary", {
      onclick: () => dialog("New volume", (close) => {
        const name = h("input", { required: true, pattern: "[A-Za-z0-9][A-Za-z0-9._-]*" });
        const size = h("input", { type: "number", value: 1024, min: 16 });
        return h("form.form", {
          onsubmit: async (e) => {
            e.preventDefault();
            if (await act(e.submitter, () => api.post("/volumes", { name: name.value, size_mb: Number(size.value) }), "Volume created")) {
              close();
              refresh();
            }
          },
        }, field("Name", name), field("Size (MiB)", size),
        h("div.buttons", h("button.btn", { type: "button", onclick: () => close() }, "Cancel"), h("button.btn.primary", { type: "submit" }, "Create")));
      }),
    }, "New volume")],
    row: (v, again) => h("tr", h("td", v.name), h("td.mono.small", v.volume_id), h("td", v.size_mb ? `${v.size_mb} MiB` : "–"),
      h("td", ago(v.created_at) + " ago"),
      h("td.actions", h("button.btn.small.danger", {
        onclick: (e) => confirm(`Delete volume ${v.name} and its files?`) && act(e.target, () => api.del(`/volumes/${encodeURIComponent(v.name)}`), "Deleted").then(again),
      }, "Delete"))),
  });
}

function keys(main) {
  const refresh = listPage(main, {
    title: "API keys",
    what: "keys",
    load: async () => (await api.get("/keys")).keys,
    columns: ["Key", "Team", "Name", "Admin", "Created", ""],
    emptyText: "No keys.",
    tools: [h("button.btn.primary", {
      onclick: () => dialog("New API key", (close) => {
        const team = h("input", { required: true, pattern: "[A-Za-z0-9][A-Za-z0-9._-]*" });
        const name = h("input");
        const admin = h("input", { type: "checkbox" });
        const out = h("div");
        const form = h("form.form", {
          onsubmit: async (e) => {
            e.preventDefault();
            const k = await act(e.submitter, () => api.post("/keys", { team: team.value, name: name.value, admin: admin.checked }));
            if (!k) return;
            refresh();
            fill(out, h("p", "The key, shown this once:"), h("pre.secret", k.key));
            form.querySelector("button[type=submit]").remove();
          },
        }, field("Team", team), field("Name", name), h("label.check", admin, " admin (manages keys and teams)"), out,
        h("div.buttons", h("button.btn", { type: "button", onclick: () => close() }, "Close"), h("button.btn.primary", { type: "submit" }, "Create")));
        return form;
      }),
    }, "New key")],
    row: (k, again) => h("tr", { className: k.revoked ? "dim" : "" }, h("td.mono.small", k.key_id), h("td", k.team), h("td", k.name),
      h("td", k.admin ? "yes" : ""), h("td", ago(k.created_at) + " ago"),
      h("td.actions", k.revoked ? "revoked" : h("button.btn.small.danger", {
        onclick: (e) => confirm(`Revoke ${k.key_id}? Clients using it stop working.`) && act(e.target, () => api.del(`/keys/${k.key_id}`), "Revoked").then(again),
      }, "Revoke"))),
  });
}

function teams(main) {
  listPage(main, {
    title: "Teams",
    what: "teams",
    load: async () => (await api.get("/teams")).teams,
    columns: ["Team", "Sandboxes", "Disk", "Lifetime limit", "Checkpoints kept"],
    emptyText: "No teams.",
    row: (t) => h("tr", h("td", t.team),
      h("td", `${t.usage.sandboxes} / ${t.quota.max_sandboxes}`),
      h("td", `${t.usage.disk_mb} / ${t.quota.max_disk_mb} MiB`),
      h("td", t.quota.max_lifetime_s ? `${Math.round(t.quota.max_lifetime_s / 3600)} h` : "no limit"),
      h("td", t.quota.checkpoint_retention_s ? `${Math.round(t.quota.checkpoint_retention_s / 86400)} d` : "forever")),
  });
}

function nodes(main) {
  listPage(main, {
    title: "Nodes",
    what: "nodes",
    load: async () => (await api.get("/nodes")).nodes,
    columns: ["Node", "State", "Address", "Sandboxes", "CPUs", "Memory free", "Disk free", "Runtimes", "Seen"],
    emptyText: "No nodes have joined.",
    row: (n) => h("tr", h("td", n.name), h("td", badge(n.state)), h("td.mono.small", n.address), h("td", n.sandboxes),
      h("td", n.cpus), h("td", bytes(n.memory_available_bytes)), h("td", bytes(n.disk_free_bytes)),
      h("td", n.runtimes.join(", ")), h("td", ago(n.last_seen) + " ago")),
  });
}

if (api.auth.key()) start().catch(() => signIn());
else signIn();
