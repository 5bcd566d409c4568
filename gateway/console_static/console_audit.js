// The audit log: whether the hash chain holds (VerifyAuditChain), and its events, browsed
// with the service's filters (ListAuditEvents: member, action or a prefix such as
// `consent.`, actor, a time range read as Beijing time), oldest first, page by page. The
// filters live in the page address as the queue's do, so a reload shows the same events.
import { $, api, el, label, pageQuery, say, setPageQuery, short } from "./console_lib.js";
import { auditText, coded, fromBeijingInput, whenExact } from "./console_labels.js";
import { actorNode, nameActors } from "./console_names.js";

const PAGE_SIZE = 50; // the service allows 1000; a page an officer can read
const PARAMS = { subject: "auditSubject", action: "auditAction", actor: "auditActor", from: "auditFrom", to: "auditTo" };
const INPUTS = { subject: "#audit-subject", action: "#audit-action", actor: "#audit-actor", from: "#audit-from", to: "#audit-to" };
const BEIJING_INPUT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}$/;

let nextToken = "";
let generation = 0; // a reply to an older load is dropped

export async function checkAudit() {
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

const filters = () => Object.fromEntries(
  Object.entries(INPUTS).map(([k, sel]) => [k, $(sel).value.trim()]));

// the list call's query, or a sentence saying what is wrong with the filters
function listQuery(f, token) {
  const query = new URLSearchParams({ pageSize: String(PAGE_SIZE) });
  if (f.subject) query.set("subjectId", short(f.subject, "members/"));
  if (f.action) query.set("action", f.action);
  if (f.actor) query.set("actor", f.actor);
  const start = fromBeijingInput(f.from);
  const end = fromBeijingInput(f.to);
  if ((f.from && !start) || (f.to && !end)) return "Give times as a date and a time (Beijing time).";
  if (start && end && end <= start) return "The end of the time range must be after its start.";
  if (start) query.set("startTime", start);
  if (end) query.set("endTime", end);
  if (token) query.set("pageToken", token);
  return query;
}

function details(e) {
  const parts = [];
  if (e.fields && e.fields.length) parts.push(`fields: ${e.fields.join(", ")}`);
  if (e.purpose) parts.push(`purpose: ${e.purpose}`);
  if (e.requestId) parts.push(`request: ${e.requestId}`);
  const cell = el("td", { class: "small" }, parts.join(" · "));
  if (e.onBehalfOf) cell.append(parts.length ? " · " : "", "for ", actorNode(e.onBehalfOf));
  return cell;
}

// a value in a cell that, clicked, becomes the filter
function filterButton(content, field, value) {
  const button = el("button", { type: "button", class: "link", title: `Show only events with this ${field}` }, content);
  button.addEventListener("click", () => {
    $(INPUTS[field]).value = value;
    loadEvents();
  });
  return button;
}

function row(e) {
  return el("tr", { "data-seq": e.seq || "0", "data-action": e.action },
    el("td", { class: "num" }, e.seq || "0"),
    el("td", { class: "nowrap" }, whenExact(e.occurTime)),
    el("td", {}, filterButton(coded(auditText(e.action), e.action), "action", e.action)),
    el("td", {}, filterButton(actorNode(e.actor, e.actorRole), "actor", e.actor || ""),
      e.actorRole ? el("div", { class: "muted small" }, e.actorRole) : ""),
    el("td", { class: "mono" }, e.subjectId ? filterButton(e.subjectId, "subject", e.subjectId) : "—"),
    details(e));
}

function showPager() {
  const shown = document.querySelectorAll("#audit-events tbody tr").length;
  $("#audit-empty").hidden = shown > 0;
  $("#audit-events").hidden = shown === 0;
  $("#audit-more").hidden = !nextToken;
  $("#audit-more").disabled = false;
  $("#audit-count").textContent = shown === 0 ? ""
    : nextToken ? `Showing the first ${shown} event(s), oldest first; more on the next page.`
      : `Showing all ${shown} matching event(s), oldest first.`;
}

async function loadPage(token) {
  const f = filters();
  const query = listQuery(f, token);
  if (typeof query === "string") { say(query, true); return; }
  if (!token) setPageQuery(Object.values(PARAMS), Object.entries(PARAMS).map(([k, p]) => [p, f[k]]));
  const mine = ++generation;
  $("#audit-events").setAttribute("aria-busy", "true");
  $("#audit-more").disabled = true;
  let page;
  try {
    page = await api("GET", `auditEvents?${query}`);
  } catch (err) {
    if (mine === generation) {
      say(`Could not load the audit events: ${err.message}`, true);
      showPager();
      $("#audit-events").setAttribute("aria-busy", "false");
    }
    return;
  }
  if (mine !== generation) return;
  const rows = (page.auditEvents || []).map(row);
  if (token) $("#audit-events tbody").append(...rows);
  else $("#audit-events tbody").replaceChildren(...rows);
  nextToken = page.nextPageToken || "";
  showPager();
  $("#audit-events").setAttribute("aria-busy", "false");
  nameActors($("#audit-events"));
}

export const loadEvents = () => loadPage("");

// the events about one member (from a request's panel)
export function filterAuditBySubject(member) {
  for (const sel of Object.values(INPUTS)) $(sel).value = "";
  $(INPUTS.subject).value = short(member, "members/");
  loadEvents();
  $("#events-title").scrollIntoView();
}

export function resetAudit() {
  generation += 1;
  nextToken = "";
  $("#audit-events tbody").replaceChildren();
  $("#audit-count").textContent = "";
  $("#audit-more").hidden = true;
}

export function initAudit() {
  const query = pageQuery();
  for (const [k, p] of Object.entries(PARAMS)) {
    const value = (query.get(p) || "").trim().slice(0, 128);
    $(INPUTS[k]).value = (k === "from" || k === "to") && !BEIJING_INPUT.test(value) ? "" : value;
  }
  $("#audit-check").addEventListener("click", checkAudit);
  $("#audit-filters").addEventListener("submit", (event) => {
    event.preventDefault();
    loadEvents();
  });
  $("#audit-clear").addEventListener("click", () => {
    $("#audit-filters").reset();
    loadEvents();
  });
  $("#audit-more").addEventListener("click", () => { if (nextToken) loadPage(nextToken); });
}
