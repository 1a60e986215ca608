// localllm's dashboard: polls the daemon's own /metrics, /api/ps and /health every 2 s and draws them.
// No library, nothing fetched from elsewhere. The API token (when the daemon has one) is asked for once,
// kept in this tab's sessionStorage and sent as an Authorization header: never in a URL or a cookie, so
// another site can neither read it nor make this page act with it.
"use strict";

const POLL_MS = 2000;
const HISTORY = 90; // points per chart: 3 minutes
const TOKEN_KEY = "localllm-token";
const history = { time: [], requests: [], tokens: [], ttft: [] };
let previous = null;

function headers() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: "Bearer " + token } : {};
}

async function get(path) {
  const response = await fetch(path, { headers: headers(), cache: "no-store", credentials: "omit" });
  if (response.status === 401) throw new Unauthorized();
  if (!response.ok) throw new Error(path + " answered HTTP " + response.status);
  return response;
}

class Unauthorized extends Error {}

// Prometheus text format: name{labels} value. Returns [{name, labels, value}].
function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!match) continue;
    const labels = {};
    for (const pair of (match[2] || "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[pair[1]] = pair[2].replace(/\\(.)/g, "$1");
    }
    samples.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return samples;
}

function sum(samples, name, filter = () => true) {
  return samples.filter((s) => s.name === name && filter(s.labels)).reduce((total, s) => total + s.value, 0);
}

// Quantile of a histogram given its cumulative buckets {le: count}, by linear interpolation (as PromQL does).
function quantile(q, buckets) {
  const finite = Object.entries(buckets).filter(([le]) => le !== "+Inf")
    .map(([le, count]) => [Number(le), count]).sort((a, b) => a[0] - b[0]);
  const total = buckets["+Inf"] || 0;
  if (total <= 0) return null;
  const rank = q * total;
  let lowerBound = 0, lowerCount = 0;
  for (const [bound, count] of finite) {
    if (count >= rank) {
      return lowerBound + (bound - lowerBound) * ((rank - lowerCount) / Math.max(count - lowerCount, 1e-9));
    }
    lowerBound = bound; lowerCount = count;
  }
  return finite.length ? finite[finite.length - 1][0] : null;
}

function bucketsOf(samples, name) {
  const buckets = {};
  for (const s of samples.filter((s) => s.name === name)) {
    buckets[s.labels.le] = (buckets[s.labels.le] || 0) + s.value;
  }
  return buckets;
}

function minus(now, before) {
  const out = {};
  for (const le of Object.keys(now)) out[le] = now[le] - ((before && before[le]) || 0);
  return out;
}

function text(id, value) {
  document.getElementById(id).textContent = value;
}

function rows(tableId, items) {
  const body = document.querySelector("#" + tableId + " tbody");
  body.replaceChildren(...items.map((cells) => {
    const row = document.createElement("tr");
    for (const cell of cells) {
      const td = document.createElement("td");
      td.textContent = cell;
      row.appendChild(td);
    }
    return row;
  }));
}

function draw(svgId, series) {
  const svg = document.getElementById(svgId);
  const values = series.flat().filter((v) => v !== null && Number.isFinite(v));
  const top = Math.max(...values, 1e-9);
  svg.replaceChildren(...series.map((points, index) => {
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("class", "s" + index);
    const step = 300 / Math.max(HISTORY - 1, 1);
    const start = HISTORY - points.length;
    line.setAttribute("points", points.map((v, i) =>
      ((start + i) * step).toFixed(1) + "," + (100 - 95 * ((v ?? 0) / top)).toFixed(1)).join(" "));
    return line;
  }));
  svg.dataset.max = String(top);
}

function remember(key, value) {
  history[key].push(value);
  if (history[key].length > HISTORY) history[key].shift();
}

async function refresh() {
  const samples = parseMetrics(await (await get("/metrics")).text());
  const now = performance.now() / 1000;
  const byRoute = {};
  for (const s of samples.filter((s) => s.name === "localllm_requests_total")) {
    byRoute[s.labels.route] = (byRoute[s.labels.route] || 0) + s.value;
  }
  const total = Object.values(byRoute).reduce((a, b) => a + b, 0);
  const answered = sum(samples, "localllm_requests_total", (l) => l.status === "200");
  const onDevice = sum(samples, "localllm_requests_total", (l) => l.status === "200" && (l.route === "local" ||
    l.route === "cache"));
  const hits = sum(samples, "localllm_cache_lookups_total", (l) => l.outcome === "hit");
  const lookups = sum(samples, "localllm_cache_lookups_total", (l) => l.outcome !== "bypass");
  const tokens = sum(samples, "localllm_tokens_generated_total");
  const joules = sum(samples, "localllm_energy_joules_total");
  const estimated = samples.some((s) => s.name === "localllm_energy_joules_total" && s.labels.source === "estimated");
  const ttftBuckets = bucketsOf(samples, "localllm_time_to_first_token_seconds_bucket");

  text("total-requests", String(total));
  text("on-device", answered ? Math.round(100 * onDevice / answered) + "%" : "-");
  text("hit-rate", lookups ? Math.round(100 * hits / lookups) + "%" : "-");
  text("spend", "$" + sum(samples, "localllm_upstream_cost_usd_total").toFixed(4));
  text("energy", (joules / 3600).toFixed(3) + " Wh" + (estimated ? " (estimated)" : ""));
  // What the answers served here would have cost from the first cloud upstream (absent without one).
  const saved = samples.find((s) => s.name === "localllm_cloud_equivalent_usd_total");
  text("saved", saved ? "$" + saved.value.toFixed(4) : "-");
  text("saved-label", saved ? "saved against " + saved.labels.priced_as : "saved (no cloud upstream to price)");
  const cloudJoules = samples.find((s) => s.name === "localllm_cloud_equivalent_energy_joules_total");
  text("cloud-energy", cloudJoules ? "~" + (cloudJoules.value / 3600).toFixed(3) + " Wh (estimated)" : "-");
  rows("routes", Object.entries(byRoute).sort().map(([route, count]) => [route, String(count)]));

  if (previous) {
    const seconds = Math.max(now - previous.time, 1e-3);
    const window = minus(ttftBuckets, previous.ttft);
    remember("requests", (total - previous.total) / seconds);
    remember("tokens", (tokens - previous.tokens) / seconds);
    // No first token in this window: the line holds its last value rather than dropping to zero.
    const last = history.ttft[history.ttft.length - 1] || [null, null];
    remember("ttft", [quantile(0.5, window) ?? last[0], quantile(0.9, window) ?? last[1]]);
    const recent = history.tokens.slice(-5);
    text("tokens-per-s", (recent.reduce((a, b) => a + b, 0) / recent.length).toFixed(1));
  }
  previous = { time: now, total, tokens, ttft: ttftBuckets };
  document.getElementById("dashboard").dataset.requests = String(total);
  draw("chart-rate", [history.requests]);
  draw("chart-tokens", [history.tokens]);
  draw("chart-ttft", [history.ttft.map((p) => p[0]), history.ttft.map((p) => p[1])]);

  const loaded = (await (await get("/api/ps")).json()).models;
  rows("models", loaded.map((m) => [m.name, (m.size / 1048576).toFixed(0) + " MiB",
    String((m.localllm || {}).in_flight ?? 0), String((m.localllm || {}).parallel ?? "-"),
    m.expires_at.startsWith("2318") ? "kept loaded" : new Date(m.expires_at).toLocaleTimeString()]));
  const health = await (await get("/health")).json().catch(() => ({}));
  const upstreams = (health.upstreams || []).map((u) => [u.name, u.circuit, String(u.failures)]);
  rows("upstreams", upstreams.length ? upstreams : [["none configured", "", ""]]);
}

async function loop() {
  try {
    await refresh();
    document.getElementById("token-form").hidden = true;
    document.getElementById("dashboard").hidden = false;
    const status = document.getElementById("status");
    status.textContent = "live";
    status.className = "status ok";
  } catch (error) {
    const status = document.getElementById("status");
    if (error instanceof Unauthorized) {
      document.getElementById("dashboard").hidden = true;
      document.getElementById("token-form").hidden = false;
      document.getElementById("token-error").hidden = !sessionStorage.getItem(TOKEN_KEY);
      status.textContent = "needs the API token";
      status.className = "status bad";
      return; // wait for the form
    }
    status.textContent = "cannot reach the daemon: " + error.message;
    status.className = "status bad";
  }
  setTimeout(loop, POLL_MS);
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
  document.getElementById("token").value = "";
  loop();
});

loop();
