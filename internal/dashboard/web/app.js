// The dashboard: a hash-routed page of plain DOM code, no framework.
// Screens: #/signin, #/campaigns, #/campaigns/<id>, #/dlq, #/workflows.

import { API, ApiError, loadSession, saveSession, clearSession, newKey } from "./api.js";
import { follow } from "./sse.js";

const VERBS = ["start", "pause", "resume", "cancel", "retry"];
const TOKEN_RE = /^[A-Za-z0-9_-]{1,64}$/;
const POLL_MS = 2000;

let config = null; // /config.json: {api, transitions, states}
let api = null;
let cleanup = []; // what the current screen must stop when left

// ---- DOM helpers ---------------------------------------------------------

/** h("tag.class#id", {attrs}, ...children): an element; strings become text. */
function h(spec, attrs = {}, ...children) {
  const [, tag, rest] = spec.match(/^([a-z0-9]+)(.*)$/);
  const el = document.createElement(tag);
  for (const m of rest.matchAll(/([.#])([^.#]+)/g)) {
    if (m[1] === ".") el.classList.add(m[2]); else el.id = m[2];
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const $ = (sel, root = document) => root.querySelector(sel);

function announce(text) {
  const a = $("#announcer");
  a.textContent = "";
  setTimeout(() => { a.textContent = text; }, 50);
}

function banner(text) {
  const b = $("#banner");
  b.textContent = text || "";
  b.hidden = !text;
}

/** An error box (role=alert) for err, an ApiError or anything else. */
function errorBox(err, prefix = "") {
  const msg = err instanceof ApiError
    ? (err.status ? `${err.status} ${err.code}: ${err.message}` : err.message)
    : String(err?.message || err);
  return h("div.error", { role: "alert" }, prefix ? prefix + ": " : "", msg);
}

/** Handles an error of a call: a refused origin goes to the banner, 401 signs out. */
function failed(err, into, prefix) {
  if (err?.name === "AbortError") return;
  if (err instanceof ApiError && (err.code === "refused" || err.code === "unreachable")) banner(err.message);
  if (err instanceof ApiError && err.status === 401 && loadSession()) {
    clearSession();
    navigate("#/signin", "Your session was refused by the API (" + err.message + "); sign in again.");
    return;
  }
  if (into) into.replaceChildren(errorBox(err, prefix));
}

const fmtTime = (t) => (t ? new Date(t).toLocaleString(undefined, { hour12: false }) : "");
const fmtClock = (t) => (t ? new Date(t).toLocaleTimeString(undefined, { hour12: false }) : "");
function fmtMs(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}
const stateBadge = (s) => h("span.badge", { class: "badge state-" + s, "data-state": s }, s);
const allowed = (verb, state) => (config.transitions[verb] || []).includes(state);

// ---- routing ---------------------------------------------------------------

function navigate(hash, message) {
  pendingMessage = message || null;
  if (location.hash === hash) route(); else location.hash = hash;
}
let pendingMessage = null;

function route() {
  for (const f of cleanup) f();
  cleanup = [];
  const session = loadSession();
  api = new API(config.api, session);
  $("#nav").hidden = $("#session").hidden = !session;
  if (session) $("#who").textContent = session.tenant ? `Tenant ${session.tenant}` + (session.token ? " (token)" : "") : "Signed in with a token";
  const [path, query] = (location.hash.slice(1) || "/campaigns").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.route === parts[0]) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  const main = $("#main");
  main.replaceChildren();
  if (!session || parts[0] === "signin") {
    if (session && parts[0] === "signin") { navigate("#/campaigns"); return; }
    signInView(main);
  } else if (parts[0] === "campaigns" && parts[1]) {
    campaignView(main, decodeURIComponent(parts[1]));
  } else if (parts[0] === "dlq") {
    dlqView(main);
  } else if (parts[0] === "workflows") {
    workflowsView(main);
  } else {
    campaignsView(main, params);
  }
  if (pendingMessage) {
    main.prepend(h("p.notice", { role: "status" }, pendingMessage));
    pendingMessage = null;
  }
  const h1 = $("h1", main);
  if (h1) { h1.tabIndex = -1; h1.focus({ preventScroll: true }); }
}

// ---- sign in ---------------------------------------------------------------

function signInView(main) {
  document.title = "Sign in · Campaign Orchestrator";
  const out = h("div.out");
  const form = h("form.card", { novalidate: true, "aria-describedby": "signin-help" },
    h("h1", {}, "Sign in"),
    h("p#signin-help.muted", {},
      "Give your API bearer token. Where the API runs without tokens (development mode), give the tenant's name instead. Both are kept in this tab's session storage only."),
    h("label", { for: "token" }, "Bearer token"),
    h("input#token", { name: "token", type: "password", autocomplete: "off", spellcheck: "false" }),
    h("label", { for: "tenant" }, "Tenant (development mode)"),
    h("input#tenant", { name: "tenant", type: "text", autocomplete: "off", spellcheck: "false", pattern: TOKEN_RE.source, "aria-describedby": "tenant-help" }),
    h("p#tenant-help.hint", {}, "Letters, digits, - and _ (1 to 64)."),
    h("button.primary", { type: "submit" }, "Sign in"),
    out);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const token = form.token.value.trim(), tenant = form.tenant.value.trim();
    form.tenant.removeAttribute("aria-invalid");
    if (!token && !tenant) { out.replaceChildren(errorBox("Give a bearer token or a tenant.")); form.token.focus(); return; }
    if (tenant && !TOKEN_RE.test(tenant)) {
      form.tenant.setAttribute("aria-invalid", "true");
      out.replaceChildren(errorBox("Tenant: must match " + TOKEN_RE.source));
      form.tenant.focus();
      return;
    }
    const session = { token: token || undefined, tenant: tenant || undefined };
    out.replaceChildren(h("p.muted", { role: "status" }, "Checking with the API…"));
    try {
      await new API(config.api, session).request("GET", "/api/v1/workflows");
    } catch (err) {
      if (err instanceof ApiError && err.field === "X-Tenant-ID" && err.code === "invalid_request" && !tenant) {
        err.message += " — this API runs without tokens (development mode): give a tenant name.";
      }
      failed(err, out, "Sign-in refused");
      return;
    }
    banner("");
    saveSession(session);
    navigate("#/campaigns");
  });
  main.append(form);
}

// ---- campaigns -------------------------------------------------------------

function campaignsView(main, params) {
  document.title = "Campaigns · Campaign Orchestrator";
  const state = config.states.includes(params.get("state")) ? params.get("state") : "";
  let cursors = [""]; // cursors of the pages seen; the last is the current page's
  let known = new Map(); // campaign_id -> state, for live changes

  const filter = h("select#state-filter", { name: "state" },
    h("option", { value: "" }, "all states"),
    config.states.map((s) => h("option", { value: s, selected: s === state }, s)));
  filter.addEventListener("change", () => navigate(filter.value ? "#/campaigns?state=" + filter.value : "#/campaigns"));

  const body = h("tbody");
  const table = h("table.list", { "aria-describedby": "list-status" },
    h("caption.visually-hidden", {}, "Campaigns"),
    h("thead", {}, h("tr", {}, ["Campaign", "Name", "Workflow", "State", "Current step", "Updated"].map((c) => h("th", { scope: "col" }, c)))),
    body);
  const status = h("p#list-status.muted", { role: "status" });
  const first = h("button", { type: "button", disabled: true }, "First page");
  const next = h("button", { type: "button", disabled: true }, "Next page");
  const out = h("div.out");

  async function load() {
    let page;
    try {
      const q = new URLSearchParams({ limit: "20" });
      if (state) q.set("state", state);
      if (cursors.at(-1)) q.set("cursor", cursors.at(-1));
      page = (await api.request("GET", "/api/v1/campaigns?" + q)).data;
    } catch (err) {
      failed(err, out);
      return;
    }
    out.replaceChildren();
    const rows = page.campaigns.map((c) => {
      const was = known.get(c.campaign_id);
      const changed = was && was !== c.state;
      if (changed) announce(`${c.campaign_id} is now ${c.state}`);
      known.set(c.campaign_id, c.state);
      return h("tr", { class: changed ? "changed" : null, "data-campaign": c.campaign_id },
        h("td", {}, h("a", { href: "#/campaigns/" + encodeURIComponent(c.campaign_id) }, c.campaign_id)),
        h("td", {}, c.name), h("td", {}, c.workflow), h("td", {}, stateBadge(c.state)),
        h("td", {}, c.current_step ?? "—"), h("td", {}, fmtTime(c.updated_at)));
    });
    body.replaceChildren(...rows);
    if (rows.length === 0) body.append(h("tr", {}, h("td", { colspan: 6 }, state ? `No ${state} campaigns.` : "No campaigns yet.")));
    first.disabled = cursors.length === 1;
    next.disabled = !page.next_cursor;
    next.dataset.cursor = page.next_cursor || "";
    status.textContent = `Page ${cursors.length}: ${page.campaigns.length} campaign(s)${page.next_cursor ? ", more on the next page" : ""}. Updates live.`;
  }
  next.addEventListener("click", () => { cursors.push(next.dataset.cursor); known = new Map(); load(); });
  first.addEventListener("click", () => { cursors = [""]; known = new Map(); load(); });

  main.append(
    h("div.heading", {}, h("h1", {}, "Campaigns")),
    createForm(),
    h("section", { "aria-labelledby": "list-h" },
      h("h2#list-h", {}, "The tenant's campaigns"),
      h("div.toolbar", {}, h("label", { for: "state-filter" }, "State"), filter, first, next),
      status, out, h("div.scroll", {}, table)));
  load();
  poll(load);
}

/** Runs f every POLL_MS while the screen is shown and the tab visible. */
function poll(f) {
  let timer = null, stopped = false;
  const tick = async () => {
    if (stopped) return;
    if (document.visibilityState === "visible") await f();
    if (!stopped) timer = setTimeout(tick, POLL_MS);
  };
  timer = setTimeout(tick, POLL_MS);
  cleanup.push(() => { stopped = true; clearTimeout(timer); });
}

function createForm() {
  const out = h("div.out");
  const wfSelect = h("select#c-workflow", { name: "workflow" });
  const form = h("form.card#create", { novalidate: true },
    h("h2", {}, "New campaign"),
    h("div.grid", {},
      h("div", {}, h("label", { for: "c-name" }, "Name"), h("input#c-name", { name: "name", required: true, maxlength: 256, autocomplete: "off" })),
      h("div", {}, h("label", { for: "c-id" }, "Campaign id (optional)"),
        h("input#c-id", { name: "campaign_id", pattern: TOKEN_RE.source, autocomplete: "off", "aria-describedby": "c-id-help" }),
        h("p#c-id-help.hint", {}, "Generated when empty.")),
      h("div", {}, h("label", { for: "c-workflow" }, "Workflow"), wfSelect)),
    h("label", { for: "c-params" }, "Params (JSON object)"),
    h("textarea#c-params", { name: "params", rows: 3, spellcheck: "false", "aria-describedby": "c-params-help" }, "{}"),
    h("p#c-params-help.hint", {}, "Passed to every step."),
    h("div.check", {}, h("input#c-start", { type: "checkbox", name: "start" }), h("label", { for: "c-start" }, "Start now")),
    h("button.primary", { type: "submit" }, "Create"),
    out);
  api.request("GET", "/api/v1/workflows").then(({ data }) => {
    wfSelect.replaceChildren(...data.workflows.map((w) => h("option", { value: w.name, selected: w.name === data.default }, w.name)));
  }).catch((err) => failed(err, out, "Workflows"));

  let key = null; // one Idempotency-Key per draft: a retry of the same submission is the same request
  form.addEventListener("input", () => { key = null; });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    const invalid = (el, msg) => { el.setAttribute("aria-invalid", "true"); out.replaceChildren(errorBox(msg)); el.focus(); };
    const name = form.name.value.trim(), id = form.campaign_id.value.trim();
    if (!name) return invalid(form.name, "Name: required");
    if (id && !TOKEN_RE.test(id)) return invalid(form.campaign_id, "Campaign id: must match " + TOKEN_RE.source);
    let params;
    try {
      params = JSON.parse(form.params.value.trim() || "{}");
    } catch (e) {
      return invalid(form.params, "Params: not valid JSON: " + e.message);
    }
    if (params === null || typeof params !== "object" || Array.isArray(params)) return invalid(form.params, "Params: must be a JSON object");
    const body = { name, workflow: wfSelect.value || undefined, params, start: form.start.checked };
    if (id) body.campaign_id = id;
    key ||= newKey();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    out.replaceChildren(h("p.muted", { role: "status" }, "Sending…"));
    try {
      const { data } = await api.request("POST", "/api/v1/campaigns", { body, idempotencyKey: key });
      key = null;
      navigate("#/campaigns/" + encodeURIComponent(data.campaign_id), `Campaign ${data.campaign_id} accepted (command ${data.command_id}).`);
    } catch (err) {
      const field = { campaign_id: form.campaign_id, name: form.name, params: form.params, workflow: wfSelect }[err.field];
      if (field) field.setAttribute("aria-invalid", "true");
      failed(err, out, "Create refused");
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

// ---- one campaign ----------------------------------------------------------

const STATE_OF_EVENT = {
  "campaign.created": "pending", "campaign.started": "running", "campaign.paused": "paused",
  "campaign.resumed": "running", "campaign.cancelled": "cancelled", "campaign.retried": "running",
  "campaign.completed": "completed", "campaign.failed": "failed",
};

function campaignView(main, id) {
  document.title = `${id} · Campaign Orchestrator`;
  const path = "/api/v1/campaigns/" + encodeURIComponent(id);
  const model = {
    campaign: null, state: null, seq: 0, events: [], steps: new Map(), stepOrder: [],
    outputs: {}, error: "", pending: new Map(), // command id -> {verb, entry}
  };

  const title = h("h1", {}, id);
  const stateEl = h("span#campaign-state");
  const meta = h("dl.meta");
  const actionsOut = h("div#action-messages.out", { "aria-live": "polite" });
  const buttons = VERBS.map((v) => h("button", { type: "button", "data-verb": v, disabled: true, onclick: () => send(v) }, v[0].toUpperCase() + v.slice(1)));
  const timeline = h("ol#timeline.timeline", { "aria-label": "Steps timeline" });
  const axis = h("p#timeline-axis.muted");
  const outputs = h("div#outputs");
  const streamStatus = h("p#stream-status.muted", { role: "status" }, "Connecting…");
  const evBody = h("tbody");
  const loadOut = h("div.out");

  main.append(
    h("p.crumbs", {}, h("a", { href: "#/campaigns" }, "Campaigns"), " / ", id),
    h("div.heading", {}, title, stateEl),
    loadOut, meta,
    h("section", { "aria-labelledby": "actions-h" }, h("h2#actions-h", {}, "Actions"),
      h("div.toolbar", { role: "group", "aria-label": "Commands" }, buttons), actionsOut),
    h("section", { "aria-labelledby": "timeline-h" }, h("h2#timeline-h", {}, "Timeline"), axis, timeline),
    h("section", { "aria-labelledby": "outputs-h" }, h("h2#outputs-h", {}, "Outputs"), outputs),
    h("section", { "aria-labelledby": "events-h" }, h("h2#events-h", {}, "Event history"), streamStatus,
      h("div.scroll", {}, h("table.list#events", {},
        h("caption.visually-hidden", {}, "Events, oldest first"),
        h("thead", {}, h("tr", {}, ["#", "Time", "Event", "Details"].map((c) => h("th", { scope: "col" }, c)))),
        evBody))));

  function render() {
    const st = model.state;
    if (st) stateEl.replaceChildren(stateBadge(st));
    for (const b of buttons) {
      const ok = st && allowed(b.dataset.verb, st);
      b.disabled = !ok || b.dataset.busy === "1";
      b.title = ok ? "" : `Not allowed while ${st || "unknown"}`;
    }
    const c = model.campaign;
    if (c) {
      title.textContent = c.name ? `${c.name}` : id;
      meta.replaceChildren(...[
        h("dt", {}, "Campaign"), h("dd", {}, c.campaign_id),
        h("dt", {}, "Workflow"), h("dd", {}, c.workflow),
        h("dt", {}, "Created"), h("dd", {}, fmtTime(c.created_at)),
        c.ended_at ? [h("dt", {}, "Ended"), h("dd", {}, fmtTime(c.ended_at))] : null,
        c.params && Object.keys(c.params).length ? [h("dt", {}, "Params"), h("dd", {}, h("code", {}, JSON.stringify(c.params)))] : null,
        (model.error || c.error) ? [h("dt", {}, "Error"), h("dd.error-text", {}, model.error || c.error)] : null,
      ].flat().filter(Boolean));
    }
    drawTimeline();
    const names = Object.keys(model.outputs);
    outputs.replaceChildren(names.length === 0 ? h("p.muted", {}, "No step has produced output yet.")
      : h("div", {}, names.map((n) => h("details", {}, h("summary", {}, n), h("pre", {}, JSON.stringify(model.outputs[n], null, 2))))));
  }

  function drawTimeline() {
    const order = model.stepOrder.length ? model.stepOrder : [...model.steps.keys()];
    const now = Date.now();
    const starts = [...model.steps.values()].map((s) => s.start).filter(Boolean);
    const t0 = starts.length ? Math.min(...starts) : null;
    const t1 = Math.max(now, ...[...model.steps.values()].map((s) => s.end || 0));
    const active = ["running", "paused"].includes(model.state);
    const span = t0 ? Math.max((active ? t1 : Math.max(...[...model.steps.values()].map((s) => s.end || s.start || 0))) - t0, 1) : 1;
    axis.textContent = t0 ? `From ${fmtClock(t0)}; ${fmtMs(span)} shown.` : "No step has started yet.";
    timeline.replaceChildren(...order.map((name) => {
      const s = model.steps.get(name) || { outcome: "pending" };
      const end = s.end || (s.outcome === "running" ? now : null);
      const dur = s.duration ?? (s.start && end ? end - s.start : null);
      const bar = h("div.bar", { class: "bar outcome-" + s.outcome, "aria-hidden": "true" });
      if (s.start && t0) {
        bar.style.left = `${((s.start - t0) / span) * 100}%`;
        bar.style.width = `${Math.max(((end || s.start) - s.start) / span * 100, 0.8)}%`;
      }
      const facts = s.start
        ? [`started +${fmtMs(s.start - t0)}`, dur !== null ? `${s.outcome === "running" ? "running for " : ""}${fmtMs(dur)}` : null,
          `${s.attempts} attempt${s.attempts === 1 ? "" : "s"}`, s.run > 1 ? `run ${s.run}` : null].filter(Boolean).join(" · ")
        : "not started";
      return h("li", { "data-step": name, "data-outcome": s.outcome },
        h("span.step-name", {}, name),
        h("div.track", {}, bar),
        h("span.step-facts", {}, h("span.outcome", { class: "outcome outcome-" + s.outcome }, s.outcome), " ", facts,
          s.lastError ? h("span.step-error", {}, " — " + s.lastError) : null));
    }));
  }

  // The running bar grows while a step runs.
  const ticker = setInterval(() => { if ([...model.steps.values()].some((s) => s.outcome === "running")) drawTimeline(); }, 250);
  cleanup.push(() => clearInterval(ticker));

  function apply(ev) {
    const seq = Number(ev.sequence);
    if (seq <= model.seq) return; // already seen (a resumed stream sends only later ones)
    model.seq = seq;
    model.events.push(ev);
    const d = ev.data || {};
    const t = Date.parse(ev.time);
    if (STATE_OF_EVENT[ev.type]) model.state = STATE_OF_EVENT[ev.type];
    if (ev.type === "campaign.created" && Array.isArray(d.steps)) model.stepOrder = d.steps;
    if (ev.type === "campaign.failed") model.error = d.error || "";
    if (ev.type === "campaign.retried") model.error = "";
    const step = d.step && (model.steps.get(d.step) || { name: d.step, attempts: 0, outcome: "pending" });
    switch (ev.type) {
      case "campaign.step.started":
        Object.assign(step, { start: t, end: null, duration: null, attempts: d.attempt || 1, run: d.run || 1, outcome: "running", lastError: "" });
        break;
      case "campaign.step.retrying":
        Object.assign(step, { attempts: (d.attempt || step.attempts) + 1, lastError: `attempt ${d.attempt} failed: ${d.error}; retrying in ${fmtMs(d.retry_in_ms)}` });
        break;
      case "campaign.step.succeeded":
        Object.assign(step, { end: t, duration: d.duration_ms, attempts: d.attempt || step.attempts, outcome: "succeeded", lastError: "" });
        model.outputs[d.step] = d.output ?? {};
        break;
      case "campaign.step.failed":
        Object.assign(step, { end: t, duration: d.duration_ms, attempts: d.attempt || step.attempts, outcome: "failed", lastError: d.error || "" });
        break;
    }
    if (step) model.steps.set(d.step, step);
    evBody.append(h("tr", { "data-seq": seq, "data-type": ev.type },
      h("td", {}, seq), h("td", {}, fmtClock(ev.time)), h("td", {}, h("code", {}, ev.type.replace(/^campaign\./, ""))),
      h("td", {}, eventDetails(ev))));
    const sent = model.pending.get(ev.commandid);
    if (sent) settle(sent, ev);
  }

  /** Says what became of a command this page sent: its first event tells. */
  function settle(sent, ev) {
    model.pending.delete(ev.commandid);
    if (ev.type === "campaign.command.rejected") {
      sent.entry.replaceWith(h("div.error", { role: "alert", "data-verb": sent.verb }, `${sent.verb} was rejected: ${ev.data?.reason || "not allowed"}`));
    } else {
      sent.entry.replaceWith(h("p.ok", { "data-verb": sent.verb }, `${sent.verb}: applied (${ev.type.replace(/^campaign\./, "")}).`));
      announce(`${sent.verb} applied; the campaign is ${model.state}`);
    }
  }

  function eventDetails(ev) {
    const d = ev.data || {};
    const bits = [];
    if (d.step) bits.push(`step ${d.step}`);
    if (d.attempt) bits.push(`attempt ${d.attempt}`);
    if (d.duration_ms !== undefined) bits.push(fmtMs(d.duration_ms));
    if (d.from) bits.push(`from ${d.from}`);
    if (d.command) bits.push(`${d.command} in ${d.state}`);
    if (d.reason) bits.push(d.reason);
    if (d.error) bits.push(d.error);
    if (ev.commandid && !ev.commandid.includes(".advance.")) bits.push(`command ${ev.commandid}`); // not the service's own
    return bits.join(" · ");
  }

  async function send(verb) {
    const b = buttons.find((x) => x.dataset.verb === verb);
    b.dataset.busy = "1";
    render();
    const entry = h("p.muted", { role: "status", "data-verb": verb }, `${verb}: sending…`);
    actionsOut.prepend(entry);
    try {
      const { data, replayed } = await api.request("POST", `${path}/${verb}`, { idempotencyKey: newKey() });
      entry.textContent = `${verb}: accepted${replayed ? " (replayed)" : ""}, command ${data.command_id}; waiting for it to be applied…`;
      // Its event may have come over the stream before this answer.
      const seen = model.events.find((e) => e.commandid === data.command_id);
      if (seen) settle({ verb, entry }, seen); else model.pending.set(data.command_id, { verb, entry });
    } catch (err) {
      entry.replaceWith(errorBox(err, `${verb} refused`));
      failed(err, null);
    } finally {
      delete b.dataset.busy;
      render();
    }
  }

  // The campaign's stored view (name, workflow, steps, outputs); events are
  // newer when they say so (the store may lag them).
  let refreshing = null;
  async function refresh() {
    if (refreshing) return refreshing;
    refreshing = (async () => {
      try {
        const { data } = await api.request("GET", path);
        model.campaign = data;
        if (!model.stepOrder.length) model.stepOrder = data.steps.map((s) => s.name);
        if (data.sequence >= model.seq) {
          model.state = data.state;
          Object.assign(model.outputs, data.outputs);
        }
        loadOut.replaceChildren();
        render();
      } catch (err) {
        if (err instanceof ApiError && err.status === 404 && model.seq === 0 && streamStatus.dataset.state !== "closed") {
          loadOut.replaceChildren(h("p.muted", { role: "status" }, "Not applied yet: waiting for the campaign's first event…"));
        } else {
          failed(err, loadOut);
        }
      } finally {
        refreshing = null;
      }
    })();
    return refreshing;
  }
  refresh();

  let pendingRefresh = null;
  const stream = follow(config.api + path + "/events", {
    headers: api.headers(),
    onEvent(data) {
      let ev;
      try { ev = JSON.parse(data); } catch { return; }
      apply(ev);
      render();
      clearTimeout(pendingRefresh);
      pendingRefresh = setTimeout(refresh, 300);
    },
    onStatus({ state, lastId, reconnects, error }) {
      streamStatus.dataset.state = state;
      streamStatus.dataset.reconnects = reconnects;
      if (state === "live") {
        streamStatus.textContent = reconnects ? `Live: resumed after event ${lastId || 0} (reconnected ${reconnects}×).` : "Live: new events appear as they happen.";
      } else if (state === "waiting") {
        streamStatus.textContent = `Connection lost after event ${lastId || 0}${error ? ` (${error.message})` : ""}; reconnecting…`;
      } else if (state === "connecting") {
        streamStatus.textContent = reconnects ? `Reconnecting from event ${lastId || 0}…` : "Connecting…";
      } else if (state === "closed" && error) {
        streamStatus.textContent = `The event stream was refused: ${error.message}`;
        if (error.status === 404) loadOut.replaceChildren(errorBox(new ApiError(404, "not_found", error.message)));
      }
    },
    async describeError() { const e = await api.unreadable(); if (e.code === "refused") banner(e.message); return e.message; },
  });
  cleanup.push(() => { stream.close(); clearTimeout(pendingRefresh); });
  render();
}

// ---- dead letters ------------------------------------------------------------

function dlqView(main) {
  document.title = "Dead letters · Campaign Orchestrator";
  let cursors = [""];
  const body = h("tbody");
  const status = h("p#dlq-status.muted", { role: "status" });
  const first = h("button", { type: "button", disabled: true }, "First page");
  const next = h("button", { type: "button", disabled: true }, "Next page");
  const reload = h("button", { type: "button" }, "Refresh");
  const out = h("div.out");

  async function load() {
    let page;
    try {
      const q = new URLSearchParams({ limit: "20" });
      if (cursors.at(-1)) q.set("cursor", cursors.at(-1));
      page = (await api.request("GET", "/api/v1/dlq?" + q)).data;
    } catch (err) {
      failed(err, out);
      return;
    }
    out.replaceChildren();
    body.replaceChildren(...page.dead_letters.map((d) => h("tr", { "data-seq": d.seq },
      h("td", {}, d.seq), h("td", {}, fmtTime(d.time)),
      h("td", {}, d.campaign_id), h("td", {}, d.command || "—"), h("td", {}, h("code", {}, d.command_id || "—")),
      h("td.reason", {}, d.reason),
      h("td", {}, h("details", {}, h("summary", {}, "Command"),
        h("p.muted", {}, d.original_subject),
        h("pre", {}, typeof d.body === "string" ? d.body : JSON.stringify(d.body, null, 2)),
        d.body_truncated ? h("p.hint", {}, `cut from ${d.body_truncated} bytes`) : null)))));
    if (page.dead_letters.length === 0) body.append(h("tr", {}, h("td", { colspan: 7 }, "No dead letters.")));
    first.disabled = cursors.length === 1;
    next.disabled = !page.next_cursor;
    next.dataset.cursor = page.next_cursor || "";
    status.textContent = `Page ${cursors.length}: ${page.dead_letters.length} dead letter(s), oldest first${page.next_cursor ? "; more on the next page" : ""}.`;
  }
  next.addEventListener("click", () => { cursors.push(next.dataset.cursor); load(); });
  first.addEventListener("click", () => { cursors = [""]; load(); });
  reload.addEventListener("click", load);

  main.append(h("div.heading", {}, h("h1", {}, "Dead letters")),
    h("p.muted", {}, "Commands of this tenant that could not be processed, with the reason. Once the cause is fixed, an operator replays one with ", h("code", {}, "orchestrator dlq replay <seq>"), "."),
    h("div.toolbar", {}, reload, first, next), status, out,
    h("div.scroll", {}, h("table.list#dlq", {},
      h("caption.visually-hidden", {}, "Dead letters"),
      h("thead", {}, h("tr", {}, ["Seq", "Time", "Campaign", "Command", "Command id", "Reason", "Body"].map((c) => h("th", { scope: "col" }, c)))),
      body)));
  load();
}

// ---- workflows -----------------------------------------------------------------

function workflowsView(main) {
  document.title = "Workflows · Campaign Orchestrator";
  const list = h("div#workflows");
  main.append(h("div.heading", {}, h("h1", {}, "Workflows")), h("p.muted", {}, "The workflows a campaign can be created with, and their steps in order."), list);
  api.request("GET", "/api/v1/workflows").then(({ data }) => {
    list.replaceChildren(...data.workflows.map((w) => h("section.card", { "aria-labelledby": "wf-" + w.name, "data-workflow": w.name },
      h("h2", { id: "wf-" + w.name }, w.name, w.name === data.default ? h("span.badge", {}, "default") : null),
      h("ol.steps", {}, w.steps.map((s) => h("li", {}, h("strong", {}, s.name),
        s.timeout_ms ? ` · timeout ${fmtMs(s.timeout_ms)}` : "",
        s.retry ? ` · retries ${s.retry.max_retries}× on ${(s.retry.retry_on_status || []).join(", ") || "network errors"}${s.retry.backoff_base_ms ? ` from ${fmtMs(s.retry.backoff_base_ms)}` : ""}` : ""))))));
  }).catch((err) => failed(err, list));
}

// ---- start -------------------------------------------------------------------

async function start() {
  $("#page-origin").textContent = location.origin;
  try {
    const res = await fetch("/config.json", { cache: "no-store" });
    config = await res.json();
  } catch (e) {
    $("#main").replaceChildren(errorBox("Cannot load /config.json from the dashboard: " + e));
    return;
  }
  $("#api-origin").textContent = config.api;
  $("#signout").addEventListener("click", () => { clearSession(); banner(""); navigate("#/signin", "Signed out."); });
  window.addEventListener("hashchange", route);
  route();
}

start();
