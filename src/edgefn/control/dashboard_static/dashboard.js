// edgefn dashboard (docs/design/0022-dashboard.md). No framework, nothing fetched from elsewhere.
//
// Login: the operator pastes an API token once; it is checked with GET /v1/whoami and kept in
// sessionStorage (this tab only). Every data request sends it as "Authorization: Bearer"; it never
// goes into a URL, a cookie or the console. A 401 from any request logs out.
//
// Data: /v1/dashboard (map and rollouts) every POLL_MS, /v1/stats/{fn} every STATS_MS for the
// selected function, /v1/tail/{fn} as a streamed NDJSON body (fetch + ReadableStream), and
// /v1/traces?function= every TRACES_MS (a trace's spans on a click),
// /v1/incidents every INCIDENTS_MS (404: "no incidents API" until that route exists).
//
// Every string from the API reaches the page through textContent or setAttribute, never as
// markup: function names, paths and console lines are user data.
"use strict";

(() => {
  const KEY = "edgefn.dashboard.token";
  const TOKEN_RE = /^edgefn_[0-9a-f]{12}_[0-9a-f]{64}$/;
  const POLL_MS = 2000;
  const STATS_MS = 4000;
  const INCIDENTS_MS = 5000;
  const TRACES_MS = 5000;
  const TRACES_SHOWN = 20;
  const TAIL_MAX = 200;
  const TAIL_BUFFER_MAX = 1 << 20;
  const TAIL_RETRY_MS = 2000;
  const SVG = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);
  const state = { token: null, timers: [], tail: null, fn: "", paused: false };

  class Unauthorized extends Error {}

  function el(tag, attrs, ...children) {
    const node = tag.startsWith("svg:")
      ? document.createElementNS(SVG, tag.slice(4))
      : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined) node.setAttribute(k, String(v));
    }
    for (const c of children) {
      node.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
    }
    return node;
  }

  const fmt = (x, digits = 1) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));
  const pct = (x) => (x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)}%`);
  const age = (ms) => (ms === null || ms === undefined ? "never" : `${(ms / 1000).toFixed(1)} s ago`);

  async function api(path, init = {}) {
    const resp = await fetch(path, {
      ...init,
      headers: { authorization: `Bearer ${state.token}`, accept: "application/json" },
      cache: "no-store",
      credentials: "omit",
      referrerPolicy: "no-referrer",
    });
    if (resp.status === 401) {
      logout("The token was refused (wrong, expired or revoked): paste another.");
      throw new Unauthorized();
    }
    return resp;
  }

  async function errorText(resp) {
    try {
      const body = await resp.json();
      return `${resp.status} ${body.error}: ${body.message}`;
    } catch (_e) {
      return `HTTP ${resp.status}`;
    }
  }

  // -- login ------------------------------------------------------------------------------------

  function showLogin(message) {
    $("app").hidden = true;
    $("logout").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("who").textContent = "";
    $("token").focus();
  }

  async function login(token) {
    state.token = token;
    const resp = await fetch("/v1/whoami", {
      headers: { authorization: `Bearer ${token}` },
      cache: "no-store",
      credentials: "omit",
    });
    if (!resp.ok) {
      state.token = null;
      sessionStorage.removeItem(KEY);
      showLogin(resp.status === 401 ? "That token was refused." : await errorText(resp));
      return;
    }
    const who = await resp.json();
    sessionStorage.setItem(KEY, token);
    $("who").textContent = `${who.name} (${who.account}; ${who.scopes.join(", ")})`;
    $("login").hidden = true;
    $("app").hidden = false;
    $("logout").hidden = false;
    start();
  }

  function logout(message) {
    sessionStorage.removeItem(KEY);
    state.token = null;
    for (const t of state.timers) clearInterval(t);
    state.timers = [];
    stopTail();
    showLogin(message);
  }

  // -- map and locations ------------------------------------------------------------------------

  function locationTitle(loc) {
    const versions = Object.entries(loc.versions)
      .map(([fn, vs]) => `${fn} ${vs.join(",")}`)
      .join("; ");
    return `${loc.location} (${loc.region}): ${loc.health}, ${loc.partition}, report ${age(loc.last_seen_age_ms)}` +
      (versions ? `\n${versions}` : "");
  }

  function drawMap(view) {
    const marks = [];
    const unplaced = [];
    for (const loc of view.locations) {
      const attrs = { class: "loc", "data-location": loc.location, "data-health": loc.health,
        "data-partition": loc.partition };
      if (loc.x === null || loc.y === null) {
        unplaced.push(el("li", { ...attrs, class: `loc health-${loc.health}` },
          `${loc.location}: ${loc.health} (no position reported)`));
        continue;
      }
      const r = 6 + Math.min(8, Math.log10(1 + loc.load.requests));
      marks.push(el("svg:g", attrs,
        el("svg:title", {}, locationTitle(loc)),
        el("svg:circle", { cx: loc.x, cy: loc.y, r: r.toFixed(1) }),
        el("svg:text", { x: loc.x + r + 3, y: loc.y + 4 }, loc.location)));
    }
    $("map-locations").replaceChildren(...marks);
    $("unplaced").replaceChildren(...unplaced);
    const counts = Object.entries(view.health).filter(([, n]) => n > 0).map(([h, n]) => `${n} ${h}`);
    $("health-summary").textContent = counts.join(", ");
  }

  function locationRows(view) {
    const rows = view.locations.map((loc) => {
      const versions = Object.entries(loc.versions).map(([fn, vs]) => `${fn}: ${vs.join(", ")}`);
      return el("tr", { "data-row-location": loc.location },
        el("td", {}, loc.location), el("td", {}, loc.region),
        el("td", { class: `health-${loc.health}` }, loc.health),
        el("td", {}, loc.partition), el("td", {}, age(loc.last_seen_age_ms)),
        el("td", {}, versions.join("; ") || "–"),
        el("td", {}, loc.load.cpu_percent === null ? "–" : `${fmt(loc.load.cpu_percent)}%`),
        el("td", {}, pct(loc.load.capacity) + (loc.load.hot ? " hot" : "")),
        el("td", {}, loc.load.requests));
    });
    $("locations-table").tBodies[0].replaceChildren(...rows);
  }

  function rolloutRows(view) {
    const rows = view.functions.map((fn) => {
      const d = fn.deployment;
      const what = d ? `${d.version} ${d.strategy} ${d.status} (stage ${d.stage}/${d.stages})` : "–";
      const bar = el("span", { class: "progress", title: pct(fn.progress) },
        el("span", { style: null }));
      bar.firstChild.style.width = `${Math.round(100 * fn.progress)}%`;
      const applied = `${fn.targets_applied}/${fn.targets}` +
        (fn.waiting_for.length ? ` (waiting for ${fn.waiting_for.join(", ")})` : "");
      return el("tr", { "data-function": fn.function, "data-progress": fn.progress },
        el("td", {}, fn.function), el("td", {}, fn.active || "–"), el("td", {}, what),
        el("td", {}, bar, ` ${pct(fn.progress)}`), el("td", {}, applied));
    });
    $("rollouts").tBodies[0].replaceChildren(...rows);
  }

  function functionChoices(view) {
    const select = $("function");
    const names = view.functions.map((f) => f.function);
    const have = Array.from(select.options).map((o) => o.value);
    if (names.join("\n") !== have.join("\n")) {
      select.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
      if (names.includes(state.fn)) select.value = state.fn;
    }
    if (!state.fn && names.length) chooseFunction(names[0]);
  }

  async function refreshView() {
    const resp = await api("/v1/dashboard");
    if (!resp.ok) {
      $("updated").textContent = `dashboard: ${await errorText(resp)}`;
      return;
    }
    const view = await resp.json();
    drawMap(view);
    locationRows(view);
    rolloutRows(view);
    functionChoices(view);
    $("updated").textContent = `updated ${new Date(view.now_ms).toLocaleTimeString()}`;
  }

  // -- stats ------------------------------------------------------------------------------------

  async function refreshStats() {
    const fn = state.fn;
    if (!fn) return;
    const windowText = $("window").value;
    const resp = await api(`/v1/stats/${encodeURIComponent(fn)}?window=${encodeURIComponent(windowText)}`);
    if (fn !== state.fn) return;
    if (!resp.ok) {
      $("stats-note").textContent = await errorText(resp);
      return;
    }
    const out = await resp.json();
    const regions = out.by_client_region || [];
    const worst = Math.max(1, ...regions.map((r) => r.latency_ms_p99 || 0));
    const rows = regions.map((r) => {
      const bar = el("div", { class: "bar" }, el("span", {}));
      bar.firstChild.style.width = `${Math.round((100 * (r.latency_ms_p99 || 0)) / worst)}%`;
      return el("tr", { "data-client-region": r.client_region, "data-requests": r.requests },
        el("td", {}, r.client_region || "(unknown)"), el("td", {}, r.requests),
        el("td", {}, pct(r.error_rate)), el("td", {}, fmt(r.latency_ms_p50)),
        el("td", {}, fmt(r.latency_ms_p95)), el("td", {}, fmt(r.latency_ms_p99)),
        el("td", { class: "bar-cell" }, bar));
    });
    $("stats").tBodies[0].replaceChildren(...rows);
    $("stats-panel").dataset.function = fn;
    const total = regions.reduce((n, r) => n + r.requests, 0);
    $("stats-note").textContent = `${fn}: ${total} requests over the last ${windowText}` +
      (out.overflow_requests ? ` (${out.overflow_requests} requests in overflow rows: incomplete)` : "");
  }

  // -- live tail --------------------------------------------------------------------------------

  function tailState(text, code) {
    $("tail-state").textContent = text;
    $("tail-panel").dataset.state = code;
  }

  function onTailLine(event) {
    if (event.type === "session") {
      tailState(`live (${event.function})`, "live");
      return;
    }
    if (event.type === "dropped") {
      prependTail(el("li", { class: "dropped" }, `… ${event.count} events dropped (reading too slowly)`));
      return;
    }
    if (event.type !== "request" || state.paused) return;
    const time = new Date(event.ts_ms).toLocaleTimeString();
    const line = `${time} ${event.location} ${event.method} ${event.path} → ${event.status} ` +
      `${fmt(event.duration_ms)} ms ${event.version}${event.cold ? " cold" : ""} ` +
      `client ${event.client || "?"} sample ${event.sample}`;
    const item = el("li", { class: `status-${Math.floor(event.status / 100)}`,
      "data-request-id": event.request_id, "data-location": null }, line);
    for (const [, text] of event.logs || []) item.append(el("div", { class: "logs" }, text));
    prependTail(item);
  }

  function prependTail(item) {
    const list = $("tail");
    list.prepend(item);
    while (list.children.length > TAIL_MAX) list.lastElementChild.remove();
  }

  function stopTail() {
    if (state.tail) state.tail.abort();
    state.tail = null;
  }

  async function startTail(fn) {
    stopTail();
    const ctrl = new AbortController();
    state.tail = ctrl;
    tailState(`connecting (${fn})`, "connecting");
    try {
      const resp = await api(`/v1/tail/${encodeURIComponent(fn)}`, { signal: ctrl.signal });
      if (!resp.ok) {
        tailState(await errorText(resp), "error");
      } else {
        await readLines(resp.body, ctrl.signal);
        tailState("ended", "ended");
      }
    } catch (e) {
      if (ctrl.signal.aborted || e instanceof Unauthorized) return;
      tailState(`disconnected (${e.message}); reconnecting`, "error");
    }
    if (state.tail === ctrl) setTimeout(() => state.tail === ctrl && startTail(fn), TAIL_RETRY_MS);
  }

  async function readLines(body, signal) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    while (!signal.aborted) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      if (buffer.length > TAIL_BUFFER_MAX) throw new Error("a tail line over 1 MiB");
      let cut;
      while ((cut = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 1);
        if (line.trim()) onTailLine(JSON.parse(line));
      }
    }
  }

  // -- traces (GET /v1/traces?function=, GET /v1/traces/{id}: the core's span store) ----------

  async function refreshTraces() {
    const fn = state.fn;
    if (!fn) return;
    const resp = await api(`/v1/traces?function=${encodeURIComponent(fn)}&limit=${TRACES_SHOWN}`);
    if (fn !== state.fn) return;
    const panel = $("traces-panel");
    if (!resp.ok) {
      panel.dataset.state = "error";
      $("traces-note").textContent = await errorText(resp);
      return;
    }
    const traces = (await resp.json()).traces || [];
    panel.dataset.function = fn;
    panel.dataset.state = traces.length ? "some" : "none";
    $("traces-note").textContent = traces.length
      ? `${fn}: the latest ${traces.length} kept traces (errors and slow requests always, others sampled); click one for its spans`
      : `${fn}: no kept traces yet`;
    $("traces").tBodies[0].replaceChildren(...traces.map((t) => {
      const row = el("tr", { "data-trace-id": t.trace_id, class: t.error ? "error" : "" },
        el("td", {}, new Date(t.start_ms).toLocaleTimeString()),
        el("td", {}, el("code", {}, t.trace_id.slice(0, 16))),
        el("td", {}, (t.locations || []).join(", ")),
        el("td", {}, t.spans), el("td", {}, fmt(t.duration_ms, 2)),
        el("td", {}, t.error ? "error" : "ok"), el("td", {}, pct(t.probability)));
      row.addEventListener("click", guard(() => showTrace(t.trace_id)));
      return row;
    }));
  }

  async function showTrace(traceId) {
    const resp = await api(`/v1/traces/${encodeURIComponent(traceId)}`);
    const box = $("trace-spans");
    if (!resp.ok) {
      box.replaceChildren(el("p", {}, await errorText(resp)));
      return;
    }
    const spans = (await resp.json()).spans || [];
    const children = new Map();
    const ids = new Set(spans.map((s) => s.span_id));
    for (const s of spans) {
      const parent = ids.has(s.parent_id) ? s.parent_id : "";
      if (!children.has(parent)) children.set(parent, []);
      children.get(parent).push(s);
    }
    const t0 = Math.min(...spans.map((s) => s.start_ns));
    const items = [];
    const walk = (parent, depth) => {
      const kids = (children.get(parent) || []).sort((a, b) => a.start_ns - b.start_ns);
      for (const s of kids) {
        const offset = (s.start_ns - t0) / 1e6;
        const li = el("li", { "data-span-id": s.span_id, "data-span-name": s.name, class: s.status === 2 ? "error" : "" },
          `${"  ".repeat(depth)}${s.name} @${s.location} +${offset.toFixed(2)} ms, ${fmt(s.duration_ms, 2)} ms`);
        items.push(li);
        walk(s.span_id, depth + 1);
      }
    };
    walk("", 0);
    box.dataset.traceId = traceId;
    box.replaceChildren(el("ol", { class: "spans" }, ...items));
  }

  // -- incidents (GET /v1/incidents; a core without it answers 404: "no incidents API") ---------

  function incidentText(inc) {
    const parts = [inc.id, inc.severity, inc.state || inc.status, inc.title || inc.summary];
    return parts.filter((p) => p !== undefined && p !== null && p !== "").join(" · ");
  }

  async function refreshIncidents() {
    const panel = $("incidents-panel");
    const resp = await api("/v1/incidents");
    if (resp.status === 404) {
      panel.dataset.state = "absent";
      $("incidents").textContent = "no incidents API on this core (GET /v1/incidents: 404)";
      return;
    }
    if (!resp.ok) {
      panel.dataset.state = "error";
      $("incidents").textContent = await errorText(resp);
      return;
    }
    const body = await resp.json();
    const list = Array.isArray(body) ? body : body.incidents || [];
    panel.dataset.state = list.length ? "open" : "none";
    $("incidents").replaceChildren(list.length
      ? el("ul", {}, ...list.slice(0, 50).map((i) => el("li", { "data-incident": i.id }, incidentText(i))))
      : el("p", {}, "no incidents"));
  }

  // -- wiring -----------------------------------------------------------------------------------

  function chooseFunction(fn) {
    state.fn = fn;
    $("function").value = fn;
    $("tail").replaceChildren();
    $("stats").tBodies[0].replaceChildren();
    $("traces").tBodies[0].replaceChildren();
    $("trace-spans").replaceChildren();
    guard(refreshStats)();
    guard(refreshTraces)();
    startTail(fn);
  }

  function guard(fn) {
    return () => fn().catch((e) => {
      if (!(e instanceof Unauthorized)) $("updated").textContent = `error: ${e.message}`;
    });
  }

  function every(ms, fn) {
    const run = guard(fn);
    run();
    state.timers.push(setInterval(run, ms));
  }

  function start() {
    every(POLL_MS, refreshView);
    every(STATS_MS, refreshStats);
    every(INCIDENTS_MS, refreshIncidents);
    every(TRACES_MS, refreshTraces);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const token = $("token").value.trim();
      $("token").value = "";
      if (!TOKEN_RE.test(token)) {
        showLogin("That is not an edgefn token (edgefn_<12 hex>_<64 hex>).");
        return;
      }
      login(token);
    });
    $("logout").addEventListener("click", () => logout("Logged out."));
    $("function").addEventListener("change", (ev) => chooseFunction(ev.target.value));
    $("window").addEventListener("change", guard(refreshStats));
    $("tail-pause").addEventListener("click", (ev) => {
      state.paused = !state.paused;
      ev.target.textContent = state.paused ? "Resume" : "Pause";
    });
    const saved = sessionStorage.getItem(KEY);
    if (saved && TOKEN_RE.test(saved)) login(saved);
    else showLogin("");
  });
})();
