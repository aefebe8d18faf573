// The live funnel page: polls the worker's JSON API and draws it. No libraries, no CDN.
"use strict";

const POLL_MS = 2000;
const TREND_MS = 10000;
const state = { funnels: [], funnel: null, window: "1h", view: "period", channel: "" };
const $ = (id) => document.getElementById(id);

const pct = (x) => (x === null || x === undefined ? "–" : (x * 100).toFixed(1) + "%");
const num = (n) => Number(n).toLocaleString("en-US");
// {currency: amount} -> "1,234.50 EUR"; currencies are never added up.
const money = (m) => {
  const parts = Object.entries(m || {}).map(([cur, v]) =>
    `${Number(v).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 })} ${cur}`);
  return parts.length ? parts.join(" + ") : "–";
};
const ratios = (m) => {
  const parts = Object.entries(m || {}).map(([cur, v]) => `${pct(v)}${Object.keys(m).length > 1 ? " " + cur : ""}`);
  return parts.length ? parts.join(", ") : "–";
};
const figure = (id, value, name) => el("div", { class: "figure", id }, el("b", {}, value), el("span", {}, name));

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "style") node.style.cssText = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c);
  return node;
}

class HttpError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function getJSON(url) {
  const resp = await fetch(url, { cache: "no-store" });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new HttpError(resp.status, body.error || resp.statusText);
  return body;
}

function setStatus(kind, text) {
  const s = $("status");
  s.className = "status " + kind;
  s.textContent = text;
}

function banner(kind, text) {
  const b = $("banner");
  b.hidden = !text;
  b.className = "banner " + (kind || "");
  b.textContent = text || "";
  $("funnel-card").classList.toggle("stale", Boolean(text));
}

function query(extra = {}) {
  const q = new URLSearchParams({ window: state.window, view: state.view, ...extra });
  return q.toString();
}

function currentFunnel() {
  return state.funnels.find((f) => f.name === state.funnel);
}

// ---- the funnel bars ------------------------------------------------------

function drawBars(doc, figures) {
  const bars = $("bars");
  bars.replaceChildren();
  const steps = figures.steps;
  const first = steps.length ? steps[0].reached : 0;
  const label = state.channel ? ` — channel ${state.channel}` : "";
  $("funnel-title").textContent = `Funnel ${doc.funnel}${label} (last ${state.window}, ${state.view})`;
  if (!first) {
    bars.append(el("p", { class: "empty", id: "empty" },
      `No events yet in the last ${state.window}${label}. Send events to the input topics or run \`funnel demo\`.`));
    $("overall").textContent = "";
    return;
  }
  steps.forEach((s, i) => {
    const share = s.reached / first;
    const neck = s.name === figures.narrow_neck;
    const detail = el("div", { class: "detail" },
      i === 0 ? "entered" : `${pct(s.conversion)} of previous · drop-off ${pct(s.drop_off)}`);
    if (neck) detail.append(el("div", { class: "neck" }, "narrow neck"));
    if (s.flagged) {
      detail.append(el("div", { class: "flag" },
        `▼ sudden drop: ${pct(s.conversion)} vs ${pct(s.baseline_conversion)} before`));
    }
    if (s.avg_time_to_convert_s !== null && s.avg_time_to_convert_s !== undefined && i > 0) {
      detail.append(el("div", {}, `avg ${formatSeconds(s.avg_time_to_convert_s)} from previous`));
    }
    bars.append(el("div", {
      class: "step" + (neck ? " neck" : "") + (s.flagged ? " flagged" : ""),
      "data-step": s.name, "data-reached": String(s.reached),
      "data-conversion": s.conversion === null ? "" : String(s.conversion),
      "data-flagged": s.flagged ? "true" : "false",
    },
    el("div", { class: "name" }, s.name),
    el("div", { class: "track" },
      el("div", { class: "bar", style: `width:${Math.max(share * 100, 3).toFixed(2)}%` }, num(s.reached))),
    detail));
  });
  let overall = `Overall conversion ${pct(figures.overall_conversion)}`;
  if (doc.mode === "pipeline") overall += ` · closing rate ${pct(figures.closing_rate)} · win rate ${pct(figures.win_rate)}`;
  $("overall").textContent = overall;
  drawMoney(doc, figures);
}

// ---- revenue, spend and ROMI of the shown funnel (and channel) ---------------

function drawMoney(doc, figures) {
  const box = $("money-figures");
  box.replaceChildren();
  box.append(figure("revenue", money(figures.revenue), doc.mode === "pipeline" ? "won revenue" : "revenue"));
  if (doc.mode === "sequence") {
    box.append(
      figure("orders", num(figures.orders || 0), "orders"),
      figure("aov", money(figures.average_order_value), "average order"),
      figure("abandoned", pct(figures.abandoned_cart_rate), "abandoned carts"),
      figure("repeat", pct(figures.repeat_purchase_rate), "repeat customers"),
    );
  }
  if (figures.spend !== undefined) {
    box.append(
      figure("spend", money(figures.spend), "ad spend"),
      figure("romi", ratios(figures.romi), "ROMI"),
      figure("cac", money(figures.cac), doc.mode === "pipeline" ? "cost per won deal" : "cost per customer"),
    );
  }
}

function formatSeconds(x) {
  if (x < 120) return `${x.toFixed(0)} s`;
  if (x < 7200) return `${(x / 60).toFixed(0)} min`;
  if (x < 172800) return `${(x / 3600).toFixed(1)} h`;
  return `${(x / 86400).toFixed(1)} d`;
}

// ---- channels side by side --------------------------------------------------

function drawChannels(doc) {
  const card = $("channels-card");
  const values = (doc.breakdown || {}).channel;
  card.hidden = !values;
  if (!values) return;
  const names = Object.keys(values);
  const select = $("channel");
  const known = new Set([...select.options].map((o) => o.value));
  for (const v of names) if (!known.has(v)) select.append(el("option", { value: v }, v));
  const table = $("channels");
  table.replaceChildren();
  const head = el("tr", {}, el("th", {}, "step"));
  for (const v of names) {
    const button = el("button", { type: "button", title: "show this channel above" }, v);
    button.onclick = () => { state.channel = v; $("channel").value = v; refresh(); };
    head.append(el("th", { class: v === state.channel ? "on" : "", "data-channel": v }, button));
  }
  table.append(head);
  doc.steps.forEach((step, i) => {
    const row = el("tr", {}, el("td", {}, step.name));
    for (const v of names) {
      const s = values[v].steps[i];
      const text = i === 0 ? num(s.reached) : `${num(s.reached)} (${pct(s.conversion)})`;
      row.append(el("td", { class: s.flagged ? "flagged" : "", "data-channel": v, "data-step": s.name }, text));
    }
    table.append(row);
  });
  const total = el("tr", {}, el("td", {}, "overall"));
  for (const v of names) total.append(el("td", {}, pct(values[v].overall_conversion)));
  table.append(total);
  for (const [label, key, fmt] of [["revenue", "revenue", money], ["ad spend", "spend", money], ["ROMI", "romi", ratios]]) {
    const row = el("tr", { class: "money" }, el("td", {}, label));
    for (const v of names) row.append(el("td", { "data-channel": v, "data-money": key }, fmt(values[v][key])));
    table.append(row);
  }
}

// ---- the sales pipeline ----------------------------------------------------

async function drawPipeline() {
  const pipeline = state.funnels.find((f) => f.mode === "pipeline");
  $("pipeline-card").hidden = !pipeline;
  if (!pipeline) return;
  const byManager = pipeline.breakdowns.includes("manager");
  const doc = await getJSON(`/api/funnels/${pipeline.name}?` + query({ forecast: "1" }));
  let figures = doc;
  let label = "";
  if (state.channel && pipeline.breakdowns.includes("channel")) {
    const byChannel = await getJSON(`/api/funnels/${pipeline.name}?` + query({ breakdown: "channel" }));
    figures = byChannel.breakdown.channel[state.channel] || { leads: 0, won: 0, lost: 0, steps: [] };
    label = ` — channel ${state.channel}`;
  }
  $("pipeline-title").textContent = `Sales pipeline ${pipeline.name}${label} (last ${state.window})`;
  const box = $("pipeline-figures");
  box.replaceChildren();
  const response = (figures.lead_response || {}).avg_s;
  const forecast = doc.forecast || {};
  box.append(
    figure("closing-rate", pct(figures.closing_rate), "closing rate (won / leads)"),
    figure("win-rate", pct(figures.win_rate), "win rate (won / closed)"),
    figure("leads", num(figures.leads || 0), "leads"),
    figure("won", num(figures.won || 0), "won"),
    figure("lost", num(figures.lost || 0), "lost"),
    figure("won-revenue", money(figures.revenue), "won revenue"),
    figure("lead-response", response === null || response === undefined ? "–" : formatSeconds(response), "lead response (mean)"),
    figure("weighted", money(forecast.weighted_value), `weighted open pipeline (${num(forecast.open_deals || 0)} deals)`),
    figure("expected-wins", forecast.next_period && forecast.next_period.expected_wins !== null
      ? num(Math.round(forecast.next_period.expected_wins)) : "–", "expected wins, next 7 days"),
  );
  const managers = $("managers");
  managers.replaceChildren(el("tr", {}, ...["manager", "leads", "won", "closing", "revenue", "calls", "answered",
    "missed in", "talk time", "lead response"].map((h) => el("th", {}, h))));
  if (byManager) {
    const rows = (await getJSON(`/api/managers?funnel=${pipeline.name}&` + query())).managers;
    for (const m of rows) {
      const lr = m.lead_response.avg_s;
      managers.append(el("tr", { "data-manager": m.manager }, el("td", {}, m.manager), el("td", {}, num(m.leads)),
        el("td", {}, num(m.won)), el("td", {}, pct(m.closing_rate)), el("td", {}, money(m.revenue)),
        el("td", {}, num(m.calls)), el("td", {}, num(m.answered_calls)), el("td", {}, num(m.missed_inbound_calls)),
        el("td", {}, formatSeconds(m.talk_time_s)), el("td", {}, lr === null ? "–" : formatSeconds(lr))));
    }
  }
  const reasons = $("lost-reasons");
  reasons.replaceChildren();
  const entries = Object.entries(doc.lost_reasons || {});
  if (!entries.length) reasons.append(el("li", { class: "empty" }, "no lost deals in this window"));
  for (const [reason, n] of entries) reasons.append(el("li", {}, `${reason}: ${num(n)}`));
}

// ---- the trend ---------------------------------------------------------------

async function drawTrend() {
  if (!state.funnel) return;
  const data = await getJSON(`/api/funnels/${state.funnel}/trend?hours=6&points=24&view=${state.view}`);
  const pts = data.points;
  const W = 600, H = 160, pad = 28;
  const maxY = Math.max(0.01, ...pts.map((p) => p.overall_conversion || 0));
  const x = (i) => pad + (i * (W - 2 * pad)) / Math.max(1, pts.length - 1);
  const y = (v) => H - pad - (v / maxY) * (H - 2 * pad);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  const add = (tag, attrs, text) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    svg.append(n);
    return n;
  };
  add("line", { x1: pad, y1: H - pad, x2: W - pad, y2: H - pad, stroke: "#d1d5db" });
  add("text", { x: 2, y: y(maxY) + 4, "font-size": 11, fill: "#6b7280" }, pct(maxY));
  add("text", { x: 2, y: H - pad + 4, "font-size": 11, fill: "#6b7280" }, "0%");
  const line = pts.map((p, i) => (p.overall_conversion === null ? null : `${x(i)},${y(p.overall_conversion)}`)).filter(Boolean);
  if (line.length) add("polyline", { points: line.join(" "), fill: "none", stroke: "#3b82f6", "stroke-width": 2 });
  pts.forEach((p, i) => {
    if (p.overall_conversion === null) return;
    const dot = add("circle", { cx: x(i), cy: y(p.overall_conversion), r: 3, fill: "#3b82f6" });
    const when = new Date(p.to).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    const t = document.createElementNS(ns, "title");
    t.textContent = `until ${when}: ${pct(p.overall_conversion)} (${num(p.entered)} entered, ${num(p.completed)} completed)`;
    dot.append(t);
  });
  const label = (i) => new Date(pts[i].to).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (pts.length) {
    add("text", { x: pad, y: H - 6, "font-size": 11, fill: "#6b7280" }, label(0));
    add("text", { x: W - pad, y: H - 6, "font-size": 11, fill: "#6b7280", "text-anchor": "end" }, label(pts.length - 1));
  }
  if (!line.length) add("text", { x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#6b7280" }, "no events in the last 6 hours yet");
  $("trend").replaceChildren(svg);
}

// ---- the loop -----------------------------------------------------------------

let inFlight = false;
async function refresh() {
  if (inFlight || !state.funnel) return;
  inFlight = true;
  const f = currentFunnel();
  const extra = { flags: "1" };
  if (f.breakdowns.includes("channel")) extra.breakdown = "channel";
  $("svg-link").href = `/api/funnels/${f.name}/chart.svg?` + query({ flags: "1", ...(state.channel ? { channel: state.channel } : {}) });
  try {
    const doc = await getJSON(`/api/funnels/${f.name}?` + query(extra));
    const figures = state.channel ? (doc.breakdown.channel[state.channel] || { steps: doc.steps.map((s) => ({ ...s, reached: 0 })) }) : doc;
    drawBars(doc, figures);
    drawChannels(doc);
    await drawPipeline();
    banner(null, "");
    setStatus("live", "live · " + new Date().toLocaleTimeString());
    document.body.dataset.updated = String(Date.now());
  } catch (err) {
    if (err instanceof HttpError && err.status === 503) {
      banner("", "Worker catching up (rebalancing or recovering its tables); the numbers will be back in a moment.");
      setStatus("wait", "catching up");
    } else if (err instanceof HttpError) {
      banner("error", `The worker answered ${err.status}: ${err.message}`);
      setStatus("error", "error");
    } else {
      banner("error", `Worker unreachable (${err.message}); retrying every ${POLL_MS / 1000} s.`);
      setStatus("error", "offline");
    }
  } finally {
    inFlight = false;
  }
}

async function refreshTrend() {
  try { await drawTrend(); } catch (err) { /* the main loop reports the worker's state */ }
}

async function downloadPng() {
  const resp = await fetch($("svg-link").href);
  const text = await resp.text();
  const url = URL.createObjectURL(new Blob([text], { type: "image/svg+xml" }));
  const img = new Image();
  img.onload = () => {
    const canvas = el("canvas", { width: img.width * 2, height: img.height * 2 });
    const ctx = canvas.getContext("2d");
    ctx.scale(2, 2);
    ctx.drawImage(img, 0, 0);
    URL.revokeObjectURL(url);
    canvas.toBlob((blob) => {
      const a = el("a", { href: URL.createObjectURL(blob), download: `funnel-${state.funnel}-${state.window}.png` });
      a.click();
    });
  };
  img.src = url;
}

function pick(groupId, key) {
  for (const b of $(groupId).querySelectorAll("button")) {
    b.onclick = () => {
      state[key] = b.dataset[key];
      for (const o of $(groupId).querySelectorAll("button")) o.classList.toggle("on", o === b);
      refresh();
      refreshTrend();
    };
  }
}

async function start() {
  try {
    const list = await getJSON("/api/funnels");
    state.funnels = list.funnels;
  } catch (err) {
    banner("error", `Worker unreachable (${err.message}); reload when it is up.`);
    setStatus("error", "offline");
    setTimeout(start, POLL_MS);
    return;
  }
  const select = $("funnel");
  select.replaceChildren(...state.funnels.map((f) => el("option", { value: f.name }, `${f.name} (${f.mode})`)));
  state.funnel = state.funnels[0] && state.funnels[0].name;
  select.onchange = () => { state.funnel = select.value; state.channel = ""; $("channel").value = ""; refresh(); refreshTrend(); };
  $("channel").onchange = () => { state.channel = $("channel").value; refresh(); };
  $("png-button").onclick = downloadPng;
  pick("windows", "window");
  pick("views", "view");
  await refresh();
  await refreshTrend();
  setInterval(refresh, POLL_MS);
  setInterval(refreshTrend, TREND_MS);
}

start();
