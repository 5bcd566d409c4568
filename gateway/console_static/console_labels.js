// Words for what the API returns as codes, and times as the officers read them.
//
// Deadlines are Beijing dates (the service counts working days on the China calendar), so
// every time is shown in Asia/Shanghai too, whatever the browser's own zone, with its offset
// written out. Step and action codes get a human label; the raw code stays visible in small
// type and in the tooltip, for support.
import { el, label } from "./console_lib.js";

export const ZONE = "Asia/Shanghai";
export const ZONE_LABEL = "Beijing time, UTC+8";
const OFFSET = "UTC+8"; // China has kept one offset, without daylight saving, since 1991

function formatter(withSeconds) {
  return new Intl.DateTimeFormat("en-CA", {
    timeZone: ZONE, year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: withSeconds ? "2-digit" : undefined, hourCycle: "h23",
  });
}
const MINUTES = formatter(false);
const SECONDS = formatter(true);

function beijing(ts, withSeconds) {
  const date = new Date(ts);
  if (Number.isNaN(date.getTime())) return "—";
  const p = Object.fromEntries((withSeconds ? SECONDS : MINUTES).formatToParts(date)
    .map((part) => [part.type, part.value]));
  const clock = withSeconds ? `${p.hour}:${p.minute}:${p.second}` : `${p.hour}:${p.minute}`;
  return `${p.year}-${p.month}-${p.day} ${clock} ${OFFSET}`;
}

// "2026-12-07 15:04 UTC+8" (Beijing time); seconds for the audit log
export const when = (ts) => (ts ? beijing(ts, false) : "—");
export const whenExact = (ts) => (ts ? beijing(ts, true) : "—");

// a datetime-local value read as Beijing time, as the RFC 3339 instant the API takes
export function fromBeijingInput(value) {
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$/.test(value || "")) return "";
  const date = new Date(`${value.length === 16 ? `${value}:00` : value}+08:00`);
  return Number.isNaN(date.getTime()) ? "" : date.toISOString();
}

const pad = (n) => String(n).padStart(2, "0");
// a google.type.Date, which for a deadline is a Beijing date
export const dueOf = (r) => (r && r.dueDate
  ? `${r.dueDate.year}-${pad(r.dueDate.month)}-${pad(r.dueDate.day)}` : "—");

// fulfilment steps (services/privacy/data_requests.py STEPS)
const STEPS = {
  "export.build": "Build the export bundle",
  "accounts.update": "Correct the profile in accounts",
  "subject_key.destroy": "Destroy the member's data key",
  "accounts.erase": "Erase the profile in accounts",
  "points.restrict": "Restrict the points ledger",
  "points.explain": "Explain the points rules",
  "processing.pause": "Pause processing in points",
  "consents.withdraw": "Withdraw the consents",
};

// timeline actions (services/privacy/data_requests.py and data_request_fulfilment.py)
const ACTIONS = {
  created: "Request received",
  "verification_code.issued": "Verification code sent to the member",
  "verification_code.wrong": "Wrong verification code entered",
  identity_verified: "Identity verified",
  approved: "Approved for fulfilment",
  resumed: "Approved again: fulfilment resumed",
  completed: "Fulfilment completed",
  "fulfilment.stopped": "Fulfilment stopped: waiting for an officer to approve again or reject",
  rejected: "Rejected",
  cancelled: "Cancelled",
  "deadline.extended": "Deadline extended",
  reapplied_after_restore: "Erasure re-applied after a restore",
};

// audit actions other than data requests' own (services/privacy)
const AUDIT = {
  "fields.decrypt": "Personal information read in clear",
  "fields.decrypt_refused": "Reading in clear refused",
  "consent.grant": "Consent given",
  "consent.withdraw": "Consent withdrawn",
  "kek.rotate": "Key-encryption key rotated",
  "subject_key.destroy": "Member's data key destroyed",
  "export.downloaded": "Export downloaded",
  "export.purged": "Export purged",
};

// an unknown code still reads as words ("new_thing.done" -> "new thing done")
const fallback = (code) => label(code || "?", "").replace(/\./g, " ");

export const stepText = (code) => STEPS[code] || fallback(code);

// `stopped`, for a step's failure: whether fulfilment stopped right after it (true), went
// on to retry it (false), or is not known here (undefined: an audit event seen alone)
export function actionText(code, stopped = undefined) {
  if (ACTIONS[code]) return ACTIONS[code];
  const failed = /^step\.(.+)\.failed$/.exec(code || "");
  if (failed) {
    const step = stepText(failed[1]);
    return stopped === false ? `Step failed, will be retried: ${step}` : `Step failed: ${step}`;
  }
  const done = /^step\.(.+)$/.exec(code || "");
  if (done) return `Step done: ${stepText(done[1])}`;
  return fallback(code);
}

export function auditText(code) {
  if (AUDIT[code]) return AUDIT[code];
  if ((code || "").startsWith("data_request.")) {
    return `Data request: ${actionText(code.slice("data_request.".length)).toLowerCase()}`;
  }
  return fallback(code);
}

// the label with its raw code beside it, small, and in the tooltip
export function coded(text, code, tag = "span") {
  return el(tag, { class: "coded", title: code, "data-code": code },
    text, " ", el("code", { class: "raw" }, code));
}
