// The officer's actions on the request shown: verify identity, approve and fulfil, reject
// with a reason, extend the deadline, cancel on the member's behalf, download the export,
// show the member (in clear only with a stated purpose). Each one is offered only in the
// states the service allows it from (console_detail.showActions); the service decides.
//
// Approving (again), rejecting, extending and cancelling carry an idempotency key
// (`requestId`): one per officer action, made when it is first submitted and kept while the
// same submission is sent again — a double click, the automatic retry after a network
// failure or a gateway that could not answer, the officer pressing again after a lost
// answer — so the service replays the first result instead of refusing it (a request
// closed twice is ILLEGAL_TRANSITION) or doing it twice (two extensions). "The same
// submission" is the same request, in the state and with the stop shown, the same action
// and the same values; an answer ends it, so the next action gets a new key.
import {
  $, api, CallError, csrfToken, el, errorText, fields, label, newRequestId, say, stateOf,
} from "./console_lib.js";
import { filterAuditBySubject } from "./console_audit.js";
import {
  closeRequest, currentRequest, idOf, openRequest, show, showActions,
} from "./console_detail.js";
import { dueOf } from "./console_labels.js";
import { stopId } from "./console_stop.js";
import { filterByMember, loadQueue } from "./console_queue.js";

const MAX_EXTENSION_DAYS = 90; // the service's cap on the total
const MAX_EXTENSION_REASON = 200;
const RETRY_MS = 1000;
const MAX_PENDING = 100; // submissions not answered yet, each with its key
const pending = new Map(); // submission -> idempotency key

function submission(r, path, values) {
  return JSON.stringify([r.name, stateOf(r), stopId(r), path, values]);
}

function keyOf(what) {
  let key = pending.get(what);
  if (!key) {
    if (pending.size >= MAX_PENDING) pending.delete(pending.keys().next().value);
    key = newRequestId();
    pending.set(what, key);
  }
  return key;
}

// no answer, or the gateway's "could not answer" (the call may have been done)
const unanswered = (err) => !(err instanceof CallError) || [502, 503, 504].includes(err.status);
const pause = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

// the request after the action, or null when it was refused (the refusal is said). `keyed`:
// the body gets the submission's idempotency key, and an unanswered call is sent once more
async function act(what, path, body, keyed = false) {
  const current = currentRequest();
  if (!current) return null;
  const which = keyed ? submission(current, path, body) : "";
  const sent = keyed ? { ...body, requestId: keyOf(which) } : body;
  for (let attempt = 1; ; attempt += 1) {
    try {
      const updated = await api("POST", `${current.name}:${path}`, sent);
      pending.delete(which);
      say(`${what}: ${idOf(updated)} is now ${label(updated.state, "DATA_REQUEST_STATE_")}.`);
      show(updated);
      loadQueue();
      return updated;
    } catch (err) {
      if (keyed && unanswered(err) && attempt === 1) {
        await pause(RETRY_MS); // the same key: done once, whichever call got through
        continue;
      }
      const text = (err instanceof CallError ? err.message : `no answer (${err.message})`).replace(/\.$/, "");
      const again = keyed && unanswered(err)
        ? " Sending it again is safe: the same submission is not done twice." : "";
      say(`${what} refused: ${text}.${again}`, true);
      return null;
    }
  }
}

async function download() {
  const current = currentRequest();
  if (!current) return;
  const id = idOf(current);
  $("#export-btn").disabled = true;
  try {
    const response = await fetch(`/console/export/${encodeURIComponent(id)}`, {
      method: "POST", headers: { "X-CSRF-Token": csrfToken() }, credentials: "same-origin",
    });
    if (!response.ok) {
      let body = {};
      try { body = await response.json(); } catch (_) { body = {}; }
      throw new Error(errorText(body, response.status));
    }
    const url = URL.createObjectURL(await response.blob());
    const link = el("a", { href: url, download: `export-${id}.zip`, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    say(`Export of ${id} downloaded.`);
  } catch (err) {
    say(`Download refused: ${err.message}`, true);
  }
  openRequest(current.name); // downloads left changed
}

async function showMember(purpose) {
  const current = currentRequest();
  if (!current) return;
  const query = purpose ? `?view=MEMBER_VIEW_FULL&purpose=${encodeURIComponent(purpose)}` : "";
  try {
    const m = await api("GET", `${current.member}${query}`);
    $("#member-fields").replaceChildren(...fields([
      ["View", label(m.view || "MEMBER_VIEW_MASKED", "MEMBER_VIEW_")],
      ["Phone", m.phone || ""], ["Email", m.email || ""], ["Name", m.displayName || ""],
      ["Status", label(m.status, "MEMBER_STATUS_")],
    ]));
  } catch (err) {
    say(`Member refused: ${err.message}`, true);
  }
}

// a refusal of the form before any call: said, and the field focused
function refuse(text, field) {
  say(text, true);
  $(field).focus();
  return false;
}

async function extend() {
  const days = Number($("#extend-days").value);
  const reason = $("#extend-reason").value.trim();
  if (!Number.isInteger(days) || days < 1 || days > MAX_EXTENSION_DAYS) {
    return refuse(`Give the extension in whole working days, 1 to ${MAX_EXTENSION_DAYS}.`, "#extend-days");
  }
  if (!reason) return refuse("A reason is required to extend a deadline (it is told to the member).", "#extend-reason");
  if (reason.length > MAX_EXTENSION_REASON) {
    return refuse(`The reason is at most ${MAX_EXTENSION_REASON} characters.`, "#extend-reason");
  }
  $("#extend-btn").disabled = true; // one click, one extension
  const body = { extraWorkingDays: days, reason };
  const updated = await act("Deadline extended", "extendDeadline", body, true);
  if (!updated) {
    const current = currentRequest();
    if (current) showActions(current);
    return false;
  }
  say(`Deadline of ${idOf(updated)} extended by ${days} working day(s): now due ${dueOf(updated)} (Beijing date).`);
  $("#extend-days").value = "";
  $("#extend-reason").value = "";
  return true;
}

async function cancel() {
  if (!$("#cancel-confirm").checked) {
    return refuse("Confirm that the member asked to withdraw the request before cancelling it.", "#cancel-confirm");
  }
  $("#cancel-btn").disabled = true;
  const updated = await act("Cancelled", "cancel", {}, true);
  $("#cancel-confirm").checked = false;
  if (!updated) {
    const current = currentRequest();
    if (current) showActions(current);
  }
  return Boolean(updated);
}

function submitting(form, handler) {
  $(form).addEventListener("submit", (event) => {
    event.preventDefault();
    handler();
  });
}

export function initActions() {
  $("#detail-close").addEventListener("click", closeRequest);
  submitting("#verify-form", async () => {
    const code = $("#verify-code").value.trim();
    if (!code) { refuse("Enter the one-time code the member received.", "#verify-code"); return; }
    if (await act("Identity verified", "verifyIdentity", { code })) $("#verify-code").value = "";
  });
  $("#approve-btn").addEventListener("click", () => {
    const current = currentRequest();
    const what = current && current.stepFailure ? "Approved again" : "Approved";
    $("#approve-btn").disabled = true; // one click, one fulfilment
    act(what, "approve", {}, true).then((ok) => {
      const shown = currentRequest();
      if (!ok && shown) showActions(shown);
    });
  });
  submitting("#reject-form", async () => {
    const reason = $("#reject-reason").value.trim();
    if (!reason) { refuse("A reason is required to reject a request (it is told to the member).", "#reject-reason"); return; }
    $("#reject-btn").disabled = true; // one click, one rejection
    if (await act("Rejected", "reject", { reason }, true)) {
      $("#reject-reason").value = "";
      return;
    }
    const current = currentRequest();
    if (current) showActions(current);
  });
  submitting("#extend-form", extend);
  submitting("#cancel-form", cancel);
  $("#export-btn").addEventListener("click", download);
  submitting("#member-form", () => {
    const purpose = $("#member-purpose").value.trim();
    if (!purpose) {
      say("State a purpose to see the member in clear; without one the view stays masked.", true);
      showMember("");
      return;
    }
    showMember(purpose).then(() => { $("#member-purpose").value = ""; });
  });
  $("#member-requests").addEventListener("click", () => {
    const current = currentRequest();
    if (current) filterByMember(current.member);
  });
  $("#member-audit").addEventListener("click", () => {
    const current = currentRequest();
    if (current) filterAuditBySubject(current.member);
  });
}
