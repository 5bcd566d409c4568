// Shared helpers of the console's modules: DOM building, the status line, calls to
// /console/* with the session's CSRF token, the page address's query, API values.

export const $ = (sel) => document.querySelector(sel);

let csrf = "";
let onSignedOut = () => {};

export function setCsrf(token) { csrf = token || ""; }
export const csrfToken = () => csrf;
// what to do when the server says the session is gone (set once by the main module)
export function whenSignedOut(callback) { onSignedOut = callback; }

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
  }
  return node;
}

// the page-wide status line (role="status"): one message at a time
export function say(text, isError = false) {
  const box = $("#message");
  box.textContent = text;
  box.className = isError ? "error" : "";
  box.hidden = !text;
}

export function errorText(body, status) {
  const err = body && body.error;
  if (!err) return `request failed (${status})`;
  const info = (err.details || []).find((d) => d.reason);
  return info ? `${err.message} [${info.reason}]` : err.message || err.reason || `failed (${status})`;
}

// a refused call: the message for people, the HTTP status for code that tells cases apart
export class CallError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

export async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let payload = {};
  try { payload = await response.json(); } catch (_) { payload = {}; }
  if (response.status === 401 && path.startsWith("/console/api")) onSignedOut();
  if (!response.ok) throw new CallError(errorText(payload, response.status), response.status);
  return payload;
}

export const api = (method, path, body) => call(method, `/console/api/v1/${path}`, body);

export const short = (value, prefix) => (value || "").replace(prefix, "");
export const label = (value, prefix) => short(value, prefix).toLowerCase().replace(/_/g, " ");
export const stateOf = (r) => short(r && r.state, "DATA_REQUEST_STATE_");
export const typeOf = (r) => short(r && r.type, "DATA_REQUEST_TYPE_");

// proto3 JSON leaves zeros out and writes int64 as strings: a missing or odd value is 0
export function count(value) {
  const n = Number(value ?? 0);
  return Number.isFinite(n) && n >= 0 ? n : 0;
}

// an idempotency key; getRandomValues, unlike randomUUID, works on plain-http pages too
export function newRequestId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `console-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

export const fields = (pairs) => pairs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]);

// The page address's query keeps the panels' filters, so a reload (or a shared link)
// shows the same; each panel owns its own parameter names.
export const pageQuery = () => new URLSearchParams(window.location.search);

export function setPageQuery(names, values) {
  const query = pageQuery();
  for (const name of names) query.delete(name);
  for (const [name, value] of values) if (value) query.append(name, value);
  const search = query.toString();
  window.history.replaceState(null, "", `${window.location.pathname}${search ? `?${search}` : ""}`);
}
