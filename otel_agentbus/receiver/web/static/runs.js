// The runs list: filters and paging kept in the URL (/runs?agent=x&status=failed&before=…).
import {
  config, decorateHeader, externalLinks, formatCount, formatMs, formatWhen, getJSON, h,
  localHref, reportError, setLive, showMessage, statusBadge,
} from "./common.js";

const RANGES = { "15m": 15 * 60e3, "1h": 3600e3, "24h": 24 * 3600e3, "7d": 7 * 24 * 3600e3 };
const FILTER_KEYS = ["agent", "status", "range", "q", "since", "until", "limit"];

const form = document.getElementById("filters");
const agentSelect = document.getElementById("f-agent");
const statusSelect = document.getElementById("f-status");
const rangeSelect = document.getElementById("f-range");
const queryInput = document.getElementById("f-q");
const body = document.getElementById("runs-body");
const empty = document.getElementById("empty");
const newest = document.getElementById("p-newest");
const newer = document.getElementById("p-newer");
const older = document.getElementById("p-older");
const info = document.getElementById("p-info");

let pollTimer = null;
let loadSeq = 0;
let nextCursor = null;

/** The URL's state: the filters, the cursor of this page and those of the newer ones. */
function urlState() {
  const params = new URLSearchParams(location.search);
  const state = {};
  for (const key of FILTER_KEYS) state[key] = params.get(key) || "";
  state.before = params.get("before") || "";
  state.page = Math.max(1, Number.parseInt(params.get("page") || "1", 10) || 1);
  return state;
}

function apiQuery(state) {
  const params = new URLSearchParams();
  for (const key of ["agent", "status", "q", "since", "until", "limit", "before"]) {
    if (state[key]) params.set(key, state[key]);
  }
  if (state.range && RANGES[state.range] && !state.since) {
    params.set("since", new Date(Date.now() - RANGES[state.range]).toISOString());
  }
  return params;
}

function pageUrl(state) {
  const params = new URLSearchParams();
  for (const key of FILTER_KEYS) if (state[key]) params.set(key, state[key]);
  if (state.before) params.set("before", state.before);
  if (state.page > 1) params.set("page", String(state.page));
  const query = params.toString();
  return query ? `/runs?${query}` : "/runs";
}

function go(state, push = true) {
  const url = pageUrl(state);
  if (push) history.pushState(null, "", url);
  else history.replaceState(null, "", url);
  load();
}

function fillSelect(select, values, chosen, allLabel) {
  const options = [h("option", { value: "" }, allLabel)];
  const all = new Set(values);
  if (chosen) all.add(chosen);
  for (const value of [...all].sort()) options.push(h("option", { value }, value));
  select.replaceChildren(...options);
  select.value = chosen || "";
}

function runRow(run) {
  const runHref = localHref(run.links && run.links.run) || `/runs/${encodeURIComponent(run.run_id)}`;
  const traceHref = localHref(run.links && run.links.trace)
    || `/traces/${encodeURIComponent(run.trace_id)}`;
  const tokens = run.input_tokens === null && run.output_tokens === null ? "—"
    : `${formatCount(run.input_tokens ?? 0)} / ${formatCount(run.output_tokens ?? 0)}`;
  const row = h("tr", { className: `run-row status-${run.status}`,
    dataset: { runId: run.run_id, status: run.status } },
  h("td", null, statusBadge(run.status)),
  h("td", { className: "agent" }, run.agent ?? h("span", { className: "muted" }, "—")),
  h("td", { className: "run-id" },
    h("a", { className: "run-link mono", href: runHref, title: run.name || run.run_id }, run.run_id),
    run.error ? h("div", { className: "row-error", title: run.error }, run.error) : null),
  h("td", { className: "when", title: run.start_iso || "" }, formatWhen(run.start_iso)),
  h("td", { className: "num" }, run.duration_ms === null
    ? h("span", { className: "running-text" }, "running…") : formatMs(run.duration_ms)),
  h("td", { className: "num" }, tokens),
  h("td", { className: "num" }, formatCount(run.tool_calls)),
  h("td", { className: "num" }, formatCount(run.decisions)),
  h("td", { className: run.problems ? "num problems" : "num" }, formatCount(run.problems)),
  h("td", { className: "trace-cell" },
    h("a", { className: "mono trace-link", href: traceHref, title: run.trace_id },
      String(run.trace_id).slice(0, 8) + "…"),
    ...externalLinks(run.links)));
  // A click anywhere on the row opens the run (the link itself stays the keyboard target).
  row.addEventListener("click", (event) => {
    if (event.target instanceof Element && event.target.closest("a, button")) return;
    if (window.getSelection && String(window.getSelection()).length) return;
    location.assign(runHref);
  });
  return row;
}

async function load() {
  const seq = ++loadSeq;
  clearTimeout(pollTimer);
  const state = urlState();
  agentSelect.value = state.agent;
  statusSelect.value = state.status;
  rangeSelect.value = state.range;
  queryInput.value = state.q;
  let answer;
  try {
    answer = (await getJSON(`/api/runs?${apiQuery(state)}`)).body;
  } catch (error) {
    if (seq !== loadSeq) return;
    reportError(error);
    body.replaceChildren();
    empty.hidden = true;
    setLive(false);
    return;
  }
  if (seq !== loadSeq) return;
  showMessage(null);
  fillSelect(agentSelect, answer.agents || [], state.agent, "All agents");
  fillSelect(statusSelect, answer.statuses || [], state.status, "Any status");
  const rows = answer.runs.map(runRow);
  const fragment = document.createDocumentFragment();
  fragment.append(...rows);
  body.replaceChildren(fragment);
  empty.hidden = rows.length > 0;
  nextCursor = answer.next || null;
  older.disabled = !nextCursor;
  newer.disabled = state.page <= 1 && !state.before;
  newest.disabled = newer.disabled;
  info.textContent = rows.length
    ? `Page ${state.page} · ${rows.length} run${rows.length === 1 ? "" : "s"}`
    : "";
  const anyRunning = answer.runs.some((run) => run.status === "running");
  const live = !state.before && anyRunning;
  setLive(live);
  if (live) {
    const cfg = await config();
    pollTimer = setTimeout(load, Math.max(250, (cfg.poll_ms || 1000) * 2));
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const state = urlState();
  state.agent = agentSelect.value;
  state.status = statusSelect.value;
  state.range = rangeSelect.value;
  state.q = queryInput.value.trim();
  state.before = "";
  state.page = 1;
  go(state);
});
for (const select of [agentSelect, statusSelect, rangeSelect]) {
  select.addEventListener("change", () => form.requestSubmit());
}
document.getElementById("f-clear").addEventListener("click", () => {
  go({ page: 1, before: "", limit: urlState().limit });
});

// Paging: "older" follows the API's cursor; the page before each cursor is remembered for
// "newer" (per tab), and a page reached from a shared link falls back to the newest.
const PREV_KEY = "agentbus.runs.prev";
function prevCursors() {
  try {
    return JSON.parse(sessionStorage.getItem(PREV_KEY) || "{}") || {};
  } catch {
    return {};
  }
}
older.addEventListener("click", () => {
  if (!nextCursor) return;
  const state = urlState();
  const prev = prevCursors();
  prev[nextCursor] = { before: state.before, page: state.page };
  try {
    sessionStorage.setItem(PREV_KEY, JSON.stringify(prev));
  } catch {
    // storage full or off: "newer" then goes to the newest page
  }
  state.before = nextCursor;
  state.page += 1;
  go(state);
});
newer.addEventListener("click", () => {
  const state = urlState();
  const back = prevCursors()[state.before];
  state.before = back ? back.before : "";
  state.page = back ? back.page : 1;
  go(state);
});
newest.addEventListener("click", () => {
  const state = urlState();
  state.before = "";
  state.page = 1;
  go(state);
});
window.addEventListener("popstate", load);

decorateHeader();
load();
