// The developer console: plain DOM code over Coffer's developer routes, no build step.
// Settings come from ./config.json ({"apiBase": "https://…", "local": false}). The local stack
// serves the page at /console/ and signs a developer in by name; deployed, the developer pastes
// their identity provider's JWT (kept in this page's memory only).
"use strict";

const state = { api: "", token: "", local: false, project: null, testMode: "true", account: null };
const $ = (id) => document.getElementById(id);

function say(text, isError) {
  const message = $("message");
  message.textContent = text;
  message.className = isError ? "error" : "";
}

async function call(method, path, body) {
  const response = await fetch(`${state.api}${path}`, {
    method,
    headers: {
      Authorization: `Bearer ${state.token}`,
      ...(body === undefined ? {} : { "Content-Type": "application/json" }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let answer = {};
  try {
    answer = await response.json();
  } catch (_) {
    answer = {};
  }
  if (!response.ok || answer.success === false) {
    const reason = answer.error || `the request failed (${response.status})`;
    if (response.status === 401) throw new Error(`Sign in again: ${reason}`);
    if (response.status === 403) throw new Error(`This token may not do that (${reason}): sign in as the project's developer.`);
    throw new Error(reason);
  }
  return answer;
}

const projectPath = (path) => `/api/v1/payments/stripe/projects/${encodeURIComponent(state.project)}${path}`;
const scoped = (path) => `${projectPath(path)}${path.includes("?") ? "&" : "?"}test_mode=${state.testMode}`;

function money(amount, currency) {
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency: currency.toUpperCase() }).format(amount);
  } catch (_) {
    return `${amount} ${currency}`;
  }
}

const number = (value) => new Intl.NumberFormat(undefined, { maximumFractionDigits: 4 }).format(value);
const when = (text) => (text ? new Date(text).toLocaleString() : "—");

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined || text === "" ? "—" : String(text);
  row.appendChild(td);
  return td;
}

function button(label, onClick, secondary) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  if (secondary) b.className = "secondary";
  b.addEventListener("click", onClick);
  return b;
}

function table(caption, headers, rows) {
  const t = document.createElement("table");
  const c = document.createElement("caption");
  c.textContent = caption;
  t.appendChild(c);
  const head = t.createTHead().insertRow();
  for (const h of headers) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = h;
    head.appendChild(th);
  }
  const body = t.createTBody();
  for (const values of rows) {
    const row = body.insertRow();
    values.forEach((v) => cell(row, v));
  }
  return t;
}

function definition(list, term, value) {
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  dd.textContent = value === null || value === undefined || value === "" ? "—" : String(value);
  list.append(dt, dd);
}

async function guarded(work) {
  try {
    await work();
  } catch (error) {
    say(error.message, true);
  }
}

function modeStatus(mode) {
  if (!mode || !mode.configured) return "not configured";
  return mode.isActive ? "active" : "deactivated";
}

async function loadProjects() {
  const { data } = await call("GET", "/api/v1/payments/projects");
  const body = $("projects").querySelector("tbody");
  body.replaceChildren();
  for (const project of data) {
    const row = body.insertRow();
    cell(row, project.projectId);
    cell(row, modeStatus(project.test));
    cell(row, modeStatus(project.live));
    const testMode = project.test && project.test.configured ? "true" : "false";
    cell(row, "").replaceChildren(button(`Open ${project.projectId}`, () => guarded(() => openProject(project.projectId, testMode))));
  }
  if (data.length === 0) say("You have no projects yet: configure one with PUT /api/v1/payments/stripe/projects/{id}/config.");
}

async function openProject(id, testMode) {
  if (state.project !== id) state.account = null;
  state.project = id;
  if (testMode) {
    state.testMode = testMode;
    $("mode").value = testMode;
  }
  $("project").hidden = false;
  $("project-title").textContent = `Project ${id}`;
  $("account").replaceChildren();
  $("deliveries").replaceChildren();
  $("secret").textContent = "";
  $("secret-box").hidden = true;
  const lookups = state.account ? [lookUp(state.account)] : [];
  await Promise.all([loadKeys(), loadStats(), loadPackages(), loadPlans(), loadEndpoints(), ...lookups]);
  say(`Project ${id}, ${state.testMode === "true" ? "test" : "live"} mode.`);
}

async function loadKeys() {
  const keys = $("keys");
  keys.replaceChildren();
  try {
    const { data } = await call("GET", scoped("/config"));
    definition(keys, "Secret key", data.secretKey);
    definition(keys, "Publishable key", data.publishableKey);
    definition(keys, "Status", modeStatus(data));
    definition(keys, "Webhook signing secret", data.webhookSecretSet ? "stored" : "not stored yet");
  } catch (error) {
    definition(keys, "Keys", error.message);
  }
  const { data: urls } = await call("GET", scoped("/webhook-urls"));
  definition(keys, "Webhook URL to paste into Stripe (test)", urls.test);
  definition(keys, "Webhook URL to paste into Stripe (live)", urls.live);
  definition(keys, "Events to select in Stripe", urls.events.join(", "));
}

// One bar per day, drawn as SVG; the figures are also in a table under the chart.
function chart(title, days, valueOf, format) {
  const values = days.map(valueOf);
  const max = Math.max(0, ...values);
  const width = 600;
  const height = 150;
  const step = width / Math.max(days.length, 1);
  const ns = "http://www.w3.org/2000/svg";
  const figure = document.createElement("figure");
  figure.className = "chart";
  figure.dataset.series = title;
  const caption = document.createElement("figcaption");
  const total = values.reduce((a, b) => a + b, 0);
  caption.textContent = `${title}: ${format(values[values.length - 1] || 0)} today, highest ${format(max)}`;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height + 18}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `${title} per day over ${days.length} days, ${format(total)} in all`);
  days.forEach((day, i) => {
    const value = values[i];
    const h = max > 0 ? Math.max(value > 0 ? 2 : 0, (value / max) * height) : 0;
    const bar = document.createElementNS(ns, "rect");
    bar.setAttribute("x", String(i * step + 1));
    bar.setAttribute("y", String(height - h));
    bar.setAttribute("width", String(Math.max(step - 2, 1)));
    bar.setAttribute("height", String(h));
    bar.setAttribute("data-date", day.date);
    bar.setAttribute("data-value", String(value));
    const tip = document.createElementNS(ns, "title");
    tip.textContent = `${day.date}: ${format(value)}`;
    bar.appendChild(tip);
    svg.appendChild(bar);
  });
  for (const [i, anchor] of [[0, "start"], [days.length - 1, "end"]]) {
    if (!days[i]) continue;
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", String(anchor === "start" ? 0 : width));
    label.setAttribute("y", String(height + 14));
    label.setAttribute("text-anchor", anchor);
    label.textContent = days[i].date;
    svg.appendChild(label);
  }
  const details = document.createElement("details");
  const summary = document.createElement("summary");
  summary.textContent = `${title}: the figures`;
  details.append(summary, table(title, ["Day", title], days.map((d, i) => [d.date, format(values[i])])));
  figure.append(caption, svg, details);
  return figure;
}

async function loadStats() {
  const query = `project_id=${encodeURIComponent(state.project)}&test_mode=${state.testMode}`;
  const [{ data: totals }, { data: daily }] = await Promise.all([
    call("GET", `/api/v1/payments/stats?${query}`),
    call("GET", scoped("/stats/daily?days=30")),
  ]);
  const list = $("totals");
  list.replaceChildren();
  const scope = totals[0];
  if (scope) {
    const sums = (byCurrency) => Object.entries(byCurrency || {}).map(([c, v]) => money(v, c)).join(", ") || "none";
    definition(list, "Revenue", sums(scope.revenue));
    definition(list, "Refunds", sums(scope.refunds));
    definition(list, "Credits sold", number(scope.credits.sold));
    definition(list, "Credits spent", number(scope.credits.spent));
    definition(list, "Credits outstanding", number(scope.credits.outstanding));
    definition(list, "Active subscriptions", scope.activeSubscriptions);
  }
  const days = daily.days;
  const currencies = new Set();
  for (const day of days) {
    Object.keys(day.revenue).forEach((c) => currencies.add(c));
    Object.keys(day.refunds).forEach((c) => currencies.add(c));
  }
  if (currencies.size === 0) currencies.add(daily.currency);
  const charts = $("charts");
  charts.replaceChildren();
  for (const c of currencies) {
    charts.appendChild(chart(`Revenue (${c.toUpperCase()})`, days, (d) => d.revenue[c] || 0, (v) => money(v, c)));
    charts.appendChild(chart(`Refunds (${c.toUpperCase()})`, days, (d) => d.refunds[c] || 0, (v) => money(v, c)));
  }
  charts.appendChild(chart("Credits sold", days, (d) => d.creditsSold, number));
  charts.appendChild(chart("Credits spent", days, (d) => d.creditsSpent, number));
  charts.appendChild(chart("Active subscriptions", days, (d) => d.activeSubscriptions, number));
}

function editButton(label, fill) {
  return button(label, () => {
    fill();
    say(`${label}: change the fields below and save.`);
  }, true);
}

async function loadPackages() {
  const { data } = await call("GET", scoped("/credit-packages"));
  const body = $("packages").querySelector("tbody");
  body.replaceChildren();
  for (const p of data) {
    const row = body.insertRow();
    [p.id, p.name, money(p.amount, p.currency), number(p.creditAmount), p.isActive ? "yes" : "no"].forEach((v) => cell(row, v));
    cell(row, "").replaceChildren(editButton(`Edit package ${p.id}`, () => {
      $("package-id").value = p.id;
      $("package-name").value = p.name;
      $("package-amount").value = p.amount;
      $("package-currency").value = p.currency;
      $("package-credits").value = p.creditAmount;
      $("package-active").checked = p.isActive;
      $("package-name").focus();
    }));
  }
}

const limitsText = (limits) => Object.entries(limits || {}).map(([k, v]) => `${k}=${v}`).join(", ");

async function loadPlans() {
  const { data } = await call("GET", scoped("/plans"));
  const body = $("plans").querySelector("tbody");
  body.replaceChildren();
  for (const p of data) {
    const row = body.insertRow();
    const price = p.amount === null || p.amount === undefined ? (p.priceId || "free") : money(p.amount, p.currency);
    [p.id, p.name, p.kind, price, limitsText(p.limits), p.active ? "yes" : "no"].forEach((v) => cell(row, v));
    cell(row, "").replaceChildren(editButton(`Edit plan ${p.id}`, () => {
      $("plan-id").value = p.id;
      $("plan-name").value = p.name;
      $("plan-amount").value = p.amount === null || p.amount === undefined ? "" : p.amount;
      $("plan-rank").value = p.rank;
      $("plan-limits").value = limitsText(p.limits);
      $("plan-active").checked = p.active;
      $("plan-name").focus();
    }));
  }
}

function parseLimits(text) {
  const limits = {};
  for (const part of text.split(",").map((t) => t.trim()).filter(Boolean)) {
    const [metric, value] = part.split("=").map((t) => t.trim());
    if (!metric || !/^\d+$/.test(value || "")) {
      throw new Error(`The limit "${part}" should read metric=number, for example requests=1000.`);
    }
    limits[metric] = Number(value);
  }
  return limits;
}

function decimal(text, name) {
  const value = Number(text);
  if (text.trim() === "" || !Number.isFinite(value)) throw new Error(`${name} should be a number, for example 9.99.`);
  return value;
}

async function lookUp(account) {
  const target = $("account");
  const { data } = await call("GET", scoped(`/accounts/${encodeURIComponent(account)}`));
  state.account = account;
  target.replaceChildren();
  const heading = document.createElement("h4");
  heading.textContent = `Account ${data.accountId}`;
  const facts = document.createElement("dl");
  const balance = data.balance;
  definition(facts, "Balance", `${number(balance.balance)} credits`);
  definition(facts, "Held by reservations", number(balance.held));
  definition(facts, "Plan", data.usage.planId);
  const sub = data.subscription;
  definition(facts, "Subscription", sub ? `${sub.planId}, ${sub.status}${sub.cancelAtPeriodEnd ? ", ends at the period's end" : ""}${sub.currentPeriodEnd ? `, period ends ${when(sub.currentPeriodEnd)}` : ""}` : "none");
  target.append(heading, facts);
  target.appendChild(table("Credit buckets, in the order spends take them", ["Credits", "Kind", "Expires", "Priority"],
    balance.buckets.map((b) => [number(b.amount), b.kind, b.expiresAt ? when(b.expiresAt) : "never", b.priority])));
  target.appendChild(table("Usage this period against the plan's limits", ["Metric", "Used", "Limit", "Left", "Resets"],
    data.usage.metrics.map((m) => [m.metric, m.used, m.limit, m.remaining, when(m.resetsAt)])));
  target.appendChild(table(`Ledger, newest first${data.ledgerComplete ? "" : " (the newest entries only)"}`, ["When", "Kind", "Credits", "Entry"],
    data.ledger.map((e) => [when(e.createdAt), e.kind, number(e.amount), e.reason ? `${e.entryId} (${e.reason})` : e.entryId])));
  target.appendChild(table(`Payments and grants, newest first${data.morePayments ? " (the newest only)" : ""}`, ["When", "What", "Status", "Amount", "Credits"],
    data.payments.map((p) => [when(p.createdAt), p.description || p.kind, p.status, p.amount === null || p.amount === undefined ? "" : money(p.amount, p.currency), number(p.creditAmount)])));
}

async function loadEndpoints() {
  const { data } = await call("GET", scoped("/webhooks"));
  const list = $("endpoints");
  list.replaceChildren();
  if (data.length === 0) {
    const none = document.createElement("li");
    none.textContent = "No endpoint yet.";
    list.appendChild(none);
  }
  for (const endpoint of data) {
    const item = document.createElement("li");
    const title = document.createElement("span");
    const status = endpoint.enabled ? "on" : `off${endpoint.disabledReason ? ` (${endpoint.disabledReason})` : ""}`;
    title.textContent = `${endpoint.url} · ${status} · ${endpoint.events ? endpoint.events.join(", ") : "all events"}`;
    item.append(
      title,
      button(`Deliveries to ${endpoint.url}`, () => guarded(() => loadDeliveries(endpoint)), true),
      button("Rotate the secret", () => guarded(async () => {
        const { data: rotated } = await call("POST", scoped(`/webhooks/${endpoint.id}/rotate-secret`));
        showSecret(rotated.secret, "The new signing secret (the old one still signs for 24 hours)");
      }), true),
      button(endpoint.enabled ? "Turn off" : "Turn on", () => guarded(async () => {
        await call("PUT", scoped(`/webhooks/${endpoint.id}`), { enabled: !endpoint.enabled });
        await loadEndpoints();
        say(`${endpoint.url} is turned ${endpoint.enabled ? "off" : "on"}.`);
      }), true),
      button("Delete", () => guarded(async () => {
        if (!window.confirm(`Delete the endpoint ${endpoint.url}?`)) return;
        await call("DELETE", scoped(`/webhooks/${endpoint.id}`));
        await loadEndpoints();
        say(`${endpoint.url} is deleted.`);
      }), true),
    );
    list.appendChild(item);
  }
}

function showSecret(secret, what) {
  $("secret-box").hidden = false;
  $("secret").textContent = `${what}, shown once: keep it now. ${secret}`;
}

async function loadDeliveries(endpoint) {
  const { data } = await call("GET", scoped(`/webhooks/${endpoint.id}/attempts?limit=20`));
  const target = $("deliveries");
  target.replaceChildren();
  const log = table(`Deliveries to ${endpoint.url}, newest first`, ["When", "Event", "Try", "Answer", "Outcome", "Latency", "Re-send"],
    data.map((a) => [when(a.at), `${a.eventType} ${a.eventId}`, a.attempt, a.status || "no answer", a.outcome, `${a.latencyMs} ms`, ""]));
  const rows = log.tBodies[0].rows;
  data.forEach((attempt, i) => {
    rows[i].cells[6].replaceChildren(button(`Re-send ${attempt.eventId}`, () => guarded(async () => {
      await call("POST", scoped(`/webhooks/${endpoint.id}/resend`), { eventId: attempt.eventId });
      say(`Event ${attempt.eventId} is queued to ${endpoint.url} again.`);
    }), true));
  });
  const refresh = button("Refresh the deliveries", () => guarded(() => loadDeliveries(endpoint)), true);
  target.append(log, refresh);
  if (data.length === 0) say(`No delivery to ${endpoint.url} yet.`);
}

function signedIn(name) {
  $("who").textContent = name;
  $("signed-in").hidden = false;
  $("local-sign-in").hidden = true;
  $("token-sign-in").hidden = true;
  $("console").hidden = false;
  guarded(loadProjects);
}

function wire() {
  $("local-sign-in").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(async () => {
      const name = $("developer-name").value.trim();
      const response = await fetch(`${state.api}/_local/token`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ name, developer: true }),
      });
      const answer = await response.json();
      if (!response.ok) throw new Error(answer.error || "Signing in failed.");
      state.token = answer.data.token;
      signedIn(name);
    });
  });
  $("token-sign-in").addEventListener("submit", (event) => {
    event.preventDefault();
    state.token = $("developer-token").value.trim();
    $("developer-token").value = "";
    signedIn("the token's developer");
  });
  $("sign-out").addEventListener("click", () => window.location.reload());
  $("mode").addEventListener("change", () => {
    state.testMode = $("mode").value;
    if (state.project) guarded(() => openProject(state.project));
  });
  $("secret-kept").addEventListener("click", () => {
    $("secret").textContent = "";
    $("secret-box").hidden = true;
    say("The secret is hidden; rotate it if it is lost.");
  });
  $("refresh-stats").addEventListener("click", () => guarded(async () => {
    await loadStats();
    say("The stats as they stand now.");
  }));
  $("check-credentials").addEventListener("click", () => guarded(async () => {
    const { data } = await call("POST", scoped("/validate-credentials"), {});
    say(data.valid ? "Stripe accepts the stored key." : `Stripe refuses the stored key: ${data.reason || "no reason given"}.`, !data.valid);
  }));
  $("package-form").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(async () => {
      const id = $("package-id").value.trim();
      await call("PUT", scoped(`/credit-packages/${encodeURIComponent(id)}`), {
        name: $("package-name").value.trim(),
        amount: decimal($("package-amount").value, "The price"),
        creditAmount: decimal($("package-credits").value, "The credits"),
        currency: $("package-currency").value.trim().toLowerCase(),
        isActive: $("package-active").checked,
      });
      await loadPackages();
      say(`Package ${id} is saved.`);
    });
  });
  $("plan-form").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(async () => {
      const id = $("plan-id").value.trim();
      const body = {
        name: $("plan-name").value.trim(),
        limits: parseLimits($("plan-limits").value),
        active: $("plan-active").checked,
      };
      if ($("plan-amount").value.trim() !== "") body.amount = decimal($("plan-amount").value, "The price");
      if ($("plan-rank").value.trim() !== "") body.rank = Math.trunc(decimal($("plan-rank").value, "The rank"));
      await call("PUT", scoped(`/plans/${encodeURIComponent(id)}`), body);
      await loadPlans();
      say(`Plan ${id} is saved.`);
    });
  });
  $("lookup-form").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(async () => {
      await lookUp($("account-id").value.trim());
      say(`Account ${$("account-id").value.trim()} as it stands now.`);
    });
  });
  $("endpoint-form").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(async () => {
      const types = $("endpoint-events").value.split(",").map((t) => t.trim()).filter(Boolean);
      const { data } = await call("POST", scoped("/webhooks"), {
        url: $("endpoint-url").value.trim(),
        ...(types.length ? { events: types } : {}),
      });
      $("endpoint-form").reset();
      showSecret(data.secret, `The signing secret of ${data.endpoint.url}`);
      await loadEndpoints();
      say(`${data.endpoint.url} is added.`);
    });
  });
}

async function start() {
  // Without its settings the page would send the token to wherever it is hosted: it stops.
  try {
    const response = await fetch("./config.json", { cache: "no-store" });
    if (!response.ok) throw new Error(String(response.status));
    const config = await response.json();
    if (typeof config.apiBase !== "string") throw new Error("no apiBase");
    state.api = config.apiBase.replace(/\/+$/, "");
    state.local = config.local === true;
  } catch (_) {
    say("This console has no readable config.json beside it, so it does not know the API's address: write {\"apiBase\": \"https://…\"} there (docs/console.md).", true);
    return;
  }
  // A token always works (deployed it is the only way); the local stack also signs in by name.
  $("local-sign-in").hidden = !state.local;
  $("token-sign-in").hidden = false;
  wire();
}

start();
