/* OCW dashboard: polls the read-only API every 2 s and renders it. Plain JS, no build step.
 *
 * Everything shown comes from /api (workers/api.py); text from the engine (reasoning lines,
 * errors) is always set as textContent, never as HTML. Charts are uPlot (static/vendor/).
 */
"use strict";

(() => {
  const POLL_MS = 2000;
  const CONTROL_EVERY = 15; // polls between re-reads of /api/control
  const MAX_LIVE = 5000; // live equity samples kept in the page (flat runs compressed)
  const MAX_DECISIONS = 30;
  const MAX_TRADES = 50;

  const $ = (sel) => document.querySelector(sel);

  // ------------------------------------------------------------------ formatting

  const formatters = new Map();
  /** A decimal with [min, max] fraction digits: never exponent notation. */
  function decimal(x, min, max) {
    if (x === null || x === undefined || !Number.isFinite(x)) return "—";
    const key = `${min}:${max}`;
    let f = formatters.get(key);
    if (!f) {
      f = new Intl.NumberFormat("en-US", {
        minimumFractionDigits: min,
        maximumFractionDigits: max,
        useGrouping: true,
      });
      formatters.set(key, f);
    }
    const s = f.format(x);
    return s === "-0" || /^-0[.,]?0*$/.test(s) ? s.slice(1) : s;
  }
  /** A price: cents above 1000, more digits below, significant digits for tiny prices. */
  function price(x) {
    if (x === null || x === undefined || !Number.isFinite(x)) return "—";
    const a = Math.abs(x);
    if (a >= 1000) return decimal(x, 2, 2);
    if (a >= 1) return decimal(x, 2, 4);
    if (a === 0) return "0";
    const digits = Math.min(12, Math.ceil(-Math.log10(a)) + 4);
    return decimal(x, 2, digits);
  }
  const qty = (x) => decimal(x, 0, 8);
  const money = (x) => decimal(x, 2, 2);
  const signedMoney = (x) => (Number.isFinite(x) && x > 0 ? "+" : "") + money(x);
  const pct = (x, digits = 2) => (Number.isFinite(x) ? `${decimal(x * 100, digits, digits)} %` : "—");
  const signedPct = (x) => (Number.isFinite(x) && x > 0 ? "+" : "") + pct(x);

  const pad = (n) => String(n).padStart(2, "0");
  function when(ms) {
    if (ms === null || ms === undefined || !Number.isFinite(ms)) return "—";
    const d = new Date(ms);
    return (
      `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
    );
  }
  function clock(ms) {
    const d = new Date(ms);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }
  function seconds(s) {
    if (s === null || s === undefined || !Number.isFinite(s)) return "—";
    if (s < 120) return `${decimal(s, 0, 1)} s`;
    if (s < 7200) return `${decimal(s / 60, 0, 1)} min`;
    return `${decimal(s / 3600, 0, 1)} h`;
  }
  const tone = (x) => (x > 0 ? "pos" : x < 0 ? "neg" : "");

  /** Any JSON value as one short line (for the open-ended dicts of the API). */
  function show(v) {
    if (v === null || v === undefined) return "—";
    if (typeof v === "number") return Number.isInteger(v) ? decimal(v, 0, 0) : decimal(v, 0, 6);
    if (typeof v === "boolean") return v ? "yes" : "no";
    if (typeof v === "string") return v || "—";
    if (Array.isArray(v)) return v.length ? v.map(show).join(", ") : "—";
    const parts = Object.entries(v).map(([k, x]) => `${k}: ${show(x)}`);
    return parts.length ? parts.join("; ") : "—";
  }

  // ------------------------------------------------------------------ DOM

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("data-") || k === "title" || k === "colspan") node.setAttribute(k, v);
      else node[k] = v;
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }
  const td = (text, cls, title) => el("td", { class: cls, text, title });

  function setText(sel, text, cls) {
    const node = $(sel);
    node.textContent = text;
    if (cls !== undefined) node.className = `value ${cls}`;
    return node;
  }

  function fillDl(sel, entries) {
    const dl = $(sel);
    dl.replaceChildren(
      ...entries.flatMap(([k, v, cls]) => [el("dt", { text: k }), el("dd", { text: v, class: cls })]),
    );
  }

  function emptyNote(sel, empty) {
    $(sel).hidden = !empty;
  }

  // ------------------------------------------------------------------ charts (uPlot)

  const css = getComputedStyle(document.documentElement);
  const color = (name, fallback) => css.getPropertyValue(name).trim() || fallback;

  function chartWidth(node) {
    return Math.max(300, Math.floor(node.getBoundingClientRect().width));
  }

  const timeAxis = () => ({
    space: 90, // px between time ticks: labels never overlap
    stroke: color("--muted", "#8b95a5"),
    grid: { stroke: color("--grid", "#263041") },
    ticks: { stroke: color("--grid", "#263041") },
  });

  const valueAxis = (fmt) => ({
    stroke: color("--muted", "#8b95a5"),
    grid: { stroke: color("--grid", "#263041") },
    ticks: { stroke: color("--grid", "#263041") },
    size: 80,
    values: (u, splits) => splits.map(fmt),
  });

  function paddedRange(u, min, max) {
    if (min === null || max === null || !Number.isFinite(min) || !Number.isFinite(max)) return [0, 1];
    const pad = Math.max((max - min) * 0.08, Math.abs(max) * 0.0005, 0.01);
    return [min - pad, max + pad];
  }

  class Chart {
    constructor(node, height, build) {
      this.node = node;
      this.height = height;
      this.build = build; // (seriesKey) -> uPlot options
      this.plot = null;
      this.key = null;
      new ResizeObserver(() => {
        if (this.plot) this.plot.setSize({ width: chartWidth(this.node), height: this.height });
      }).observe(node);
    }

    set(key, data) {
      if (this.plot && this.key !== key) {
        this.plot.destroy();
        this.plot = null;
      }
      if (!this.plot) {
        const opts = this.build(key);
        opts.width = chartWidth(this.node);
        opts.height = this.height;
        this.plot = new uPlot(opts, data, this.node);
        this.key = key;
      } else {
        this.plot.setData(data);
      }
    }
  }

  const equityChart = new Chart($("#equity-chart"), 280, (withBenchmark) => {
    const series = [
      {},
      {
        label: "Equity",
        stroke: color("--accent", "#4da3ff"),
        width: 2,
        fill: color("--accent-fill", "rgba(77,163,255,0.10)"),
        value: (u, v) => money(v),
        spanGaps: true,
      },
    ];
    if (withBenchmark) {
      series.push({
        label: "Buy and hold",
        stroke: color("--muted", "#8b95a5"),
        width: 1.5,
        dash: [6, 4],
        value: (u, v) => money(v),
        spanGaps: true,
      });
    }
    return {
      series,
      axes: [timeAxis(), valueAxis(money)],
      // a flat curve keeps a readable scale (uPlot would stretch it from 0 to twice the value)
      scales: { x: { time: true }, y: { range: paddedRange } },
      cursor: { drag: { x: true, y: false } },
      legend: { live: true },
    };
  });

  const drawdownChart = new Chart($("#drawdown-chart"), 150, () => ({
    series: [
      {},
      {
        label: "Drawdown",
        stroke: color("--neg", "#ff6b6b"),
        width: 1.5,
        fill: color("--neg-fill", "rgba(255,107,107,0.15)"),
        value: (u, v) => pct(v),
      },
    ],
    axes: [timeAxis(), valueAxis((v) => pct(v, 1))],
    scales: { x: { time: true }, y: { range: (u, min) => [Math.min(min, -0.01), 0] } },
    legend: { live: true },
  }));

  // The API's curve is the journal's closed trades plus the live mark at the time of the
  // request; the page keeps the live marks it polled, so the curve moves between trades. A
  // flat run is kept as its first and last point.
  const liveT = []; // seconds
  const liveE = [];

  function addLive(t, e) {
    const n = liveT.length;
    if (n && t <= liveT[n - 1]) return;
    if (n >= 2 && liveE[n - 1] === e && liveE[n - 2] === e) {
      liveT[n - 1] = t;
      return;
    }
    liveT.push(t);
    liveE.push(e);
    if (liveT.length > MAX_LIVE) {
      liveT.splice(0, liveT.length - MAX_LIVE);
      liveE.splice(0, liveE.length - MAX_LIVE);
    }
  }

  function equitySeries(metrics) {
    const curve = metrics.curve || [];
    const points = new Map();
    curve.forEach((p, i) => {
      if (i === curve.length - 1) addLive(p.time_ms / 1000, p.equity);
      else points.set(p.time_ms / 1000, p.equity);
    });
    liveT.forEach((t, i) => points.set(t, liveE[i]));
    const sorted = [...points.entries()].sort((a, b) => a[0] - b[0]);
    return [sorted.map((p) => p[0]), sorted.map((p) => p[1])];
  }

  function renderCharts(metrics) {
    const [xs, eq] = equitySeries(metrics);
    const bench = metrics.benchmark || [];
    const node = $("#equity-chart");
    if (bench.length) {
      const bx = bench.map((p) => p.time_ms / 1000);
      const by = bench.map((p) => p.equity);
      equityChart.set(true, uPlot.join([[xs, eq], [bx, by]]));
      $("#equity-note").textContent = "with buy and hold";
    } else {
      equityChart.set(false, [xs, eq]);
      $("#equity-note").textContent = "";
    }
    node.dataset.points = String(xs.length);
    node.dataset.last = xs.length ? String(eq[eq.length - 1]) : "";

    let peak = -Infinity;
    const dd = eq.map((e) => {
      peak = Math.max(peak, e);
      return peak > 0 ? e / peak - 1 : 0;
    });
    drawdownChart.set("dd", [xs, dd]);
    $("#drawdown-chart").dataset.points = String(xs.length);
  }

  // ------------------------------------------------------------------ sections

  function renderKpis(ov, metrics) {
    const equity = metrics ? metrics.equity : ov.equity;
    const node = setText("#last-equity", money(equity));
    node.dataset.value = String(equity);
    setText("#kpi-cash", money(ov.cash));
    setText("#kpi-exposure", pct(ov.exposure, 1));
    setText("#kpi-drawdown", pct(-ov.drawdown), ov.drawdown > 0 ? "neg" : "");
    if (metrics) {
      setText("#kpi-realized", signedMoney(metrics.realized_pnl), tone(metrics.realized_pnl));
      setText("#kpi-fees", money(metrics.fees_paid));
      setText("#kpi-trades", `${metrics.n_trades} (${metrics.wins}/${metrics.losses})`);
    }
    const banner = $("#halt-banner");
    banner.hidden = !ov.halted;
    banner.textContent = ov.halted ? `New entries halted: ${ov.halted}` : "";
  }

  function renderPositions(positions) {
    const rows = positions.map((p) => {
      const flags = [p.status];
      if (p.side === "short") flags.unshift("short");
      if (p.adopted) flags.push("adopted");
      if (p.exit_requested) flags.push("exit requested");
      if (!p.answered) flags.push("not answering");
      const verdict =
        p.last_verdict === null || p.last_verdict === undefined
          ? "—"
          : `${p.last_verdict}${Number.isFinite(p.last_score) ? ` (${decimal(p.last_score, 2, 2)})` : ""}`;
      return el(
        "tr",
        { "data-symbol": p.symbol, "data-position-id": p.position_id },
        td(p.symbol, "sym", p.workflow_id),
        td(qty(p.qty), "num"),
        td(price(p.avg_entry), "num"),
        td(price(p.last_price), "num last"),
        td(price(p.stop), "num"),
        td(price(p.trail), "num"),
        td(price(p.exchange_stop), "num"),
        td(money(p.cost), "num"),
        td(signedMoney(p.pnl), `num pnl ${tone(p.pnl)}`),
        td(signedPct(p.pnl_pct), `num ${tone(p.pnl_pct)}`),
        td(flags.join(", "), p.answered ? "" : "warn"),
        td(verdict),
        td(when(p.entry_time_ms)),
      );
    });
    $("#positions tbody").replaceChildren(...rows);
    emptyNote("#positions-empty", !rows.length);
    $("#positions-note").textContent = rows.length ? `${rows.length} open` : "";
  }

  function renderDecisions(decisions) {
    const items = decisions
      .slice(-MAX_DECISIONS)
      .reverse()
      .map((d) => {
        const source = d.source || "?";
        const kind = /^llm/i.test(source) ? "llm" : /^rule/i.test(source) ? "rule" : "other";
        const lines = (d.reasoning || []).map((r) => el("li", { class: "why", text: r }));
        const done = (d.executed || []).map((r) => el("li", { class: "did", text: r }));
        return el(
          "li",
          { class: "decision", "data-source": source, "data-decision-id": d.decision_id },
          el(
            "div",
            { class: "head" },
            el("span", { class: `badge source ${kind}`, text: source }),
            el("span", { class: "when", text: when(d.market_time_ms) }),
            el("span", { class: "muted wakes", text: (d.wake_reasons || []).join(", ") }),
          ),
          lines.length
            ? el("ul", { class: "reasoning" }, ...lines)
            : el("p", { class: "muted", text: "no action" }),
          done.length ? el("ul", { class: "executed" }, ...done) : null,
        );
      });
    $("#decisions").replaceChildren(...items);
    emptyNote("#decisions-empty", !items.length);
  }

  function renderTrades(trades) {
    const rows = trades
      .slice(-MAX_TRADES)
      .reverse()
      .map((t) =>
        el(
          "tr",
          { "data-symbol": t.symbol, "data-trade-id": t.trade_id },
          td(when(t.exit_time_ms)),
          td(t.side === "short" ? `${t.symbol} short` : t.symbol, "sym"),
          td(qty(t.qty), "num"),
          td(price(t.entry_price), "num"),
          td(price(t.exit_price), "num"),
          td(signedMoney(t.pnl), `num ${tone(t.pnl)}`),
          td(signedPct(t.pnl_pct), `num ${tone(t.pnl_pct)}`),
          td(t.exit_reason),
        ),
      );
    $("#trades tbody").replaceChildren(...rows);
    emptyNote("#trades-empty", !rows.length);
    $("#trades-note").textContent = trades.length ? `${trades.length} closed` : "";
  }

  function renderGate(gate, counters) {
    const box = $("#gate");
    const conds = gate.wake_conditions || [];
    const next = gate.next_check_seconds;
    box.replaceChildren(
      el(
        "p",
        {},
        "Next check: ",
        el("strong", { text: next === null || next === undefined ? "—" : seconds(next) }),
        el("span", {
          class: "muted",
          text: gate.set_at_ms ? ` · set ${when(gate.set_at_ms)} · version ${gate.version}` : "",
        }),
      ),
      conds.length
        ? el(
            "ul",
            { class: "conds" },
            ...conds.map((c) =>
              el(
                "li",
                {},
                el("code", { text: `${c.metric} ${c.operator} ${decimal(c.threshold, 0, 8)}` }),
                c.reason ? ` — ${c.reason}` : "",
              ),
            ),
          )
        : el("p", { class: "muted", text: "No wake condition set." }),
    );
    fillDl(
      "#counters",
      Object.entries(counters || {}).map(([k, v]) => [k.replaceAll("_", " "), show(v)]),
    );
  }

  function renderRegimes(r) {
    if (!r) {
      fillDl("#regimes", [["regimes", "not known yet"]]);
      return;
    }
    const prob = Number.isFinite(r.crypto_probability) ? ` (${pct(r.crypto_probability, 0)})` : "";
    fillDl("#regimes", [
      ["crypto (volatility)", `${r.crypto}${prob}`],
      ["macro", r.macro],
      ["exposure scale", `× ${decimal(r.exposure_scale, 2, 2)}`],
      ["trail multiplier", `× ${decimal(r.trail_multiplier, 2, 2)}`],
    ]);
  }

  function renderLlm(llm) {
    const box = $("#llm");
    if (!llm) {
      box.replaceChildren(el("p", { class: "muted", text: "No LLM status." }));
      return;
    }
    const budget = llm.daily_budget_usd;
    const spent = llm.spent_today_usd;
    const breakerCls = /closed/i.test(llm.breaker_phase || llm.breaker) ? "ok" : "warn";
    const meter =
      budget !== null && budget !== undefined && budget > 0
        ? el("progress", { max: budget, value: Math.min(spent, budget), title: pct(spent / budget, 0) })
        : null;
    box.replaceChildren(
      el(
        "dl",
        { class: "kv" },
        el("dt", { text: "enabled" }),
        el("dd", { text: llm.enabled ? "yes" : "no" }),
        el("dt", { text: "decided by" }),
        el("dd", { text: llm.decided_by || "—" }),
        el("dt", { text: "breaker" }),
        el("dd", {
          class: breakerCls,
          text:
            !llm.breaker_phase || llm.breaker_phase === llm.breaker
              ? llm.breaker
              : `${llm.breaker} (${llm.breaker_phase})`,
        }),
        el("dt", { text: "spent today" }),
        el(
          "dd",
          {},
          `$${decimal(spent, 2, 4)} of ${budget === null || budget === undefined ? "no budget" : `$${decimal(budget, 2, 2)}`}`,
          meter ? el("br") : null,
          meter,
        ),
        el("dt", { text: "calls today" }),
        el("dd", { text: show(llm.calls_today) }),
      ),
    );
  }

  function renderLearner(reliabilities, table) {
    const rel = Object.entries(reliabilities || {}).sort((a, b) => b[1] - a[1]);
    $("#reliabilities tbody").replaceChildren(
      ...rel.map(([arm, v]) =>
        el(
          "tr",
          { "data-arm": arm },
          td(arm),
          td(decimal(v, 2, 3), "num"),
          el("td", {}, el("meter", { min: 0, max: 1, value: v })),
        ),
      ),
    );
    emptyNote("#reliabilities-empty", !rel.length);

    const head = $("#learner thead");
    const body = $("#learner tbody");
    if (!table || !table.sets || !Object.keys(table.sets).length) {
      head.replaceChildren();
      body.replaceChildren();
      $("#learner-note").textContent = "no data";
      return;
    }
    const names = Object.keys(table.sets).sort((a, b) =>
      a === "global" ? -1 : b === "global" ? 1 : a.localeCompare(b),
    );
    const arms = [...new Set(names.flatMap((n) => Object.keys(table.sets[n].arms || {})))].sort();
    head.replaceChildren(
      el(
        "tr",
        {},
        el("th", { text: "arm" }),
        ...names.map((n) => el("th", { class: "num", text: `${n} (n=${table.sets[n].n})` })),
      ),
    );
    body.replaceChildren(
      ...arms.map((arm) =>
        el(
          "tr",
          {},
          td(arm),
          ...names.map((n) => {
            const a = (table.sets[n].arms || {})[arm];
            return a
              ? td(decimal(a.mean, 2, 3), "num", `α ${decimal(a.alpha, 0, 2)} β ${decimal(a.beta, 0, 2)}`)
              : td("—", "num muted");
          }),
        ),
      ),
    );
    $("#learner-note").textContent = `${table.n_trades} trade(s) learned`;
  }

  function renderListener(l) {
    const state = (l && l.state) || "unknown";
    const cls = state === "up" ? "ok" : state === "silent" || state === "gone" ? "warn" : "muted";
    const entries = [["state", state, cls]];
    for (const [k, v] of Object.entries(l || {})) {
      if (k === "state") continue;
      if (k === "age_s") entries.push(["checked", seconds(v)]);
      else if (k === "market_time_ms") entries.push(["market time", when(v)]);
      else entries.push([k.replaceAll("_", " "), show(v)]);
    }
    fillDl("#listener", entries);
  }

  function renderReconcile(r) {
    const box = $("#reconcile");
    if (!r) {
      box.replaceChildren(el("p", { class: "muted", text: "None since this account started." }));
      return;
    }
    box.replaceChildren(
      el(
        "p",
        {},
        el("span", { class: `badge ${r.ok ? "ok" : "warn"}`, text: r.ok ? "in agreement" : "mismatch" }),
        ` ${when(r.time_ms)} · ${r.actions} action(s) · by ${r.source}`,
      ),
      (r.mismatches || []).length
        ? el("ul", {}, ...r.mismatches.map((m) => el("li", { text: m })))
        : null,
    );
  }

  function renderIncidents(journal, recent) {
    const seen = new Set();
    const all = [];
    for (const i of [...(journal || []), ...(recent || [])]) {
      const where = i.where || i.source || "";
      const key = `${i.time_ms}|${i.error}`;
      if (seen.has(key)) continue;
      seen.add(key);
      all.push({ time_ms: i.time_ms, where, error: i.error || "" });
    }
    all.sort((a, b) => (b.time_ms || 0) - (a.time_ms || 0));
    $("#incidents").replaceChildren(
      ...all.slice(0, 30).map((i) =>
        el(
          "li",
          {},
          el("span", { class: "when", text: when(i.time_ms) }),
          el("strong", { text: ` ${i.where}` }),
          el("span", { text: ` ${i.error}` }),
        ),
      ),
    );
    emptyNote("#incidents-empty", !all.length);
  }

  /** Agent vs agent (issue 15): the arena's leaderboard, when one is defined. */
  function renderArena(body) {
    const board = body && body.arena;
    $("#arena-card").hidden = !board;
    if (!board) return;
    const rows = (board.rows || []).map((r) =>
      el(
        "tr",
        { "data-account": r.account, class: r.account === account ? "current" : "" },
        td(r.rank ? String(r.rank) : "—", "num"),
        td(r.agent, "", r.account),
        td(r.decider),
        td(r.equity === null ? r.status : money(r.equity), "num"),
        td(signedPct(r.return_pct), `num ${tone(r.return_pct)}`),
        td(r.sharpe === null ? "—" : decimal(r.sharpe, 2, 2), "num"),
        td(pct(r.max_drawdown), "num"),
        td(money(r.fees), "num"),
        td(String(r.trades), "num"),
        td(String(r.open_positions), "num"),
        td(decimal(r.llm_cost_usd, 4, 4), "num"),
        td(r.decided_by || "—"),
      ),
    );
    $("#arena tbody").replaceChildren(...rows);
    const notes = [`${board.arena} · ${board.running ? "running" : "stopped"}`];
    if (Number.isFinite(board.benchmark_return)) notes.push(`buy-and-hold ${signedPct(board.benchmark_return)}`);
    if (board.sharpe_step) notes.push(`Sharpe on ${board.sharpe_step} steps`);
    $("#arena-note").textContent = notes.join(" · ");
  }

  // ------------------------------------------------------------------ polling

  let polls = 0;
  let account = "";
  let lastOk = null;

  async function getJson(path) {
    const r = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
    let body = null;
    try {
      body = await r.json();
    } catch (_) {
      body = null;
    }
    if (!r.ok) {
      const detail = body && body.detail ? body.detail : r.statusText;
      throw new Error(`${path}: ${r.status} ${typeof detail === "string" ? detail : show(detail)}`);
    }
    return body;
  }

  function status(text, cls) {
    const line = $("#status-line");
    line.textContent = text;
    line.className = `status ${cls}`;
    line.dataset.polls = String(polls);
  }

  const guard = (name, fn) => {
    try {
      fn();
      return null;
    } catch (err) {
      console.error(name, err);
      return `${name}: ${err.message}`;
    }
  };

  async function poll() {
    const names = ["overview", "metrics", "decisions", "trades", "incidents", "learner", "arena"];
    const results = await Promise.allSettled([
      getJson("api/overview"),
      getJson("api/metrics"),
      getJson(`api/decisions?limit=${MAX_DECISIONS}`),
      getJson(`api/trades?limit=${MAX_TRADES}`),
      getJson("api/incidents?limit=30"),
      getJson("api/learner"),
      getJson("api/arena"),
    ]);
    const got = {};
    const errors = [];
    results.forEach((r, i) => {
      if (r.status === "fulfilled") got[names[i]] = r.value;
      else errors.push(r.reason.message);
    });
    const ov = got.overview;
    if (ov) {
      account = ov.account;
      errors.push(
        ...[
          guard("portfolio", () => renderKpis(ov, got.metrics)),
          guard("positions", () => renderPositions(ov.positions || [])),
          guard("gate", () => renderGate(ov.gate || {}, ov.counters)),
          guard("regimes", () => renderRegimes(ov.regimes)),
          guard("llm", () => renderLlm(ov.llm)),
          guard("listener", () => renderListener(ov.listener)),
          guard("reconcile", () => renderReconcile(ov.reconcile)),
          guard("incidents", () => renderIncidents(got.incidents, ov.incidents)),
          guard("learner", () => renderLearner(ov.reliabilities, got.learner)),
        ].filter(Boolean),
      );
    }
    if (got.arena) errors.push(guard("arena", () => renderArena(got.arena)));
    if (got.metrics) errors.push(guard("charts", () => renderCharts(got.metrics)));
    if (got.decisions) errors.push(guard("decisions", () => renderDecisions(got.decisions)));
    if (got.trades) errors.push(guard("trades", () => renderTrades(got.trades)));
    const problems = errors.filter(Boolean);

    if (ov) {
      polls += 1;
      lastOk = Date.now();
      const halted = ov.halted ? `HALTED: ${ov.halted}` : "trading";
      const head = `${ov.account} · ${ov.mode} · ${halted} · ${(ov.positions || []).length} open · updated ${clock(lastOk)}`;
      status(
        problems.length ? `${head} · partly unavailable: ${problems.join(" | ")}` : head,
        problems.length ? "warn" : ov.halted ? "halted" : "ok",
      );
    } else {
      const since = lastOk ? ` · showing data from ${clock(lastOk)}` : "";
      status(`API unavailable: ${problems.join(" | ")}${since}`, "error");
    }
    if (polls % CONTROL_EVERY === 0) refreshControl();
  }

  async function loop() {
    try {
      await poll();
    } catch (err) {
      console.error(err);
      status(`dashboard error: ${err.message}`, "error");
    } finally {
      setTimeout(loop, POLL_MS);
    }
  }

  // ------------------------------------------------------------------ control

  let token = null; // held in memory for this page only

  async function refreshControl() {
    try {
      const c = await getJson("api/control");
      $("#controls").hidden = !c.enabled;
    } catch (_) {
      $("#controls").hidden = true;
    }
  }

  async function control(button) {
    const action = button.dataset.action;
    const label = button.dataset.label;
    const result = $("#control-result");
    if (!token) {
      const given = window.prompt(`${label}: the API token (OCW_API_TOKEN)`);
      if (!given) return;
      token = given.trim();
    }
    if (!window.confirm(`${label} on account "${account || "?"}"?`)) {
      result.textContent = `${action}: cancelled`;
      return;
    }
    result.textContent = `${action}: sending…`;
    try {
      const r = await fetch(`api/${action}`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
        body: JSON.stringify({ reason: `dashboard: ${action}` }),
      });
      const body = await r.json().catch(() => ({}));
      if (r.status === 401) token = null; // ask again next time
      result.textContent = r.ok
        ? `${action}: ${body.answer || "ok"}`
        : `${action} refused: ${r.status} ${show(body.detail || r.statusText)}`;
      result.className = r.ok ? "ok" : "error";
    } catch (err) {
      result.textContent = `${action} failed: ${err.message}`;
      result.className = "error";
    }
    setTimeout(poll, 300); // show the effect without waiting for the next tick
  }

  for (const button of document.querySelectorAll("#controls button[data-action]")) {
    button.addEventListener("click", () => control(button));
  }

  refreshControl();
  loop();
})();
