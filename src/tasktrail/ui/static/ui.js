// tasktrail ui: keeps the server-rendered pages live. No framework, no build step.
// Every text that comes from the log is set with textContent (or as an attribute value),
// never parsed as HTML.
"use strict";

(() => {
  const SVG = "http://www.w3.org/2000/svg";
  const STATES = ["pending", "starting", "running", "completed", "failed", "cancelled"];

  // -- small helpers ------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    for (const child of children) node.append(child);
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    setAttrs(node, attrs);
    for (const child of children) node.append(child);
    return node;
  }

  function setAttrs(node, attrs) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = String(value);
      else if (key === "class") node.setAttribute("class", value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
  }

  const byId = (id) => document.getElementById(id);
  const num = (n) => Number(n).toLocaleString("en-US");
  const taskUrl = (id) => "/tasks/" + encodeURIComponent(id);

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "-";
    if (seconds < 1) return Math.round(seconds * 1000) + " ms";
    if (seconds < 60) return seconds.toFixed(1) + " s";
    let minutes = Math.floor(seconds / 60);
    const secs = Math.floor(seconds % 60);
    if (minutes < 60) return minutes + " min " + String(secs).padStart(2, "0") + " s";
    const hours = Math.floor(minutes / 60);
    minutes = minutes % 60;
    return hours + " h " + String(minutes).padStart(2, "0") + " min";
  }

  function setLive(state, label) {
    const live = byId("live");
    if (!live) return;
    live.dataset.state = state;
    live.querySelector("span").textContent =
      label || { live: "live", connecting: "reconnecting", off: "static" }[state];
  }

  // A server-sent event stream; handlers get each message's JSON.
  function follow(url, handlers) {
    const source = new EventSource(url);
    setLive("connecting", "connecting");
    source.addEventListener("ready", () => setLive("live"));
    source.addEventListener("error", () => {
      if (source.readyState !== EventSource.CLOSED) setLive("connecting");
    });
    source.addEventListener("reload", () => location.reload());
    source.addEventListener("bye", () => {
      source.close();
      setLive("off", "dashboard stopped");
    });
    for (const [name, handle] of Object.entries(handlers)) {
      source.addEventListener(name, (message) => handle(JSON.parse(message.data)));
    }
    window.addEventListener("pagehide", () => source.close());
    return source;
  }

  function updateCounts(counts) {
    let total = 0;
    for (const state of STATES) {
      total += counts[state] || 0;
      for (const node of document.querySelectorAll(`[data-count="${state}"]`)) {
        node.textContent = num(counts[state] || 0);
      }
    }
    for (const node of document.querySelectorAll('[data-count="all"]')) node.textContent = num(total);
  }

  function badge(state, big) {
    return el("span", { class: `badge state-${state}` + (big ? " big" : ""), text: state });
  }

  // -- the task list -------------------------------------------------------------------------

  function stateCell(cell, row) {
    cell.replaceChildren(badge(row.state));
    if (row.cancel_requested) cell.append(" ", el("span", { class: "flag", text: "cancel requested" }));
  }

  function fillRow(tr, row) {
    stateCell(tr.querySelector("td.state"), row);
    tr.querySelector("td.attempt").textContent = row.attempt;
    tr.querySelector("td.worker").textContent = row.worker;
    tr.querySelector("td.ran").textContent = row.ran;
    tr.querySelector("td.title").textContent = row.title;
    tr.classList.toggle("left-filter", !row.match);
  }

  function buildRow(row) {
    const tr = el(
      "tr",
      { "data-id": row.id, "data-created": row.created_ts },
      el("td", { class: "id" }, el("a", { href: taskUrl(row.id), text: row.id })),
      el("td", { class: "state" }),
      el("td", { class: "agent", text: row.agent }),
      el("td", { class: "attempt num" }),
      el("td", { class: "worker mono" }),
      el("td", { class: "created time", text: row.created }),
      el("td", { class: "ran num" }),
      el("td", { class: "title" }),
    );
    fillRow(tr, row);
    return tr;
  }

  function initTasks() {
    const table = byId("tasks");
    const body = table.tBodies[0];
    const firstPage = table.dataset.firstPage === "yes";
    const limit = Math.max(50, Number(table.dataset.pageSize) || 50);
    const rows = new Map();
    for (const tr of body.rows) rows.set(tr.dataset.id, tr);
    const here = new URLSearchParams(location.search);
    const query = new URLSearchParams();
    for (const key of ["state", "agent", "parent", "q"]) if (here.get(key)) query.set(key, here.get(key));
    query.set("after", document.body.dataset.head);
    let unseen = 0;
    const banner = byId("new-tasks");

    follow("/stream?" + query, {
      tasks(message) {
        if (message.counts) updateCounts(message.counts);
        for (const row of message.tasks) {
          const known = rows.get(row.id);
          if (known) {
            fillRow(known, row);
            continue;
          }
          if (!row.match) continue;
          if (!firstPage) {
            unseen += 1;
            banner.querySelector("span").textContent =
              unseen === 1 ? "1 task changed since this page was loaded." : `${unseen} tasks changed since this page was loaded.`;
            banner.hidden = false;
            continue;
          }
          const tr = buildRow(row);
          const before = [...body.rows].find((other) => Number(other.dataset.created) < row.created_ts);
          if (!before && body.rows.length >= limit) continue; // belongs to a later page
          tr.classList.add("fresh");
          body.insertBefore(tr, before || null);
          rows.set(row.id, tr);
          byId("empty").hidden = true;
          while (body.rows.length > limit * 2) {
            const last = body.rows[body.rows.length - 1];
            rows.delete(last.dataset.id);
            last.remove();
          }
        }
      },
    });
  }

  // -- the timeline --------------------------------------------------------------------------

  function niceStep(span) {
    const rough = span / 6;
    const power = Math.pow(10, Math.floor(Math.log10(rough)));
    for (const factor of [1, 2, 5, 10]) if (power * factor >= rough) return power * factor;
    return power * 10;
  }

  function offsetLabel(seconds, step) {
    if (step >= 3600) return (seconds / 3600).toFixed(step % 3600 ? 1 : 0) + " h";
    if (step >= 60) return (seconds / 60).toFixed(step % 60 ? 1 : 0) + " min";
    if (step >= 1) return seconds.toFixed(0) + " s";
    if (step >= 0.01) return seconds.toFixed(2).replace(/\.?0+$/, "") + " s";
    return (seconds * 1000).toFixed(0) + " ms";
  }

  function drawTimeline(box, line, now) {
    const width = Math.max(box.clientWidth, 480);
    const labelWidth = 92;
    const right = 18;
    const laneHeight = 30;
    const top = 6;
    const axis = 26;
    const height = top + line.lanes.length * laneHeight + axis;
    const end = line.end === null ? now : line.end;
    const total = Math.max(end - line.start, 0.001);
    const inner = width - labelWidth - right;
    const x = (t) => labelWidth + ((Math.min(t, end) - line.start) / total) * inner;
    const laneY = (lane) => top + line.lanes.indexOf(lane) * laneHeight;
    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img" });
    root.append(svg("title", { text: `the task's life, ${duration(total)} from creation` }));

    const step = niceStep(total);
    for (let t = 0; t <= total + 1e-9; t += step) {
      const px = labelWidth + (t / total) * inner;
      root.append(svg("line", { class: "gridline", x1: px, x2: px, y1: top, y2: height - axis }));
      root.append(svg("text", { class: "tick", x: px, y: height - 8, "text-anchor": "middle", text: offsetLabel(t, step) }));
    }
    root.append(svg("line", { class: "axis", x1: labelWidth, x2: width - right, y1: height - axis, y2: height - axis }));
    for (const lane of line.lanes) {
      const y = laneY(lane);
      root.append(svg("text", { class: "lane-label", x: 0, y: y + laneHeight / 2 + 4, text: lane }));
      root.append(svg("line", { class: "gridline", x1: labelWidth, x2: width - right, y1: y + laneHeight, y2: y + laneHeight }));
    }
    for (const span of line.spans) {
      const from = x(span.start);
      const to = x(span.end === null ? end : span.end);
      const w = Math.max(2, to - from);
      const y = laneY(span.lane) + 6;
      const h = laneHeight - 12;
      const spent = (span.end === null ? end : span.end) - span.start;
      const kind = span.kind + (span.end === null ? " open" : "");
      const rect = svg("rect", { class: kind, x: from, y, width: w, height: h, rx: 3 });
      const what = { pending: "waiting for a worker", backoff: "not before", starting: "starting", running: "running" }[span.kind];
      rect.append(svg("title", { text: `${what}${span.label ? " (" + span.label + ")" : ""}: ${duration(spent)}${span.end === null ? ", so far" : ""}` }));
      root.append(rect);
      if (w > 64) {
        root.append(svg("text", { class: "span-label", x: from + 6, y: y + h / 2 + 4, text: duration(spent) }));
      }
    }
    for (const mark of line.marks) {
      const px = x(mark.at);
      const y = laneY(mark.lane);
      const group = svg("g", { class: `mark ${mark.kind}` });
      group.append(svg("line", { x1: px, x2: px, y1: y + 2, y2: y + laneHeight - 2 }));
      group.append(svg("path", { d: `M ${px - 5} ${y + 2} L ${px + 5} ${y + 2} L ${px} ${y + 9} Z` }));
      group.append(svg("title", { text: `v${mark.version} #${mark.sequence}: ${mark.label}` }));
      root.append(group);
    }
    if (line.end === null) {
      const px = x(now);
      root.append(svg("line", { class: "now", x1: px, x2: px, y1: top, y2: height - axis }));
    }
    box.replaceChildren(root);
    const scale = byId("timeline-scale");
    if (scale) scale.textContent = `${duration(total)} from creation${line.end === null ? " (live)" : ""}`;
  }

  function spent(line, kinds, now) {
    let total = 0;
    for (const span of line.spans) {
      if (kinds.includes(span.kind)) total += Math.max(0, (span.end === null ? now : span.end) - span.start);
    }
    return total;
  }

  // -- a task ------------------------------------------------------------------------------------

  function initTask() {
    const root = byId("task");
    const taskId = root.dataset.task;
    let lastSeq = Number(root.dataset.lastSeq);
    let line = JSON.parse(byId("timeline-data").textContent);
    let skew = line.now - Date.now() / 1000; // the server's clock minus ours
    const now = () => Date.now() / 1000 + skew;
    const box = byId("timeline");
    let attempted = byId("fact-ran").textContent !== "-";

    function redraw() {
      drawTimeline(box, line, now());
      byId("fact-queued").textContent = duration(spent(line, ["pending", "backoff"], now()));
      if (attempted) byId("fact-ran").textContent = duration(spent(line, ["running"], now()));
    }
    redraw();
    window.addEventListener("resize", redraw);
    setInterval(() => { if (line.end === null) redraw(); }, 1000);

    const slider = byId("replay");
    const replay = initReplay(taskId, slider);

    const output = byId("output");
    const events = byId("events").tBodies[0];
    follow(`/stream?task=${encodeURIComponent(taskId)}&after=${document.body.dataset.head}`, {
      task(message) {
        for (const event of message.events) {
          if (event.seq <= lastSeq) continue;
          lastSeq = event.seq;
          events.append(eventRow(event));
          if (event.output !== undefined) {
            output.append(el("span", { class: event.channel === "stderr" ? "stderr" : null, text: event.output }));
            output.hidden = false;
            byId("output-empty").hidden = true;
            output.scrollTop = output.scrollHeight;
          }
        }
        const h = message.header;
        const state = byId("task-state");
        state.className = `badge big state-${h.state}`;
        state.textContent = h.state;
        byId("task-cancel-flag").hidden = !h.cancel_requested;
        for (const [id, key] of [["fact-attempt", "attempt"], ["fact-worker", "worker"], ["fact-started", "started"],
          ["fact-finished", "finished"], ["fact-version", "version"]]) {
          byId(id).textContent = h[key];
        }
        showOutcome("task-error", h.error, h.exit_code === null ? "" : ` (exit code ${h.exit_code})`);
        showOutcome("task-result", h.result, "");
        showOutcome("task-reason", h.reason, "");
        if (h.terminal) {
          for (const id of ["action-cancel", "action-force-cancel"]) if (byId(id)) byId(id).hidden = true;
        }
        attempted = attempted || h.attempt.split("/")[0] !== "0";
        line = message.timeline;
        skew = line.now - Date.now() / 1000;
        redraw();
        replay.grow(message.last_version);
      },
    });
  }

  function showOutcome(id, value, suffix) {
    const box = byId(id);
    if (value === null || value === undefined || value === "") {
      box.hidden = true;
      return;
    }
    const text = box.querySelector("span, code");
    text.textContent = value + suffix;
    box.hidden = false;
  }

  function eventRow(event) {
    return el(
      "tr",
      { id: `event-${event.seq}`, class: `kind-${event.kind} fresh` },
      el("td", { class: "mono" }, el("a", { href: `#event-${event.seq}`, text: event.seq })),
      el("td", { class: "num", text: event.version }),
      el("td", { class: "time", text: event.time }),
      el("td", {}, el("span", { class: "etype", text: event.type })),
      el("td", { class: "mono", text: event.actor }),
      el("td", { text: event.reason }),
      el("td", { class: "details", text: event.details }),
    );
  }

  function initReplay(taskId, slider) {
    let pending = null;
    let shown = Number(slider.value);

    async function show(version) {
      const response = await fetch(`/api/replay/${encodeURIComponent(taskId)}?version=${version}`);
      if (!response.ok) return;
      const data = await response.json();
      if (Number(slider.value) !== data.version) return; // the slider moved on meanwhile
      shown = data.version;
      byId("replay-version").textContent = data.version;
      const state = byId("replay-state");
      state.className = `badge state-${data.state}`;
      state.textContent = data.state;
      const e = data.event;
      const line = byId("replay-event");
      line.replaceChildren(
        el("span", { class: "mono", text: `#${e.seq}` }), " ",
        el("b", { text: e.type }), " by ", el("span", { text: e.actor }),
        " at ", el("span", { text: e.time }),
      );
      if (e.reason) line.append(": ", el("span", { text: e.reason }));
      if (e.details) line.append(" ", el("span", { class: "muted mono", text: e.details }));
      const changed = new Set(data.changed);
      byId("replay-fields").replaceChildren(
        ...data.fields.map(([name, value]) =>
          el("div", { "data-field": name, class: changed.has(name) ? "changed" : null },
            el("dt", { text: name }), el("dd", { text: value }))),
      );
    }

    function go(version) {
      const v = Math.min(Math.max(1, version), Number(slider.max));
      slider.value = String(v);
      clearTimeout(pending);
      pending = setTimeout(() => show(v), 60);
    }

    slider.addEventListener("input", () => go(Number(slider.value)));
    byId("replay-prev").addEventListener("click", () => go(Number(slider.value) - 1));
    byId("replay-next").addEventListener("click", () => go(Number(slider.value) + 1));
    return {
      grow(last) {
        const atEnd = Number(slider.value) === Number(slider.max);
        slider.max = String(last);
        byId("replay-last").textContent = last;
        if (atEnd && shown !== last) go(last);
      },
    };
  }

  // -- workers and stats -----------------------------------------------------------------------

  function drawChart(box, perMinute) {
    const width = Math.max(box.clientWidth, 480);
    const height = 170;
    const left = 34;
    const bottom = 22;
    const top = 8;
    const totals = perMinute.map((m) => m.completed + m.failed + m.cancelled);
    const peak = Math.max(1, ...totals);
    const step = peak <= 5 ? 1 : niceStep(peak) ;
    const max = Math.ceil(peak / step) * step;
    const inner = width - left - 6;
    const bar = inner / perMinute.length;
    const y = (value) => top + (1 - value / max) * (height - top - bottom);
    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img" });
    root.append(svg("title", { text: "tasks finished per minute over the last hour" }));
    for (let v = 0; v <= max; v += step) {
      root.append(svg("line", { class: "gridline", x1: left, x2: width - 6, y1: y(v), y2: y(v) }));
      root.append(svg("text", { class: "tick", x: left - 6, y: y(v) + 4, "text-anchor": "end", text: num(v) }));
    }
    perMinute.forEach((minute, index) => {
      let base = 0;
      for (const kind of ["completed", "failed", "cancelled"]) {
        const count = minute[kind];
        if (!count) continue;
        const rect = svg("rect", {
          class: kind, x: left + index * bar + 1, width: Math.max(1, bar - 2),
          y: y(base + count), height: y(base) - y(base + count),
        });
        rect.append(svg("title", { text: `${60 - index} min ago: ${count} ${kind}` }));
        root.append(rect);
        base += count;
      }
    });
    root.append(svg("line", { class: "axis", x1: left, x2: width - 6, y1: y(0), y2: y(0) }));
    for (const back of [60, 45, 30, 15, 0]) {
      const px = left + (perMinute.length - back) * bar - (back === 0 ? bar / 2 : 0);
      root.append(svg("text", { class: "tick", x: px, y: height - 6, "text-anchor": back === 60 ? "start" : back === 0 ? "end" : "middle", text: back ? `-${back} min` : "now" }));
    }
    box.replaceChildren(root);
  }

  function initWorkers() {
    const box = byId("chart");
    let data = JSON.parse(byId("stats-data").textContent);
    const draw = () => drawChart(box, data.per_minute);
    draw();
    window.addEventListener("resize", draw);
    setLive("live", "refreshing");
    setInterval(async () => {
      let response;
      try {
        response = await fetch("/api/stats");
      } catch {
        setLive("connecting");
        return;
      }
      if (!response.ok) return setLive("connecting");
      setLive("live", "refreshing");
      data = await response.json();
      draw();
      updateCounts(data.counts);
      byId("finished-hour").textContent = num(data.finished_last_hour);
      byId("alive-count").textContent = data.alive;
      byId("no-workers").hidden = data.workers.length > 0;
      byId("workers").tBodies[0].replaceChildren(...data.workers.map((w) =>
        el("tr", { "data-id": w.id },
          el("td", { class: "mono", text: w.id }),
          el("td", {}, el("span", { class: `badge worker-${w.status}`, title: w.why, text: w.status }),
            ...(w.why ? [" ", el("span", { class: "why", text: w.why })] : [])),
          el("td", { text: w.host }), el("td", { class: "num", text: w.pid }),
          el("td", { text: w.agents }),
          el("td", { class: "time", text: w.started }),
          el("td", { class: "time", text: `${w.heartbeat_age} ago` }),
          el("td", { class: "num", text: w.running }))));
      byId("agents").tBodies[0].replaceChildren(...Object.entries(data.agents).map(([agent, counts]) =>
        el("tr", {},
          el("td", {}, el("a", { href: "/?agent=" + encodeURIComponent(agent), text: agent })),
          ...data.states.map((s) => el("td", { class: "num", text: num(counts[s] || 0) })))));
    }, 2000);
  }

  // -- verify -------------------------------------------------------------------------------------

  function initVerify() {
    const form = byId("verify-form");
    form.addEventListener("submit", () => {
      byId("verify-button").disabled = true;
      byId("verify-busy").hidden = false;
    });
  }

  const pages = { tasks: initTasks, task: initTask, workers: initWorkers, verify: initVerify };
  const init = pages[document.body.dataset.page];
  if (init) init();
})();
