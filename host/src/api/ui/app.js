// weft's web UI: workflows, instances, and one instance with its step
// timeline and actions. Plain JavaScript, no build step; it only calls the
// JSON API under /v1, with the server's token when one is set.
"use strict";

const FINAL = ["complete", "errored", "terminated"];
const STATUSES = ["queued", "running", "waiting", "paused", "errored", "terminated", "complete"];
let timer = null;

// ---- helpers -------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    // Styles through the CSSOM: the page's CSP allows no inline style.
    else if (k === "style") for (const [p, x] of Object.entries(v)) el.style.setProperty(p, x);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function badge(status, extra) {
  return h("span", { class: "badge s-" + status, "data-status": status }, extra ? `${status} ${extra}` : status);
}

function when(ms) {
  if (!ms) return "";
  return new Date(ms).toLocaleString();
}

function span(ms) {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 3600000) return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
  if (ms < 86400000) return `${Math.floor(ms / 3600000)} h ${Math.round((ms % 3600000) / 60000)} min`;
  return `${Math.floor(ms / 86400000)} d ${Math.round((ms % 86400000) / 3600000)} h`;
}

function pretty(v) {
  return typeof v === "string" ? v : JSON.stringify(v, null, 2);
}

function toast(text, bad) {
  const t = document.getElementById("toast");
  t.textContent = text;
  t.className = "show" + (bad ? " bad" : "");
  clearTimeout(toast.hide);
  toast.hide = setTimeout(() => (t.className = ""), 3500);
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const headers = { "content-type": "application/json" };
  const token = sessionStorage.getItem("weft-token");
  if (token) headers.authorization = "Bearer " + token;
  let resp;
  try {
    resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, "unreachable", "the weft server does not answer: " + e.message);
  }
  const text = await resp.text();
  let v = null;
  try { v = text ? JSON.parse(text) : null; } catch (_) { v = null; }
  if (!resp.ok) {
    const err = (v && v.error) || {};
    throw new ApiError(resp.status, err.code || "error", err.message || `HTTP ${resp.status}`);
  }
  return v;
}

function every(ms, f) {
  clearInterval(timer);
  timer = setInterval(f, ms);
}

// ---- pages ---------------------------------------------------------------

const main = () => document.getElementById("main");

function show(...nodes) {
  main().replaceChildren(...nodes);
}

function failure(e) {
  if (e.status === 401) return tokenForm("This server needs a token.");
  show(h("h1", {}, "Something went wrong"), h("div", { class: "error-box", id: "page-error" }, e.message));
}

function tokenForm(why) {
  clearInterval(timer);
  const input = h("input", { type: "password", id: "token-input", placeholder: "token", autocomplete: "off" });
  show(
    h("h1", {}, "Sign in"),
    h("div", { class: "card" },
      h("p", {}, why, " Enter the token the server was started with (--token or WEFT_TOKEN). It is kept in this tab only."),
      h("form", {
        class: "form-row",
        onsubmit: (ev) => {
          ev.preventDefault();
          sessionStorage.setItem("weft-token", input.value.trim());
          route();
        },
      }, input, h("button", { type: "submit", id: "token-save" }, "Save"))));
}

async function workflowsPage() {
  const [v, sch] = await Promise.all([api("GET", "/v1/workflows"), api("GET", "/v1/schedules")]);
  const names = v.workflows.map((w) => w.name);
  const rows = v.workflows.map((w) =>
    h("tr", { "data-workflow": w.name },
      h("td", {}, h("a", { href: `#/instances?workflow=${encodeURIComponent(w.name)}` }, w.name)),
      h("td", { class: "hide-narrow" }, h("code", {}, w.version.slice(7, 19)),
        w.versions.length > 1 ? h("span", { class: "muted" }, ` (+${w.versions.length - 1} older in use)`) : ""),
      h("td", {}, Object.keys(w.counts).length === 0 ? h("span", { class: "muted" }, "none yet") :
        STATUSES.filter((s) => w.counts[s]).map((s) =>
          h("a", { href: `#/instances?workflow=${encodeURIComponent(w.name)}&status=${s}` }, badge(s, w.counts[s])))),
      h("td", {}, w.concurrency ?? h("span", { class: "muted" }, "—"))));
  show(
    h("h1", {}, "Workflows"),
    v.workflows.length === 0 ? h("p", { class: "empty" }, "No workflows are deployed. Add [workflows.NAME] to weft.toml.") :
      h("div", { class: "table-wrap" }, h("table", { id: "workflows" },
        h("thead", {}, h("tr", {}, h("th", {}, "Workflow"), h("th", { class: "hide-narrow" }, "Version"),
          h("th", {}, "Instances"), h("th", {}, "Concurrency"))),
        h("tbody", {}, rows))),
    schedulesTable(sch.schedules),
    createForm(names));
}

function schedulesTable(list) {
  if (list.length === 0) return "";
  return h("div", {},
    h("h2", {}, "Schedules"),
    h("div", { class: "table-wrap" }, h("table", { id: "schedules" },
      h("thead", {}, h("tr", {}, h("th", {}, "Workflow"), h("th", {}, "Cron"), h("th", { class: "hide-narrow" }, "Time zone"),
        h("th", { class: "hide-narrow" }, "Missed ticks"), h("th", {}, "Next tick"))),
      h("tbody", {}, list.map((s) => h("tr", {},
        h("td", {}, s.workflow), h("td", {}, h("code", {}, s.cron)), h("td", { class: "hide-narrow" }, s.timezone),
        h("td", { class: "hide-narrow" }, s.missed === "latest" ? "run the latest" : "skip"),
        h("td", {}, s.nextMs ? when(s.nextMs) : "never")))))));
}

function createForm(names) {
  const wf = h("select", { id: "create-workflow" }, names.map((n) => h("option", { value: n }, n)));
  const id = h("input", { id: "create-id", placeholder: "id (optional)" });
  const params = h("textarea", { id: "create-params", spellcheck: "false" }, "{}");
  const out = h("div", { id: "create-result" });
  return h("div", { class: "card" },
    h("h2", {}, "New instance"),
    h("form", {
      onsubmit: async (ev) => {
        ev.preventDefault();
        let p;
        try { p = JSON.parse(params.value || "null"); } catch (e) {
          out.replaceChildren(h("div", { class: "error-box" }, "The params are not JSON: " + e.message));
          return;
        }
        try {
          const body = { params: p };
          if (id.value.trim()) body.id = id.value.trim();
          const r = await api("POST", `/v1/workflows/${encodeURIComponent(wf.value)}/instances`, body);
          location.hash = `#/instance/${encodeURIComponent(r.id)}`;
        } catch (e) {
          out.replaceChildren(h("div", { class: "error-box" }, e.message));
        }
      },
    },
    h("div", { class: "form-row" }, h("label", {}, "Workflow"), wf, id),
    h("label", {}, "Params (JSON)"), params,
    h("div", { class: "form-row" }, h("button", { type: "submit", id: "create-submit", disabled: names.length === 0 }, "Create")),
    out));
}

async function instancesPage(q) {
  const workflow = q.get("workflow") || "";
  const status = q.get("status") || "";
  const prefix = q.get("prefix") || "";
  const cursors = [""];
  let page = 0;
  const wfs = (await api("GET", "/v1/workflows")).workflows.map((w) => w.name);
  const wfSel = h("select", { id: "filter-workflow" }, h("option", { value: "" }, "all workflows"),
    wfs.map((n) => h("option", { value: n, selected: n === workflow }, n)));
  const stSel = h("select", { id: "filter-status" }, h("option", { value: "" }, "any status"),
    STATUSES.map((s) => h("option", { value: s, selected: s === status }, s)));
  const search = h("input", { id: "search-id", placeholder: "id or its start", size: 22, value: prefix });
  const live = h("input", { type: "checkbox", id: "live", checked: true });
  const body = h("div", { id: "instances-body" }, h("p", { class: "empty" }, "Loading…"));
  const newer = h("button", { class: "light", id: "page-newer", type: "button", disabled: true }, "‹ Previous");
  const older = h("button", { class: "light", id: "page-older", type: "button", disabled: true }, "Next ›");
  const refilter = () => {
    const p = new URLSearchParams();
    if (wfSel.value) p.set("workflow", wfSel.value);
    if (stSel.value) p.set("status", stSel.value);
    if (search.value.trim()) p.set("prefix", search.value.trim());
    location.hash = "#/instances" + (p.toString() ? "?" + p : "");
  };
  wfSel.onchange = refilter;
  stSel.onchange = refilter;

  async function load() {
    const p = new URLSearchParams({ limit: "50" });
    if (status) p.set("status", status);
    if (prefix) p.set("prefix", prefix);
    if (cursors[page]) p.set("cursor", cursors[page]);
    const base = workflow ? `/v1/workflows/${encodeURIComponent(workflow)}/instances` : "/v1/instances";
    const v = await api("GET", `${base}?${p}`);
    cursors[page + 1] = v.cursor || null;
    newer.disabled = page === 0;
    older.disabled = !v.cursor;
    if (v.instances.length === 0) {
      body.replaceChildren(h("p", { class: "empty" }, page === 0 ? "No instances match." : "No more instances."));
      return;
    }
    body.replaceChildren(h("div", { class: "table-wrap" }, h("table", { id: "instances" },
      h("thead", {}, h("tr", {}, h("th", {}, "Instance"), h("th", {}, "Workflow"), h("th", {}, "Status"),
        h("th", { class: "hide-narrow" }, "Created"), h("th", { class: "hide-narrow" }, "Updated"))),
      h("tbody", {}, v.instances.map((i) => h("tr", { "data-id": i.id },
        h("td", {}, h("a", { href: `#/instance/${encodeURIComponent(i.id)}` }, i.id)),
        h("td", {}, i.workflow),
        h("td", {}, badge(i.status), i.error ? h("div", { class: "muted" }, i.error.name) : ""),
        h("td", { class: "hide-narrow" }, when(i.createdMs)),
        h("td", { class: "hide-narrow" }, when(i.updatedMs))))))));
  }
  newer.onclick = () => { page = Math.max(0, page - 1); load().catch(failure); };
  older.onclick = () => { if (cursors[page + 1]) { page += 1; load().catch(failure); } };
  show(
    h("h1", {}, "Instances"),
    h("div", { class: "toolbar" }, wfSel, stSel,
      h("form", {
        class: "form-row",
        onsubmit: async (ev) => {
          ev.preventDefault();
          const id = search.value.trim();
          if (!id) return refilter();
          // An exact id opens the instance; otherwise, list those whose
          // id starts with it.
          try {
            await api("GET", `/v1/instances/${encodeURIComponent(id)}`);
            location.hash = `#/instance/${encodeURIComponent(id)}`;
          } catch (e) {
            if (e.status === 404) refilter();
            else toast(e.message, true);
          }
        },
      }, search, h("button", { type: "submit", id: "search-go" }, "Open")),
      h("label", {}, live, " live")),
    body,
    h("div", { class: "toolbar pager" }, newer, older));
  await load();
  every(2000, () => { if (live.checked) load().catch(() => {}); });
}

// ---- one instance ----------------------------------------------------------

/// The rows of the timeline, from the journal's entries.
function timelineRows(entries, now) {
  const rows = new Map();
  const row = (key, label) => {
    if (!rows.has(key)) rows.set(key, { label, bars: [] });
    return rows.get(key);
  };
  const open = new Map();
  const occurrence = (e) => (e.n > 0 ? ` #${e.n + 1}` : "");
  for (const e of entries) {
    const key = `${e.name}\u0000${e.n}`;
    switch (e.kind) {
      case "step": {
        const r = row("s" + key, e.name + occurrence(e));
        r.bars.push({ start: e.startedMs, end: e.endedMs, cls: e.result === "ok" ? "k-ok" : "k-err",
          title: `step ${e.name}, attempt ${e.attempt}: ${e.result === "ok" ? "completed" : "failed"} in ${span(e.endedMs - e.startedMs)}`,
          detail: e.result === "ok" ? { attempt: e.attempt, output: e.value } : { attempt: e.attempt, error: e.error, retryAt: e.retryMs && when(e.retryMs) } });
        if (e.retryMs) r.bars.push({ start: e.endedMs, end: e.retryMs, cls: "k-retry", title: `retry delay before attempt ${e.attempt + 1}`, detail: { retryAt: when(e.retryMs) } });
        break;
      }
      case "sleep":
        row("z" + key, "sleep " + e.name + occurrence(e)).bars.push({ start: e.startedMs, end: e.wakeMs, cls: "k-sleep",
          title: `sleep ${e.name} until ${when(e.wakeMs)}`, detail: { sleep: e.name, wakes: when(e.wakeMs) } });
        break;
      case "waitStart": {
        const b = { start: e.startedMs, end: e.deadlineMs, cls: "k-wait", open: true,
          title: `waiting for event "${e.eventType}"`, detail: { eventType: e.eventType, deadline: when(e.deadlineMs) } };
        row("w" + key, `event ${e.name}${occurrence(e)}`).bars.push(b);
        open.set("w" + key, b);
        break;
      }
      case "waitEnd": {
        const b = open.get("w" + key);
        if (b) {
          b.end = e.endedMs; b.open = false;
          b.title = e.result === "timedOut" ? `wait ${e.name} timed out` : `event "${e.event && e.event.type}" received`;
          b.detail = e.result === "timedOut" ? { timedOut: true } : { event: e.event };
        }
        break;
      }
      case "childStart": {
        const b = { start: e.startedMs, end: now, cls: "k-child", open: true, title: `child ${e.workflow} ${e.childId}`,
          detail: { child: e.childId, workflow: e.workflow }, link: e.childId };
        row("c" + key, `child ${e.name}${occurrence(e)}`).bars.push(b);
        open.set("c" + key, b);
        break;
      }
      case "childEnd": {
        const b = open.get("c" + key);
        if (b) {
          b.end = e.endedMs; b.open = false;
          b.cls = e.result === "ok" ? "k-child" : "k-err";
          b.detail = { ...b.detail, ...(e.result === "ok" ? { output: e.value } : { error: e.error }) };
        }
        break;
      }
    }
  }
  return [...rows.values()];
}

function timeline(entries, now, final, onPick) {
  const rows = timelineRows(entries, now);
  if (rows.length === 0) return h("p", { class: "empty", id: "timeline-empty" }, "No steps, sleeps, waits or children yet.");
  const starts = rows.flatMap((r) => r.bars.map((b) => b.start));
  const t0 = Math.min(...starts);
  // Bars still open, or ending in the future, stop at now on the axis.
  const clip = (b) => (b.open || b.end > now) && !final ? Math.min(b.end, now) : b.end;
  const t1 = Math.max(t0 + 1, ...rows.flatMap((r) => r.bars.map(clip)));
  const pct = (t) => (100 * (t - t0)) / (t1 - t0);
  return h("div", {},
    h("div", { class: "legend" },
      [["completed", "var(--ok)"], ["failed", "var(--err)"], ["retry delay", "#f0c3c6"], ["sleep", "#9aa7b8"],
        ["wait for event", "var(--warn)"], ["child workflow", "#8250df"]].map(([n, c]) => h("span", { style: { "--c": c } }, n))),
    h("div", { class: "timeline", id: "timeline" },
      rows.map((r) => h("div", { class: "tl-row" },
        h("div", { class: "tl-label", title: r.label }, r.label),
        h("div", { class: "tl-track" }, r.bars.map((b) => {
          const left = pct(b.start), right = pct(clip(b));
          return h("button", {
            type: "button", class: `tl-bar ${b.cls}${b.open || b.end > now ? " k-open" : ""}`, title: b.title,
            "data-label": r.label, style: { left: `${left}%`, width: `${Math.max(right - left, 0.4)}%` },
            onclick: () => onPick(r.label, b),
          });
        })))),
      h("div", { class: "tl-axis" }, h("span", {}, when(t0)), h("span", {}, "+" + span(t1 - t0)))));
}

async function instancePage(id) {
  const path = `/v1/instances/${encodeURIComponent(id)}`;
  const detail = h("div", { id: "tl-detail" });
  let picked = null;
  const pick = (label, b) => {
    picked = label;
    detail.replaceChildren(h("div", { class: "card" }, h("h2", {}, label), h("p", { class: "muted" }, b.title),
      b.link ? h("p", {}, h("a", { href: `#/instance/${encodeURIComponent(b.link)}` }, "open the child instance")) : "",
      h("pre", {}, pretty(b.detail))));
  };
  const eventType = h("input", { id: "event-type", placeholder: "event type" });
  const eventPayload = h("input", { id: "event-payload", spellcheck: "false", value: "{}", size: 28 });
  const restartFrom = h("select", { id: "restart-from" });
  const top = h("div", {});
  const panels = h("div", {});
  const tl = h("div", { id: "timeline-wrap" });
  let inst = null;

  async function act(what, body) {
    try {
      await api("PATCH", `/v1/workflows/${encodeURIComponent(inst.workflow)}/instances/${encodeURIComponent(id)}/status`, body);
      toast(`${what}: done`);
      await load();
    } catch (e) {
      toast(`${what}: ${e.message}`, true);
    }
  }

  async function load() {
    const [d, hist] = await Promise.all([api("GET", path), api("GET", path + "/history")]);
    inst = d;
    const final = FINAL.includes(d.status);
    top.replaceChildren(
      h("h1", {}, d.id, " ", badge(d.status)),
      h("p", { class: "muted" }, `workflow `, h("a", { href: `#/instances?workflow=${encodeURIComponent(d.workflow)}` }, d.workflow),
        ` · version ${d.version.slice(7, 19)} · created ${when(d.createdMs)} · updated ${when(d.updatedMs)}`,
        d.interrupted ? " · interrupted: no weft process runs it" : ""));
    const stepOptions = [h("option", { value: "" }, "the start")].concat(
      d.steps.map((s) => h("option", { value: JSON.stringify({ name: s.name, count: s.count }) },
        `step ${s.name}${s.count > 1 ? " #" + s.count : ""} (${s.status})`)));
    const chosen = restartFrom.value;
    restartFrom.replaceChildren(...stepOptions);
    restartFrom.value = chosen;
    const errorBox = d.error ? h("div", { class: "error-box", id: "instance-error" },
      h("strong", {}, d.error.name), ": ", d.error.message,
      d.error.traceback ? h("pre", {}, d.error.traceback) : "") : null;
    panels.replaceChildren(h("div", { class: "grid" },
      h("div", { class: "card" }, h("h2", {}, "Input"), h("pre", { id: "instance-input" }, pretty(d.input))),
      h("div", { class: "card" }, h("h2", {}, d.error ? "Error" : "Output"),
        errorBox || (d.output !== undefined ? h("pre", { id: "instance-output" }, pretty(d.output)) :
          h("p", { class: "muted" }, final ? "none" : "not finished yet")))));
    const buffered = hist.entries.filter((e) => e.kind === "bufferedEvent");
    tl.replaceChildren(
      timeline(hist.entries, Date.now(), final, pick),
      buffered.length ? h("p", { class: "muted" }, `${buffered.length} event(s) buffered, not yet taken by a wait: `,
        buffered.map((e) => e.type).join(", ")) : "");
    pauseB.disabled = final || d.status === "paused";
    resumeB.disabled = d.status !== "paused";
    terminateB.disabled = final;
    sendB.disabled = final;
    if (final) clearInterval(timer);
  }

  const pauseB = h("button", { type: "button", id: "act-pause", class: "light", onclick: () => act("Pause", { status: "pause" }) }, "Pause");
  const resumeB = h("button", { type: "button", id: "act-resume", class: "light", onclick: () => act("Resume", { status: "resume" }) }, "Resume");
  const terminateB = h("button", {
    type: "button", id: "act-terminate", class: "danger",
    onclick: () => { if (confirm(`Terminate ${id}? Its work in flight is abandoned.`)) act("Terminate", { status: "terminate" }); },
  }, "Terminate");
  const restartB = h("button", {
    type: "button", id: "act-restart", class: "light",
    onclick: () => {
      const body = { status: "restart" };
      if (restartFrom.value) body.from = JSON.parse(restartFrom.value);
      act("Restart", body);
    },
  }, "Restart from");
  const sendB = h("button", { type: "submit", id: "event-send" }, "Send event");

  show(top,
    h("div", { class: "card" },
      h("div", { class: "actions" }, pauseB, resumeB, terminateB, h("span", { class: "form-row" }, restartB, restartFrom)),
      h("form", {
        class: "form-row event-form",
        onsubmit: async (ev) => {
          ev.preventDefault();
          let payload;
          try { payload = JSON.parse(eventPayload.value || "null"); } catch (e) { toast("The payload is not JSON: " + e.message, true); return; }
          if (!eventType.value.trim()) { toast("Give the event a type", true); return; }
          try {
            await api("POST", `${path}/events/${encodeURIComponent(eventType.value.trim())}`, payload);
            toast(`Event "${eventType.value.trim()}" sent`);
            await load();
          } catch (e) { toast(e.message, true); }
        },
      }, h("label", {}, "Event"), eventType, h("label", {}, "payload"), eventPayload, sendB)),
    h("h2", {}, "Timeline"), tl, detail,
    panels);
  await load();
  every(1000, () => load().catch(() => {}));
}

// ---- routing -------------------------------------------------------------

async function route() {
  clearInterval(timer);
  const hash = location.hash || "#/";
  const [path, query] = hash.slice(1).split("?");
  const q = new URLSearchParams(query || "");
  for (const a of document.querySelectorAll("nav a")) a.classList.remove("active");
  try {
    if (path.startsWith("/instance/")) {
      document.getElementById("nav-instances").classList.add("active");
      await instancePage(decodeURIComponent(path.slice("/instance/".length)));
    } else if (path === "/instances") {
      document.getElementById("nav-instances").classList.add("active");
      await instancesPage(q);
    } else {
      document.getElementById("nav-workflows").classList.add("active");
      await workflowsPage();
    }
  } catch (e) {
    failure(e);
  }
}

document.getElementById("token-button").onclick = () => tokenForm("Set the token for this server.");
window.addEventListener("hashchange", route);
route();
