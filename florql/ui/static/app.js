// florql ui: one page, four tabs. Every request carries the server's token (X-Florql-Token);
// the data comes reduced from the server (min/max per pixel bucket), uPlot draws it.
"use strict";
const TOKEN = new URLSearchParams(location.search).get("token") || "";
const COLORS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#db2777",
  "#4b5563", "#65a30d", "#ea580c"];
const state = { runs: [], selected: new Set(), sortKey: "started_at", sortDir: 1, names: [],
  loops: [], charts: [], live: null };
const $ = (id) => document.getElementById(id);

async function api(path, body) {
  const init = { headers: { "X-Florql-Token": TOKEN } };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  const data = r.headers.get("content-type")?.includes("json") ? await r.json() : { error: await r.text() };
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}

function hashParams() {
  const [tab, query] = location.hash.slice(1).split("?");
  return { tab: tab || "runs", params: new URLSearchParams(query || "") };
}

function showError(el, e) { el.textContent = String(e.message || e); el.className = "error"; }

// ---- runs -------------------------------------------------------------------------------
const fmtTime = (t) => t ? new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) : "";
const fmtNum = (v) => v == null ? "" : (Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3)) ? v.toExponential(3) : +v.toFixed(4);
const lowerIsBetter = (name) => /loss|err|perplex|mse|mae/i.test(name);

async function loadRuns() {
  const metrics = $("runs-metrics").value.trim();
  const data = await api("/api/runs?metrics=" + encodeURIComponent(metrics));
  state.runs = data.runs;
  state.metrics = data.metrics;
  renderRuns();
}

function runCell(run, key) {
  if (key === "duration") {
    const end = run.ended_at || (run.status === "running" ? Date.now() / 1000 : null);
    return end && run.started_at ? (end - run.started_at).toFixed(1) + " s" : "";
  }
  if (key === "args") return typeof run.args === "string" ? run.args : JSON.stringify(run.args || {});
  if (key === "started_at") return fmtTime(run.started_at);
  if (key.startsWith("last:") || key.startsWith("best:")) {
    const name = key.slice(5), m = run.metrics[name];
    if (!m) return "";
    return fmtNum(key[0] === "l" ? m.last : lowerIsBetter(name) ? m.min : m.max);
  }
  return run[key] ?? "";
}

function renderRuns() {
  const keys = ["run_id", "status", "script", "args", "started_at", "duration"];
  for (const m of state.metrics || []) keys.push("last:" + m, "best:" + m);
  const filter = $("runs-filter").value.toLowerCase();
  let rows = state.runs.filter((r) => !filter || keys.some((k) => String(runCell(r, k)).toLowerCase().includes(filter)));
  const k = state.sortKey;
  rows.sort((a, b) => {
    const x = k === "started_at" ? a.started_at : runCell(a, k), y = k === "started_at" ? b.started_at : runCell(b, k);
    return (x > y ? 1 : x < y ? -1 : 0) * state.sortDir;
  });
  const table = $("runs-table");
  table.innerHTML = "";
  const head = table.insertRow();
  head.insertCell().textContent = "";
  for (const key of keys) {
    const th = document.createElement("th");
    th.textContent = key + (key === state.sortKey ? (state.sortDir > 0 ? " ▲" : " ▼") : "");
    th.onclick = () => { state.sortDir = state.sortKey === key ? -state.sortDir : 1; state.sortKey = key; renderRuns(); };
    head.appendChild(th);
  }
  for (const run of rows) {
    const tr = table.insertRow();
    tr.dataset.run = run.run_id;
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = state.selected.has(run.run_id);
    box.onchange = () => { box.checked ? state.selected.add(run.run_id) : state.selected.delete(run.run_id); };
    tr.insertCell().appendChild(box);
    for (const key of keys) {
      const td = tr.insertCell();
      td.textContent = runCell(run, key);
      if (key === "status") td.className = "status-" + run.status;
      if (key.includes(":")) td.className = "num";
    }
  }
  table.dataset.rows = rows.length;
}

// ---- charts -----------------------------------------------------------------------------
function smooth(ys, alpha) {
  if (!alpha) return ys;
  let acc = null;
  return ys.map((y) => (y == null ? y : (acc = acc == null ? y : alpha * acc + (1 - alpha) * y)));
}

// Runs are overlaid on one x axis: the union of their x values, null where a run has none.
function aligned(runs, alpha) {
  const ids = Object.keys(runs).sort();
  const xs = [...new Set(ids.flatMap((id) => runs[id][0]))].sort((a, b) => a - b);
  const at = new Map(xs.map((x, i) => [x, i]));
  const data = [xs];
  for (const id of ids) {
    const col = new Array(xs.length).fill(null);
    const [rx, ry] = runs[id];
    const sy = smooth(ry, alpha);
    rx.forEach((x, i) => { col[at.get(x)] = sy[i]; });
    data.push(col);
  }
  return { ids, data };
}

// One color per run on every chart (assigned in first-seen order).
const runColors = new Map();
function colorOf(id) {
  if (!runColors.has(id)) runColors.set(id, COLORS[runColors.size % COLORS.length]);
  return runColors.get(id);
}

function drawChart(container, title, xName, runs, opts) {
  const { ids, data } = aligned(runs, opts.smooth || 0);
  const div = document.createElement("div");
  div.className = "chart";
  div.dataset.name = title;
  div.dataset.series = ids.length;
  div.dataset.points = ids.reduce((n, id) => n + runs[id][0].length, 0);
  container.appendChild(div);
  const series = [{ label: xName }].concat(ids.map((id) => ({
    label: id, stroke: colorOf(id), width: 1.5, spanGaps: true, points: { show: false } })));
  new uPlot({ title, width: opts.width || 560, height: 300, series,
    scales: { x: { time: false }, y: { distr: opts.log ? 3 : 1 } },
    axes: [{ label: xName }, {}] }, data, div);
  return div;
}

async function loadNames() {
  const data = await api("/api/names");
  state.names = data.names;
  state.loops = data.loops;
  const sel = $("chart-names"), xs = $("chart-x");
  const keep = new Set([...sel.selectedOptions].map((o) => o.value));
  sel.innerHTML = "";
  for (const n of data.names) {
    const o = new Option(`${n.name} (${n.loops.join("/") || "run"}, ${n.count})`, n.name);
    o.selected = keep.has(n.name);
    sel.add(o);
  }
  if (!xs.options.length) for (const x of ["global_step", ...data.loops]) xs.add(new Option(x, x));
}

async function drawCharts() {
  const grid = $("chart-grid");
  const names = [...$("chart-names").selectedOptions].map((o) => o.value);
  const runs = [...state.selected].join(",");
  $("chart-runs").textContent = state.selected.size ? `runs: ${[...state.selected].join(", ")}` : "all runs";
  const x = $("chart-x").value || "global_step";
  const opts = { smooth: +$("chart-smooth").value, log: $("chart-log").checked };
  const results = await Promise.all(names.map((name) => api(
    `/api/chart?name=${encodeURIComponent(name)}&x=${encodeURIComponent(x)}&runs=${encodeURIComponent(runs)}&width=560`)));
  grid.innerHTML = "";
  results.forEach((r) => drawChart(grid, r.name, r.x, r.runs, opts));
  grid.dataset.charts = results.length;
}

// ---- SQL box ----------------------------------------------------------------------------
async function runSql() {
  const info = $("sql-info"), table = $("sql-table"), chart = $("sql-chart");
  info.className = ""; info.textContent = "running…"; table.innerHTML = ""; chart.innerHTML = "";
  try {
    const r = await api("/api/sql", { sql: $("sql-text").value });
    info.textContent = `${r.total} rows` + (r.total > r.rows.length ? ` (first ${r.rows.length} shown)` : "");
    const head = table.insertRow();
    for (const c of r.columns) { const th = document.createElement("th"); th.textContent = c; head.appendChild(th); }
    for (const row of r.rows) {
      const tr = table.insertRow();
      row.forEach((v) => {
        const td = tr.insertCell();
        td.textContent = v == null ? "NULL" : typeof v === "number" ? +v.toPrecision(10) : v;
        if (typeof v === "number") td.className = "num";
      });
    }
    table.dataset.rows = r.rows.length;
    sqlChart(chart, r);
  } catch (e) { showError(info, e); }
}

// A chart of the answer: first numeric column is x, others y; a run_id column splits lines.
function sqlChart(container, r) {
  const isNum = (i) => r.rows.some((row) => typeof row[i] === "number");
  const cols = r.columns.map((c, i) => i).filter((i) => r.columns[i] !== "run_id" && isNum(i));
  if (cols.length < 2) return;
  const [xi, ...yis] = cols, ri = r.columns.indexOf("run_id");
  const runs = {};
  for (const row of r.rows) for (const yi of yis) {
    if (row[xi] == null || typeof row[yi] !== "number") continue;
    const key = (ri >= 0 ? row[ri] + " " : "") + r.columns[yi];
    (runs[key] ||= [[], []]);
    runs[key][0].push(row[xi]); runs[key][1].push(row[yi]);
  }
  drawChart(container, yis.map((i) => r.columns[i]).join(", "), r.columns[xi], runs, { width: 800 });
}

// ---- hindsight --------------------------------------------------------------------------
// Names the current code of some run logs and its recorded code does not: offered as choices.
async function loadCandidates() {
  const list = $("hs-candidates");
  list.innerHTML = "";
  for (const n of (await api("/api/candidates")).names) list.appendChild(new Option(n, n));
  list.dataset.count = list.options.length;
}

async function explainHindsight() {
  const plan = $("hs-plan");
  plan.className = ""; plan.textContent = "planning…";
  try { plan.textContent = (await api("/api/explain", { name: $("hs-name").value })).plan; }
  catch (e) { showError(plan, e); }
}

async function runHindsight() {
  const name = $("hs-name").value, progress = $("hs-progress"), chart = $("hs-chart");
  chart.innerHTML = ""; progress.className = "";
  await explainHindsight();
  try {
    let job = await api("/api/hindsight", { name });
    while (job.state === "running") {
      progress.textContent = `replaying ${name}: ${job.replayed} values stored, ${job.seconds} s`;
      job = await api(`/api/jobs/${job.job_id}?seen=${job.replayed}`);
    }
    if (job.state === "failed") throw new Error(job.message);
    progress.textContent = `done: ${job.message} in ${job.seconds} s`;
    progress.dataset.state = "done";
    const r = await api(`/api/chart?name=${encodeURIComponent(name)}&x=global_step&width=800`);
    drawChart(chart, name, "global_step", r.runs, { width: 800 });
  } catch (e) { showError(progress, e); progress.dataset.state = "failed"; }
}

// ---- tabs, live updates -----------------------------------------------------------------
async function show() {
  const { tab, params } = hashParams();
  for (const s of document.querySelectorAll("main > section")) s.hidden = s.id !== tab;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.tab === tab);
  document.body.dataset.ready = "";
  try {
    if (params.get("runs")) state.selected = new Set(params.get("runs").split(","));
    if (tab === "runs") {
      if (params.get("metrics")) $("runs-metrics").value = params.get("metrics");
      await loadRuns();
    } else if (tab === "charts") {
      await loadNames();
      if (params.get("x")) $("chart-x").value = params.get("x");
      const want = (params.get("names") || "").split(",").filter(Boolean);
      for (const o of $("chart-names").options) if (want.includes(o.value)) o.selected = true;
      if (params.get("smooth")) $("chart-smooth").value = params.get("smooth");
      if (params.get("log")) $("chart-log").checked = true;
      if (!state.runs.length) await loadRuns();
      await drawCharts();
    } else if (tab === "sql") {
      if (params.get("q")) { $("sql-text").value = params.get("q"); await runSql(); }
    } else if (tab === "hindsight") {
      await loadCandidates();
      if (params.get("name")) {
        $("hs-name").value = params.get("name");
        await (params.get("go") ? runHindsight() : explainHindsight());
      }
    }
  } catch (e) { showError($("status"), e); }
  document.body.dataset.ready = tab;
}

// A run still recording: refresh the runs and the charts every 3 s while one is running.
async function live() {
  if (!state.runs.some((r) => r.status === "running")) return;
  const { tab } = hashParams();
  await loadRuns();
  if (tab === "charts") await drawCharts();
  $("status").textContent = "live: " + new Date().toLocaleTimeString();
}

$("runs-filter").oninput = renderRuns;
$("runs-metrics").onchange = loadRuns;
$("runs-compare").onclick = () => { location.hash = "charts"; };
for (const id of ["chart-names", "chart-x", "chart-smooth", "chart-log"]) $(id).onchange = drawCharts;
$("sql-run").onclick = runSql;
$("hs-explain").onclick = explainHindsight;
$("hs-run").onclick = runHindsight;
window.onhashchange = show;
show();
setInterval(() => live().catch((e) => showError($("status"), e)), 3000);
