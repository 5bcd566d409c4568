// Compliance console: plain JavaScript, no build step. Every call goes to /console/*;
// the API key stays on the server, state-changing calls carry the session's CSRF token.
"use strict";

(() => {
  const $ = (sel) => document.querySelector(sel);
  let csrf = "";
  let current = null; // the request shown in the detail panel

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") node.className = v;
      else node.setAttribute(k, v);
    }
    for (const child of children) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
    }
    return node;
  }

  function say(text, isError = false) {
    const box = $("#message");
    box.textContent = text;
    box.className = isError ? "error" : "";
    box.hidden = !text;
  }

  function errorText(body, status) {
    const err = body && body.error;
    if (!err) return `request failed (${status})`;
    const info = (err.details || []).find((d) => d.reason);
    return info ? `${err.message} [${info.reason}]` : err.message || err.reason || `failed (${status})`;
  }

  async function call(method, path, body) {
    const headers = { Accept: "application/json" };
    if (method !== "GET") headers["X-CSRF-Token"] = csrf;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let payload = {};
    try { payload = await response.json(); } catch (_) { payload = {}; }
    if (response.status === 401 && path.startsWith("/console/api")) showSignIn();
    if (!response.ok) throw new Error(errorText(payload, response.status));
    return payload;
  }
  const api = (method, path, body) => call(method, `/console/api/v1/${path}`, body);

  const short = (value, prefix) => (value || "").replace(prefix, "");
  const label = (value, prefix) => short(value, prefix).toLowerCase().replace(/_/g, " ");
  const when = (ts) => (ts ? new Date(ts).toLocaleString() : "—");
  const dueOf = (r) => (r.dueDate ? `${r.dueDate.year}-${String(r.dueDate.month).padStart(2, "0")}-${String(r.dueDate.day).padStart(2, "0")}` : "—");

  // --- session ---------------------------------------------------------------------

  function showSignIn() {
    csrf = "";
    $("#app").hidden = true;
    $("#who").hidden = true;
    $("#signin").hidden = false;
    $("#api-key").focus();
  }

  function showApp(session) {
    csrf = session.csrf_token;
    $("#who-role").textContent = session.role;
    $("#who-key").textContent = `key ${session.key_id}`;
    $("#who").hidden = false;
    $("#signin").hidden = true;
    $("#app").hidden = false;
    loadQueue();
    loadPurposes();
    checkAudit();
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
    current = null;
    $("#detail").hidden = true;
    say("Signed out.");
    showSignIn();
  });

  // --- queue -----------------------------------------------------------------------

  async function loadQueue() {
    const body = $("#queue tbody");
    try {
      const page = await api("GET", "dataRequests");
      const rows = page.dataRequests || [];
      body.replaceChildren(...rows.map(queueRow));
      $("#queue-empty").hidden = rows.length > 0;
    } catch (err) {
      say(`Could not load the queue: ${err.message}`, true);
    }
  }

  function queueRow(r) {
    const id = short(r.name, "dataRequests/");
    const due = el("td", {}, dueOf(r));
    if (r.overdue) due.append(el("span", { class: "badge" }, "OVERDUE"));
    const row = el("tr", { "data-name": r.name, class: r.overdue ? "overdue" : "" },
      el("td", { class: "mono" }, id),
      el("td", {}, label(r.type, "DATA_REQUEST_TYPE_")),
      el("td", {}, label(r.state, "DATA_REQUEST_STATE_")),
      due,
      el("td", { class: "mono" }, short(r.member, "members/")));
    if (current && current.name === r.name) row.classList.add("selected");
    row.addEventListener("click", () => openRequest(r.name));
    return row;
  }

  $("#refresh").addEventListener("click", loadQueue);

  // --- detail ----------------------------------------------------------------------

  async function openRequest(name) {
    try {
      show(await api("GET", name));
    } catch (err) {
      say(`Could not open ${name}: ${err.message}`, true);
    }
  }

  function show(r) {
    current = r;
    for (const row of document.querySelectorAll("#queue tbody tr")) {
      row.classList.toggle("selected", row.dataset.name === r.name);
    }
    $("#detail-title").textContent = `Request ${short(r.name, "dataRequests/")}`;
    const fields = [
      ["Type", label(r.type, "DATA_REQUEST_TYPE_")],
      ["State", label(r.state, "DATA_REQUEST_STATE_")],
      ["Member", short(r.member, "members/")],
      ["Received", when(r.createTime)],
      ["Due", dueOf(r) + (r.overdue ? " (overdue)" : "")],
      ["Channel", label(r.channel, "CHANNEL_")],
    ];
    if (r.rejectionReason) fields.push(["Rejection reason", r.rejectionReason]);
    if (r.purposes && r.purposes.length) fields.push(["Purposes", r.purposes.join(", ")]);
    if (r.correction) {
      fields.push(["Correction", Object.entries(r.correction).map(([k, v]) => `${k}: ${v}`).join(", ")]);
    }
    if (r.export) {
      fields.push(["Export", r.export.purged ? "purged"
        : `${r.export.downloadsRemaining ?? 0} download(s) left, until ${when(r.export.expireTime)}`]);
    }
    $("#detail-fields").replaceChildren(...fields.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    const events = r.events || [];
    $("#timeline").replaceChildren(...events.map((e) => el("li", {},
      el("strong", {}, e.action), " · ", label(e.state, "DATA_REQUEST_STATE_"), " · ",
      el("span", { class: "muted" }, `${when(e.createTime)} by ${e.actor || "?"}`),
      e.note ? el("div", { class: "muted" }, e.note) : "")));
    $("#export-btn").disabled = !(r.export && !r.export.purged);
    $("#member-fields").replaceChildren();
    $("#detail").hidden = false;
  }

  $("#detail-close").addEventListener("click", () => {
    current = null;
    $("#detail").hidden = true;
  });

  async function act(what, path, body) {
    if (!current) return;
    try {
      const updated = await api("POST", `${current.name}:${path}`, body);
      say(`${what}: ${short(updated.name, "dataRequests/")} is now ${label(updated.state, "DATA_REQUEST_STATE_")}.`);
      show(updated);
      loadQueue();
    } catch (err) {
      say(`${what} refused: ${err.message}`, true);
    }
  }

  $("#verify-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const code = $("#verify-code").value.trim();
    if (!code) { say("Enter the one-time code the member received.", true); return; }
    act("Identity verified", "verifyIdentity", { code }).then(() => { $("#verify-code").value = ""; });
  });

  $("#approve-btn").addEventListener("click", () => {
    act("Approved", "approve", { requestId: crypto.randomUUID() });
  });

  $("#reject-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const reason = $("#reject-reason").value.trim();
    if (!reason) {
      say("A reason is required to reject a request (it is told to the member).", true);
      $("#reject-reason").focus();
      return;
    }
    act("Rejected", "reject", { reason }).then(() => { $("#reject-reason").value = ""; });
  });

  $("#export-btn").addEventListener("click", async () => {
    if (!current) return;
    const id = short(current.name, "dataRequests/");
    try {
      const response = await fetch(`/console/export/${encodeURIComponent(id)}`, {
        method: "POST", headers: { "X-CSRF-Token": csrf }, credentials: "same-origin",
      });
      if (!response.ok) {
        let body = {};
        try { body = await response.json(); } catch (_) { body = {}; }
        throw new Error(errorText(body, response.status));
      }
      const url = URL.createObjectURL(await response.blob());
      const link = el("a", { href: url, download: `export-${id}.zip` });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
      say(`Export of ${id} downloaded.`);
      openRequest(current.name);
    } catch (err) {
      say(`Download refused: ${err.message}`, true);
    }
  });

  async function showMember(purpose) {
    if (!current) return;
    const query = purpose
      ? `?view=MEMBER_VIEW_FULL&purpose=${encodeURIComponent(purpose)}`
      : "";
    try {
      const m = await api("GET", `${current.member}${query}`);
      const fields = [
        ["View", label(m.view || "MEMBER_VIEW_MASKED", "MEMBER_VIEW_")],
        ["Phone", m.phone || ""], ["Email", m.email || ""], ["Name", m.displayName || ""],
        ["Status", label(m.status, "MEMBER_STATUS_")],
      ];
      $("#member-fields").replaceChildren(
        ...fields.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    } catch (err) {
      say(`Member refused: ${err.message}`, true);
    }
  }

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

  // --- consent and audit -----------------------------------------------------------

  async function loadPurposes() {
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

  $("#audit-check").addEventListener("click", checkAudit);

  // --- start -----------------------------------------------------------------------

  fetch("/console/session", { credentials: "same-origin" })
    .then((r) => (r.ok ? r.json() : Promise.reject(new Error("signed out"))))
    .then(showApp, showSignIn);
})();
