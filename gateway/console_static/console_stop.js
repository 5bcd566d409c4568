// A fulfilment that stopped: a step was refused (retrying would not help) or its retries
// ran out, so the request waits, IN_PROGRESS with nothing scheduled, for an officer to
// reject it with a reason or approve it again (DataRequest.step_failure, set by
// services/privacy/data_request_fulfilment.py; kept on a request rejected after it, as the cause). The
// service gives codes and field names only, never a value; here they become words, with
// the raw codes beside them for support.
import { el, fields, stateOf } from "./console_lib.js";
import { coded, stepText, when } from "./console_labels.js";

// why a service refused a step (ErrorInfo reasons of accounts, points and privacy)
const REASONS = {
  PHONE_TAKEN: "the new phone number is already another member's",
  EMAIL_TAKEN: "the new email address is already another member's",
  MEMBER_CLOSED: "the member's account is closed",
  MEMBER_FROZEN: "the member's account is frozen",
  MEMBER_ERASED: "the member's personal information was erased",
  MEMBER_UNKNOWN: "points has not heard of this member",
  NOT_FOUND: "it does not know the member",
  LEDGER_TOO_LARGE: "the points ledger is too large to export",
  SUBJECT_KEY_DESTROYED: "the member's data key was destroyed (the member was erased)",
  CIPHERTEXT_UNREADABLE: "stored personal information could not be decrypted",
  EXPORT_NOT_BUILT: "the export bundle could not be built",
};

// the gRPC status, when no reason says more
const CODES = {
  INVALID_ARGUMENT: "the new values are not valid",
  ALREADY_EXISTS: "it conflicts with another record",
  FAILED_PRECONDITION: "the member's present state does not allow it",
  NOT_FOUND: "it does not know the member",
  PERMISSION_DENIED: "the privacy service may not make this call",
  UNAUTHENTICATED: "the privacy service's token was refused",
  UNAVAILABLE: "it could not be reached",
  DEADLINE_EXCEEDED: "it did not answer in time",
  RESOURCE_EXHAUSTED: "it was overloaded",
  ABORTED: "the call was aborted",
  INTERNAL: "it failed internally",
  UNKNOWN: "it failed",
};

const FIELDS = {
  "correction.phone": "phone number",
  "correction.email": "email address",
  "correction.display_name": "display name",
};

const SERVICES = { accounts: "accounts service", points: "points service", privacy: "privacy service" };

// the request's step failure while it waits for a decision, or null
export const stoppedOf = (r) => (r && stateOf(r) === "IN_PROGRESS" && r.stepFailure) || null;
// a stop told apart from an earlier one (a request approved again may stop again, within
// the same second): its time and how many stops the timeline holds
export function stopId(r) {
  if (!r || !r.stepFailure) return "";
  const stops = (r.events || []).filter((e) => e.action === "fulfilment.stopped").length;
  return `${r.stepFailure.createTime || "?"}#${stops}`;
}

const serviceName = (f) => SERVICES[f.service] || `${f.service || "?"} service`;

// "the accounts service refused it: the new phone number is already another member's"
export function whyText(f) {
  const reason = f.reason && f.reason !== f.code ? REASONS[f.reason] : "";
  const words = reason || CODES[f.code] || `it failed with ${f.code || "?"}`;
  if (f.retriesExhausted) return `the ${serviceName(f)} failed every attempt (${words}) and the retries ran out`;
  const named = (f.fields || []).map((name) => FIELDS[name] || name);
  return `the ${serviceName(f)} refused it: ${words}${named.length ? ` (${named.join(", ")})` : ""}`;
}

function fieldList(names) {
  return el("span", {}, ...names.flatMap((name, i) => [
    i ? ", " : "", coded(FIELDS[name] || name, name),
  ]));
}

// the stop box's content: what stopped, who refused, why, what the officer can do
export function stopDetails(r) {
  const f = r.stepFailure;
  const waiting = Boolean(stoppedOf(r));
  const partly = (r.steps || []).some((s) => s.doneTime);
  const title = waiting
    ? `Stopped — needs a decision: “${stepText(f.step)}” did not go through.`
    : `Fulfilment had stopped at “${stepText(f.step)}” before the request was ${stateOf(r).toLowerCase()}.`;
  const code = [f.code, f.reason && f.reason !== f.code ? f.reason : ""].filter(Boolean).join(" ");
  const pairs = [
    ["Step", coded(stepText(f.step), f.step)],
    ["Service", serviceName(f)],
    ["Why", coded(whyText(f), code || "?")],
  ];
  if (f.fields && f.fields.length) pairs.push(["Fields", fieldList(f.fields)]);
  pairs.push(["Retried", f.retriesExhausted
    ? "yes, until the retries ran out" : "no: a refusal, retrying would not help"]);
  pairs.push(["Stopped", when(f.createTime)]);
  const hint = !waiting ? ""
    : partly
      ? "Nothing more happens on its own. Part of the request was already fulfilled, so it can no longer be rejected: approve it again once the cause is gone."
      : "Nothing more happens on its own. Approve it again once the cause is gone (e.g. the other member gave the number up): the step runs again. Or reject it with a reason told to the member.";
  return { title, items: fields(pairs), hint };
}
