// The dashboard in a real browser: Debian's Chromium, headless, driven by
// playwright-core. Run by TestDashboardBrowser (cmd/orchestrator), which
// starts the service, a step service whose steps can be held, and the
// dashboard on two origins, and passes them here:
//
//   CHROMIUM       the browser executable (never downloaded)
//   DASHBOARD_URL  the dashboard on an origin in CORS_ALLOWED_ORIGINS
//   REFUSED_URL    the same dashboard on an origin that is not
//   API_URL        the API itself (for this script's own setup calls)
//   CONTROL_URL    the test's control endpoint: /release?campaign=, /held?campaign=, /cut, /restore
//   ARTIFACTS      where the screenshots go
//   TOKEN_DASHBOARD_URL, TOKEN  the dashboard of a second service, which has
//                  bearer tokens (production mode), and tenant acme's token
//
// Every wait has a deadline; a failed step prints what the page showed.

import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";

const axeSource = await readFile(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

const env = (k) => { const v = process.env[k]; if (!v) throw new Error(`${k} is not set`); return v; };
const DASH = env("DASHBOARD_URL"), REFUSED = env("REFUSED_URL"), API = env("API_URL"), CONTROL = env("CONTROL_URL"), OUT = env("ARTIFACTS");
const WAIT = { timeout: 30_000 };

const browser = await chromium.launch({
  executablePath: env("CHROMIUM"),
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
});
const pageErrors = [];
const posts = []; // every POST a page sent: {url, key (its Idempotency-Key header)}
let page;

async function newPage(ctxOpts = {}) {
  const ctx = await browser.newContext({ viewport: { width: 1200, height: 860 }, reducedMotion: "reduce", ...ctxOpts });
  const p = await ctx.newPage();
  p.on("pageerror", (e) => pageErrors.push(`${p.url()}: ${e.message}`));
  p.on("request", (r) => { if (r.method() === "POST") posts.push({ url: r.url(), key: r.headers()["idempotency-key"] }); });
  p.on("console", (m) => { if (m.type() === "error") console.log(`  [console] ${m.text()}`); });
  return p;
}

let n = 0;
async function step(name, f) {
  n++;
  const t0 = Date.now();
  try {
    await f();
    console.log(`ok ${n} - ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    console.log(`not ok ${n} - ${name}\n${e.stack}`);
    if (page) {
      await page.screenshot({ path: path.join(OUT, `failed-${n}.png`), fullPage: true }).catch(() => {});
      console.log("--- the page's text ---\n" + (await page.locator("body").innerText().catch(() => "?")));
    }
    await browser.close();
    process.exit(1);
  }
}

/**
 * Screenshots the screen and checks its accessibility with axe-core (WCAG
 * 2.1 A and AA rules): a serious or critical violation fails the step.
 * axe is evaluated through the DevTools protocol, which the page's
 * Content-Security-Policy does not restrict.
 */
async function shot(name, p = page) {
  await p.screenshot({ path: path.join(OUT, name + ".png"), fullPage: true });
  if (!(await p.evaluate(() => typeof window.axe === "object"))) await p.evaluate(axeSource + "\n;0");
  const res = await p.evaluate(() => window.axe.run(document, { runOnly: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"], resultTypes: ["violations"] }));
  const bad = res.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  for (const v of res.violations) console.log(`  [axe ${name}] ${v.impact} ${v.id}: ${v.help} (${v.nodes.map((x) => x.target.join(" ")).slice(0, 3).join(", ")})`);
  assert.equal(bad.length, 0, `${name}: accessibility violations ${bad.map((v) => v.id).join(", ")}`);
  axeChecked++;
}
let axeChecked = 0;
const control = async (what) => { const r = await fetch(CONTROL + what); assert.equal(r.status, 200, `control ${what}`); return r.text(); };
const stateIs = (s) => page.locator(`#campaign-state [data-state="${s}"]`).waitFor(WAIT);
const stepIs = (name, outcome) => page.locator(`#timeline li[data-step="${name}"][data-outcome="${outcome}"]`).waitFor(WAIT);

/**
 * The timeline is drawn, not only listed: each named step has a bar of
 * some width on its track, and each bar starts where the one before it
 * ended or later (the steps ran one after the other). Returns the bars.
 */
async function assertDrawn(names) {
  const bars = [];
  for (const name of names) {
    const li = page.locator(`#timeline li[data-step="${name}"]`);
    const track = await li.locator(".track").boundingBox();
    const bar = await li.locator(".bar").boundingBox();
    assert.ok(track && bar && bar.width >= 3, `${name}: a bar is drawn (${JSON.stringify(bar)})`);
    assert.ok(bar.x >= track.x - 1 && bar.x + bar.width <= track.x + track.width + 1, `${name}: the bar is on its track`);
    bars.push({ name, start: bar.x, end: bar.x + bar.width });
  }
  for (let i = 1; i < bars.length; i++) {
    assert.ok(bars[i].start >= bars[i - 1].end - 2, `${bars[i].name} is drawn after ${bars[i - 1].name}: ${JSON.stringify(bars)}`);
  }
  return bars;
}

async function until(what, f, ms = 30_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await f()) return;
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function buttons() {
  const out = {};
  for (const v of ["start", "pause", "resume", "cancel", "retry"]) out[v] = await page.locator(`button[data-verb="${v}"]`).isEnabled();
  return out;
}

/** The event table's sequences, in page order. */
const sequences = () => page.locator("#events tbody tr").evaluateAll((rows) => rows.map((r) => Number(r.dataset.seq)));
const assertContiguous = (seqs) => assert.deepEqual(seqs, seqs.map((_, i) => i + 1), `event sequences ${seqs}`);

// Setup through the API itself (no Origin: not a browser): 22 pending
// campaigns, so that the list has a second page.
for (let i = 1; i <= 22; i++) {
  const id = `bulk-${String(i).padStart(2, "0")}`;
  const r = await fetch(API + "/api/v1/campaigns", {
    method: "POST", headers: { "Content-Type": "application/json", "X-Tenant-ID": "acme" },
    body: JSON.stringify({ campaign_id: id, name: `Bulk ${i}`, params: { batch: i } }),
  });
  assert.equal(r.status, 202, `create ${id}`);
}

page = await newPage();

await step("sign in: an API error is shown with its message, then the tenant signs in", async () => {
  await page.goto(DASH + "/");
  await page.getByRole("heading", { name: "Sign in" }).waitFor(WAIT);
  await shot("01-signin");
  // This API runs in development mode: a token alone names no tenant.
  await page.getByLabel("Bearer token").fill("not-a-real-token-0123456789");
  await page.getByRole("button", { name: "Sign in" }).click();
  const err = page.getByRole("alert").filter({ hasText: "X-Tenant-ID" });
  await err.waitFor(WAIT);
  assert.match(await err.innerText(), /development mode/);
  await page.getByLabel("Bearer token").fill("");
  await page.getByLabel("Tenant (development mode)").fill("acme");
  await page.keyboard.press("Enter"); // the form works from the keyboard
  await page.getByRole("heading", { name: "Campaigns", level: 1 }).waitFor(WAIT);
  assert.equal(await page.evaluate(() => JSON.parse(sessionStorage.getItem("orchestrator.session")).tenant), "acme");
});

await step("workflows: every workflow with its steps", async () => {
  await page.getByRole("link", { name: "Workflows" }).click();
  const std = page.locator('[data-workflow="standard"]');
  await std.waitFor(WAIT);
  assert.deepEqual(await std.locator("li strong").allInnerTexts(), ["validate", "segment", "render", "schedule", "dispatch"]);
  const express = page.locator('[data-workflow="express"]');
  assert.deepEqual(await express.locator("li strong").allInnerTexts(), ["validate", "dispatch"]);
  assert.match(await express.innerText(), /retries 2× on 503/);
  await shot("02-workflows");
});

await step("campaigns: paged with a cursor, filtered by state", async () => {
  await page.getByRole("link", { name: "Campaigns" }).click();
  await page.locator('tr[data-campaign="bulk-01"]').waitFor(WAIT);
  assert.equal(await page.locator("tbody tr[data-campaign]").count(), 20);
  const next = page.getByRole("button", { name: "Next page" });
  assert.ok(await next.isEnabled());
  await next.click();
  await page.locator('tr[data-campaign="bulk-21"]').waitFor(WAIT);
  assert.deepEqual(await page.locator("tbody tr[data-campaign]").evaluateAll((r) => r.map((x) => x.dataset.campaign)), ["bulk-21", "bulk-22"]);
  assert.ok(!(await next.isEnabled()));
  await page.getByRole("button", { name: "First page" }).click();
  await page.locator('tr[data-campaign="bulk-01"]').waitFor(WAIT);
  await page.getByLabel("State").selectOption("running");
  await page.getByText("No running campaigns.").waitFor(WAIT);
  await page.getByLabel("State").selectOption("");
  await page.locator('tr[data-campaign="bulk-01"]').waitFor(WAIT);
});

await step("campaigns: a state change shows up live in the list", async () => {
  // Started from outside the page; the list follows without a reload.
  const r = await fetch(API + "/api/v1/campaigns/bulk-02/start", { method: "POST", headers: { "X-Tenant-ID": "acme" } });
  assert.equal(r.status, 202);
  await page.locator('tr[data-campaign="bulk-02"] [data-state="completed"]').waitFor(WAIT);
  await shot("03-campaigns");
});

await step("create and start a campaign; its timeline reaches completed live", async () => {
  await page.getByLabel("Name").fill("Spring sale");
  await page.getByLabel("Campaign id (optional)").fill("spring");
  await page.getByLabel("Params (JSON object)").fill('{"segment": "vip", "hold": "render"}');
  await page.getByLabel("Start now").check();
  await page.getByRole("button", { name: "Create" }).click();
  await page.getByRole("heading", { name: "Spring sale", level: 1 }).waitFor(WAIT);
  // The step service holds render: the campaign is seen running mid-way.
  await stepIs("render", "running");
  await stateIs("running");
  await stepIs("segment", "succeeded");
  assert.equal(await page.locator('#timeline li[data-outcome="pending"]').count(), 2);
  assert.deepEqual(await buttons(), { start: false, pause: true, resume: false, cancel: true, retry: false });
  await shot("04-campaign-running");
  await page.screenshot({ path: path.join(OUT, "readme.png") }); // the viewport only: docs/dashboard.png
  await control("/release?campaign=spring");
  await stateIs("completed");
  for (const s of ["validate", "segment", "render", "schedule", "dispatch"]) await stepIs(s, "succeeded");
  const seqs = await sequences();
  assert.equal(seqs.length, 13);
  assertContiguous(seqs);
  const types = await page.locator("#events tbody tr").evaluateAll((rows) => rows.map((r) => r.dataset.type));
  assert.equal(types[0], "campaign.created");
  assert.equal(types.at(-1), "campaign.completed");
  await page.locator("#outputs details").nth(4).waitFor(WAIT);
  assert.equal(await page.locator("#outputs summary").count(), 5);
  assert.match(await page.locator("#timeline").innerText(), /1 attempt/);
  const steps = ["validate", "segment", "render", "schedule", "dispatch"];
  await assertDrawn(steps);
  for (const s of steps) {
    // start (offset from the first step), duration, attempts, outcome
    assert.match(await page.locator(`#timeline li[data-step="${s}"] .step-facts`).innerText(), /^succeeded started \+\d[\d.]* (ms|s) · \d[\d.]* (ms|s) · 1 attempt$/, s);
  }
  assert.deepEqual(await buttons(), { start: false, pause: false, resume: false, cancel: false, retry: false });
  await shot("05-campaign-completed");
  await page.emulateMedia({ colorScheme: "dark" });
  await shot("05-campaign-completed-dark");
  await page.emulateMedia({ colorScheme: "light" });
});

await step("an API error is shown with its message (the campaign exists)", async () => {
  await page.getByRole("link", { name: "Campaigns" }).first().click();
  await page.getByLabel("Name").fill("Spring again");
  await page.getByLabel("Campaign id (optional)").fill("spring");
  await page.getByLabel("Params (JSON object)").fill("{not json");
  await page.getByRole("button", { name: "Create" }).click();
  await page.getByRole("alert").filter({ hasText: "Params: not valid JSON" }).waitFor(WAIT);
  assert.equal(await page.getByLabel("Params (JSON object)").getAttribute("aria-invalid"), "true");
  await page.getByLabel("Params (JSON object)").fill("{}");
  await page.getByRole("button", { name: "Create" }).click();
  const err = page.getByRole("alert").filter({ hasText: "409" });
  await err.waitFor(WAIT);
  assert.match(await err.innerText(), /campaign_id: campaign "spring" already exists/);
  assert.equal(await page.getByLabel("Campaign id (optional)").getAttribute("aria-invalid"), "true");
});

await step("pause and resume another campaign mid-run; a rejected verb's error; the stream resumes after a drop", async () => {
  await page.getByLabel("Name").fill("Autumn");
  await page.getByLabel("Campaign id (optional)").fill("autumn");
  await page.getByLabel("Params (JSON object)").fill('{"hold": "segment"}');
  await page.getByLabel("Start now").check();
  await page.getByRole("button", { name: "Create" }).click();
  await stepIs("segment", "running");
  await until("segment held at the step service", async () => (await control("/held?campaign=autumn")) === "true");
  const before = (await sequences()).length;

  // The connection drops; nothing reaches the page until it is back.
  assert.ok(Number(await control("/cut")) >= 1, "an event stream was open");
  await page.locator('#stream-status[data-state="waiting"], #stream-status[data-state="connecting"][data-reconnects="1"]').waitFor(WAIT);

  // Pause while segment runs: accepted, applied when the step ends. A
  // second pause, sent while the page still knows the campaign as
  // running, is rejected by the state machine once the first applied.
  const pause = page.locator('button[data-verb="pause"]');
  await pause.click();
  await page.locator('#action-messages [data-verb="pause"]').filter({ hasText: "accepted" }).first().waitFor(WAIT);
  await until("pause enabled again", () => pause.isEnabled());
  await pause.click();
  await until("two pauses accepted", async () => (await page.locator('#action-messages [data-verb="pause"]').filter({ hasText: "accepted" }).count()) === 2);
  await control("/release?campaign=autumn");
  // The campaign pauses and rejects the second pause while the stream is cut.
  await until("autumn paused in the service", async () => {
    const r = await fetch(API + "/api/v1/campaigns/autumn", { headers: { "X-Tenant-ID": "acme" } });
    const c = await r.json();
    return c.state === "paused" && c.sequence >= before + 3;
  });
  assert.equal((await sequences()).length, before, "no event reached the page while the stream was cut");
  await control("/restore");

  // Back: the page resumes after the last event it had (Last-Event-ID).
  await page.locator('#stream-status[data-state="live"]').filter({ hasText: `resumed after event ${before}` }).waitFor(WAIT);
  await stateIs("paused");
  const rejected = page.getByRole("alert").filter({ hasText: "pause was rejected" });
  await rejected.waitFor(WAIT);
  assert.match(await rejected.innerText(), /cannot pause a paused campaign/);
  await page.locator("#action-messages .ok").filter({ hasText: "pause: applied" }).waitFor(WAIT);
  assertContiguous(await sequences());
  await stepIs("segment", "succeeded");
  await stepIs("render", "pending");
  assert.deepEqual(await buttons(), { start: false, pause: false, resume: true, cancel: true, retry: false });
  await shot("06-campaign-paused");

  await page.locator('button[data-verb="resume"]').click();
  await stateIs("completed");
  await page.locator("#action-messages .ok").filter({ hasText: "resume: applied" }).waitFor(WAIT);
  const seqs = await sequences();
  assertContiguous(seqs);
  const types = await page.locator("#events tbody tr").evaluateAll((rows) => rows.map((r) => r.dataset.type));
  for (const t of ["campaign.paused", "campaign.command.rejected", "campaign.resumed", "campaign.completed"]) assert.ok(types.includes(t), `${t} in ${types}`);
  assert.equal(types.filter((t) => t === "campaign.step.succeeded").length, 5);
});

await step("a failed step: the campaign fails, only retry is allowed, and retry re-runs the step", async () => {
  await page.getByRole("link", { name: "Campaigns" }).first().click();
  await page.getByLabel("Name").fill("Winter");
  await page.getByLabel("Campaign id (optional)").fill("winter");
  await page.getByLabel("Params (JSON object)").fill('{"fail_once": "render"}');
  await page.getByLabel("Start now").check();
  await page.getByRole("button", { name: "Create" }).click();
  await stateIs("failed");
  await stepIs("render", "failed");
  await stepIs("schedule", "pending");
  assert.match(await page.locator("dl.meta").innerText(), /step render: .*500/);
  assert.match(await page.locator('#timeline li[data-step="render"]').innerText(), /500/);
  assert.deepEqual(await buttons(), { start: false, pause: false, resume: false, cancel: false, retry: true });
  await shot("07-campaign-failed");
  await page.locator('button[data-verb="retry"]').click();
  await stateIs("completed");
  await page.locator("#action-messages .ok").filter({ hasText: "retry: applied" }).waitFor(WAIT);
  assert.match(await page.locator('#timeline li[data-step="render"]').innerText(), /succeeded.*run 2/);
  await until("the error cleared", async () => !/Error/.test(await page.locator("dl.meta").innerText()));
  assertContiguous(await sequences());
});

await step("a pending campaign of another workflow: only start and cancel allowed; started from the page, and another cancelled", async () => {
  await page.getByRole("link", { name: "Campaigns" }).first().click();
  await page.getByLabel("Name").fill("Summer");
  await page.getByLabel("Campaign id (optional)").fill("summer");
  await page.getByLabel("Workflow").selectOption("express");
  await page.getByLabel("Params (JSON object)").fill("{}");
  assert.equal(await page.getByLabel("Start now").isChecked(), false);
  await page.getByRole("button", { name: "Create" }).click();
  await stateIs("pending");
  await until("start enabled", () => page.locator('button[data-verb="start"]').isEnabled());
  assert.deepEqual(await buttons(), { start: true, pause: false, resume: false, cancel: true, retry: false });
  assert.deepEqual(await page.locator("#timeline li").evaluateAll((li) => li.map((x) => `${x.dataset.step} ${x.dataset.outcome}`)), ["validate pending", "dispatch pending"]);
  assert.match(await page.locator("dl.meta").innerText(), /express/);
  await shot("11-campaign-pending");
  await page.locator('button[data-verb="start"]').click();
  await page.locator("#action-messages .ok").filter({ hasText: "start: applied" }).waitFor(WAIT);
  await stateIs("completed");
  await assertDrawn(["validate", "dispatch"]);
  // The start this page sent is the one the service applied: its command id
  // is derived from the page's Idempotency-Key (idem-…).
  assert.match(await page.locator('#events tbody tr[data-type="campaign.started"]').innerText(), /command idem-[0-9a-f]{32}/);

  await page.getByRole("link", { name: "Campaigns" }).first().click();
  await page.locator('tr[data-campaign="bulk-03"] a').click();
  await page.getByRole("heading", { name: "Bulk 3", level: 1 }).waitFor(WAIT);
  await stateIs("pending");
  await until("cancel enabled", () => page.locator('button[data-verb="cancel"]').isEnabled());
  assert.deepEqual(await buttons(), { start: true, pause: false, resume: false, cancel: true, retry: false });
  await page.locator('button[data-verb="cancel"]').click();
  await page.locator("#action-messages .ok").filter({ hasText: "cancel: applied" }).waitFor(WAIT);
  await stateIs("cancelled");
  assert.deepEqual(await buttons(), { start: false, pause: false, resume: false, cancel: false, retry: false });
  assert.equal(await page.locator('#timeline li[data-outcome="pending"]').count(), 5, "no step ran");
  await page.getByRole("link", { name: "Campaigns" }).first().click();
  await page.locator('tr[data-campaign="bulk-03"] [data-state="cancelled"]').waitFor(WAIT);
});

await step("dead letters: the tenant's, with reason, time and command", async () => {
  await page.getByRole("link", { name: "Dead letters" }).click();
  const row = page.locator("#dlq tbody tr[data-seq]");
  await row.first().waitFor(WAIT);
  assert.equal(await row.count(), 1, "only acme's dead letter");
  const text = await row.first().innerText();
  assert.match(text, /ghost/);
  assert.match(text, /start/);
  assert.match(text, /acme-ghost-1/);
  assert.match(text, /unknown campaign/);
  assert.doesNotMatch(text, /globex/);
  assert.match(await row.first().locator("td").nth(1).innerText(), /\b\d{4}\b.*\d{2}:\d{2}:\d{2}/, "the time it was dead-lettered");
  await row.first().locator("summary").click();
  assert.match(await row.first().locator("pre").innerText(), /"campaign_id": "ghost"/);
  await shot("08-dead-letters");
});

await step("sign out", async () => {
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("heading", { name: "Sign in" }).waitFor(WAIT);
  assert.equal(await page.evaluate(() => sessionStorage.getItem("orchestrator.session")), null);
});

await step("with bearer tokens (production mode): a bad token is refused, the right one works, events included", async () => {
  page = await newPage();
  await page.goto(env("TOKEN_DASHBOARD_URL") + "/");
  await page.getByLabel("Bearer token").fill("wrong-token-0123456789abcdef");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").filter({ hasText: "401 unauthorized: unknown bearer token" }).waitFor(WAIT);
  await page.getByLabel("Bearer token").fill(env("TOKEN"));
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Campaigns", level: 1 }).waitFor(WAIT);
  assert.equal(await page.locator("#who").innerText(), "Signed in with a token");
  await page.getByLabel("Name").fill("With a token");
  await page.getByLabel("Campaign id (optional)").fill("with-token");
  await page.getByLabel("Start now").check();
  await page.getByRole("button", { name: "Create" }).click();
  await stateIs("completed"); // the event stream too carries the token
  assertContiguous(await sequences());
  assert.equal((await sequences()).length, 13);
  await shot("10-with-token");
});

await step("the same dashboard from an origin not on the whitelist gets nothing", async () => {
  page = await newPage();
  await page.goto(REFUSED + "/");
  await page.getByLabel("Tenant (development mode)").fill("acme");
  await page.getByRole("button", { name: "Sign in" }).click();
  const banner = page.locator("#banner");
  await banner.filter({ hasText: "refused" }).waitFor(WAIT);
  const text = await banner.innerText();
  assert.match(text, new RegExp(`refused this page's origin \\(${REFUSED.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\)`));
  assert.match(text, /CORS_ALLOWED_ORIGINS/);
  assert.equal(await page.evaluate(() => sessionStorage.getItem("orchestrator.session")), null, "not signed in");
  await shot("09-refused-origin");
  // Even with a session, no screen gets any data.
  await page.evaluate(() => { sessionStorage.setItem("orchestrator.session", JSON.stringify({ tenant: "acme" })); location.hash = "#/campaigns"; });
  await page.getByRole("heading", { name: "Campaigns", level: 1 }).waitFor(WAIT);
  await page.getByRole("alert").filter({ hasText: "refused" }).first().waitFor(WAIT);
  assert.equal(await page.locator("tbody tr[data-campaign]").count(), 0);
  await page.getByLabel("Name").fill("From a refused origin");
  await page.getByLabel("Campaign id (optional)").fill("refused-1");
  await page.getByRole("button", { name: "Create" }).click();
  await page.locator("#create").getByRole("alert").filter({ hasText: "refused" }).waitFor(WAIT);
});

await browser.close();
assert.deepEqual(pageErrors, [], "uncaught errors in the page");
// create and every verb: each POST with an Idempotency-Key, a new one each time
const verbs = new Set(posts.map((p) => new URL(p.url).pathname.replace(/^\/api\/v1\/campaigns(\/[^/]+\/)?/, "") || "create"));
for (const v of ["create", "start", "pause", "resume", "cancel", "retry"]) assert.ok(verbs.has(v), `the pages sent ${v}: ${[...verbs]}`);
for (const p of posts) assert.match(p.key || "", /^dash-[0-9a-f]{32}$/, `Idempotency-Key of POST ${p.url}`);
assert.equal(new Set(posts.map((p) => p.key)).size, posts.length, "a new Idempotency-Key for each command");
console.log(`${posts.length} POSTs (${[...verbs].sort().join(", ")}), each with its own Idempotency-Key`);
assert.ok(axeChecked >= 12, `axe checked ${axeChecked} screens`);
console.log(`${n} passed, 0 failed`);
