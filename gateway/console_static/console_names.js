// Actors by name: timelines and audit events record who acted as a caller-token subject
// (`key:<key id>` for an API key); the gateway, which owns the keys, names them
// (GET /console/actors). An element made by actorNode shows the subject at once and its
// name when the answer comes; unknown subjects stay as they are, the subject itself stays
// in the tooltip. Names are kept for the page's lifetime, bounded.
import { call, el } from "./console_lib.js";

const PER_CALL = 100; // the gateway's limit
const MAX_KNOWN = 2000;
const known = new Map(); // subject -> {kind, name, role}

export function actorNode(subject, role = "") {
  const node = el("span", { class: "actor", "data-actor": subject || "", title: subject || "" },
    subject || "?");
  if (role) node.dataset.role = role;
  const actor = known.get(subject);
  if (actor) fill(node, actor);
  return node;
}

function fill(node, actor) {
  const subject = node.dataset.actor;
  if (actor.kind === "api_key") {
    node.replaceChildren(actor.name, " ", el("span", { class: "muted small" }, `(${actor.role || "API"} key)`));
    node.title = `${subject}: API key "${actor.name}"`;
  } else if (actor.kind === "service") {
    node.replaceChildren(actor.name, " ", el("span", { class: "muted small" }, "(service identity)"));
    node.title = `${subject}: a service of the suite`;
  } else if ((node.dataset.role || "").startsWith("service:")) {
    // the audit log names the role too: a service identity whatever its subject
    node.replaceChildren(subject, " ", el("span", { class: "muted small" }, "(service identity)"));
  }
  node.classList.add(`actor-${actor.kind}`);
}

async function lookUp(subjects) {
  for (let i = 0; i < subjects.length; i += PER_CALL) {
    const query = new URLSearchParams();
    for (const s of subjects.slice(i, i + PER_CALL)) query.append("id", s);
    const got = await call("GET", `/console/actors?${query}`);
    if (known.size > MAX_KNOWN) known.clear();
    for (const [subject, actor] of Object.entries(got.actors || {})) known.set(subject, actor);
  }
}

// names every actor element under `root`; a failure leaves the subjects as they are
export async function nameActors(root) {
  const nodes = [...root.querySelectorAll("[data-actor]")].filter((n) => n.dataset.actor);
  const missing = [...new Set(nodes.map((n) => n.dataset.actor))].filter((s) => !known.has(s));
  try {
    if (missing.length) await lookUp(missing);
  } catch (_) {
    return; // names are a convenience: the ids stay readable
  }
  for (const node of nodes) {
    const actor = known.get(node.dataset.actor);
    if (actor && node.isConnected) fill(node, actor);
  }
}
