// The run page: /runs/<run id> or /traces/<trace id>. A waterfall of the trace (virtual:
// only the rows in view are in the DOM, so a 10,000-span trace stays fast), the clicked
// span's details, and the run's decisions, outcomes and problems as a timeline.
import {
  ApiError, config, decorateHeader, externalLinks, formatCount, formatMs, formatUs, formatWhen,
  getJSON, h, kvTable, localHref, operationBadge, operationInfo, reportError, setLive,
  showMessage, spanOperation, statusBadge, valueText,
} from "./common.js";

const ROW_HEIGHT = 26; // px; matches --wf-row in app.css
const OVERSCAN = 12;
const INDENT = 14;
const MAX_INDENT_LEVELS = 32;

const $ = (id) => document.getElementById(id);
const scroller = $("w-scroll");
const spacer = $("w-spacer");
const rowsBox = $("w-rows");

const view = {
  doc: null,
  etag: null,
  apiUrl: null,
  spans: [], // the document's spans, depth-first
  byId: new Map(), // span id -> index
  parentIndex: [], // index -> parent index or -1
  childCount: [],
  marks: new Map(), // span id -> timeline items on it
  collapsed: new Set(),
  visible: [], // indices of the rows shown, in order
  selected: null,
  detailSeq: 0,
  pollTimer: null,
  total: 1, // µs shown on the time axis
  receivedAt: 0, // performance.now() when the document came
  receivedTotal: 1,
};

// ---------------------------------------------------------------- where we are

function target() {
  const parts = location.pathname.split("/").filter(Boolean);
  if (parts.length === 2 && (parts[0] === "runs" || parts[0] === "traces")) {
    let id;
    try {
      id = decodeURIComponent(parts[1]);
    } catch {
      id = parts[1];
    }
    return { kind: parts[0], id };
  }
  return null;
}

function hashSpan() {
  const match = /(?:^#|&)span=([^&]+)/.exec(location.hash);
  return match ? decodeURIComponent(match[1]) : null;
}

// ---------------------------------------------------------------- loading

async function load(first) {
  let answer;
  try {
    answer = await getJSON(view.apiUrl, first ? null : view.etag);
  } catch (error) {
    if (first) {
      if (error instanceof ApiError && error.status === 404) {
        showMessage(error.message || "Not found.");
        $("crumb").textContent = "not found";
      } else reportError(error);
      setLive(false);
      return;
    }
    reportError(error); // keep what is shown; try again
    schedule();
    return;
  }
  if (answer.status !== 304) {
    showMessage(null);
    view.etag = answer.etag;
    ingest(answer.body, first);
  } else if (view.doc && view.doc.in_progress) {
    tick(); // nothing new stored, but the open spans have grown
  }
  schedule();
}

async function schedule() {
  clearTimeout(view.pollTimer);
  const live = Boolean(view.doc && view.doc.in_progress);
  setLive(live);
  document.body.classList.toggle("is-live", live);
  if (!live) return;
  const cfg = await config();
  view.pollTimer = setTimeout(() => load(false), Math.max(200, cfg.poll_ms || 1000));
}

function ingest(doc, first) {
  const previous = view.doc;
  view.doc = doc;
  const spans = Array.isArray(doc.spans) ? doc.spans : [];
  view.spans = spans;
  view.byId = new Map();
  spans.forEach((span, i) => view.byId.set(span.span_id, i));
  view.parentIndex = spans.map((span) => {
    const parent = span.parent_span_id == null ? undefined : view.byId.get(span.parent_span_id);
    return parent === undefined ? -1 : parent;
  });
  view.childCount = new Array(spans.length).fill(0);
  for (const parent of view.parentIndex) if (parent >= 0) view.childCount[parent] += 1;
  view.marks = new Map();
  for (const item of doc.timeline || []) {
    if (!view.marks.has(item.span_id)) view.marks.set(item.span_id, []);
    view.marks.get(item.span_id).push(item);
  }
  view.total = Math.max(Number(doc.duration_us) || 0, 1);
  view.receivedAt = performance.now();
  view.receivedTotal = view.total;
  for (const span of spans) {
    const end = (span.start_us || 0) + (span.duration_us ?? 0);
    if (end > view.total) view.total = end;
  }
  renderSummary(doc);
  renderAxis();
  renderTimeline(doc);
  $("workspace").hidden = false;
  recomputeVisible();
  if (first) {
    const wanted = hashSpan();
    if (wanted && view.byId.has(wanted)) selectSpan(wanted, { scroll: true, updateUrl: false });
  } else if (view.selected && view.byId.has(view.selected)) {
    const span = spans[view.byId.get(view.selected)];
    const before = previous && previous.spans.find((s) => s.span_id === view.selected);
    if (!before || before.pending !== span.pending || before.duration_us !== span.duration_us) {
      loadDetail(view.selected); // it changed: show the new state
    }
  }
  renderRows();
}

/** While a run is open, its running spans end "now": stretch the time axis by the time
 * passed since the document came. */
function tick() {
  view.total = view.receivedTotal + (performance.now() - view.receivedAt) * 1000;
  renderAxis();
  const sofar = document.getElementById("s-sofar");
  if (sofar) sofar.textContent = `${formatUs(view.total)} so far`;
  renderRows();
}

// ---------------------------------------------------------------- summary

function fact(label, value, extra) {
  return h("div", null, h("dt", null, label), h("dd", extra || null, value));
}

function renderSummary(doc) {
  const run = doc.run;
  $("summary").hidden = false;
  const status = run ? run.status : doc.in_progress ? "running" : "trace";
  $("s-status").replaceWith(Object.assign(statusBadge(status), { id: "s-status" }));
  const title = run ? (run.agent || run.name || run.run_id) : `Trace ${doc.trace_id}`;
  $("s-title").textContent = title;
  const service = run ? run.service_name : (doc.spans[0] && doc.spans[0].service_name);
  $("s-service").textContent = service ? `service ${service}` : "";
  $("crumb").textContent = run ? run.run_id : `trace ${String(doc.trace_id).slice(0, 12)}…`;
  document.title = `${run ? `${title} · ${run.run_id}` : `Trace ${doc.trace_id}`} · otel-agentbus`;

  const links = [];
  const traceHref = localHref(doc.links && doc.links.trace);
  if (run && traceHref) links.push(h("a", { className: "ext-link", href: traceHref, title: "A link to this trace" }, "Trace link"));
  links.push(...externalLinks(doc.links));
  $("s-links").replaceChildren(...links);

  const facts = [];
  if (run) {
    facts.push(fact("Run", run.run_id, { className: "mono" }));
  }
  facts.push(fact("Trace", doc.trace_id, { className: "mono" }));
  const started = run ? run.start_iso : null;
  if (started) facts.push(fact("Started", formatWhen(started), { title: started }));
  facts.push(fact("Duration", run && run.duration_ms !== null && run.duration_ms !== undefined
    ? formatMs(run.duration_ms)
    : doc.in_progress ? h("span", { id: "s-sofar" }, `${formatUs(doc.duration_us)} so far`)
      : formatUs(doc.duration_us)));
  facts.push(fact("Spans", formatCount(doc.span_count ?? doc.spans.length)));
  if (run) {
    if (run.input_tokens !== null || run.output_tokens !== null) {
      facts.push(fact("Tokens in / out", `${formatCount(run.input_tokens ?? 0)} / ${formatCount(run.output_tokens ?? 0)}`));
    }
    facts.push(fact("Tool calls", formatCount(run.tool_calls)));
    facts.push(fact("Decisions", formatCount(run.decisions)));
    facts.push(fact("Problems", formatCount(run.problems),
      run.problems ? { className: "problems" } : null));
  }
  $("s-facts").replaceChildren(...facts);

  const errorBox = $("s-error");
  const error = run && run.error;
  errorBox.hidden = !error;
  errorBox.replaceChildren(...(error ? [h("strong", null, "Error"), " ", error] : []));

  const others = (doc.runs || []).filter((r) => !run || r.run_id !== run.run_id);
  const runsBox = $("s-runs");
  runsBox.hidden = others.length === 0;
  runsBox.replaceChildren(...(others.length ? [
    h("span", { className: "muted small" }, run ? "Other runs in this trace:" : "Runs in this trace:"),
    ...others.map((r) => h("a", { className: "run-chip", href: localHref(r.links && r.links.run)
      || `/runs/${encodeURIComponent(r.run_id)}` }, statusBadge(r.status), " ", r.agent || "", " ",
    h("span", { className: "mono" }, r.run_id))),
  ] : []));

  const truncated = $("s-truncated");
  truncated.hidden = !doc.truncated;
  truncated.textContent = doc.truncated
    ? `This trace has ${formatCount(doc.span_count)} spans; the first ${formatCount(doc.spans.length)} by start time are shown.`
    : "";
  $("w-count").textContent = `${formatCount(doc.spans.length)} span${doc.spans.length === 1 ? "" : "s"}`;
}

// ---------------------------------------------------------------- waterfall

function renderAxis() {
  const axis = $("w-axis");
  const ticks = [];
  for (let i = 0; i <= 4; i += 1) {
    const tick = h("span", { className: `wf-tick${i === 4 ? " wf-tick-end" : ""}` },
      i === 0 ? "0" : formatUs((view.total * i) / 4));
    tick.style.left = `${i * 25}%`;
    ticks.push(tick);
  }
  axis.replaceChildren(...ticks);
}

function recomputeVisible() {
  const visible = [];
  const spans = view.spans;
  let skipDepth = Infinity;
  for (let i = 0; i < spans.length; i += 1) {
    const depth = spans[i].depth || 0;
    if (depth > skipDepth) continue;
    skipDepth = Infinity;
    visible.push(i);
    if (view.collapsed.has(spans[i].span_id) && view.childCount[i] > 0) skipDepth = depth;
  }
  view.visible = visible;
  spacer.style.height = `${visible.length * ROW_HEIGHT}px`;
}

function pct(value) {
  return `${Math.min(100, Math.max(0, (value / view.total) * 100))}%`;
}

function spanRow(index, position) {
  const span = view.spans[index];
  const depth = span.depth || 0;
  const hasChildren = view.childCount[index] > 0;
  const collapsed = view.collapsed.has(span.span_id);
  const isError = span.status === "ERROR";
  const operation = spanOperation(span);
  const [, opClass] = operationInfo(operation);
  const classes = ["wf-row"];
  if (isError) classes.push("is-error");
  if (span.pending) classes.push("is-pending");
  if (span.span_id === view.selected) classes.push("is-selected");
  const row = h("div", {
    className: classes.join(" "), role: "treeitem", "aria-level": depth + 1,
    "aria-selected": span.span_id === view.selected ? "true" : "false",
    "aria-expanded": hasChildren ? String(!collapsed) : null,
    dataset: { spanId: span.span_id, index: String(position) },
  });

  const name = h("div", { className: "wf-name" });
  name.style.paddingLeft = `${Math.min(depth, MAX_INDENT_LEVELS) * INDENT + 4}px`;
  if (hasChildren) {
    name.append(h("button", {
      type: "button", className: "wf-toggle", tabindex: "-1",
      "aria-label": `${collapsed ? "Expand" : "Collapse"} ${span.name}`,
      title: `${collapsed ? "Expand" : "Collapse"} (${formatCount(view.childCount[index])} children)`,
      dataset: { action: "toggle" },
    }, collapsed ? "▸" : "▾"));
  } else {
    name.append(h("span", { className: "wf-toggle-space", "aria-hidden": "true" }));
  }
  const label = h("button", {
    type: "button", className: "wf-select", title: span.name,
    tabindex: span.span_id === (view.selected || view.spans[view.visible[0]]?.span_id) ? "0" : "-1",
    dataset: { action: "select" },
  }, operationBadge(operation), h("span", { className: "wf-label" }, span.name));
  if (isError) label.append(h("span", { className: "wf-err-icon", title: span.status_message || "error" }, "!"));
  if (span.pending) label.append(h("span", { className: "wf-pending-tag" }, "running"));
  name.append(label);

  const track = h("div", { className: "wf-track" });
  const start = span.start_us || 0;
  const duration = span.duration_us === null || span.duration_us === undefined
    ? Math.max(view.total - start, 0) : span.duration_us;
  const bar = h("div", { className: `wf-bar ${opClass}${isError ? " status-error" : ""}${span.pending ? " status-pending" : ""}` });
  bar.style.left = pct(start);
  bar.style.width = `max(2px, ${pct(duration)})`;
  track.append(bar);
  for (const item of view.marks.get(span.span_id) || []) {
    const mark = h("span", { className: `wf-mark mark-${item.kind}`, title: `${item.kind}: ${item.summary || item.name}` });
    mark.style.left = pct(item.time_us);
    track.append(mark);
  }
  const durText = span.duration_us === null || span.duration_us === undefined
    ? "running…" : formatUs(span.duration_us);
  const dur = h("span", { className: "wf-dur" }, durText);
  const startFraction = start / view.total;
  const endFraction = (start + duration) / view.total;
  if (endFraction > 0.82 && startFraction > 0.18) {
    dur.classList.add("wf-dur-left"); // left of the bar
    dur.style.right = `${Math.max(0, 100 - startFraction * 100)}%`;
  } else if (endFraction > 0.82) {
    dur.classList.add("wf-dur-inside"); // inside the bar, at its end
    dur.style.right = `${Math.max(0, 100 - endFraction * 100)}%`;
  } else {
    dur.style.left = pct(start + duration);
  }
  track.append(dur);
  row.append(name, track);
  row.style.top = `${position * ROW_HEIGHT}px`;
  return row;
}

let renderQueued = false;
function renderRows() {
  const count = view.visible.length;
  const top = scroller.scrollTop;
  const height = scroller.clientHeight || 600;
  const first = Math.max(0, Math.floor(top / ROW_HEIGHT) - OVERSCAN);
  const last = Math.min(count, Math.ceil((top + height) / ROW_HEIGHT) + OVERSCAN);
  const focused = document.activeElement;
  const focusedId = focused instanceof Element && rowsBox.contains(focused)
    ? focused.closest(".wf-row")?.dataset.spanId : null;
  const fragment = document.createDocumentFragment();
  for (let position = first; position < last; position += 1) {
    fragment.append(spanRow(view.visible[position], position));
  }
  if (!fragment.querySelector(".wf-select[tabindex='0']")) {
    // The selected row is scrolled away: keep the tree reachable with Tab.
    fragment.querySelector(".wf-select")?.setAttribute("tabindex", "0");
  }
  rowsBox.replaceChildren(fragment);
  rowsBox.dataset.rendered = String(last - first);
  rowsBox.dataset.visible = String(count);
  if (focusedId) focusRow(focusedId, false);
}

function queueRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    renderRows();
  });
}

function focusRow(spanId, scroll = true) {
  if (scroll) scrollToSpan(spanId);
  const row = rowsBox.querySelector(`.wf-row[data-span-id="${CSS.escape(spanId)}"]`);
  const button = row && row.querySelector(".wf-select");
  if (button) {
    rowsBox.querySelectorAll(".wf-select[tabindex='0']").forEach((b) => b.setAttribute("tabindex", "-1"));
    button.setAttribute("tabindex", "0");
    button.focus({ preventScroll: true });
  }
}

function scrollToSpan(spanId) {
  const position = view.visible.indexOf(view.byId.get(spanId));
  if (position < 0) return;
  const top = position * ROW_HEIGHT;
  const height = scroller.clientHeight;
  if (top < scroller.scrollTop || top + ROW_HEIGHT > scroller.scrollTop + height) {
    scroller.scrollTop = Math.max(0, top - height / 3);
  }
  renderRows();
}

function expandAncestors(index) {
  let changed = false;
  for (let p = view.parentIndex[index]; p >= 0; p = view.parentIndex[p]) {
    if (view.collapsed.delete(view.spans[p].span_id)) changed = true;
  }
  if (changed) recomputeVisible();
}

function toggle(spanId) {
  if (view.collapsed.has(spanId)) view.collapsed.delete(spanId);
  else view.collapsed.add(spanId);
  recomputeVisible();
  renderRows();
}

function selectSpan(spanId, { scroll = true, updateUrl = true, focus = false } = {}) {
  const index = view.byId.get(spanId);
  if (index === undefined) return;
  view.selected = spanId;
  expandAncestors(index);
  if (updateUrl) {
    history.replaceState(null, "", `${location.pathname}${location.search}#span=${encodeURIComponent(spanId)}`);
  }
  if (scroll) scrollToSpan(spanId);
  else renderRows();
  if (focus) focusRow(spanId, false);
  markTimeline();
  loadDetail(spanId);
}

function closeDetail() {
  view.selected = null;
  view.detailSeq += 1;
  $("detail").hidden = true;
  history.replaceState(null, "", `${location.pathname}${location.search}`);
  renderRows();
  markTimeline();
}

rowsBox.addEventListener("click", (event) => {
  const targetEl = event.target instanceof Element ? event.target : null;
  const row = targetEl && targetEl.closest(".wf-row");
  if (!row) return;
  const spanId = row.dataset.spanId;
  if (targetEl.closest("[data-action='toggle']")) {
    toggle(spanId);
    return;
  }
  selectSpan(spanId, { scroll: false, focus: true });
});

rowsBox.addEventListener("keydown", (event) => {
  const row = event.target instanceof Element ? event.target.closest(".wf-row") : null;
  if (!row) return;
  const spanId = row.dataset.spanId;
  const index = view.byId.get(spanId);
  const position = view.visible.indexOf(index);
  let next = null;
  switch (event.key) {
    case "ArrowDown": next = view.visible[position + 1]; break;
    case "ArrowUp": next = view.visible[position - 1]; break;
    case "Home": next = view.visible[0]; break;
    case "End": next = view.visible[view.visible.length - 1]; break;
    case "ArrowRight":
      if (view.childCount[index] > 0 && view.collapsed.has(spanId)) toggle(spanId);
      else if (view.childCount[index] > 0) next = view.visible[position + 1];
      break;
    case "ArrowLeft":
      if (view.childCount[index] > 0 && !view.collapsed.has(spanId)) toggle(spanId);
      else if (view.parentIndex[index] >= 0) next = view.parentIndex[index];
      break;
    default: return;
  }
  event.preventDefault();
  if (next !== null && next !== undefined) {
    selectSpan(view.spans[next].span_id, { scroll: true, focus: true });
  } else focusRow(spanId, false);
});

scroller.addEventListener("scroll", queueRender, { passive: true });
window.addEventListener("resize", queueRender);
$("w-expand").addEventListener("click", () => {
  view.collapsed.clear();
  recomputeVisible();
  renderRows();
});
$("w-collapse").addEventListener("click", () => {
  // Keep the roots and their children in view: collapse from depth 1 down.
  view.collapsed = new Set(view.spans.filter((s, i) => (s.depth || 0) >= 1 && view.childCount[i] > 0)
    .map((s) => s.span_id));
  recomputeVisible();
  scroller.scrollTop = 0;
  renderRows();
});
$("d-close").addEventListener("click", closeDetail);
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && view.selected && !event.defaultPrevented) closeDetail();
});
window.addEventListener("hashchange", () => {
  const wanted = hashSpan();
  if (wanted && wanted !== view.selected && view.byId.has(wanted)) selectSpan(wanted, { updateUrl: false });
});

// ---------------------------------------------------------------- span details

async function loadDetail(spanId) {
  const seq = ++view.detailSeq;
  const panel = $("detail");
  const index = view.byId.get(spanId);
  const summary = view.spans[index];
  panel.hidden = false;
  $("d-title").textContent = summary ? summary.name : spanId;
  const url = `/api/traces/${encodeURIComponent(view.doc.trace_id)}/spans/${encodeURIComponent(spanId)}`;
  let detail;
  try {
    detail = (await getJSON(url)).body;
  } catch (error) {
    if (seq !== view.detailSeq) return;
    $("d-body").replaceChildren(h("p", { className: "message message-error" },
      `Could not load the span: ${error instanceof Error ? error.message : String(error)}`));
    return;
  }
  if (seq !== view.detailSeq) return;
  renderDetail(detail);
}

function section(title, count, content, open = true) {
  const details = h("details", { className: "d-section", open });
  details.append(h("summary", null, title, count === null ? null : h("span", { className: "count" }, formatCount(count))), content);
  return details;
}

function renderDetail(span) {
  const body = [];
  const chips = h("div", { className: "d-chips" }, operationBadge(spanOperation(span)),
    h("span", { className: `badge badge-span-${String(span.status).toLowerCase()}` }, span.status),
    span.kind ? h("span", { className: "chip" }, span.kind) : null,
    span.pending ? h("span", { className: "badge badge-running" }, "running") : null);
  body.push(h("p", { className: "d-name" }, span.name), chips);
  if (span.status_message) {
    body.push(h("div", { className: span.status === "ERROR" ? "error-box" : "note-box" },
      span.status_message));
  }
  const facts = h("dl", { className: "facts facts-tight" });
  const parentIndex = span.parent_span_id ? view.byId.get(span.parent_span_id) : undefined;
  const parent = span.parent_span_id
    ? (parentIndex !== undefined
      ? h("button", { type: "button", className: "linkish mono", onclick: () => selectSpan(span.parent_span_id) },
        view.spans[parentIndex].name)
      : h("span", { className: "mono" }, span.parent_span_id))
    : "— (root)";
  facts.append(
    fact("Duration", span.duration_us === null || span.duration_us === undefined ? "running…" : formatUs(span.duration_us)),
    fact("Starts at", [`+${formatUs(span.start_us)}`, span.start_iso
      ? h("span", { className: "muted" }, ` · ${formatWhen(span.start_iso)}`) : null],
    { title: span.start_iso || "" }),
    fact("Span id", span.span_id, { className: "mono" }),
    fact("Parent", parent),
  );
  if (span.scope_name) {
    facts.append(fact("Scope", `${span.scope_name}${span.scope_version ? ` ${span.scope_version}` : ""}`));
  }
  body.push(facts);
  const attributes = span.attributes || {};
  body.push(section("Attributes", Object.keys(attributes).length,
    Object.keys(attributes).length ? kvTable(attributes) : h("p", { className: "muted small" }, "None.")));
  const events = span.events || [];
  if (events.length) {
    const list = h("ol", { className: "d-events" });
    for (const event of events) {
      list.append(h("li", { className: `d-event ${event.name === "exception" ? "is-exception" : ""}` },
        h("div", { className: "d-event-head" }, h("span", { className: "d-event-name" }, event.name),
          h("span", { className: "muted small" }, `+${formatUs(event.time_us)}`)),
        Object.keys(event.attributes || {}).length ? kvTable(event.attributes) : null));
    }
    body.push(section("Events", events.length, list));
  }
  const links = span.links || [];
  if (links.length) {
    const list = h("ul", { className: "d-links" });
    for (const link of links) {
      list.append(h("li", null,
        h("a", { className: "mono", href: `/traces/${encodeURIComponent(link.trace_id)}#span=${encodeURIComponent(link.span_id)}` },
          `${String(link.trace_id).slice(0, 12)}… / ${link.span_id}`),
        Object.keys(link.attributes || {}).length ? kvTable(link.attributes) : null));
    }
    body.push(section("Links", links.length, list));
  }
  body.push(section("Resource", Object.keys(span.resource || {}).length, kvTable(span.resource || {}), false));
  $("d-title").textContent = "Span";
  $("d-body").replaceChildren(...body);
}

// ---------------------------------------------------------------- timeline

const KIND_ICON = { decision: "◆", outcome: "●", problem: "▲" };

function renderTimeline(doc) {
  const items = doc.timeline || [];
  const list = $("t-list");
  const fragment = document.createDocumentFragment();
  for (const item of items) {
    const known = Object.hasOwn(KIND_ICON, item.kind) ? item.kind : "other";
    let tone = known;
    const attrs = item.attributes || {};
    if (item.kind === "outcome") {
      const success = attrs["agentbus.outcome.success"];
      tone = success === false ? "outcome-bad" : success === true ? "outcome-good" : "outcome";
    }
    const button = h("button", {
      type: "button", className: "tl-item", dataset: { spanId: item.span_id, kind: item.kind },
      title: Object.entries(attrs).map(([k, v]) => `${k} = ${valueText(v)}`).join("\n"),
    },
    h("span", { className: `tl-icon tone-${tone}`, "aria-hidden": "true" }, KIND_ICON[known] || "•"),
    h("span", { className: "tl-main" },
      h("span", { className: "tl-top" },
        h("span", { className: `tl-kind tone-${tone}` }, item.kind),
        h("span", { className: "tl-time muted" }, `+${formatUs(item.time_us)}`)),
      h("span", { className: "tl-summary" }, item.summary || item.name),
      h("span", { className: "tl-span muted" }, item.span_name || "")));
    button.addEventListener("click", () => selectSpan(item.span_id));
    fragment.append(h("li", null, button));
  }
  list.replaceChildren(fragment);
  $("t-empty").hidden = items.length > 0;
  $("t-count").textContent = items.length ? formatCount(items.length) : "";
  markTimeline();
}

function markTimeline() {
  for (const item of $("t-list").querySelectorAll(".tl-item")) {
    item.classList.toggle("is-current", item.dataset.spanId === view.selected);
  }
}

// ---------------------------------------------------------------- start

async function start() {
  decorateHeader();
  const where = target();
  if (!where) {
    showMessage("No run or trace in this address.");
    return;
  }
  view.apiUrl = `/api/${where.kind}/${encodeURIComponent(where.id)}`;
  $("crumb").textContent = where.kind === "runs" ? where.id : `trace ${where.id.slice(0, 12)}…`;
  await load(true);
}

start();
