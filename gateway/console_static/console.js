// Compliance console: plain JavaScript modules, no build step. Every call goes to
// /console/*; the API key stays on the server, state-changing calls carry the session's
// CSRF token. This module signs in and out and starts the panels.
import { $, call, say, setCsrf, whenSignedOut } from "./console_lib.js";
import { initActions } from "./console_actions.js";
import { checkAudit, initAudit, loadEvents, resetAudit } from "./console_audit.js";
import { initConsent, loadPurposes, loadStats } from "./console_consent.js";
import { closeRequest, openRequest } from "./console_detail.js";
import { actorNode, nameActors } from "./console_names.js";
import { initQueue, loadQueue, resetQueue } from "./console_queue.js";

function showSignIn() {
  setCsrf("");
  closeRequest();
  resetQueue();
  resetAudit();
  $("#app").hidden = true;
  $("#who").hidden = true;
  $("#signin").hidden = false;
  $("#api-key").focus();
}

function showApp(session) {
  setCsrf(session.csrf_token);
  $("#who-role").textContent = session.role;
  $("#who-key").replaceChildren(actorNode(`key:${session.key_id}`));
  $("#who").hidden = false;
  $("#signin").hidden = true;
  $("#app").hidden = false;
  nameActors($("#who"));
  loadQueue();
  loadStats();
  loadPurposes();
  checkAudit();
  loadEvents();
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

whenSignedOut(showSignIn);
initQueue(openRequest);
initActions();
initAudit();
initConsent();

fetch("/console/session", { credentials: "same-origin" })
  .then((r) => (r.ok ? r.json() : Promise.reject(new Error("signed out"))))
  .then(showApp, showSignIn);
