// The operator's page: polls /api/status and draws small SVG charts and the
// latest operator actions. No library, no inline script or style (the page's
// Content-Security-Policy forbids both). Every chart sets data-points to the
// number of points or bars it drew, and the actions table data-rows, which
// the headless browser test reads. When the listener asks for a read token
// (401), a field asks for it; it is kept for this tab only (sessionStorage)
// and sent as a bearer token.
"use strict";

const POLL_MS = 1500;
const HISTORY = 120;
const W = 400, H = 120, PAD_L = 34, PAD_B = 16, PAD_T = 6;
const SVG = "http://www.w3.org/2000/svg";
const history = []; // { t, answered, approved, pending, dead }

function el(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}

function clear(svg) {
  while (svg.firstChild) svg.removeChild(svg.firstChild);
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function frame(svg, max, unit) {
  svg.appendChild(el("line", { class: "axis", x1: PAD_L, y1: H - PAD_B, x2: W, y2: H - PAD_B }));
  svg.appendChild(el("line", { class: "axis", x1: PAD_L, y1: PAD_T, x2: PAD_L, y2: H - PAD_B }));
  svg.appendChild(el("text", { x: 2, y: PAD_T + 8, class: "dim" }, fmt(max) + unit));
  svg.appendChild(el("text", { x: 2, y: H - PAD_B, class: "dim" }, "0"));
}

function fmt(v) {
  if (v === null || v === undefined) return "–";
  if (v >= 100) return String(Math.round(v));
  if (v >= 10) return v.toFixed(1);
  return String(Math.round(v * 100) / 100);
}

// Lines over the poll history: series is a list of [values, css class].
function lineChart(svg, series, unit, fixedMax) {
  clear(svg);
  let max = fixedMax;
  if (max === undefined) {
    max = 0;
    for (const [values] of series) for (const v of values) if (v !== null && v > max) max = v;
    max = niceMax(max);
  }
  frame(svg, max, unit);
  const plotW = W - PAD_L - 2, plotH = H - PAD_B - PAD_T;
  let points = 0;
  for (const [values, cls] of series) {
    const step = plotW / Math.max(HISTORY - 1, 1);
    const x0 = PAD_L + plotW - step * (values.length - 1);
    let d = "";
    values.forEach((v, i) => {
      if (v === null) return;
      const x = x0 + step * i, y = PAD_T + plotH * (1 - Math.min(v, max) / max);
      d += (d === "" ? "M" : "L") + x.toFixed(1) + " " + y.toFixed(1) + " ";
      points++;
    });
    if (d !== "") svg.appendChild(el("path", { class: "series " + cls, d: d }));
  }
  svg.setAttribute("data-points", String(points));
}

// Bars: items is a list of {label, values: [[value, css class]...]}.
function barChart(svg, items, unit) {
  clear(svg);
  let max = 0;
  for (const it of items) for (const [v] of it.values) if (v !== null && v > max) max = v;
  max = niceMax(max);
  frame(svg, max, unit);
  const plotW = W - PAD_L - 4, plotH = H - PAD_B - PAD_T;
  const slot = plotW / Math.max(items.length, 1);
  let bars = 0;
  items.forEach((it, i) => {
    const n = it.values.length, bw = Math.min(28, (slot - 8) / n);
    it.values.forEach(([v, cls], j) => {
      if (v === null || v <= 0) return;
      const h = plotH * Math.min(v, max) / max;
      const x = PAD_L + 4 + slot * i + (slot - bw * n) / 2 + bw * j;
      const bar = el("rect", { class: "bar " + cls, x: x.toFixed(1), y: (H - PAD_B - h).toFixed(1), width: (bw - 1).toFixed(1), height: h.toFixed(1) });
      bar.appendChild(el("title", {}, it.label + ": " + fmt(v) + unit));
      svg.appendChild(bar);
      bars++;
    });
    svg.appendChild(el("text", { x: (PAD_L + 4 + slot * i + slot / 2 - 3 * it.label.length).toFixed(1), y: H - 3 }, it.label));
  });
  svg.setAttribute("data-points", String(bars));
}

function bankChart(svg, banks) {
  clear(svg);
  let dots = 0;
  banks.forEach((b, i) => {
    const y = 20 + i * 24;
    const off = b.signed_off ? " signed off" : "";
    svg.appendChild(el("text", { x: 2, y: y + 4 }, b.bank + " (" + b.institution_id + ")" + off));
    for (let c = 0; c < b.connections; c++) {
      const on = c < b.signed_on;
      const dot = el("circle", { cx: 200 + c * 18, cy: y, r: 6, class: on ? "dot-on" : "dot-off" });
      dot.appendChild(el("title", {}, on ? "signed on" : "not signed on"));
      svg.appendChild(dot);
      dots++;
    }
    svg.appendChild(el("text", { x: 210 + b.connections * 18, y: y + 4, class: "dim" }, b.signed_on + "/" + b.connections));
  });
  svg.setAttribute("data-points", String(dots));
}

function showErrors(list, total) {
  const ol = document.getElementById("errors");
  while (ol.firstChild) ol.removeChild(ol.firstChild);
  if (list.length === 0) {
    const li = document.createElement("li");
    li.className = "none";
    li.textContent = "none";
    ol.appendChild(li);
  }
  for (const e of list) {
    const li = document.createElement("li");
    li.className = e.level;
    li.textContent = e.time + " " + e.level.toUpperCase() + " " + e.target + ": " + e.message;
    ol.appendChild(li);
  }
  document.getElementById("errors-total").textContent = total + " since start";
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
}

function showAudit(list) {
  const body = document.getElementById("audit");
  while (body.firstChild) body.removeChild(body.firstChild);
  const rows = list || [];
  if (rows.length === 0) {
    const tr = document.createElement("tr");
    cell(tr, list ? "none" : "audit log not readable", "none");
    body.appendChild(tr);
  }
  for (const a of rows) {
    const tr = document.createElement("tr");
    cell(tr, a.at || String(a.at_ms));
    cell(tr, a.who);
    cell(tr, a.action);
    cell(tr, a.target);
    cell(tr, a.result, a.result === "ok" ? "ok" : "bad");
    cell(tr, a.reason);
    body.appendChild(tr);
  }
  body.setAttribute("data-rows", String(rows.length));
}

function render(s) {
  const t = s.traffic;
  history.push({ t: s.time_ms, answered: t.answered, approved: t.approved,
                 pending: s.saf ? s.saf.pending : null, dead: s.saf ? s.saf.dead : null });
  if (history.length > HISTORY + 1) history.shift();

  const volume = [], approval = [];
  for (let i = 1; i < history.length; i++) {
    const a = history[i - 1], b = history[i];
    const seconds = Math.max((b.t - a.t) / 1000, 0.001);
    const answered = Math.max(b.answered - a.answered, 0);
    volume.push(answered / seconds);
    approval.push(answered > 0 ? 100 * Math.max(b.approved - a.approved, 0) / answered : null);
  }
  lineChart(document.getElementById("volume"), [[volume, ""]], "/s");
  lineChart(document.getElementById("approval"), [[approval, ""]], "%", 100);
  const last = volume.length ? volume[volume.length - 1] : null;
  document.getElementById("volume-now").textContent = fmt(last) + "/s";
  const overall = t.answered > 0 ? 100 * t.approved / t.answered : null;
  document.getElementById("approval-now").textContent = fmt(overall) + "% overall";

  const codes = Object.keys(t.codes).sort().map((rc) => ({
    label: rc === "" ? "?" : rc, values: [[t.codes[rc], rc === "00" ? "" : "bad"]] }));
  barChart(document.getElementById("codes"), codes, "");

  const flows = Object.keys(t.flows).map((f) => ({
    label: f, values: [[t.flows[f].p50_ms, ""], [t.flows[f].p99_ms, "second"]] }));
  barChart(document.getElementById("latency"), flows, "ms");

  lineChart(document.getElementById("saf"), [
    [history.map((h) => h.pending), ""], [history.map((h) => h.dead), "bad"]], "");
  document.getElementById("saf-now").textContent = s.saf
    ? s.saf.pending + " pending, " + s.saf.dead + " dead" : "store not answering";

  bankChart(document.getElementById("banks"), s.banks);
  showErrors(s.errors, s.errors_total);
  showAudit(s.audit);

  const badge = document.getElementById("readiness");
  badge.textContent = s.ready ? "ready" : "not ready: " + s.problems.join("; ");
  badge.className = "badge " + (s.ready ? "ready" : "not-ready");
  document.getElementById("instance").textContent = s.instance || "";
  document.getElementById("updated").textContent = "updated " + new Date(s.time_ms).toISOString();
}

const TOKEN_KEY = "switchboard-read-token";

document.getElementById("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
  document.getElementById("token").value = "";
  document.getElementById("token-form").hidden = true;
});

async function poll() {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), 5000);
  try {
    const headers = {};
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers["Authorization"] = "Bearer " + token;
    const r = await fetch("/api/status", { signal: abort.signal, cache: "no-store", headers: headers });
    document.getElementById("token-form").hidden = r.status !== 401;
    if (!r.ok) throw new Error("status " + r.status);
    render(await r.json());
    document.body.setAttribute("data-state", "ok");
  } catch (e) {
    document.body.setAttribute("data-state", "error");
    document.getElementById("updated").textContent = "cannot reach the switch: " + e.message;
  } finally {
    clearTimeout(timer);
    document.body.setAttribute("data-polls", String(Number(document.body.getAttribute("data-polls")) + 1));
    setTimeout(poll, POLL_MS);
  }
}

poll();
