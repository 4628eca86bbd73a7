// The developer console: plain DOM code over Coffer's developer routes. Settings come from
// ./config.json ({"apiBase": "...", "local": true}); locally the stack serves the page at
// /console/ and signs a developer in by name, deployed the developer pastes their JWT.
"use strict";

const state = { api: "", token: "", local: false, project: null, testMode: "true", endpoint: null };
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
    throw new Error(answer.error || `The request failed (${response.status}).`);
  }
  return answer;
}

const scoped = (path) => `/api/v1/payments/stripe/projects/${encodeURIComponent(state.project)}${path}${path.includes("?") ? "&" : "?"}test_mode=${state.testMode}`;

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "—" : String(text);
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

async function guarded(work) {
  try {
    await work();
  } catch (error) {
    say(error.message, true);
  }
}

async function loadProjects() {
  const { data } = await call("GET", "/api/v1/payments/projects");
  const body = $("projects").querySelector("tbody");
  body.replaceChildren();
  for (const project of data) {
    const row = document.createElement("tr");
    cell(row, project.id);
    const modes = project.modes || {};
    cell(row, modes.test ? (modes.test.active ? "active" : "inactive") : "not configured");
    cell(row, modes.live ? (modes.live.active ? "active" : "inactive") : "not configured");
    cell(row, "").appendChild(button(`Open ${project.id}`, () => guarded(() => openProject(project.id))));
    body.appendChild(row);
  }
  if (data.length === 0) say("You have no projects yet: configure one with PUT …/projects/{id}/config.");
}

async function openProject(id) {
  state.project = id;
  $("project").hidden = false;
  $("project-title").textContent = `Project ${id}`;
  await Promise.all([loadKeys(), loadPackages(), loadPlans(), loadStats(), loadEndpoints()]);
  say(`Project ${id} in ${state.testMode === "true" ? "test" : "live"} mode.`);
}

function definition(list, term, value) {
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  dd.textContent = value === null || value === undefined ? "—" : String(value);
  list.append(dt, dd);
}

async function loadKeys() {
  const keys = $("keys");
  keys.replaceChildren();
  try {
    const { data } = await call("GET", scoped("/config"));
    definition(keys, "Secret key", data.secretKey);
    definition(keys, "Publishable key", data.publishableKey);
    definition(keys, "Active", data.active ? "yes" : "no");
  } catch (error) {
    definition(keys, "Keys", error.message);
  }
  const { data: urls } = await call("GET", scoped("/webhook-urls"));
  definition(keys, "Webhook URL (test)", urls.test);
  definition(keys, "Webhook URL (live)", urls.live);
  definition(keys, "Events to select in Stripe", urls.events.join(", "));
}

async function loadPackages() {
  const { data } = await call("GET", scoped("/credit-packages"));
  const body = $("packages").querySelector("tbody");
  body.replaceChildren();
  for (const p of data) {
    const row = document.createElement("tr");
    [p.id, p.name, `${p.amount} ${p.currency}`, p.creditAmount, p.isActive ? "yes" : "no"].forEach((v) => cell(row, v));
    body.appendChild(row);
  }
}

async function loadPlans() {
  const { data } = await call("GET", scoped("/plans"));
  const body = $("plans").querySelector("tbody");
  body.replaceChildren();
  for (const p of data) {
    const row = document.createElement("tr");
    const limits = Object.entries(p.limits || {}).map(([k, v]) => `${k}: ${v}`).join(", ");
    [p.id, p.name, p.kind, p.amount === null ? p.priceId : `${p.amount} ${p.currency}`, limits, p.active ? "yes" : "no"].forEach((v) => cell(row, v));
    body.appendChild(row);
  }
}

async function loadStats() {
  const { data } = await call("GET", `/api/v1/payments/stats?project_id=${encodeURIComponent(state.project)}&test_mode=${state.testMode}`);
  const stats = $("stats");
  stats.replaceChildren();
  const scope = data[0];
  if (!scope) {
    stats.textContent = "No counters yet.";
    return;
  }
  const list = document.createElement("dl");
  definition(list, "Revenue", Object.entries(scope.revenue || {}).map(([c, v]) => `${v} ${c}`).join(", ") || "0");
  definition(list, "Refunds", Object.entries(scope.refunds || {}).map(([c, v]) => `${v} ${c}`).join(", ") || "0");
  definition(list, "Credits sold", scope.credits && scope.credits.sold);
  definition(list, "Credits spent", scope.credits && scope.credits.spent);
  definition(list, "Credits outstanding", scope.credits && scope.credits.outstanding);
  definition(list, "Active subscriptions", scope.activeSubscriptions);
  stats.appendChild(list);
}

async function lookUp(account) {
  const target = $("account");
  target.replaceChildren();
  const base = `/accounts/${encodeURIComponent(account)}`;
  const { data: balance } = await call("GET", scoped(`${base}/balance`));
  const list = document.createElement("dl");
  definition(list, "Balance", `${balance.balance} ${balance.currency}`);
  for (const bucket of balance.buckets || []) {
    definition(list, `Bucket ${bucket.kind}`, `${bucket.remaining}${bucket.expiresAt ? ` until ${bucket.expiresAt}` : ""}`);
  }
  const { data: recharge } = await call("GET", scoped(`${base}/auto-recharge`));
  definition(list, "Auto-recharge", recharge.enabled ? `on below ${recharge.threshold}` : "off");
  target.appendChild(list);
}

async function loadEndpoints() {
  const { data } = await call("GET", scoped("/webhooks"));
  const list = $("endpoints");
  list.replaceChildren();
  for (const endpoint of data) {
    const item = document.createElement("li");
    const title = document.createElement("span");
    title.textContent = `${endpoint.url} — ${endpoint.enabled ? "on" : `off${endpoint.disabledReason ? ` (${endpoint.disabledReason})` : ""}`} — ${endpoint.events ? endpoint.events.join(", ") : "all events"}`;
    item.append(
      title,
      button("Deliveries", () => guarded(() => loadDeliveries(endpoint.id)), true),
      button("Rotate secret", () => guarded(async () => {
        const { data: rotated } = await call("POST", scoped(`/webhooks/${endpoint.id}/rotate-secret`));
        showSecret(rotated.secret);
      }), true),
      button(endpoint.enabled ? "Turn off" : "Turn on", () => guarded(async () => {
        await call("PUT", scoped(`/webhooks/${endpoint.id}`), { enabled: !endpoint.enabled });
        await loadEndpoints();
      }), true),
      button("Delete", () => guarded(async () => {
        await call("DELETE", scoped(`/webhooks/${endpoint.id}`));
        await loadEndpoints();
      }), true),
    );
    list.appendChild(item);
  }
}

function showSecret(secret) {
  const shown = $("secret");
  shown.hidden = false;
  shown.textContent = `Signing secret (shown once; keep it): ${secret}`;
}

async function loadDeliveries(endpointId) {
  state.endpoint = endpointId;
  const { data } = await call("GET", scoped(`/webhooks/${endpointId}/attempts?limit=20`));
  const target = $("deliveries");
  target.replaceChildren();
  const table = document.createElement("table");
  table.innerHTML = "<caption>Delivery attempts, newest first</caption><thead><tr><th scope=\"col\">When</th><th scope=\"col\">Event</th><th scope=\"col\">Attempt</th><th scope=\"col\">Status</th><th scope=\"col\">Outcome</th><th scope=\"col\">Latency</th><th scope=\"col\"><span class=\"visually-hidden\">Re-send</span></th></tr></thead>";
  const body = document.createElement("tbody");
  for (const attempt of data) {
    const row = document.createElement("tr");
    [attempt.at, `${attempt.eventType} ${attempt.eventId}`, attempt.attempt, attempt.status, attempt.outcome, `${attempt.latencyMs} ms`].forEach((v) => cell(row, v));
    cell(row, "").appendChild(button("Re-send", () => guarded(async () => {
      await call("POST", scoped(`/webhooks/${endpointId}/resend`), { eventId: attempt.eventId });
      say(`Event ${attempt.eventId} queued again.`);
    }), true));
    body.appendChild(row);
  }
  table.appendChild(body);
  target.appendChild(table);
}

function signedIn(name) {
  $("who").textContent = name;
  $("signed-in").hidden = false;
  $("local-sign-in").hidden = true;
  $("token-sign-in").hidden = true;
  $("console").hidden = false;
  guarded(loadProjects);
}

async function start() {
  try {
    const config = await (await fetch("./config.json")).json();
    state.api = (config.apiBase || "").replace(/\/+$/, "");
    state.local = Boolean(config.local);
  } catch (_) {
    state.api = "";
  }
  $("local-sign-in").hidden = !state.local;
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
    signedIn("the token's developer");
  });
  $("sign-out").addEventListener("click", () => window.location.reload());
  $("mode").addEventListener("change", () => {
    state.testMode = $("mode").value;
    if (state.project) guarded(() => openProject(state.project));
  });
  $("check-credentials").addEventListener("click", () => guarded(async () => {
    const { data } = await call("POST", scoped("/validate-credentials"), {});
    say(data.valid ? "Stripe accepts the stored key." : `Stripe refuses the key: ${data.reason || "unknown reason"}.`, !data.valid);
  }));
  $("package-form").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(async () => {
      const id = $("package-id").value.trim();
      await call("PUT", scoped(`/credit-packages/${encodeURIComponent(id)}`), {
        name: $("package-name").value.trim(),
        description: "",
        amount: Number($("package-amount").value),
        creditAmount: Number($("package-credits").value),
        currency: $("package-currency").value.trim(),
        isActive: $("package-active").checked,
      });
      await loadPackages();
      say(`Package ${id} saved.`);
    });
  });
  $("lookup-form").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(() => lookUp($("account-id").value.trim()));
  });
  $("endpoint-form").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(async () => {
      const types = $("endpoint-events").value.split(",").map((t) => t.trim()).filter(Boolean);
      const { data } = await call("POST", scoped("/webhooks"), {
        url: $("endpoint-url").value.trim(),
        ...(types.length ? { events: types } : {}),
      });
      showSecret(data.secret);
      await loadEndpoints();
    });
  });
}

start();
