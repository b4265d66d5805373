// Shared helpers of the web view. Every value from the API reaches the page through
// textContent or createElement: nothing here parses HTML.

/** Build an element: h("a", {href: "/x", className: "y"}, "text", child, ...). */
export function h(tag, props, ...children) {
  const node = document.createElement(tag);
  if (props) {
    for (const [key, value] of Object.entries(props)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "className") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key === "hidden") node.hidden = Boolean(value);
      else if (key.startsWith("on")) {
        if (typeof value === "function") node.addEventListener(key.slice(2), value);
      } else if (key !== "style") node.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : String(child));
  }
}

/** An error from the API with its HTTP status. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** GET a JSON document; {status: 304} when it did not change since `etag`. */
export async function getJSON(url, etag) {
  const headers = { Accept: "application/json" };
  if (etag) headers["If-None-Match"] = etag;
  const response = await fetch(url, { headers, credentials: "same-origin", cache: "no-store" });
  if (response.status === 304) return { status: 304, etag, body: null };
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const text = body && typeof body.error === "string" ? body.error : response.statusText;
    throw new ApiError(response.status, text || `HTTP ${response.status}`);
  }
  return { status: response.status, etag: response.headers.get("ETag"), body };
}

let configPromise = null;
/** /api/config, fetched once per page. */
export function config() {
  if (!configPromise) {
    configPromise = getJSON("/api/config").then((r) => r.body).catch(() => ({
      version: "", title: "otel-agentbus", jaeger_url: null, grafana_url: null, poll_ms: 1000,
    }));
  }
  return configPromise;
}

/** Fill the header's title and version from the config. */
export async function decorateHeader() {
  const cfg = await config();
  const title = document.getElementById("app-title");
  if (title && cfg.title) title.textContent = cfg.title;
  const version = document.getElementById("version");
  if (version && cfg.version) version.textContent = `v${cfg.version}`;
  return cfg;
}

/** Show a message in #message (kind: "error" | "info"), or hide it with null. */
export function showMessage(text, kind = "error", action = null) {
  const box = document.getElementById("message");
  if (!box) return;
  box.replaceChildren();
  if (text === null) {
    box.hidden = true;
    return;
  }
  box.className = `message message-${kind}`;
  box.append(text);
  if (action) box.append(" ", action);
  box.hidden = false;
}

/** The message for a failed request, with a sign-in link on 401. */
export function reportError(error) {
  if (error instanceof ApiError && error.status === 401) {
    showMessage("Not signed in, or the session expired.", "error",
      h("a", { href: location.pathname + location.search }, "Sign in"));
  } else {
    showMessage(error instanceof Error ? error.message : String(error));
  }
}

/** A duration given in microseconds, short: 840 µs, 12.3 ms, 4.21 s, 3 m 05 s. */
export function formatUs(us) {
  if (us === null || us === undefined || !Number.isFinite(us)) return "—";
  if (us < 1) return `${(us * 1000).toFixed(0)} ns`;
  if (us < 1000) return `${us.toFixed(us < 10 ? 1 : 0)} µs`;
  const ms = us / 1000;
  if (ms < 1000) return `${ms.toFixed(ms < 10 ? 2 : ms < 100 ? 1 : 0)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} m ${String(Math.floor(s % 60)).padStart(2, "0")} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} m`;
}

export function formatMs(ms) {
  return ms === null || ms === undefined ? "—" : formatUs(ms * 1000);
}

/** An ISO time as local "Dec 7, 18:00:01.123" (the full ISO value goes in title). */
export function formatWhen(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  const now = new Date();
  const sameDay = date.toDateString() === now.toDateString();
  const time = date.toLocaleTimeString(undefined, { hour12: false, hour: "2-digit",
    minute: "2-digit", second: "2-digit" });
  const ms = String(date.getMilliseconds()).padStart(3, "0");
  if (sameDay) return `${time}.${ms}`;
  const day = date.toLocaleDateString(undefined, { month: "short", day: "numeric" });
  return `${day}, ${time}`;
}

export function formatCount(n) {
  return n === null || n === undefined ? "—" : Number(n).toLocaleString("en-US");
}

/** "running" → a status badge element. */
export function statusBadge(status) {
  const known = ["running", "completed", "failed", "cancelled"];
  const cls = known.includes(status) ? status : "other";
  return h("span", { className: `badge badge-${cls}` }, status || "unknown");
}

const OPERATIONS = {
  invoke_agent: ["agent", "op-agent"],
  chat: ["chat", "op-chat"],
  text_completion: ["llm", "op-chat"],
  generate_content: ["llm", "op-chat"],
  embeddings: ["embed", "op-chat"],
  execute_tool: ["tool", "op-tool"],
  invoke_workflow: ["step", "op-workflow"],
  create_agent: ["agent", "op-agent"],
};

/** A span's operation: its gen_ai.operation.name, else the first word of a GenAI-style
 * name ("invoke_agent planner"), as on the pending record that stands in for a run. */
export function spanOperation(span) {
  if (span.operation) return span.operation;
  const first = String(span.name || "").split(" ", 1)[0];
  return Object.hasOwn(OPERATIONS, first) ? first : null;
}

/** The operation's short label and CSS class (bar colour). */
export function operationInfo(operation) {
  if (!operation) return ["", "op-none"];
  return Object.hasOwn(OPERATIONS, operation) ? OPERATIONS[operation]
    : [String(operation).slice(0, 8), "op-other"];
}

export function operationBadge(operation) {
  const [label, cls] = operationInfo(operation);
  if (!label) return null;
  return h("span", { className: `op-badge ${cls}`, title: operation }, label);
}

/** An attribute value as text: strings as they are, the rest as JSON. */
export function valueText(value) {
  if (typeof value === "string") return value;
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}

/** A two-column table of key → value (sorted by key). */
export function kvTable(object, className = "kv") {
  const table = h("table", { className });
  const body = h("tbody");
  const keys = Object.keys(object || {}).sort();
  for (const key of keys) {
    const value = object[key];
    body.append(h("tr", null,
      h("th", { scope: "row" }, key),
      h("td", { className: typeof value === "string" ? "v-str" : "v-json" }, valueText(value))));
  }
  table.append(body);
  return table;
}

/** External links (Jaeger / Grafana) as anchors opening in a new tab. */
export function externalLinks(links) {
  const out = [];
  if (!links) return out;
  for (const [key, label] of [["jaeger", "Jaeger"], ["grafana", "Grafana"]]) {
    const url = links[key];
    if (typeof url === "string" && /^https?:\/\//i.test(url)) {
      out.push(h("a", { className: "ext-link", href: url, target: "_blank",
        rel: "noopener noreferrer" }, `${label} ↗`));
    }
  }
  return out;
}

/** Only same-origin paths from the API become hrefs. */
export function localHref(path) {
  return typeof path === "string" && path.startsWith("/") && !path.startsWith("//") ? path : null;
}

/** Setting a live indicator in the header. */
export function setLive(on) {
  const live = document.getElementById("live");
  if (live) live.hidden = !on;
}
