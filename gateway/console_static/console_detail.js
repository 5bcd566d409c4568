// One data request: its fields, where fulfilment stands, its timeline and the officer's
// actions. Approving fulfils the request at once through the other services (there is no
// separate "complete" step), so after approving the panel follows the request until it
// leaves IN_PROGRESS, for a bounded time, and then offers the export if there is one.
import {
  $, api, csrfToken, dueOf, el, errorText, fields, label, newRequestId, say, short, stateOf, typeOf,
  when,
} from "./console_lib.js";
import { loadQueue, markSelected } from "./console_queue.js";

const POLL_MS = 1000;
const POLL_LIMIT = 30; // then fulfilment is left to the service's background resumption
const EXPORTING = new Set(["ACCESS", "PORTABILITY"]);
const FINAL = new Set(["COMPLETED", "REJECTED", "CANCELLED"]);

let current = null; // the request shown
let pollTimer = 0;

const idOf = (r) => short(r.name, "dataRequests/");

function detailFields(r) {
  const pairs = [
    ["Type", label(r.type, "DATA_REQUEST_TYPE_")],
    ["State", label(r.state, "DATA_REQUEST_STATE_")],
    ["Member", short(r.member, "members/")],
    ["Received", when(r.createTime)],
    ["Due", dueOf(r) + (r.overdue ? " (overdue)" : "")],
    ["Channel", label(r.channel, "CHANNEL_")],
  ];
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
    case "IN_PROGRESS": return `Fulfilling: ${done} of ${steps.length} step(s) done.`;
    case "COMPLETED": return `Completed ${when(r.updateTime)}.${r.deletionOutcome
      ? ` Outcome: ${label(r.deletionOutcome, "DELETION_OUTCOME_")}.` : ""}`;
    case "REJECTED": return "Rejected; the member is told the reason.";
    case "CANCELLED": return "Cancelled by the member.";
    default: return "";
  }
}

function stepItem(s) {
  const status = s.doneTime ? `done ${when(s.doneTime)}`
    : s.lastError ? `waiting (last attempt: ${s.lastError})` : "pending";
  return el("li", { class: s.doneTime ? "done" : "pending" }, el("span", { class: "mono" }, s.step), ` · ${status}`);
}

function showProgress(r, note = "") {
  const box = $("#progress");
  box.className = `progress state-${stateOf(r).toLowerCase()}`;
  $("#progress-text").textContent = progressText(r) + (note ? ` ${note}` : "");
  $("#steps").replaceChildren(...(r.steps || []).map(stepItem));
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
function showActions(r) {
  const state = stateOf(r);
  $("#verify-code").disabled = $("#verify-btn").disabled = state !== "RECEIVED";
  $("#approve-btn").disabled = state !== "IDENTITY_VERIFIED";
  $("#reject-reason").disabled = $("#reject-btn").disabled = FINAL.has(state);
  $("#actions-hint").textContent = FINAL.has(state) ? "The request is final: no more actions."
    : state === "RECEIVED" ? "Verify the member's identity before approving."
      : state === "IN_PROGRESS" ? "Fulfilment is running; it can still be rejected if it cannot finish."
        : "";
}

export function show(r, polls = 0) {
  const switched = !current || current.name !== r.name;
  const finished = !switched && stateOf(current) === "IN_PROGRESS" && stateOf(r) !== "IN_PROGRESS";
  current = r;
  markSelected(r.name);
  $("#detail-title").textContent = `Request ${idOf(r)}`;
  $("#detail-fields").replaceChildren(...fields(detailFields(r)));
  $("#timeline").replaceChildren(...(r.events || []).map((e) => el("li", {},
    el("strong", {}, e.action), " · ", label(e.state, "DATA_REQUEST_STATE_"), " · ",
    el("span", { class: "muted" }, `${when(e.createTime)} by ${e.actor || "?"}`),
    e.note ? el("div", { class: "muted" }, e.note) : "")));
  if (switched) $("#member-fields").replaceChildren();
  showProgress(r);
  showActions(r);
  $("#detail").hidden = false;
  if (finished) {
    say(`Fulfilment of ${idOf(r)} ended: ${label(r.state, "DATA_REQUEST_STATE_")}.`);
    loadQueue();
  }
  follow(r, polls);
}

// while fulfilment runs, read the request again every second, a bounded number of times
function follow(r, polls) {
  clearTimeout(pollTimer);
  if (stateOf(r) !== "IN_PROGRESS") return;
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

async function act(what, path, body) {
  if (!current) return false;
  try {
    const updated = await api("POST", `${current.name}:${path}`, body);
    say(`${what}: ${idOf(updated)} is now ${label(updated.state, "DATA_REQUEST_STATE_")}.`);
    show(updated);
    loadQueue();
    return true;
  } catch (err) {
    say(`${what} refused: ${err.message}`, true);
    return false;
  }
}

async function download() {
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

export function initDetail() {
  $("#detail-close").addEventListener("click", closeRequest);
  $("#verify-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const code = $("#verify-code").value.trim();
    if (!code) { say("Enter the one-time code the member received.", true); return; }
    if (await act("Identity verified", "verifyIdentity", { code })) $("#verify-code").value = "";
  });
  $("#approve-btn").addEventListener("click", () => {
    $("#approve-btn").disabled = true; // one click, one fulfilment
    act("Approved", "approve", { requestId: newRequestId() })
      .then((ok) => { if (!ok && current) showActions(current); });
  });
  $("#reject-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const reason = $("#reject-reason").value.trim();
    if (!reason) {
      say("A reason is required to reject a request (it is told to the member).", true);
      $("#reject-reason").focus();
      return;
    }
    if (await act("Rejected", "reject", { reason })) $("#reject-reason").value = "";
  });
  $("#export-btn").addEventListener("click", download);
  $("#member-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const purpose = $("#member-purpose").value.trim();
    if (!purpose) {
      say("State a purpose to see the member in clear; without one the view stays masked.", true);
      showMember("");
      return;
    }
    showMember(purpose).then(() => { $("#member-purpose").value = ""; });
  });
}
