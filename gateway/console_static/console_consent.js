// Consent: how many members consent to each purpose now (GetConsentStatistics), and the
// purpose catalogue. Each panel reports its own failure, so a server without the
// statistics call still shows the rest of the console.
import { $, api, count, el, say } from "./console_lib.js";
import { when } from "./console_labels.js";

const percent = (part, whole) => (whole > 0 ? `${((100 * part) / whole).toFixed(1)} %` : "—");

function statsRow(p, members) {
  const granted = count(p.grantedMembers);
  const share = el("td", { class: "num" }, percent(granted, members));
  if (members > 0) {
    share.prepend(el("meter", { min: "0", max: String(members), value: String(granted), "aria-hidden": "true" }), " ");
  }
  return el("tr", { "data-purpose": p.purpose },
    el("td", {}, el("strong", {}, p.purpose)),
    el("td", { class: "num" }, granted),
    el("td", { class: "num" }, count(p.staleMembers)),
    el("td", { class: "num" }, count(p.withdrawnMembers)),
    el("td", { class: "num" }, count(p.notGivenMembers)),
    share);
}

function statsFailed(err) {
  $("#consent-stats tbody").replaceChildren();
  $("#consent-stats").hidden = true;
  const box = $("#stats-status");
  box.className = "panel-error";
  // 404/501: this gateway or privacy service predates the statistics call
  box.textContent = err.status === 404 || err.status === 501
    ? `Consent statistics are not available from this server (${err.message}).`
    : `Could not load the consent statistics: ${err.message}`;
}

export async function loadStats() {
  const box = $("#stats-status");
  box.className = "muted";
  box.textContent = "Loading the consent statistics…";
  let got;
  try {
    got = await api("GET", "consentStatistics");
  } catch (err) {
    statsFailed(err);
    return;
  }
  const members = count(got.members);
  const rows = (got.purposes || []).map((p) => statsRow(p, members));
  $("#consent-stats tbody").replaceChildren(...rows);
  $("#consent-stats").hidden = rows.length === 0;
  box.textContent = `${members} member(s) with a consent record (erased members not counted); `
    + `computed ${when(got.computeTime)}.`;
}

export async function loadPurposes() {
  try {
    const got = await api("GET", "purposes");
    $("#purposes tbody").replaceChildren(...(got.purposes || []).map((p) => el("tr", {},
      el("td", {}, el("strong", {}, p.code), el("div", { class: "muted" }, p.description)),
      el("td", {}, p.legalBasis), el("td", {}, p.necessary ? "yes" : "no"),
      el("td", {}, p.separateConsent ? "yes" : "no"))));
  } catch (err) {
    say(`Could not load the purposes: ${err.message}`, true);
  }
}

export function initConsent() {
  $("#stats-refresh").addEventListener("click", loadStats);
}
