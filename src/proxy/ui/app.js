// modelgate's page: signs in with a key kept in sessionStorage, and reads the gateway's own
// APIs with it (/v1/activity, /v1/generations, /v1/keys, /v1/models). No framework, no inline
// script: the page's Content-Security-Policy allows this file and uPlot only.
"use strict";

const state = { key: null, role: null, cursor: null, charts: [] };

const $ = (id) => document.getElementById(id);

/// Makes an element with text (never HTML) and children.
function el(tag, text, ...children) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  for (const c of children) e.append(c);
  return e;
}

// --- Numbers for people ---------------------------------------------------------------------

const compact = new Intl.NumberFormat("en", { notation: "compact", maximumFractionDigits: 1 });

function usd(x) {
  if (x === null || x === undefined) return "–";
  const digits = x !== 0 && Math.abs(x) < 0.01 ? 4 : 2;
  return "$" + x.toFixed(digits);
}

function tokens(n) {
  return compact.format(n || 0) + " tokens";
}

function ms(n) {
  if (n === null || n === undefined) return "–";
  return n >= 1000 ? (n / 1000).toFixed(1) + " s" : Math.round(n) + " ms";
}

function when(iso) {
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}

// --- The API --------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, options = {}, key = state.key) {
  const headers = { authorization: "Bearer " + key };
  if (options.body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  const text = await res.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!res.ok) {
    const message = (body && body.error && body.error.message) || res.statusText;
    throw new ApiError(res.status, message);
  }
  return body;
}

// --- Signing in -----------------------------------------------------------------------------

/// The role of `key`: "admin" or "client" (an inference key), and its label; an ApiError when
/// it is refused.
async function roleOf(key) {
  const me = (await api("/v1/key", {}, key)).data;
  return me.is_management_key
    ? { role: "admin", label: "admin key" }
    : { role: "client", label: me.label };
}

async function signIn(key) {
  const who = await roleOf(key);
  state.key = key;
  state.role = who.role;
  sessionStorage.setItem("modelgate-key", key);
  $("who").textContent = who.role === "admin" ? "Admin" : "Key " + who.label;
  for (const e of document.querySelectorAll("[data-admin]")) e.hidden = who.role !== "admin";
  $("signin").hidden = true;
  $("nav").hidden = false;
  $("signout").hidden = false;
  show("overview");
}

function signOut() {
  sessionStorage.removeItem("modelgate-key");
  state.key = null;
  state.role = null;
  location.reload();
}

// --- Views ----------------------------------------------------------------------------------

const views = { overview: loadOverview, generations: loadGenerations, keys: loadKeys, models: loadModels };

function show(view) {
  for (const name of Object.keys(views)) $(name).hidden = name !== view;
  for (const b of document.querySelectorAll("#nav button")) {
    if (b.dataset.view === view) b.setAttribute("aria-current", "page");
    else b.removeAttribute("aria-current");
  }
  views[view]().catch(report);
}

function report(e) {
  console.warn(e);
  const where = document.querySelector("main section:not([hidden]) .error") || $("signin-error");
  where.textContent = e.message || String(e);
}

// --- Overview -------------------------------------------------------------------------------

const palette = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563"];

async function loadOverview() {
  const span = Number($("range").value);
  const split = $("split").value;
  const now = Math.floor(Date.now() / 1000);
  const since = now - span;
  const bucket = span > 2 * 86400 ? "1d" : "1h";
  let path = `/v1/activity?bucket=${bucket}&since=${since}&until=${now + 1}`;
  if (split) path += `&group_by=${split}`;
  const body = await api(path);
  const rows = body.data;
  const xs = [...new Set(rows.map((r) => Date.parse(r.start) / 1000))].sort((a, b) => a - b);
  const groups = [...new Set(rows.map((r) => r.group ?? "all"))];
  const at = new Map(rows.map((r) => [`${Date.parse(r.start) / 1000}|${r.group ?? "all"}`, r]));
  const series = (pick) =>
    groups.map((g) => xs.map((x) => {
      const r = at.get(`${x}|${g}`);
      return r ? pick(r) : null;
    }));
  const total = (f) => rows.reduce((s, r) => s + f(r), 0);
  const requests = total((r) => r.requests);
  $("overview-totals").textContent =
    `${compact.format(requests)} requests, ${usd(total((r) => r.cost))}, ` +
    `${tokens(total((r) => r.prompt_tokens + r.completion_tokens))}, ` +
    `${requests ? ((100 * total((r) => r.errors)) / requests).toFixed(1) : "0.0"} % errors`;
  for (const c of state.charts) c.destroy();
  const period = [since, now];
  const percent = (v) => v.toFixed(0) + " %";
  state.charts = [
    chart("chart-requests", period, xs, groups, series((r) => r.requests), (v) => compact.format(v)),
    chart("chart-cost", period, xs, groups, series((r) => r.cost), usd),
    chart("chart-errors", period, xs, groups,
      series((r) => (r.requests ? (100 * r.errors) / r.requests : 0)), percent),
    chart("chart-ttft", period, xs, groups, series((r) => r.ttft_ms.p50), ms),
  ];
}

/// A plot of `ys` (one series per group) over `xs` (bucket starts), its time axis spanning
/// the whole `period`, its values written with `format`.
function chart(id, period, xs, groups, ys, format) {
  const target = $(id);
  target.textContent = "";
  const width = Math.max(240, target.clientWidth || 320);
  const opts = {
    width,
    height: 180,
    scales: { x: { time: true, range: () => period } },
    series: [{ label: "Time" }, ...groups.map((g, i) => ({
      label: g,
      stroke: palette[i % palette.length],
      width: 2,
      points: { show: true, size: 6 },
      spanGaps: true,
      value: (u, v) => (v === null || v === undefined ? "–" : format(v)),
    }))],
    axes: [{}, { size: 70, values: (u, splits) => splits.map(format) }],
    legend: { show: groups.length > 1 },
  };
  return new uPlot(opts, [xs, ...ys], target);
}

// --- Generations ----------------------------------------------------------------------------

async function loadGenerations(more = false) {
  const params = new URLSearchParams({ limit: "50" });
  if ($("filter-model").value.trim()) params.set("model", $("filter-model").value.trim());
  if ($("filter-status").value) params.set("status", $("filter-status").value);
  if (more && state.cursor) params.set("cursor", state.cursor);
  const body = await api("/v1/generations?" + params);
  const tbody = $("generation-table").tBodies[0];
  if (!more) tbody.textContent = "";
  for (const g of body.data) {
    const status = g.cancelled ? "cancelled" : g.error ? "error" : String(g.status ?? "–");
    const row = el("tr", null,
      el("td", when(g.created_at)),
      el("td", g.model),
      el("td", g.provider_name ?? "–"),
      el("td", status),
      el("td", compact.format(g.tokens_prompt + g.tokens_completion)),
      el("td", usd(g.total_cost)),
      el("td", ms(g.latency_ms)));
    row.tabIndex = 0;
    row.dataset.id = g.id;
    row.addEventListener("click", () => openGeneration(g));
    row.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        openGeneration(g);
      }
    });
    tbody.append(row);
  }
  state.cursor = body.next_cursor;
  $("more").hidden = !body.next_cursor;
}

function openGeneration(g) {
  const d = $("generation-detail");
  d.textContent = "";
  const facts = [
    ["Generation", g.id],
    ["Time", when(g.created_at)],
    ["Model", `${g.model} (asked: ${g.requested_model})`],
    ["Provider", g.provider_name ?? "none served"],
    ["Dialect", g.dialect],
    ["Status", g.error ? `${g.status ?? "–"}: ${g.error}` : String(g.status ?? "–")],
    ["Tokens", `${compact.format(g.tokens_prompt)} in (${compact.format(g.native_tokens_cached)} cached), ${compact.format(g.tokens_completion)} out`],
    ["Cost", usd(g.total_cost)],
    ["Time to first token", ms(g.time_to_first_token_ms)],
    ["Latency", ms(g.latency_ms)],
  ];
  const list = el("dl");
  for (const [k, v] of facts) list.append(el("dt", k), el("dd", v));
  const attempts = el("table", null,
    el("thead", null, el("tr", null, el("th", "Provider"), el("th", "Model"), el("th", "Outcome"), el("th", "Status"), el("th", "Latency"), el("th", "Error"))));
  const body = el("tbody");
  for (const a of g.attempts) {
    body.append(el("tr", null, el("td", a.provider), el("td", a.upstream_model), el("td", a.outcome),
      el("td", a.status ?? "–"), el("td", ms(a.latency_ms)), el("td", a.error ?? "")));
  }
  attempts.append(body);
  const close = el("button", "Close");
  close.type = "button";
  close.addEventListener("click", () => { d.hidden = true; });
  d.append(el("h3", "Generation"), list, el("h4", "Attempts"), attempts, close);
  d.hidden = false;
  d.focus();
}

// --- Keys -----------------------------------------------------------------------------------

async function loadKeys() {
  $("keys-error").textContent = "";
  const body = await api("/v1/keys?include_disabled=true");
  const tbody = $("key-table").tBodies[0];
  tbody.textContent = "";
  for (const k of body.data) {
    const spend = k.limit === null ? `${usd(k.usage)} / no limit` : `${usd(k.usage)} / ${usd(k.limit)}`;
    const rate = [
      k.requests_per_minute && `${k.requests_per_minute} requests a minute`,
      k.requests_per_day && `${k.requests_per_day} a day`,
      k.tokens_per_minute && `${compact.format(k.tokens_per_minute)} tokens a minute`,
    ].filter(Boolean).join(", ") || "none";
    const actions = el("td");
    if (k.source === "api") {
      actions.append(
        button(k.disabled ? "Enable" : "Disable", () => patchKey(k.hash, { disabled: !k.disabled })),
        button("Change limit", () => {
          const v = prompt(`New limit in USD for ${k.name} (empty: none)`, k.limit ?? "");
          if (v === null) return;
          patchKey(k.hash, { limit: v.trim() === "" ? null : Number(v) });
        }),
        button("Change rate limits", () => {
          const now = [k.requests_per_minute, k.requests_per_day, k.tokens_per_minute]
            .map((n) => n ?? "").join(", ");
          const v = prompt(
            `Rate limits of ${k.name}: requests a minute, requests a day, tokens a minute ` +
            "(an empty place: none)", now);
          if (v === null) return;
          const [rpm, rpd, tpm] = v.split(",").map((x) => (x.trim() === "" ? null : Number(x)));
          patchKey(k.hash, {
            requests_per_minute: rpm ?? null,
            requests_per_day: rpd ?? null,
            tokens_per_minute: tpm ?? null,
          });
        }),
        button("Delete", () => {
          if (confirm(`Delete the key ${k.name}? Requests with it will be refused.`)) {
            api(`/v1/keys/${encodeURIComponent(k.hash)}`, { method: "DELETE" }).then(loadKeys, report);
          }
        }));
    } else {
      actions.textContent = "from the configuration";
    }
    const row = el("tr", null, el("td", k.name), el("td", k.label), el("td", spend), el("td", rate),
      el("td", k.disabled ? "disabled" : "active"), actions);
    row.dataset.hash = k.hash;
    tbody.append(row);
  }
}

function button(text, onClick) {
  const b = el("button", text);
  b.type = "button";
  b.addEventListener("click", onClick);
  return b;
}

function patchKey(hash, change) {
  api(`/v1/keys/${encodeURIComponent(hash)}`, { method: "PATCH", body: change }).then(loadKeys, report);
}

async function createKey(e) {
  e.preventDefault();
  const spec = { name: $("new-key-name").value.trim() };
  if ($("new-key-limit").value !== "") spec.limit = Number($("new-key-limit").value);
  if ($("new-key-rpm").value !== "") spec.requests_per_minute = Number($("new-key-rpm").value);
  const made = await api("/v1/keys", { method: "POST", body: spec });
  $("created-key-value").textContent = made.key;
  $("created-key").hidden = false;
  $("create-key").reset();
  await loadKeys();
}

// --- Models ---------------------------------------------------------------------------------

async function loadModels() {
  const body = await api("/v1/models");
  const tbody = $("model-table").tBodies[0];
  tbody.textContent = "";
  const perMillion = (p) => (p === undefined || p === null ? "–" : usd(Number(p) * 1e6));
  for (const m of body.data) {
    for (const e of m.endpoints || []) {
      tbody.append(el("tr", null,
        el("td", m.id),
        el("td", e.provider_name),
        el("td", e.status === "cooling" ? "cooling down" : "ok"),
        el("td", e.uptime === null || e.uptime === undefined ? "–" : `${e.uptime} %`),
        el("td", ms(e.latency_p95_ms)),
        el("td", `${perMillion(e.pricing.prompt)} / ${perMillion(e.pricing.completion)}`)));
    }
  }
}

// --- Wiring ---------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    $("signin-error").textContent = "";
    signIn($("key").value.trim()).catch((err) => {
      $("signin-error").textContent = err.status === 401 ? "That key was refused." : err.message;
    });
  });
  $("signout").addEventListener("click", signOut);
  for (const b of document.querySelectorAll("#nav button")) {
    b.addEventListener("click", () => show(b.dataset.view));
  }
  $("range").addEventListener("change", () => loadOverview().catch(report));
  $("split").addEventListener("change", () => loadOverview().catch(report));
  $("generation-filters").addEventListener("submit", (e) => {
    e.preventDefault();
    loadGenerations().catch(report);
  });
  $("more").addEventListener("click", () => loadGenerations(true).catch(report));
  $("create-key").addEventListener("submit", (e) => createKey(e).catch(report));
  $("copy-key").addEventListener("click", () => {
    navigator.clipboard.writeText($("created-key-value").textContent).catch(report);
  });
  const saved = sessionStorage.getItem("modelgate-key");
  if (saved) signIn(saved).catch(() => sessionStorage.removeItem("modelgate-key"));
});
