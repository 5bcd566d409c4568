// Compliance console: plain JavaScript modules, no build step. Every call goes to
// /console/*; the API key stays on the server, state-changing calls carry the session's
// CSRF token. This module signs in and out and starts the panels.
import { $, api, call, el, label, say, setCsrf, whenSignedOut } from "./console_lib.js";
import { initConsent, loadPurposes, loadStats } from "./console_consent.js";
import { closeRequest, initDetail, openRequest } from "./console_detail.js";
import { initQueue, loadQueue, resetQueue } from "./console_queue.js";

function showSignIn() {
  setCsrf("");
  closeRequest();
  resetQueue();
  $("#app").hidden = true;
  $("#who").hidden = true;
  $("#signin").hidden = false;
  $("#api-key").focus();
}

function showApp(session) {
  setCsrf(session.csrf_token);
  $("#who-role").textContent = session.role;
  $("#who-key").textContent = `key ${session.key_id}`;
  $("#who").hidden = false;
  $("#signin").hidden = true;
  $("#app").hidden = false;
  loadQueue();
  loadStats();
  loadPurposes();
  checkAudit();
}

async function checkAudit() {
  const box = $("#audit-status");
  box.textContent = "Checking…";
  try {
    const got = await api("GET", "auditEvents:verifyChain");
    const checked = got.entriesChecked || 0;
    box.replaceChildren(got.intact
      ? el("span", { class: "intact" }, `Intact: ${checked} event(s) checked, last seq ${got.lastSeq || 0}.`)
      : el("span", { class: "broken" },
        `BROKEN: ${label(got.problem, "CHAIN_PROBLEM_")} at seq ${got.firstBrokenSeq || "?"} (${checked} intact before it).`));
  } catch (err) {
    box.replaceChildren(el("span", { class: "broken" }, `Could not check: ${err.message}`));
  }
}

$("#signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("#api-key");
  try {
    const session = await call("POST", "/console/session", { api_key: input.value });
    input.value = "";
    say("");
    showApp(session);
  } catch (err) {
    say(`Sign-in refused: ${err.message}`, true);
  }
});

$("#sign-out").addEventListener("click", async () => {
  try { await call("DELETE", "/console/session"); } catch (_) { /* signed out anyway */ }
  say("Signed out.");
  showSignIn();
});

$("#audit-check").addEventListener("click", checkAudit);
whenSignedOut(showSignIn);
initQueue(openRequest);
initDetail();
initConsent();

fetch("/console/session", { credentials: "same-origin" })
  .then((r) => (r.ok ? r.json() : Promise.reject(new Error("signed out"))))
  .then(showApp, showSignIn);
