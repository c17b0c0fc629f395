// Push Jobs dashboard: one page, three views chosen by the URL hash (#nodes, the default,
// #jobs and #job/ID). The server serves index.html with __BASE__ and __ORG__ filled in and
// `Content-Security-Policy: default-src 'self'`, so every behaviour lives here: no inline
// script, handler or style. Data comes from the same-origin API under BASE/api/ with the
// HttpOnly session cookie; writes carry the CSRF token from api/session.
//
// Everything shown comes from the server (node names, commands, output), so it reaches the
// DOM only through textContent and setAttribute, never innerHTML.
//
// Hooks for browser tests: #nodes-table rows [data-node][data-availability], #node-filter,
// #node-state-filter, #start-form (#start-command, #start-nodes, #start-search,
// #start-search-add, #start-search-result, #start-capture, #start-submit, #start-error), #jobs-table rows [data-job][data-status], #job-status,
// #job-nodes rows [data-node][data-state], #abort-button then #abort-confirm-yes,
// #job-error, #job-output panels [data-test=output-panel][data-node], row buttons
// [data-test=show-output], #session-expired.
"use strict";

const BASE = document.body.dataset.base;

// Job statuses after which nothing changes (http.md §5.3, plus our `stopped`).
const FINISHED_JOB = new Set(["complete", "quorum_failed", "aborted", "timed_out", "crashed", "stopped"]);

// How far along a job or a node is. A job document fetched while events stream in may
// be older than the newest event, so a state only moves forward unless the source is
// final (a finished job's document, or the first load).
const JOB_RANK = { new: 0, voting: 1, running: 2 };
const NODE_RANK = { new: 0, ready: 1, waiting: 2, running: 3 };
const rank = (table, state) => (state in table ? table[state] : 9);

// The colour family of each status, state and verdict (app.css .tone-*).
const TONES = {
  complete: "good", succeeded: "good", success: "good", available: "good",
  failed: "bad", failure: "bad", crashed: "bad", aborted: "bad", quorum_failed: "bad",
  timed_out: "bad", stopped: "bad", nacked: "bad", unavailable: "bad",
  running: "active", voting: "active", ready: "active",
  waiting: "idle", new: "idle", skipped: "idle", was_ready: "idle",
};

// The order node states are counted in, live ones first.
const STATE_ORDER = ["running", "waiting", "ready", "new", "succeeded", "failed", "crashed",
  "timed_out", "aborted", "nacked", "unavailable", "was_ready", "skipped"];

// Live output kept on the page: per node, and for all nodes together (each panel's share
// shrinks as panels are added); older text is dropped so a chatty job on many nodes
// cannot exhaust the tab (the captured output stays on the server).
const OUTPUT_KEEP = 256 * 1024;
const PAGE_OUTPUT_KEEP = 16 * 1024 * 1024;
const PANEL_OUTPUT_MIN = 4 * 1024;
const RUN_MAX = 16 * 1024;
// Jobs the server lists at most (the newest); the API has no paging.
const JOBS_SHOWN = 200;
// A job's event feed that ended before the job did is opened again after this long,
// doubling up to the maximum.
const FEED_RETRY_FIRST = 2000;
const FEED_RETRY_MAX = 30000;

const app = {
  session: null,
  // Set once a request answered 401: every poll and feed stops for good.
  expired: false,
  // The view on screen: an object with stop().
  page: null,
  // Server clock minus ours (from the Date header), so elapsed times don't go negative
  // on a skewed workstation.
  clockOffset: 0,
};

// ---------------------------------------------------------------------------------------
// DOM and formatting helpers

const $ = (id) => document.getElementById(id);

// Builds an element: attrs are set with setAttribute (`class` included), children are
// nodes or strings (added as text, so never parsed as HTML).
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) {
    if (child !== undefined && child !== null) node.append(child);
  }
  return node;
}

function toneOf(status) {
  return TONES[status] || "idle";
}

// A coloured pill showing `text`; `tone` defaults to the status's own.
function badge(text, tone = toneOf(text)) {
  return el("span", { class: `badge tone-${tone}` }, text);
}

function setBadge(node, text, tone = toneOf(text)) {
  node.textContent = text;
  node.className = `badge tone-${tone}`;
}

// The last 8 characters: a job id starts with the org's GUID suffix (http.md §1.4.2),
// the same for every job of the org, so only its end tells jobs apart.
const shortId = (id) => id.slice(-8);

const pad = (n) => String(n).padStart(2, "0");

function formatTime(ms) {
  if (Number.isNaN(ms)) return "";
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function formatDuration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  if (h) return `${h}h ${pad(m)}m ${pad(sec)}s`;
  if (m) return `${m}m ${pad(sec)}s`;
  return `${sec}s`;
}

const serverNow = () => Date.now() + app.clockOffset;

// Node names typed in the form: commas or whitespace separate them (Chef node names
// contain neither); duplicates dropped, since the server refuses a repeated node.
function parseNames(text) {
  return [...new Set(text.split(/[\s,]+/).filter((n) => n !== ""))];
}

const byName = new Intl.Collator(undefined, { numeric: true }).compare;

// Chips such as "3 succeeded · 1 running" for a job document's `nodes` object.
function countChips(counts) {
  const chips = el("span", { class: "chips" });
  const states = Object.keys(counts).filter((s) => counts[s] > 0);
  states.sort((a, b) => orderOf(a) - orderOf(b));
  for (const state of states) {
    chips.append(el("span", { class: `chip tone-${toneOf(state)}`, "data-state": state }, `${counts[state]} ${state}`));
  }
  return chips;
}

function orderOf(state) {
  const i = STATE_ORDER.indexOf(state);
  return i < 0 ? STATE_ORDER.length : i;
}

// ---------------------------------------------------------------------------------------
// Talking to the server

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// A same-origin API call. JSON in and out unless `text`; a 401 ends the session for the
// whole page (the cookie cannot be renewed from here) and still throws, so callers stop.
async function api(path, { method = "GET", body, text = false } = {}) {
  if (app.expired) throw new ApiError(401, "session expired");
  const headers = {};
  if (method !== "GET") headers["X-CSRF-Token"] = app.session ? app.session.csrf : "";
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(`${BASE}/api/${path}`, {
      method,
      headers,
      credentials: "same-origin",
      // Polled answers must never come from the browser's cache.
      cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, "Cannot reach the server; retrying…");
  }
  noteServerClock(response);
  if (response.status === 401) {
    sessionExpired();
    throw new ApiError(401, "session expired");
  }
  if (!response.ok) throw new ApiError(response.status, await errorMessage(response));
  return text ? response.text() : response.json();
}

// The message in an error body: `{"error": "…"}` or `{"error": ["…", …]}` (http.md §1.3).
async function errorMessage(response) {
  let message = "";
  try {
    const body = await response.json();
    const error = body && body.error;
    message = Array.isArray(error) ? error.join("; ") : String(error || "");
  } catch (e) {
    // Not JSON (e.g. a proxy's page): the status line says enough.
  }
  if (response.status === 403) return `Not allowed${message ? `: ${message}` : " (this login is read-only)"}`;
  return message || `${response.status} ${response.statusText}`.trim();
}

function noteServerClock(response) {
  const date = Date.parse(response.headers.get("Date") || "");
  if (Number.isNaN(date)) return;
  const offset = date - Date.now();
  // The header has whole seconds: only a real skew is worth correcting.
  app.clockOffset = Math.abs(offset) > 2000 ? offset : 0;
}

// Runs `task` now, then `ms` after each run ends (never two at once, so a slow server is
// not piled on). Failures show in the banner and the next run retries. Returns stop().
function poll(task, ms) {
  let timer = null;
  let stopped = false;
  async function run() {
    try {
      await task();
      if (!stopped) showProblem(null);
    } catch (e) {
      // A request still in flight when its view stopped says nothing about the next one.
      if (!stopped && e.status !== 401) showProblem(e.message);
    }
    if (!stopped && !app.expired) timer = setTimeout(run, ms);
  }
  run();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

// The banner for trouble that fixes itself (server restarting, network blip).
function showProblem(message) {
  const banner = $("connection-error");
  banner.hidden = !message;
  banner.textContent = message || "";
}

function sessionExpired() {
  if (app.expired) return;
  app.expired = true;
  $("session-expired").hidden = false;
  showProblem(null);
  document.body.classList.add("expired");
  if (app.page) app.page.stop();
}

// ---------------------------------------------------------------------------------------
// Nodes view: every node the server tracks, polled every 2 s. Rows are kept by name and
// updated in place, so filters, ticks and the scroll position survive each refresh; a
// node the server stops tracking stays listed as offline while the view is open. With
// thousands of nodes a refresh touches only the rows that changed.

class NodesPage {
  constructor() {
    this.rows = new Map(); // node name → {tr, box, dot, label}
    this.order = []; // the rows' names, sorted as shown
    this.tbody = $("nodes-table").tBodies[0];
    this.tbody.replaceChildren();
    this.stopPoll = poll(() => this.refresh(), 2000);
  }

  stop() {
    this.stopped = true;
    this.stopPoll();
  }

  async refresh() {
    const states = await api("node_states");
    if (!this.stopped) this.render(states);
  }

  render(states) {
    const seen = new Set();
    const added = [];
    const selected = startForm.selected();
    for (const { node_name: name, availability } of states) {
      seen.add(name);
      let row = this.rows.get(name);
      if (!row) {
        row = this.addRow(name, selected);
        added.push(name);
      }
      this.setAvailability(row, availability);
    }
    for (const [name, row] of this.rows) {
      if (!seen.has(name)) this.setAvailability(row, "offline");
    }
    this.place(added);
    const count = (a) => states.filter((s) => s.availability === a).length;
    const offline = this.rows.size - seen.size;
    $("nodes-total").textContent = this.rows.size;
    $("nodes-available").textContent = count("available");
    $("nodes-unavailable").textContent = count("unavailable");
    $("nodes-offline").textContent = offline;
    $("nodes-offline-count").hidden = offline === 0;
    $("nodes-empty").hidden = this.rows.size > 0;
    this.applyFilter();
  }

  setAvailability(row, availability) {
    if (row.tr.dataset.availability === availability) return;
    row.tr.dataset.availability = availability;
    row.dot.className = `dot tone-${availability === "available" ? "good" : availability === "offline" ? "idle" : "warn"}`;
    row.label.textContent = availability === "offline" ? "offline (no longer tracked)" : availability;
  }

  // Puts new rows in name order. Many at once (the first load): one sorted append. A few
  // (a node connecting): each goes before its successor, leaving the other rows alone.
  place(added) {
    if (added.length === 0) return;
    if (added.length > 50) {
      this.order = [...this.rows.keys()].sort(byName);
      const all = document.createDocumentFragment();
      for (const name of this.order) all.append(this.rows.get(name).tr);
      this.tbody.append(all);
      return;
    }
    for (const name of added) {
      let lo = 0;
      let hi = this.order.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (byName(this.order[mid], name) < 0) lo = mid + 1;
        else hi = mid;
      }
      const next = this.order[lo];
      this.tbody.insertBefore(this.rows.get(name).tr, next === undefined ? null : this.rows.get(next).tr);
      this.order.splice(lo, 0, name);
    }
  }

  addRow(name, selected) {
    const dot = el("span", { class: "dot" });
    const label = el("span");
    const tr = el("tr", { "data-node": name });
    let box = null;
    if (app.session.can_write) {
      box = el("input", { type: "checkbox", class: "pick", "aria-label": `Select ${name}` });
      box.dataset.node = name;
      box.checked = selected.has(name);
      tr.append(el("td", { class: "col-pick" }, box));
    }
    tr.append(el("td", { class: "name" }, name), el("td", {}, dot, " ", label));
    this.rows.set(name, { tr, box, dot, label });
    return { tr, box, dot, label };
  }

  applyFilter() {
    const text = $("node-filter").value.trim().toLowerCase();
    const want = $("node-state-filter").value;
    let shown = 0;
    for (const [name, row] of this.rows) {
      const visible = name.toLowerCase().includes(text) && (want === "all" || row.tr.dataset.availability === want);
      // Written only when it changes: 10 000 rows are re-filtered on every poll.
      if (row.tr.hidden === visible) row.tr.hidden = !visible;
      if (visible) shown += 1;
    }
    $("nodes-shown").textContent = this.rows.size ? `showing ${shown} of ${this.rows.size}` : "";
  }

  shownNames() {
    return [...this.rows].filter(([, row]) => !row.tr.hidden).map(([name]) => name);
  }

  // Ticks exactly the rows named in the start form (the form is the one source of truth).
  syncTicks() {
    const selected = startForm.selected();
    for (const [name, row] of this.rows) if (row.box) row.box.checked = selected.has(name);
  }
}

// ---------------------------------------------------------------------------------------
// The start form (writers only). Its node list is a text field that the table's
// checkboxes edit, so typed names and ticked ones never disagree.

const startForm = {
  selected() {
    const field = $("start-nodes");
    return new Set(field ? parseNames(field.value) : []);
  },

  setSelected(names, on) {
    const selected = this.selected();
    for (const name of names) {
      if (on) selected.add(name);
      else selected.delete(name);
    }
    $("start-nodes").value = [...selected].join(", ");
    this.showCount();
  },

  showCount() {
    const n = this.selected().size;
    $("start-nodes-count").textContent = n ? `${n} node${n === 1 ? "" : "s"} selected` : "";
  },

  // The POST body, or a string saying what is wrong. Optional fields go only when set.
  body() {
    const value = (id) => $(id).value.trim();
    const count = /^\d+$/;
    const amount = /^\d+%?$/; // a number of nodes or a percentage (README, operators' controls)
    const body = { command: value("start-command"), nodes: [...this.selected()] };
    if (body.command === "") return "Enter the command to run.";
    if (body.nodes.length === 0) return "Pick at least one node: tick it in the table or type its name.";
    const fields = [
      ["start-quorum", "quorum", count, "Quorum must be a whole number of nodes."],
      ["start-timeout", "run_timeout", count, "Run timeout must be a whole number of seconds."],
      ["start-max-concurrency", "max_concurrency", amount, "Max concurrency must be a number of nodes or a percentage such as 10%."],
      ["start-run-on-any", "run_on_any", count, "Run on any must be a whole number of nodes."],
      ["start-success-threshold", "success_threshold", amount, "Success threshold must be a number of nodes or a percentage such as 95%."],
    ];
    for (const [id, key, pattern, problem] of fields) {
      const text = value(id);
      if (text === "") continue;
      if (!pattern.test(text)) return problem;
      body[key] = text.endsWith("%") ? text : Number(text);
    }
    if ("quorum" in body && "run_on_any" in body) return "Run on any sets the quorum itself: leave Quorum empty.";
    if ($("start-capture").checked) body.capture_output = true;
    return body;
  },

  // Adds the nodes a Chef search matches to the list, so they are seen before the job
  // starts (as `push-jobs job start --search` resolves names first). The embedded
  // server answers only `name:GLOB` and `*:*`, and says so.
  async addSearch() {
    const query = $("start-search").value.trim();
    const result = $("start-search-result");
    result.classList.remove("alert");
    if (query === "") {
      result.textContent = "Enter a search query, such as role:web or name:web*.";
      return;
    }
    const button = $("start-search-add");
    button.disabled = true;
    result.textContent = "Searching…";
    try {
      const found = await api(`search?q=${encodeURIComponent(query)}`);
      const nodes = found.nodes || [];
      this.setSelected(nodes, true);
      if (app.page instanceof NodesPage) app.page.syncTicks();
      result.textContent = nodes.length
        ? `${nodes.length} node${nodes.length === 1 ? "" : "s"} matched ${query}: added.`
        : `No node matched ${query}.`;
    } catch (e) {
      if (e.status !== 401) {
        result.textContent = e.message;
        result.classList.add("alert");
      }
    } finally {
      button.disabled = false;
    }
  },

  async submit() {
    const error = $("start-error");
    const body = this.body();
    if (typeof body === "string") {
      error.textContent = body;
      error.hidden = false;
      return;
    }
    error.hidden = true;
    const button = $("start-submit");
    button.disabled = true;
    try {
      const created = await api("jobs", { method: "POST", body });
      const id = String(created.uri).replace(/\/+$/, "").split("/").pop();
      // The selection stays: running another command on the same nodes is common.
      location.hash = `#job/${id}`;
    } catch (e) {
      if (e.status !== 401) {
        error.textContent = e.message;
        error.hidden = false;
      }
    } finally {
      button.disabled = false;
    }
  },
};

// ---------------------------------------------------------------------------------------
// Jobs view: the newest jobs, polled every 3 s; unfinished ones also fetch their document
// for live per-state counts.

class JobsPage {
  constructor() {
    this.rows = new Map(); // job id → {tr, sig}
    $("jobs-table").tBodies[0].replaceChildren();
    this.stopPoll = poll(() => this.refresh(), 3000);
  }

  stop() {
    this.stopped = true;
    this.stopPoll();
  }

  async refresh() {
    // The newest first, each with who started it and its node counts per state.
    const jobs = await api("jobs");
    if (!this.stopped) this.render(jobs);
  }

  // Rows are kept by job id and rebuilt only when their job changed, so a selection or
  // the scroll position survives the refresh.
  render(jobs) {
    const tbody = $("jobs-table").tBodies[0];
    const next = new Map();
    for (const job of jobs) {
      const sig = JSON.stringify([job.status, job.node_counts, job.requestor]);
      let row = this.rows.get(job.id);
      if (!row || row.sig !== sig) {
        const tr = jobRow(job);
        if (row) row.tr.replaceWith(tr);
        row = { tr, sig };
      }
      next.set(job.id, row);
    }
    for (const [id, row] of this.rows) if (!next.has(id)) row.tr.remove();
    let previous = null;
    for (const { tr } of next.values()) {
      const want = previous ? previous.nextSibling : tbody.firstChild;
      if (want !== tr) tbody.insertBefore(tr, want);
      previous = tr;
    }
    this.rows = next;
    $("jobs-empty").hidden = jobs.length > 0;
    $("jobs-note").textContent = jobs.length >= JOBS_SHOWN ? `The newest ${jobs.length} jobs.` : "";
  }
}

function jobRow(job) {
  return el("tr", { "data-job": job.id, "data-status": job.status },
    el("td", { class: "mono" }, el("a", { href: `#job/${job.id}`, title: job.id }, shortId(job.id))),
    el("td", { class: "command" }, job.command),
    el("td", {}, badge(job.status)),
    el("td", { "data-test": "requestor" }, job.requestor || "—"),
    el("td", { title: job.created_at }, formatTime(Date.parse(job.created_at))),
    el("td", {}, countChips(job.node_counts || {})));
}

// ---------------------------------------------------------------------------------------
// Job view: the job document once, then its event feed (http.md §3.3–3.4) while it runs.

class JobPage {
  constructor(id) {
    this.id = id;
    this.doc = null;
    this.status = null;
    this.rows = new Map(); // node → {tr, state badge, output cell, state}
    this.counts = {};
    this.panels = new Map(); // node → live output panel
    this.feed = null;
    this.opened = false;
    this.refetchTimer = null;
    this.stopFallback = null;
    for (const field of ["job-command", "job-id", "job-created", "job-timeout", "job-elapsed", "job-options", "job-counts", "job-output-note"]) {
      $(field).textContent = "";
    }
    setBadge($("job-status"), "loading…", "idle");
    $("job-verdict").hidden = true;
    $("job-error").hidden = true;
    this.showAbort(false);
    $("job-nodes").tBodies[0].replaceChildren();
    $("job-output").replaceChildren();
    this.ticker = setInterval(() => this.renderElapsed(), 1000);
    this.load();
  }

  stop() {
    this.stopped = true;
    clearInterval(this.ticker);
    clearTimeout(this.refetchTimer);
    clearTimeout(this.retryTimer);
    clearTimeout(this.reopenTimer);
    clearTimeout(this.countsTimer);
    this.closeFeed();
    this.stopPolling();
  }

  stopPolling() {
    if (this.stopFallback) this.stopFallback();
    this.stopFallback = null;
  }

  finished() {
    return FINISHED_JOB.has(this.status);
  }

  async load() {
    try {
      const doc = await api(`jobs/${encodeURIComponent(this.id)}`);
      if (this.stopped) return;
      this.applyDoc(doc, true);
      if (!this.finished()) this.openFeed();
    } catch (e) {
      if (this.stopped || e.status === 401) return;
      if (e.status === 404) {
        this.showError(`There is no job ${this.id} in this organization.`);
        setBadge($("job-status"), "not found", "bad");
      } else {
        this.showError(e.message);
        this.retryTimer = setTimeout(() => this.load(), 3000);
      }
    }
  }

  showError(message) {
    $("job-error").textContent = message;
    $("job-error").hidden = false;
  }

  // Applies a job document. `final` documents (the first load, a finished job, an abort's
  // answer) set every state; others only move states forward (see JOB_RANK).
  applyDoc(doc, final) {
    final = final || FINISHED_JOB.has(doc.status);
    this.doc = doc;
    if (final || rank(JOB_RANK, doc.status) >= rank(JOB_RANK, this.status)) this.setStatus(doc.status);
    const names = [];
    for (const [state, list] of Object.entries(doc.nodes || {})) for (const name of list) names.push([name, state]);
    names.sort((a, b) => byName(a[0], b[0]));
    for (const [name, state] of names) {
      const row = this.rows.get(name);
      if (!row || final || rank(NODE_RANK, state) >= rank(NODE_RANK, row.state)) this.setNodeState(name, state);
    }
    $("job-command").textContent = doc.command;
    $("job-id").textContent = doc.id;
    $("job-created").textContent = formatTime(Date.parse(doc.created_at));
    $("job-created").title = doc.created_at;
    $("job-timeout").textContent = formatDuration(doc.run_timeout * 1000);
    $("job-options").textContent = describeOptions(doc);
    const verdict = $("job-verdict");
    verdict.hidden = !doc.verdict;
    if (doc.verdict) setBadge(verdict, `verdict: ${doc.verdict}`, toneOf(doc.verdict));
    $("job-output-note").textContent = !doc.capture_output ? "This job does not capture its output."
      : this.finished() ? "“show output” on a node loads what it printed."
        : "Output appears here as the nodes print it (stderr in red).";
    this.renderElapsed();
  }

  setStatus(status) {
    const was = this.finished();
    this.status = status;
    setBadge($("job-status"), status);
    $("job-status").dataset.status = status;
    this.showAbort(!this.finished());
    if (this.finished() && !was) {
      this.closeFeed();
      clearTimeout(this.reopenTimer);
      this.stopPolling();
      for (const name of this.rows.keys()) this.renderOutputCell(name);
    }
  }

  // A state from the feed, taken unless the node is already further along.
  advanceNode(name, state) {
    const row = this.rows.get(name);
    if (!row || rank(NODE_RANK, state) >= rank(NODE_RANK, row.state)) this.setNodeState(name, state);
  }

  setNodeState(name, state) {
    let row = this.rows.get(name);
    if (!row) row = this.addRow(name);
    if (row.state === state) return;
    if (row.state) this.counts[row.state] -= 1;
    this.counts[state] = (this.counts[state] || 0) + 1;
    row.state = state;
    row.tr.dataset.state = state;
    setBadge(row.badge, state);
    this.scheduleCounts();
  }

  addRow(name) {
    const badgeNode = el("span", { class: "badge" });
    const output = el("td", { class: "output-cell" });
    const tr = el("tr", { "data-node": name }, el("td", { class: "name" }, name), el("td", {}, badgeNode), output);
    $("job-nodes").tBodies[0].append(tr);
    const row = { tr, badge: badgeNode, output, state: null };
    this.rows.set(name, row);
    this.renderOutputCell(name);
    return row;
  }

  // The output cell: "show output" once the job is over (if it captured output), a jump
  // to the live panel while output streams in.
  renderOutputCell(name) {
    const row = this.rows.get(name);
    if (!row || !this.doc) return;
    if (this.finished() && this.doc.capture_output) {
      const button = el("button", { type: "button", class: "small", "data-test": "show-output" }, "show output");
      button.dataset.node = name;
      row.output.replaceChildren(button);
    } else if (this.panels.has(name)) {
      const button = el("button", { type: "button", class: "small", "data-test": "jump-output" }, "live output ↓");
      button.dataset.node = name;
      row.output.replaceChildren(button);
    } else {
      row.output.replaceChildren();
    }
  }

  // Counts are redrawn at most every 100 ms: a large job sends thousands of events.
  scheduleCounts() {
    if (this.countsTimer) return;
    this.countsTimer = setTimeout(() => {
      this.countsTimer = null;
      $("job-counts").replaceChildren(countChips(this.counts));
    }, 100);
  }

  renderElapsed() {
    if (!this.doc) return;
    const start = Date.parse(this.doc.created_at);
    // updated_at is when the job entered its current status: its end, once finished.
    const end = this.finished() && FINISHED_JOB.has(this.doc.status) ? Date.parse(this.doc.updated_at) : serverNow();
    $("job-elapsed").textContent = formatDuration(end - start);
  }

  showAbort(visible) {
    const button = $("abort-button");
    if (!button) return; // readers: removed from the page
    button.hidden = !visible;
    $("abort-confirm").hidden = true;
  }

  // Abort needs a second click (#abort-confirm-yes): an in-page confirmation keeps the
  // live updates running, unlike a modal confirm().
  askAbort() {
    $("abort-button").hidden = true;
    $("abort-confirm").hidden = false;
  }

  async abort() {
    $("abort-confirm").hidden = true;
    try {
      const doc = await api(`jobs/${encodeURIComponent(this.id)}/abort`, { method: "POST" });
      if (!this.stopped) this.applyDoc(doc, true);
    } catch (e) {
      if (this.stopped || e.status === 401) return;
      this.showError(e.status === 409 ? `Not aborted, the job had already finished: ${e.message}` : e.message);
      this.showAbort(!this.finished());
      this.scheduleRefetch();
    }
  }

  // --- the feed

  openFeed() {
    const feed = new EventSource(`${BASE}/api/job_status_feed/${encodeURIComponent(this.id)}`);
    this.feed = feed;
    const on = (name, handle) => feed.addEventListener(name, (event) => {
      if (this.stopped || this.feed !== feed) return;
      let data;
      try {
        data = JSON.parse(event.data);
      } catch (e) {
        return; // not ours to interpret
      }
      if (name !== "summary") {
        // The job is live on this feed: no more polling, and a later break retries soon.
        this.feedDelay = 0;
        this.stopPolling();
        showProblem(null);
      }
      handle(data);
    });
    // A feed replays what happened before it opened: states only move forward here.
    on("quorum_vote", (d) => {
      if (d.status === "success") this.advanceNode(d.node, "ready");
      else this.scheduleRefetch(); // nacked, unavailable, …: the document knows which
    });
    on("quorum_succeeded", () => {
      if (!this.finished()) this.setStatus("running");
    });
    on("run_waiting", (d) => this.advanceNode(d.node, "waiting"));
    on("run_start", (d) => this.advanceNode(d.node, "running"));
    on("run_complete", (d) => {
      this.advanceNode(d.node, d.status === "success" ? "succeeded" : "failed");
      // crashed, run_nacked, …: the document has the exact node state.
      if (d.status !== "success" && d.status !== "failure") this.scheduleRefetch();
    });
    on("rehab", () => this.scheduleRefetch());
    on("job_complete", (d) => {
      this.closeFeed(); // the stream ends here; left open, EventSource would reconnect
      if (d.status) this.setStatus(d.status);
      this.refetch().catch((e) => {
        if (e.status === 401) return;
        showProblem(e.message);
        if (!this.finished()) this.reopenLater();
      });
    });
    // A job this instance holds no live events for answers with its whole document
    // (http.md §3.4 case 3): finished, or (in a cluster) not started here yet.
    on("summary", (d) => {
      this.closeFeed();
      this.applyDoc(d, FINISHED_JOB.has(d.status));
      if (!this.finished()) this.reopenLater();
    });
    on("run_output", (d) => this.appendOutput(d));
    feed.addEventListener("open", () => {
      // A reconnection replays each node's recent output: skip what is already shown.
      if (this.opened) for (const panel of this.panels.values()) panel.resyncing = true;
      this.opened = true;
    });
    feed.addEventListener("error", () => {
      if (this.stopped || this.feed !== feed) return;
      if (feed.readyState === EventSource.CLOSED) {
        // Refused (a restart's 502, 404, 401, …): poll the document and try the feed
        // again later. A 401 on the document ends the session like any other request.
        this.feed = null;
        this.reopenLater();
      } else {
        // Reconnecting by itself; meanwhile make sure the job has not simply ended.
        this.scheduleRefetch();
      }
    });
  }

  closeFeed() {
    if (this.feed) this.feed.close();
    this.feed = null;
  }

  // The feed ended before the job did: follow the document meanwhile, and open the feed
  // again after a wait that doubles (FEED_RETRY_FIRST up to FEED_RETRY_MAX).
  reopenLater() {
    if (!this.stopFallback) this.stopFallback = poll(() => this.refetch(), 2000);
    this.feedDelay = Math.min(Math.max(this.feedDelay || 0, FEED_RETRY_FIRST / 2) * 2, FEED_RETRY_MAX);
    clearTimeout(this.reopenTimer);
    this.reopenTimer = setTimeout(() => {
      if (!this.stopped && !this.finished() && !app.expired && !this.feed) this.openFeed();
    }, this.feedDelay);
  }

  scheduleRefetch() {
    if (this.refetchTimer) return;
    this.refetchTimer = setTimeout(() => {
      this.refetchTimer = null;
      this.refetch().catch((e) => {
        if (e.status !== 401) showProblem(e.message);
      });
    }, 300);
  }

  async refetch() {
    const doc = await api(`jobs/${encodeURIComponent(this.id)}`);
    if (!this.stopped) this.applyDoc(doc, false);
  }

  // --- output

  panelFor(name) {
    let panel = this.panels.get(name);
    if (panel) return panel;
    const note = el("span", { class: "muted small" }, "live output");
    const pre = el("pre", { class: "output" });
    const section = el("section", { class: "output-panel", "data-test": "output-panel", "data-node": name },
      el("header", {}, el("h4", {}, name), note), pre);
    $("job-output").append(section);
    panel = { section, pre, note, size: 0, lastRun: 0, lastStamp: "", resyncing: false };
    this.panels.set(name, panel);
    // One more panel: every panel's share of the page's budget shrinks.
    const keep = this.panelKeep();
    for (const other of this.panels.values()) this.trim(other, keep);
    this.renderOutputCell(name);
    return panel;
  }

  // A `run_output` event: new stdout and/or stderr text, or bytes the node skipped.
  appendOutput(data) {
    if (!data.node) return;
    const panel = this.panelFor(data.node);
    // Timestamps are fixed when the event is made and replayed unchanged, so after a
    // reconnection anything not newer than what we showed is a repeat.
    const stamp = String(data.timestamp || "");
    if (panel.resyncing) {
      if (stamp <= panel.lastStamp) return;
      panel.resyncing = false;
    }
    panel.lastStamp = stamp;
    const pre = panel.pre;
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    if (data.stdout) this.appendText(panel, data.stdout, "stdout");
    if (data.stderr) this.appendText(panel, data.stderr, "stderr");
    if (data.dropped) this.appendText(panel, `[${data.dropped} bytes of output skipped by the node]\n`, "dropped");
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  }

  // Text of one kind (stdout, stderr, dropped) joins the panel's last run of that kind
  // up to RUN_MAX characters, so a long stream is a few elements rather than one per
  // event, yet trimming mostly drops whole runs instead of cutting into a huge one.
  appendText(panel, text, kind) {
    const last = panel.pre.lastElementChild;
    if (last && last.className === kind && panel.lastRun + text.length <= RUN_MAX) {
      last.append(text);
      panel.lastRun += text.length;
    } else {
      panel.pre.append(el("span", { class: kind, title: kind === "stderr" ? "stderr" : undefined }, text));
      panel.lastRun = text.length;
    }
    panel.size += text.length;
    this.trim(panel, this.panelKeep());
  }

  // Each panel's share of PAGE_OUTPUT_KEEP, within PANEL_OUTPUT_MIN..OUTPUT_KEEP.
  panelKeep() {
    return Math.max(PANEL_OUTPUT_MIN, Math.min(OUTPUT_KEEP, Math.floor(PAGE_OUTPUT_KEEP / Math.max(1, this.panels.size))));
  }

  // Drops a panel's oldest text once it is past `keep` characters, down to 3/4 of it (so
  // this runs once per quarter of the budget, not on every event), cutting into a run if
  // need be (a single chunk larger than `keep` keeps its tail).
  trim(panel, keep) {
    if (panel.size <= keep) return;
    let excess = panel.size - Math.floor(keep * 0.75);
    panel.note.textContent = "(earlier output not kept here)";
    while (excess > 0 && panel.pre.firstChild) {
      const first = panel.pre.firstChild;
      const text = first.textContent;
      if (text.length <= excess) {
        first.remove();
        excess -= text.length;
        panel.size -= text.length;
      } else {
        first.textContent = text.slice(excess);
        panel.size -= excess;
        excess = 0;
      }
    }
  }

  // Loads a finished node's captured stdout and stderr in place of its live output.
  async showOutput(name) {
    const panel = this.panelFor(name);
    panel.note.textContent = "loading…";
    const get = (channel) => api(`jobs/${encodeURIComponent(this.id)}/output/${encodeURIComponent(name)}/${channel}`, { text: true })
      .catch((e) => {
        if (e.status === 404) return null; // nothing captured for this channel
        throw e;
      });
    try {
      const [stdout, stderr] = await Promise.all([get("stdout"), get("stderr")]);
      panel.pre.replaceChildren();
      panel.size = 0;
      panel.lastRun = 0;
      if (stdout) this.appendText(panel, stdout, "stdout");
      if (stderr) this.appendText(panel, stderr, "stderr");
      panel.note.textContent = stdout === null && stderr === null ? "nothing captured for this node"
        : !stdout && !stderr ? "no output" : "captured output (stderr marked)";
    } catch (e) {
      panel.note.textContent = e.status === 401 ? "" : e.message;
    }
    panel.section.scrollIntoView({ block: "nearest" });
  }
}

// The options a job was posted with, e.g. "capture output · max concurrency 10%".
function describeOptions(doc) {
  const parts = [];
  if (doc.capture_output) parts.push("capture output");
  for (const key of ["max_concurrency", "max_errors", "run_on_any", "success_threshold", "user", "dir"]) {
    if (doc[key] !== undefined) parts.push(`${key.replace(/_/g, " ")} ${doc[key]}`);
  }
  // Names only: environment values may be secrets.
  if (doc.env) parts.push(`env ${Object.keys(doc.env).join(", ") || "(empty)"}`);
  if (doc.file_specified) parts.push("file");
  return parts.join(" · ") || "none";
}

// ---------------------------------------------------------------------------------------
// Routing and start-up

const VIEWS = {
  nodes: () => new NodesPage(),
  jobs: () => new JobsPage(),
  job: (id) => new JobPage(id),
};

function route() {
  if (app.page) app.page.stop();
  app.page = null;
  const hash = location.hash.replace(/^#/, "");
  let name = "nodes";
  let arg;
  if (hash === "jobs") name = "jobs";
  else if (hash.startsWith("job/") && hash.length > 4) {
    name = "job";
    try {
      arg = decodeURIComponent(hash.slice(4));
    } catch (e) {
      arg = hash.slice(4); // a malformed escape: the server will say there is no such job
    }
  }
  for (const view of Object.keys(VIEWS)) $(`view-${view}`).hidden = view !== name;
  $("nav-nodes").classList.toggle("current", name === "nodes");
  $("nav-jobs").classList.toggle("current", name !== "nodes");
  if (!app.expired) app.page = VIEWS[name](arg);
}

// Listeners are attached once and act on whichever page is showing.
function bindControls() {
  $("node-filter").addEventListener("input", () => app.page instanceof NodesPage && app.page.applyFilter());
  $("node-state-filter").addEventListener("change", () => app.page instanceof NodesPage && app.page.applyFilter());
  if (!app.session.can_write) return;
  $("nodes-table").addEventListener("change", (event) => {
    const box = event.target;
    if (box.id === "nodes-select-all" && app.page instanceof NodesPage) {
      startForm.setSelected(app.page.shownNames(), box.checked);
      app.page.syncTicks();
    } else if (box.classList.contains("pick")) {
      startForm.setSelected([box.dataset.node], box.checked);
    }
  });
  $("start-nodes").addEventListener("input", () => {
    startForm.showCount();
    if (app.page instanceof NodesPage) app.page.syncTicks();
  });
  $("start-search-add").addEventListener("click", () => startForm.addSearch());
  $("start-search").addEventListener("keydown", (event) => {
    // Enter here searches; it must not start the job.
    if (event.key !== "Enter") return;
    event.preventDefault();
    startForm.addSearch();
  });
  $("start-form").addEventListener("submit", (event) => {
    event.preventDefault();
    startForm.submit();
  });
  $("abort-button").addEventListener("click", () => app.page instanceof JobPage && app.page.askAbort());
  $("abort-confirm-yes").addEventListener("click", () => app.page instanceof JobPage && app.page.abort());
  $("abort-confirm-no").addEventListener("click", () => app.page instanceof JobPage && app.page.showAbort(!app.page.finished()));
}

function bindJobOutput() {
  $("job-nodes").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-node]");
    if (!button || !(app.page instanceof JobPage)) return;
    if (button.dataset.test === "show-output") app.page.showOutput(button.dataset.node);
    else app.page.panelFor(button.dataset.node).section.scrollIntoView({ block: "nearest" });
  });
}

async function start() {
  let session;
  try {
    session = await api("session");
  } catch (e) {
    if (e.status === 401) return;
    if (e.status === 403) {
      // Signed in, but no longer in the org's readers: retrying will not change that.
      showProblem(`${e.message}. Ask an administrator to add you to the push jobs readers, then run push-jobs dashboard again.`);
      return;
    }
    showProblem(`Cannot load the session (${e.message}); retrying…`);
    setTimeout(start, 3000);
    return;
  }
  showProblem(null);
  app.session = session;
  $("org-name").textContent = session.org;
  $("user-name").textContent = session.user;
  $("user-name").title = session.expires_at ? `session ends ${formatTime(Date.parse(session.expires_at))}` : "";
  $("read-only-badge").hidden = session.can_write;
  // Readers get no start form, checkboxes or abort button at all, not just hidden ones.
  if (!session.can_write) for (const node of document.querySelectorAll(".writer-only")) node.remove();
  bindControls();
  bindJobOutput();
  window.addEventListener("hashchange", route);
  route();
}

start();
