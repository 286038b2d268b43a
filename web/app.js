// The dwcp dashboard page: follows /events (server-sent snapshots, read through fetch so that a
// bearer token can go with it) and renders them. Every value from the server is set as text
// (textContent, attributes), never parsed as HTML: migration ids and VM names are user input.
"use strict";

(() => {
  const TOKEN_KEY = "dwcp-dashboard-token";
  const RECONNECT_MS = 2000;

  // A token given as #token=... is kept for this tab and taken out of the address bar.
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.has("token")) {
    sessionStorage.setItem(TOKEN_KEY, hash.get("token") || "");
    history.replaceState(null, "", location.pathname);
  }
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = token ? { authorization: `Bearer ${token}` } : {};

  const $ = (id) => document.getElementById(id);
  let selected;
  let selectedSeq = -1;
  let chart;

  function el(tag, text, attrs) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined) e.setAttribute(k, String(v));
    return e;
  }

  function row(cells, attrs) {
    const tr = el("tr", undefined, attrs);
    for (const c of cells) tr.append(c instanceof Node ? c : el("td", c));
    return tr;
  }

  function fmtBytes(n) {
    if (n === undefined || n === null) return "";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i++;
    }
    return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
  }

  function fmtAge(seconds) {
    if (seconds === undefined || seconds === null) return "";
    if (seconds < 90) return `${seconds.toFixed(0)} s`;
    if (seconds < 5400) return `${(seconds / 60).toFixed(0)} min`;
    if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
    return `${(seconds / 86400).toFixed(1)} d`;
  }

  const fmtTime = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "");

  function setConnection(state, text) {
    const c = $("connection");
    c.dataset.state = state;
    c.textContent = text;
  }

  function renderChart(tp) {
    const data = [tp.t, tp.bytesPerSec.map((b) => b / 1048576)];
    const width = Math.max(300, $("throughput").clientWidth || 600);
    if (!chart) {
      chart = new uPlot(
        {
          width,
          height: 180,
          scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(1, max * 1.1)] } },
          series: [{}, { label: "MiB/s", stroke: "#0969da", fill: "rgba(9,105,218,0.12)", width: 2 }],
          axes: [{}, { label: "MiB/s" }],
        },
        data,
        $("throughput"),
      );
    } else chart.setData(data);
  }

  function renderMigrations(list, total) {
    $("migrations-more").hidden = total <= list.length;
    $("migrations-more").textContent = `the newest ${list.length} of ${total} (dwcp status lists them all)`;
    const body = $("migrations").tBodies[0];
    body.replaceChildren();
    $("migrations-empty").hidden = list.length > 0;
    $("migrations").hidden = list.length === 0;
    for (const m of list.slice().reverse()) {
      const pick = el("button", m.id, { class: "link", type: "button" });
      pick.addEventListener("click", () => select(m.id));
      const pct = m.totalBytes ? Math.min(100, (100 * m.bytes) / m.totalBytes) : m.state === "completed" ? 100 : 0;
      const bar = el("progress", undefined, { max: "100", value: pct.toFixed(1) });
      const progress = el("td");
      progress.append(bar, ` ${pct.toFixed(0)}%`);
      const rate = el("td", m.rateBytesPerSec > 0 ? `${fmtBytes(m.rateBytesPerSec)}/s` : "", {
        class: "num",
        "data-field": "rate",
        "data-rate": Math.round(m.rateBytesPerSec),
      });
      const route = m.source && m.destination ? `${m.source} → ${m.destination}` : "";
      const outcome = [m.endedAt ? `ended ${fmtTime(m.endedAt)}` : "", m.reason || "", m.message || ""]
        .filter(Boolean)
        .join(" ");
      const idCell = el("td");
      idCell.append(pick);
      const tr = row(
        [
          idCell,
          m.vm || "",
          el("td", m.state, { class: `state-${m.state}`, "data-field": "state" }),
          progress,
          rate,
          el("td", `${fmtBytes(m.bytes)}${m.totalBytes ? ` / ${fmtBytes(m.totalBytes)}` : ""}`, { class: "num" }),
          route,
          fmtTime(m.requestedAt),
          outcome,
          el("td", m.lastSeq, { class: "num" }),
        ],
        { "data-migration-id": m.id, class: m.id === selected ? "selected" : undefined },
      );
      body.append(tr);
      if (m.id === selected && m.lastSeq !== selectedSeq) void loadTimeline(m.id, m.lastSeq);
    }
  }

  function select(id) {
    selected = id;
    selectedSeq = -1;
    for (const tr of $("migrations").tBodies[0].rows)
      tr.classList.toggle("selected", tr.getAttribute("data-migration-id") === id);
    void loadTimeline(id, -1);
  }

  async function loadTimeline(id, seq) {
    selectedSeq = seq;
    let body;
    try {
      const r = await fetch(`/api/migration/${encodeURIComponent(id)}`, { headers });
      if (!r.ok) return;
      body = await r.json();
    } catch {
      selectedSeq = -1;
      return;
    }
    if (id !== selected) return;
    $("timeline-section").hidden = false;
    $("timeline-id").textContent = id;
    const tbody = $("timeline").tBodies[0];
    tbody.replaceChildren();
    for (const e of body.events) {
      const detail = [e.batch !== undefined ? `batch ${e.batch}` : "", e.reason || "", e.code || ""]
        .filter(Boolean)
        .join(" ");
      tbody.append(
        row([el("td", e.seq, { class: "num" }), e.at, e.type, detail], { "data-seq": e.seq, "data-type": e.type }),
      );
    }
  }

  function renderMovers(list) {
    const body = $("movers").tBodies[0];
    body.replaceChildren();
    for (const m of list)
      body.append(
        row(
          [
            m.host,
            m.dataAddress,
            el("td", m.pid, { class: "num" }),
            fmtTime(m.startedAt),
            el("td", `${fmtAge(m.heartbeatAgeSeconds)} ago`, { class: m.heartbeatAgeSeconds > 30 ? "stale" : "" }),
          ],
          { "data-host": m.host },
        ),
      );
  }

  function snapshotTicks(snapshots, now) {
    const box = el("div", undefined, { class: "ticks" });
    if (snapshots.length === 0) return box;
    const first = Date.parse(snapshots[0].takenAt);
    const span = Math.max(1, now - first);
    for (const s of snapshots) {
      const t = el("span", undefined, {
        class: "tick",
        title: `${s.id} ${s.takenAt} ${fmtBytes(s.changedBytes)} changed`,
      });
      t.style.left = `${(98 * (Date.parse(s.takenAt) - first)) / span}%`;
      box.append(t);
    }
    return box;
  }

  function renderReplication(list, now) {
    const body = $("replication").tBodies[0];
    body.replaceChildren();
    $("replication-empty").hidden = list.length > 0;
    $("replication").hidden = list.length === 0;
    for (const r of list) {
      const timeline = el("td");
      timeline.append(snapshotTicks(r.snapshots, now));
      body.append(
        row([r.vm, fmtAge(r.rpoSeconds), el("td", r.snapshots.length, { class: "num" }), timeline], {
          "data-vm": r.vm,
        }),
      );
    }
  }

  function renderSites(report) {
    $("sites-section").hidden = !report;
    if (!report) return;
    const sites = $("sites").tBodies[0];
    sites.replaceChildren();
    for (const s of report.sites || []) {
      const link = s.link ? `lag ${s.link.lagEvents}, contact ${fmtAge(s.link.lastContactMs / 1000)} ago` : "";
      sites.append(
        row(
          [
            s.site,
            el("td", s.stale ? "stale" : "healthy", { class: s.stale ? "stale" : "state-completed" }),
            el("td", s.events, { class: "num" }),
            fmtAge(s.ageMs / 1000),
            link,
          ],
          { "data-site": s.site },
        ),
      );
    }
    const vms = $("placements").tBodies[0];
    vms.replaceChildren();
    for (const v of report.vms || [])
      vms.append(row([v.vm, v.site, v.host || "", fmtTime(v.since), v.migrationId || ""]));
  }

  function renderProblems(problems) {
    const ul = $("problems");
    ul.replaceChildren(...problems.map((p) => el("li", p)));
    ul.hidden = problems.length === 0;
  }

  function render(s) {
    $("updated").textContent = `updated ${fmtTime(s.at)}`;
    renderProblems(s.problems);
    renderChart(s.throughput);
    renderMigrations(s.migrations, s.migrationsTotal);
    renderMovers(s.movers);
    renderReplication(s.replication, Date.parse(s.at));
    renderSites(s.sites);
  }

  /** Reads one server-sent event stream until it ends; each `snapshot` event is rendered. */
  async function follow() {
    const r = await fetch("/events", { headers, cache: "no-store" });
    if (r.status === 401) {
      setConnection("down", "a token is needed: open the address with #token=TOKEN");
      return false;
    }
    if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`);
    setConnection("live", "live");
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return true;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let type = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) type = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (type === "snapshot" && data.length > 0) render(JSON.parse(data.join("\n")));
      }
    }
  }

  async function run() {
    for (;;) {
      let again = true;
      try {
        again = await follow();
      } catch {
        // the server went away: try again shortly
      }
      if (!again) return;
      setConnection("down", "reconnecting");
      await new Promise((r) => setTimeout(r, RECONNECT_MS));
    }
  }

  void run();
})();
