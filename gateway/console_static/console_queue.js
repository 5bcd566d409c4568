// The data-request queue, page by page: the first page on load, the next one on "Load
// more"; a reload fetches again as many pages as were shown (bounded), so acting on a
// request does not shrink the list the officer was working through.
import { $, api, dueOf, el, label, say, short } from "./console_lib.js";

const DEFAULT_PAGE_SIZE = 50;
const MAX_PAGE_SIZE = 200; // the service's own cap
const MAX_RELOAD_PAGES = 20;

// `?pageSize=N` on the console's address asks for smaller (or larger) pages
function pageSize() {
  const asked = Number.parseInt(new URLSearchParams(window.location.search).get("pageSize") || "", 10);
  return Number.isFinite(asked) ? Math.min(Math.max(asked, 1), MAX_PAGE_SIZE) : DEFAULT_PAGE_SIZE;
}

const PAGE_SIZE = pageSize();
let nextToken = "";
let pagesShown = 0;
let generation = 0; // a reply to an older load is dropped
let selected = "";
let onOpen = () => {};

function fetchPage(token) {
  const query = new URLSearchParams({ pageSize: String(PAGE_SIZE) });
  if (token) query.set("pageToken", token);
  return api("GET", `dataRequests?${query}`);
}

function row(r) {
  const due = el("td", {}, dueOf(r));
  if (r.overdue) due.append(el("span", { class: "badge" }, "OVERDUE"));
  const tr = el("tr", { "data-name": r.name, class: r.overdue ? "overdue" : "", tabindex: "0" },
    el("td", { class: "mono" }, short(r.name, "dataRequests/")),
    el("td", {}, label(r.type, "DATA_REQUEST_TYPE_")),
    el("td", {}, label(r.state, "DATA_REQUEST_STATE_")),
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
  $("#queue-empty").hidden = shown > 0;
  $("#queue-more").hidden = !nextToken;
  $("#queue-more").disabled = false;
  $("#queue-count").textContent = shown === 0 ? ""
    : nextToken ? `Showing the first ${shown} requests; more on the next page.`
      : `Showing all ${shown} request(s).`;
}

export async function loadQueue() {
  const mine = ++generation;
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
    if (mine === generation) say(`Could not load the queue: ${err.message}`, true);
    return;
  }
  if (mine !== generation) return;
  pagesShown = pages;
  nextToken = token;
  $("#queue tbody").replaceChildren(...rows.map(row));
  showPager();
}

async function loadMore() {
  if (!nextToken) return;
  const mine = ++generation;
  $("#queue-more").disabled = true;
  let page;
  try {
    page = await fetchPage(nextToken);
  } catch (err) {
    if (mine === generation) { say(`Could not load more requests: ${err.message}`, true); showPager(); }
    return;
  }
  if (mine !== generation) return;
  // a request that moved while paging may come again: show it once
  const shown = new Set([...document.querySelectorAll("#queue tbody tr")].map((tr) => tr.dataset.name));
  $("#queue tbody").append(...(page.dataRequests || []).filter((r) => !shown.has(r.name)).map(row));
  pagesShown += 1;
  nextToken = page.nextPageToken || "";
  showPager();
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
  $("#refresh").addEventListener("click", loadQueue);
  $("#queue-more").addEventListener("click", loadMore);
}
