// The data-request queue, page by page: the first page on load, the next one on "Load
// more"; a reload fetches again as many pages as were shown (bounded), so acting on a
// request does not shrink the list the officer was working through. Filters (state, type,
// overdue only, member) are the service's own (ListDataRequests); they live in the page
// address, so a reload keeps them, and every page, "Load more" included, is asked with them.
// A request whose fulfilment stopped (step_failure) is marked: it waits for an officer.
import { $, api, el, label, pageQuery, say, setPageQuery, short } from "./console_lib.js";
import { dueOf, stepText } from "./console_labels.js";
import { stoppedOf, whyText } from "./console_stop.js";

const DEFAULT_PAGE_SIZE = 50;
const MAX_PAGE_SIZE = 200; // the service's own cap
const MAX_RELOAD_PAGES = 20;

// `?pageSize=N` on the console's address asks for smaller (or larger) pages
function pageSize() {
  const asked = Number.parseInt(new URLSearchParams(window.location.search).get("pageSize") || "", 10);
  return Number.isFinite(asked) ? Math.min(Math.max(asked, 1), MAX_PAGE_SIZE) : DEFAULT_PAGE_SIZE;
}

const PAGE_SIZE = pageSize();
const FILTER_PARAMS = ["state", "type", "overdue", "member"];
const OPEN_STATES = ["RECEIVED", "IDENTITY_VERIFIED", "IN_PROGRESS"];
const MEMBER_ID = /^[A-Za-z0-9_-]{1,64}$/;
let nextToken = "";
let pagesShown = 0;
let generation = 0; // a reply to an older load is dropped
let selected = "";
let onOpen = () => {};

// the filters as the form shows them
function filters() {
  return {
    state: $("#filter-state").value,
    type: $("#filter-type").value,
    overdue: $("#filter-overdue").checked,
    member: short($("#filter-member").value.trim(), "members/"),
  };
}

const filtering = (f) => Boolean(f.state || f.type || f.overdue || f.member);

function fetchPage(token) {
  const f = filters();
  const query = new URLSearchParams({ pageSize: String(PAGE_SIZE) });
  const states = f.state === "open" ? OPEN_STATES : f.state ? [f.state] : [];
  for (const s of states) query.append("states", `DATA_REQUEST_STATE_${s}`);
  if (f.type) query.append("types", `DATA_REQUEST_TYPE_${f.type}`);
  if (f.overdue) query.set("overdueOnly", "true");
  if (f.member) query.set("member", `members/${f.member}`);
  if (token) query.set("pageToken", token);
  return api("GET", `dataRequests?${query}`);
}

// the form from the page address (a reload, a shared link); unknown values are dropped
function filtersFromAddress() {
  const query = pageQuery();
  const pick = (select, value) => {
    const known = [...select.options].some((o) => o.value === value);
    select.value = known ? value : "";
  };
  pick($("#filter-state"), query.get("state") || "");
  pick($("#filter-type"), query.get("type") || "");
  $("#filter-overdue").checked = query.get("overdue") === "1";
  const member = short((query.get("member") || "").trim(), "members/");
  $("#filter-member").value = MEMBER_ID.test(member) ? member : "";
}

function filtersToAddress() {
  const f = filters();
  setPageQuery(FILTER_PARAMS, [
    ["state", f.state], ["type", f.type], ["overdue", f.overdue ? "1" : ""], ["member", f.member],
  ]);
}

// new filters: back to the first page of what they match
function applyFilters() {
  const member = filters().member;
  if (member && !MEMBER_ID.test(member)) {
    say("A member id is letters, digits, '-' and '_' (or members/<id>).", true);
    $("#filter-member").focus();
    return;
  }
  filtersToAddress();
  pagesShown = 0;
  loadQueue();
}

// shows the queue of one member (from a request's panel)
export function filterByMember(member) {
  $("#filter-member").value = short(member, "members/");
  applyFilters();
}

function row(r) {
  const due = el("td", {}, dueOf(r));
  if (r.overdue) due.append(el("span", { class: "badge" }, "OVERDUE"));
  const state = el("td", {}, label(r.state, "DATA_REQUEST_STATE_"));
  const stop = stoppedOf(r);
  if (stop) {
    const why = `Stopped at “${stepText(stop.step)}”: ${whyText(stop)}`;
    state.append(el("span", { class: "badge stopped", title: why }, "stopped — needs a decision"));
  }
  const classes = [r.overdue ? "overdue" : "", stop ? "stopped" : ""].filter(Boolean).join(" ");
  const tr = el("tr", { "data-name": r.name, class: classes, tabindex: "0" },
    el("td", { class: "mono" }, short(r.name, "dataRequests/")),
    el("td", {}, label(r.type, "DATA_REQUEST_TYPE_")),
    state,
    due,
    el("td", { class: "mono" }, short(r.member, "members/")));
  if (r.name === selected) tr.classList.add("selected");
  tr.addEventListener("click", () => onOpen(r.name));
  tr.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); onOpen(r.name); }
  });
  return tr;
}

function showPager() {
  const shown = document.querySelectorAll("#queue tbody tr").length;
  const matching = filtering(filters()) ? " matching the filters" : "";
  $("#queue-empty").textContent = matching ? "No data requests match the filters." : "No data requests.";
  $("#queue-empty").hidden = shown > 0;
  $("#queue-more").hidden = !nextToken;
  $("#queue-more").disabled = false;
  $("#queue-count").textContent = shown === 0 ? ""
    : nextToken ? `Showing the first ${shown} requests${matching}; more on the next page.`
      : `Showing all ${shown} request(s)${matching}.`;
}

// aria-busy while a load runs: screen readers (and tests) know when the rows are final
const busy = (yes) => $("#queue").setAttribute("aria-busy", yes ? "true" : "false");

export async function loadQueue() {
  const mine = ++generation;
  busy(true);
  const want = Math.min(Math.max(pagesShown, 1), MAX_RELOAD_PAGES);
  const rows = [];
  let token = "";
  let pages = 0;
  try {
    do {
      const page = await fetchPage(token);
      rows.push(...(page.dataRequests || []));
      token = page.nextPageToken || "";
      pages += 1;
    } while (token && pages < want);
  } catch (err) {
    if (mine === generation) { say(`Could not load the queue: ${err.message}`, true); busy(false); }
    return;
  }
  if (mine !== generation) return;
  pagesShown = pages;
  nextToken = token;
  $("#queue tbody").replaceChildren(...rows.map(row));
  showPager();
  busy(false);
}

async function loadMore() {
  if (!nextToken) return;
  const mine = ++generation;
  busy(true);
  $("#queue-more").disabled = true;
  let page;
  try {
    page = await fetchPage(nextToken);
  } catch (err) {
    if (mine === generation) { say(`Could not load more requests: ${err.message}`, true); showPager(); busy(false); }
    return;
  }
  if (mine !== generation) return;
  // a request that moved while paging may come again: show it once
  const shown = new Set([...document.querySelectorAll("#queue tbody tr")].map((tr) => tr.dataset.name));
  $("#queue tbody").append(...(page.dataRequests || []).filter((r) => !shown.has(r.name)).map(row));
  pagesShown += 1;
  nextToken = page.nextPageToken || "";
  showPager();
  busy(false);
}

export function markSelected(name) {
  selected = name || "";
  for (const tr of document.querySelectorAll("#queue tbody tr")) {
    tr.classList.toggle("selected", tr.dataset.name === selected);
  }
}

export function resetQueue() {
  generation += 1;
  nextToken = "";
  pagesShown = 0;
  selected = "";
  $("#queue tbody").replaceChildren();
  $("#queue-count").textContent = "";
  $("#queue-more").hidden = true;
}

export function initQueue(open) {
  onOpen = open;
  filtersFromAddress();
  $("#refresh").addEventListener("click", loadQueue);
  $("#queue-more").addEventListener("click", loadMore);
  for (const id of ["#filter-state", "#filter-type", "#filter-overdue"]) {
    $(id).addEventListener("change", applyFilters);
  }
  $("#queue-filters").addEventListener("submit", (event) => {
    event.preventDefault();
    applyFilters();
  });
  $("#filter-clear").addEventListener("click", () => {
    $("#queue-filters").reset();
    applyFilters();
  });
}
