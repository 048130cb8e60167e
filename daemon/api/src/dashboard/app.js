// Sibyl dashboard: feeds from /v1/feeds and the /v1/stream SSE, a candle
// chart drawn on a canvas from /v1/feeds/{id}/history, committee health from
// /v1/committee, the margin engine from /v1/margin/* (polled, and refreshed
// after each signed report). No libraries, no network beyond this node.
"use strict";

const state = {
  feeds: new Map(),       // feed_id -> {feed_id, decimals, price, confidence, round, timestamp_ms, ...}
  selected: null,
  candles: [],            // [{start_ms, open, high, low, close, count}] as Numbers (scaled)
  intervalMs: 60000,
  rangeMs: 3600000,
  chartUpdates: 0,
  lastRound: null,
};

const $ = (id) => document.getElementById(id);

function setStatus(msg) { $("status").textContent = msg; }

window.addEventListener("error", (e) => setStatus("error: " + e.message));
window.addEventListener("unhandledrejection", (e) => setStatus("error: " + (e.reason && e.reason.message || e.reason)));

// Fixed-point decimal string -> display string, exactly (BigInt, no rounding of the integer part).
function fmtFixed(value, decimals, maxFrac) {
  if (value === null || value === undefined) return "–";
  const d = decimals || 0;
  let v = BigInt(value);
  const neg = v < 0n;
  if (neg) v = -v;
  let s = v.toString();
  if (d === 0) return (neg ? "-" : "") + s;
  s = s.padStart(d + 1, "0");
  let int = s.slice(0, s.length - d);
  let frac = s.slice(s.length - d);
  if (maxFrac !== undefined && frac.length > maxFrac) frac = frac.slice(0, maxFrac);
  int = int.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return (neg ? "-" : "") + int + (frac.length ? "." + frac : "");
}

// Fixed-point decimal string -> float, for drawing only.
function toNumber(value, decimals) {
  return Number(value) / Math.pow(10, decimals || 0);
}

function fmtAge(ms) {
  if (ms === null || ms === undefined) return "–";
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 60) return s.toFixed(0) + " s";
  if (s < 3600) return (s / 60).toFixed(0) + " min";
  return (s / 3600).toFixed(1) + " h";
}

// Time since a member was last heard from: tenths of a second while it is
// recent (a live member is heard from several times a second).
function fmtSeen(ms) {
  const s = Math.max(0, (Date.now() - ms) / 1000);
  return s < 10 ? s.toFixed(1) + " s" : fmtAge(ms);
}

async function getJson(url) {
  const r = await fetch(url, { headers: { "Accept": "application/json" } });
  const body = await r.json();
  if (!r.ok) throw new Error((body.error && body.error.message) || ("HTTP " + r.status));
  return body;
}

// ---- feed table -------------------------------------------------------------

function renderFeeds() {
  const tbody = $("feeds").querySelector("tbody");
  const ids = Array.from(state.feeds.keys()).sort();
  $("feeds-empty").hidden = ids.length > 0;
  for (const id of ids) {
    const f = state.feeds.get(id);
    let tr = tbody.querySelector('tr[data-feed="' + id + '"]');
    if (!tr) {
      tr = document.createElement("tr");
      tr.dataset.feed = id;
      for (const cls of ["id", "price num", "conf num", "obs num", "status", "ema num", "round num", "age num"]) {
        const td = document.createElement("td");
        td.className = cls;
        tr.appendChild(td);
      }
      tr.addEventListener("click", () => selectFeed(id));
      tbody.appendChild(tr);
    }
    const c = tr.children;
    c[0].textContent = id;
    c[1].textContent = fmtFixed(f.price, f.decimals, 6);
    c[2].textContent = f.confidence === undefined ? "–" : fmtFixed(f.confidence, f.decimals, 6);
    c[3].textContent = f.num_observations === undefined ? "–" : String(f.num_observations);
    // Status as signed, coloured; the flags (reasons) in the tooltip.
    const st = f.status || "–";
    c[4].textContent = st.replace("_", " ") + (f.flags && f.flags.length ? " *" : "");
    c[4].className = "status " + (st === "ok" ? "ok" : st === "degraded" ? "warn" : st === "–" ? "" : "bad");
    c[4].title = f.flags && f.flags.length ? f.flags.join(", ") : "";
    c[5].textContent = f.ema === undefined ? "–" : fmtFixed(f.ema, f.decimals, 6);
    c[6].textContent = f.round === null || f.round === undefined ? "–" : String(f.round);
    c[7].textContent = fmtAge(f.timestamp_ms);
    tr.classList.toggle("selected", id === state.selected);
  }
}

async function loadFeeds() {
  const body = await getJson("/v1/feeds");
  for (const f of body.feeds) state.feeds.set(f.feed_id, f);
  renderFeeds();
  if (!state.selected && body.feeds.length > 0) selectFeed(body.feeds[0].feed_id);
}

// ---- chart ------------------------------------------------------------------

function selectFeed(id) {
  state.selected = id;
  $("chart-feed").textContent = id;
  renderFeeds();
  loadChart();
}

async function loadChart() {
  const id = state.selected;
  if (!id) return;
  const to = Date.now() + 1;
  const from = to - state.rangeMs;
  const iv = $("interval").value;
  const body = await getJson("/v1/feeds/" + encodeURIComponent(id) + "/history?from=" + from + "&to=" + to +
    "&interval=" + encodeURIComponent(iv) + "&limit=10000");
  if (id !== state.selected) return;
  const dec = body.decimals;
  state.intervalMs = body.interval_ms;
  // Empty buckets (count 0, null prices) say there was no report; the chart skips them.
  state.candles = body.candles.filter((c) => c.count > 0).map((c) => ({
    start_ms: c.start_ms, open: toNumber(c.open, dec), high: toNumber(c.high, dec),
    low: toNumber(c.low, dec), close: toNumber(c.close, dec), count: c.count,
  }));
  $("chart-info").textContent = state.candles.length + " candles" + (body.next_from ? " (truncated)" : "");
  drawChart();
}

// Fold one new signed value into the chart's last candle or a new one.
function chartAddPoint(tsMs, price) {
  const start = tsMs - (tsMs % state.intervalMs);
  const last = state.candles[state.candles.length - 1];
  if (last && last.start_ms === start) {
    last.high = Math.max(last.high, price);
    last.low = Math.min(last.low, price);
    last.close = price;
    last.count += 1;
  } else if (!last || start > last.start_ms) {
    state.candles.push({ start_ms: start, open: price, high: price, low: price, close: price, count: 1 });
    const oldest = Date.now() - state.rangeMs;
    while (state.candles.length > 1 && state.candles[0].start_ms + state.intervalMs < oldest) state.candles.shift();
  } else {
    return;
  }
  drawChart();
}

function niceStep(span, target) {
  const raw = span / Math.max(1, target);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 2.5, 5, 10]) if (raw <= m * mag) return m * mag;
  return 10 * mag;
}

function drawChart() {
  const canvas = $("chart");
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || canvas.width, h = canvas.clientHeight || canvas.height;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const cs = state.candles;
  state.chartUpdates += 1;
  canvas.dataset.updates = String(state.chartUpdates);
  canvas.dataset.candles = String(cs.length);
  ctx.font = "11px system-ui, sans-serif";
  if (cs.length === 0) {
    ctx.fillStyle = "#7d8895";
    ctx.fillText("no data in this range", 12, 20);
    return;
  }
  const padL = 8, padR = 80, padT = 10, padB = 22;
  let lo = Infinity, hi = -Infinity;
  for (const c of cs) { lo = Math.min(lo, c.low); hi = Math.max(hi, c.high); }
  if (hi === lo) { hi += Math.abs(hi) * 0.001 || 1; lo -= Math.abs(lo) * 0.001 || 1; }
  const t0 = cs[0].start_ms, t1 = cs[cs.length - 1].start_ms + state.intervalMs;
  const x = (t) => padL + (t - t0) / (t1 - t0) * (w - padL - padR);
  const y = (p) => padT + (hi - p) / (hi - lo) * (h - padT - padB);
  // grid and price axis
  ctx.strokeStyle = "#26303b"; ctx.fillStyle = "#7d8895"; ctx.lineWidth = 1;
  const step = niceStep(hi - lo, 5);
  for (let p = Math.ceil(lo / step) * step; p <= hi; p += step) {
    const yy = Math.round(y(p)) + 0.5;
    ctx.beginPath(); ctx.moveTo(padL, yy); ctx.lineTo(w - padR, yy); ctx.stroke();
    ctx.fillText(p.toLocaleString(undefined, { maximumFractionDigits: 6 }), w - padR + 6, yy + 4);
  }
  // time axis: a few labels
  const labels = Math.min(6, cs.length);
  for (let i = 0; i < labels; i++) {
    const c = cs[Math.floor(i * (cs.length - 1) / Math.max(1, labels - 1))];
    const d = new Date(c.start_ms);
    const txt = state.rangeMs > 86400000 ? d.toLocaleDateString() : d.toLocaleTimeString();
    ctx.fillText(txt, Math.min(x(c.start_ms), w - padR - 50), h - 6);
  }
  // candles; a line of closes when they get too thin to see
  const cw = (w - padL - padR) / cs.length;
  if (cw < 2) {
    ctx.strokeStyle = "#58a6ff"; ctx.beginPath();
    cs.forEach((c, i) => { const xx = x(c.start_ms + state.intervalMs / 2); if (i) ctx.lineTo(xx, y(c.close)); else ctx.moveTo(xx, y(c.close)); });
    ctx.stroke();
  } else {
    for (const c of cs) {
      const up = c.close >= c.open;
      ctx.strokeStyle = ctx.fillStyle = up ? "#3fb950" : "#f85149";
      const xm = x(c.start_ms + state.intervalMs / 2);
      ctx.beginPath(); ctx.moveTo(xm, y(c.high)); ctx.lineTo(xm, y(c.low)); ctx.stroke();
      const bw = Math.max(1, cw * 0.7);
      const top = y(Math.max(c.open, c.close)), bot = y(Math.min(c.open, c.close));
      ctx.fillRect(xm - bw / 2, top, bw, Math.max(1, bot - top));
    }
  }
  // last price marker
  const lastC = cs[cs.length - 1];
  ctx.fillStyle = "#58a6ff";
  ctx.fillRect(w - padR, y(lastC.close) - 8, padR, 16);
  ctx.fillStyle = "#0f1419";
  ctx.fillText(lastC.close.toLocaleString(undefined, { maximumFractionDigits: 6 }), w - padR + 4, y(lastC.close) + 4);
}

// ---- live stream ------------------------------------------------------------

function connectStream() {
  const es = new EventSource("/v1/stream");
  const conn = $("conn");
  es.onopen = () => { conn.textContent = "stream: live"; conn.className = "pill on"; };
  es.onerror = () => { conn.textContent = "stream: reconnecting"; conn.className = "pill off"; };
  es.addEventListener("report", (ev) => {
    const r = JSON.parse(ev.data);
    state.lastRound = r.round;
    $("last-round").textContent = "round " + r.round;
    for (const leaf of r.leaves) {
      const prev = state.feeds.get(leaf.feed_id) || { feed_id: leaf.feed_id, decimals: null };
      const next = Object.assign({}, prev, leaf, { round: r.round, timestamp_ms: r.timestamp_ms });
      state.feeds.set(leaf.feed_id, next);
      const tr = document.querySelector('#feeds tr[data-feed="' + leaf.feed_id + '"]');
      if (tr && prev.price !== undefined) {
        const up = BigInt(leaf.price) >= BigInt(prev.price);
        tr.classList.remove("flash-up", "flash-down");
        tr.classList.add(up ? "flash-up" : "flash-down");
      }
      if (leaf.feed_id === state.selected) chartAddPoint(r.timestamp_ms, toNumber(leaf.price, next.decimals));
    }
    renderFeeds();
    if (!state.selected && state.feeds.size > 0) selectFeed(Array.from(state.feeds.keys()).sort()[0]);
    refreshMargin();
  });
  es.addEventListener("lagged", () => { loadFeeds().catch((e) => setStatus("feeds: " + e.message)); });
}

// ---- committee ----------------------------------------------------------------

async function loadCommittee() {
  const c = await getJson("/v1/committee");
  const lat = c.recent_round_latency_ms || [];
  const sorted = lat.slice().sort((a, b) => a - b);
  const p50 = sorted.length ? sorted[Math.floor(sorted.length / 2)] : null;
  const connected = c.members.filter((m) => m.connected).length;
  $("committee-summary").textContent = c.members.length === 0
    ? "No committee information."
    : connected + " of " + c.members.length + " members connected · threshold " + c.threshold +
      " · round " + c.current_round + (p50 !== null ? " · round latency p50 " + p50 + " ms" : "");
  const tbody = $("committee").querySelector("tbody");
  tbody.replaceChildren();
  for (const m of c.members) {
    const tr = document.createElement("tr");
    const cells = [String(m.index) + (m.index === c.self_index ? " (this node)" : ""),
      m.peer_id.length > 16 ? m.peer_id.slice(0, 8) + "…" + m.peer_id.slice(-6) : m.peer_id,
      m.connected ? "yes" : "no", m.last_seen_ms ? fmtSeen(m.last_seen_ms) : "–",
      String(m.rounds_led), String(m.shares_received), String(m.share_failures),
      String(m.refusals), m.clock_offset_ms === null || m.clock_offset_ms === undefined ? "–" : m.clock_offset_ms + " ms"];
    cells.forEach((txt, i) => {
      const td = document.createElement("td");
      td.textContent = txt;
      if (i === 2) td.className = m.connected ? "yes" : "no";
      if (i >= 3) td.className = "num";
      if (i === 1) td.title = m.peer_id;
      tr.appendChild(td);
    });
    tbody.appendChild(tr);
  }
}


// ---- margin -------------------------------------------------------------------

const margin = { updates: 0, disabled: false, loading: false, pending: false, account: null };

// The margin routes' scales (served as `decimals` by /v1/margin/markets):
// values are fixed-point integer strings, as feed prices are.
const MARGIN_DECIMALS = { money: 6, price: 8, size: 8, rate: 6, greek: 18 };

// Margin value of `kind` ("1234567891234" money) -> "1,234,567.89", exactly.
function fmtMargin(value, kind, maxFrac) {
  return fmtFixed(value, MARGIN_DECIMALS[kind], maxFrac);
}

function unitName(u) {
  return u.mode === "isolated" ? "isolated " + u.market : "cross";
}

function fillTable(container, rows) {
  const tbody = container.querySelector("tbody");
  tbody.replaceChildren();
  for (const row of rows) {
    const tr = document.createElement("tr");
    tr.dataset.account = String(row.account);
    tr.addEventListener("click", () => showAccount(row.account));
    tr.classList.toggle("selected", row.account === margin.account);
    for (const [text, cls] of row.cells) {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      tr.appendChild(td);
    }
    tbody.appendChild(tr);
  }
  const empty = container.querySelector(".empty");
  if (empty) empty.hidden = rows.length > 0;
}

// One account's positions with their Greeks, below the two tables.
async function loadAccount() {
  const id = margin.account;
  if (id === null) return;
  const [acct, pos] = await Promise.all([
    getJson("/v1/margin/accounts/" + id), getJson("/v1/margin/accounts/" + id + "/positions")]);
  if (id !== margin.account) return;
  $("margin-account").hidden = false;
  $("margin-account-id").textContent = String(id);
  const h = acct.health;
  $("margin-account-summary").textContent = h
    ? "cash " + fmtMargin(acct.cash, "money", 2) + " · equity " + fmtMargin(h.equity, "money", 2) + " · initial " + fmtMargin(h.initial, "money", 2) +
      " · maintenance " + fmtMargin(h.maintenance, "money", 2) + " · " + h.status.replace("_", " ")
    : "";
  fillTable($("margin-account"), pos.positions.map((p) => ({
    account: id,
    cells: [[p.market], [p.side], [fmtMargin(p.size, "size", 4), "num"], [p.mode], [fmtMargin(p.entry_price, "price", 2), "num"],
      [fmtMargin(p.mark_price, "price", 2), "num"], [fmtMargin(p.unrealized_pnl, "money", 2), "num"],
      [p.greeks ? fmtMargin(p.greeks.delta, "greek", 4) : "–", "num"], [p.greeks ? fmtMargin(p.greeks.gamma, "greek", 6) : "–", "num"],
      [p.greeks ? fmtMargin(p.greeks.vega, "greek", 2) : "–", "num"]],
  })));
}

function showAccount(id) {
  margin.account = id;
  for (const tr of document.querySelectorAll("#margin-at-risk tbody tr, #margin-liquidations tbody tr")) {
    tr.classList.toggle("selected", Number(tr.dataset.account) === id);
  }
  loadAccount().catch((e) => setStatus("account " + id + ": " + e.message));
}

const STATUS_CLASS = { healthy: "ok", margin_call: "warn", below_maintenance: "bad" };

async function loadMargin() {
  if (margin.disabled) return;
  if (margin.loading) { margin.pending = true; return; }
  margin.loading = true;
  try {
    const [risk, liq, ins] = await Promise.all([
      fetch("/v1/margin/at-risk?limit=12"),
      fetch("/v1/margin/liquidations?limit=12"),
      fetch("/v1/margin/insurance?limit=1"),
    ]);
    if (risk.status === 503) {
      margin.disabled = true;
      $("margin-insurance").textContent = "This node runs no margin engine.";
      return;
    }
    const [r, l, f] = await Promise.all([risk.json(), liq.json(), ins.json()]);
    for (const [resp, body] of [[risk, r], [liq, l], [ins, f]]) {
      if (!resp.ok) throw new Error((body.error && body.error.message) || ("HTTP " + resp.status));
    }
    $("margin-insurance").textContent = "Insurance fund " + fmtMargin(f.balance, "money", 2) + " USD · fees " +
      fmtMargin(f.fees, "money", 2) + " USD · " + f.accounts + " accounts";
    fillTable($("margin-at-risk"), r.units.map((u) => ({
      account: u.account,
      cells: [[String(u.account)], [unitName(u)], [fmtMargin(u.health.equity, "money", 2), "num"],
        [fmtMargin(u.health.maintenance, "money", 2), "num"],
        [u.health.margin_ratio === null ? "–" : fmtMargin(u.health.margin_ratio, "rate", 3), "num"],
        [u.health.status.replace("_", " "), STATUS_CLASS[u.health.status]]],
    })));
    fillTable($("margin-liquidations"), l.liquidations.map((e) => ({
      account: e.account,
      cells: [[fmtAge(e.at_ms), "num"], [String(e.account)], [unitName(e.unit)],
        [e.liquidation === "partial" ? "partial " + Math.round(Number(e.fraction) / 1e4) + "%" : "full"],
        [e.closed.map((c) => c.market).join(", ")], [fmtMargin(e.penalty, "money", 2), "num"],
        [e.before.margin_ratio === null ? "–" : fmtMargin(e.before.margin_ratio, "rate", 3), "num"]],
    })));
    if (margin.account !== null) await loadAccount();
    margin.updates += 1;
    $("margin-section").dataset.updates = String(margin.updates);
  } finally {
    margin.loading = false;
    if (margin.pending) { margin.pending = false; setTimeout(refreshMargin, 250); }
  }
}

function refreshMargin() {
  loadMargin().catch((e) => setStatus("margin: " + e.message));
}

// ---- start ----------------------------------------------------------------------

function init() {
  $("range").addEventListener("change", () => { state.rangeMs = Number($("range").value); loadChart().catch((e) => setStatus("chart: " + e.message)); });
  $("interval").addEventListener("change", () => loadChart().catch((e) => setStatus("chart: " + e.message)));
  window.addEventListener("resize", drawChart);
  loadFeeds().catch((e) => setStatus("feeds: " + e.message));
  loadCommittee().catch((e) => setStatus("committee: " + e.message));
  connectStream();
  setInterval(() => loadCommittee().catch((e) => setStatus("committee: " + e.message)), 5000);
  setInterval(renderFeeds, 1000);
  refreshMargin();
  setInterval(refreshMargin, 5000);
}

init();
