// One data request: its fields, where fulfilment stands and its timeline; the officer's
// actions are in console_actions.js. Approving fulfils the request at once through the
// other services (there is no separate "complete" step), so after approving the panel
// follows the request until it leaves IN_PROGRESS, for a bounded time, and then offers the
// export if there is one. A fulfilment that stopped (a step refused, or its retries used
// up: console_stop.js) is not followed: it waits for the officer, who is told what stopped
// and offered "Approve again" and "Reject". Times are Beijing time; actors are named by
// their key's name.
import { $, api, el, fields, label, say, short, stateOf, typeOf } from "./console_lib.js";
import { actionText, coded, dueOf, stepText, when } from "./console_labels.js";
import { actorNode, nameActors } from "./console_names.js";
import { loadQueue, markSelected } from "./console_queue.js";
import { stopDetails, stopId, stoppedOf, whyText } from "./console_stop.js";

const POLL_MS = 1000;
const POLL_LIMIT = 30; // then fulfilment is left to the service's background resumption
const EXPORTING = new Set(["ACCESS", "PORTABILITY"]);
export const FINAL = new Set(["COMPLETED", "REJECTED", "CANCELLED"]);
// what the service allows each action from (services/privacy/data_requests.py)
const EXTENDABLE = new Set(["RECEIVED", "IDENTITY_VERIFIED", "IN_PROGRESS"]);
const CANCELLABLE = new Set(["RECEIVED", "IDENTITY_VERIFIED"]);
const APPROVE_NOTE = "Fulfilment starts at once through the other services and completes by itself; if one is down it resumes in the background.";
const APPROVE_AGAIN_NOTE = "Runs the stopped step again, as a new approval: only once its cause is gone. If it is refused again, the request stops again.";

let current = null; // the request shown
let pollTimer = 0;

export const currentRequest = () => current;
export const idOf = (r) => short(r.name, "dataRequests/");

function deadline(r) {
  const parts = [`${dueOf(r)} (Beijing date)`];
  if (r.dueTime) parts.push(`overdue from ${when(r.dueTime)}`);
  if (r.workingDays) parts.push(`${r.workingDays} working day(s) in total`);
  let text = parts.join("; ");
  if (r.overdue) text += " — OVERDUE";
  if (r.deadlineProvisional) text += " (provisional: that year's official holiday schedule is not loaded yet)";
  return text;
}

function extension(x) {
  return el("div", {}, `+${x.extraWorkingDays || 0} working day(s), ${when(x.createTime)}, by `,
    actorNode(x.actor), x.reason ? `: ${x.reason}` : "");
}

function detailFields(r) {
  const pairs = [
    ["Type", label(r.type, "DATA_REQUEST_TYPE_")],
    ["State", label(r.state, "DATA_REQUEST_STATE_")],
    ["Member", short(r.member, "members/")],
    ["Received", when(r.createTime)],
    ["Due", deadline(r)],
    ["Channel", label(r.channel, "CHANNEL_")],
  ];
  if (r.extensions && r.extensions.length) {
    pairs.push(["Extensions", el("div", {}, ...r.extensions.map(extension))]);
  }
  if (r.rejectionReason) pairs.push(["Rejection reason", r.rejectionReason]);
  if (r.purposes && r.purposes.length) pairs.push(["Purposes", r.purposes.join(", ")]);
  if (r.correction) {
    pairs.push(["Correction", Object.entries(r.correction).map(([k, v]) => `${k}: ${v}`).join(", ")]);
  }
  return pairs;
}

// what the officer is told about fulfilment, state by state
function progressText(r) {
  const steps = r.steps || [];
  const done = steps.filter((s) => s.doneTime).length;
  switch (stateOf(r)) {
    case "RECEIVED": return "Waiting for the member's identity to be verified.";
    case "IDENTITY_VERIFIED": return "Identity verified. Approving fulfils the request at once.";
    case "IN_PROGRESS": return stoppedOf(r)
      ? `Stopped at “${stepText(r.stepFailure.step)}” with ${done} of ${steps.length} step(s) done: waiting for an officer's decision.`
      : `Fulfilling: ${done} of ${steps.length} step(s) done.`;
    case "COMPLETED": return `Completed ${when(r.updateTime)}.${r.deletionOutcome
      ? ` Outcome: ${label(r.deletionOutcome, "DELETION_OUTCOME_")}.` : ""}`;
    case "REJECTED": return "Rejected; the member is told the reason.";
    case "CANCELLED": return "Cancelled (withdrawn by the member).";
    default: return "";
  }
}

function stepItem(s, stoppedAt) {
  const stopped = stoppedAt === s.step && !s.doneTime;
  const status = s.doneTime ? `done ${when(s.doneTime)}`
    : stopped ? `stopped (last attempt: ${s.lastError || "?"})`
      : s.lastError ? `waiting (last attempt: ${s.lastError})` : "pending";
  return el("li", { class: s.doneTime ? "done" : stopped ? "stopped" : "pending", "data-step": s.step },
    coded(stepText(s.step), s.step), ` · ${status}`);
}

// what stopped and why; on a rejected request the failure stays, as the cause
function showStop(r) {
  const box = $("#stop-box");
  box.hidden = !r.stepFailure;
  box.classList.toggle("waiting", Boolean(stoppedOf(r)));
  if (!r.stepFailure) return;
  const { title, items, hint } = stopDetails(r);
  $("#stop-title").textContent = title;
  $("#stop-fields").replaceChildren(...items);
  $("#stop-hint").textContent = hint;
  $("#stop-hint").hidden = !hint;
}

function showProgress(r, note = "") {
  const box = $("#progress");
  box.className = `progress state-${stateOf(r).toLowerCase()}${stoppedOf(r) ? " stopped" : ""}`;
  $("#progress-text").textContent = progressText(r) + (note ? ` ${note}` : "");
  const stoppedAt = stoppedOf(r) ? r.stepFailure.step : "";
  $("#steps").replaceChildren(...(r.steps || []).map((s) => stepItem(s, stoppedAt)));
  showStop(r);
  const exportable = stateOf(r) === "COMPLETED" && EXPORTING.has(typeOf(r));
  $("#export-box").hidden = !exportable;
  if (!exportable) return;
  const e = r.export;
  const usable = Boolean(e && !e.purged && (e.downloadsRemaining ?? 0) > 0);
  $("#export-info").textContent = !e ? "The export is being prepared."
    : usable ? `${e.downloadsRemaining} download(s) left, until ${when(e.expireTime)}.`
      : "The export is no longer available (purged or downloaded the last time).";
  $("#export-btn").disabled = !usable;
}

// only the actions the request's state allows are offered
export function showActions(r) {
  const state = stateOf(r);
  const stopped = Boolean(stoppedOf(r));
  // what was done for the member cannot be taken back: the service refuses to reject then
  const partly = (r.steps || []).some((s) => s.doneTime);
  const off = (disabled, ...ids) => { for (const id of ids) $(id).disabled = disabled; };
  off(state !== "RECEIVED", "#verify-code", "#verify-btn");
  off(state !== "IDENTITY_VERIFIED" && !stopped, "#approve-btn");
  $("#approve-btn").textContent = stopped ? "Approve again" : "Approve and fulfil";
  $("#approve-note").textContent = stopped ? APPROVE_AGAIN_NOTE : APPROVE_NOTE;
  off(FINAL.has(state) || (state === "IN_PROGRESS" && partly), "#reject-reason", "#reject-btn");
  off(!EXTENDABLE.has(state), "#extend-days", "#extend-reason", "#extend-btn");
  off(!CANCELLABLE.has(state), "#cancel-confirm", "#cancel-btn");
  $("#actions-hint").textContent = FINAL.has(state) ? "The request is final: no more actions."
    : state === "RECEIVED" ? "Verify the member's identity before approving."
      : stopped && partly ? "Fulfilment stopped after part of it was done: approve it again once the cause is gone (it can no longer be rejected or cancelled)."
        : stopped ? "Fulfilment stopped and waits for you: approve it again once the cause is gone, or reject it with a reason. It can no longer be cancelled."
          : state === "IN_PROGRESS" && partly ? "Fulfilment is running and part of it is done: it can no longer be rejected or cancelled."
            : state === "IN_PROGRESS"
              ? "Fulfilment is running; it can still be rejected if it cannot finish. It can no longer be cancelled."
              : "";
}

// a step's failure reads "will be retried" only when fulfilment did not stop right after it
function timelineItem(e, i, events) {
  const next = events[i + 1];
  const stopped = /^step\..+\.failed$/.test(e.action || "") ? Boolean(next && next.action === "fulfilment.stopped") : undefined;
  return el("li", { "data-action": e.action },
    coded(actionText(e.action, stopped), e.action, "strong"), " · ", label(e.state, "DATA_REQUEST_STATE_"),
    " · ", el("span", { class: "muted" }, `${when(e.createTime)} by `), actorNode(e.actor),
    e.note ? el("div", { class: "muted" }, e.note) : "");
}

export function show(r, polls = 0) {
  const switched = !current || current.name !== r.name;
  // a fulfilment followed here ended, or stopped (anew: a request approved again may stop again)
  const finished = !switched && stateOf(current) === "IN_PROGRESS" && !stoppedOf(current)
    && stateOf(r) !== "IN_PROGRESS";
  const stopped = !switched && Boolean(stoppedOf(r)) && stopId(r) !== stopId(current);
  current = r;
  markSelected(r.name);
  $("#detail-title").textContent = `Request ${idOf(r)}`;
  $("#detail-fields").replaceChildren(...fields(detailFields(r)));
  $("#timeline").replaceChildren(...(r.events || []).map(timelineItem));
  nameActors($("#detail"));
  if (switched) $("#member-fields").replaceChildren();
  showProgress(r);
  showActions(r);
  $("#detail").hidden = false;
  if (finished) {
    say(`Fulfilment of ${idOf(r)} ended: ${label(r.state, "DATA_REQUEST_STATE_")}.`);
    loadQueue();
  } else if (stopped) {
    say(`Fulfilment of ${idOf(r)} stopped at “${stepText(r.stepFailure.step)}”: ${whyText(r.stepFailure)}. It needs a decision: approve again or reject.`, true);
    loadQueue();
  }
  follow(r, polls);
}

// while fulfilment runs, read the request again every second, a bounded number of times; a
// stopped one has nothing scheduled, so there is nothing to follow
function follow(r, polls) {
  clearTimeout(pollTimer);
  if (stateOf(r) !== "IN_PROGRESS" || stoppedOf(r)) return;
  if (polls >= POLL_LIMIT) {
    showProgress(r, "Still running: the service resumes it in the background; open it again later.");
    return;
  }
  showProgress(r, "Checking again…");
  pollTimer = setTimeout(async () => {
    if (!current || current.name !== r.name) return;
    try {
      const again = await api("GET", r.name);
      if (current && current.name === r.name) show(again, polls + 1);
    } catch (err) {
      showProgress(r, `Could not check progress: ${err.message}`);
    }
  }, POLL_MS);
}

export async function openRequest(name) {
  try {
    show(await api("GET", name));
  } catch (err) {
    say(`Could not open ${short(name, "dataRequests/")}: ${err.message}`, true);
  }
}

export function closeRequest() {
  clearTimeout(pollTimer);
  current = null;
  markSelected("");
  $("#detail").hidden = true;
}
