// What the daemon is doing: every operation this page started or heard of on the events
// stream, with its result (the command's message and vzctl exit code when it failed).

import { el, clear, $, duration } from "./dom.js";

const known = new Map(); // id -> operation as the API gives it
const listeners = new Set();
const LIMIT = 200;

export function track(op) {
  if (!op || !op.id) return;
  const old = known.get(op.id);
  if (old && old.updated > op.updated) return; // an older copy arrived late
  known.set(op.id, op);
  while (known.size > LIMIT) known.delete(known.keys().next().value);
  for (const listener of listeners) listener(op);
  badge();
}

export function onOperation(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

export function recent() {
  return [...known.values()].sort((a, b) => b.created - a.created);
}

const active = (op) => op.status === "pending" || op.status === "running";

function badge() {
  const running = recent().filter(active).length;
  const node = $("#ops-running");
  if (!node) return;
  node.textContent = String(running);
  node.hidden = running === 0;
}

export function describe(op) {
  const result = op.result;
  if (!result) return op.status;
  if (op.status === "success") return "done";
  const why = result.message || (result.stderr || "").trim().split("\n").pop() || op.status;
  return `${why} (exit code ${result.exit_code})`;
}

function row(op) {
  const age = duration(Math.max(0, Date.now() / 1000 - op.created));
  return el("tr", { class: ["op", op.status], dataset: { id: op.id } },
    el("td", { "data-label": "Status" }, el("span", { class: ["status", op.status] }, op.status)),
    el("td", { "data-label": "What" }, op.kind),
    el("td", { "data-label": "CT" }, op.ctid === null ? "–" : el("a", { href: `#/ct/${op.ctid}` }, String(op.ctid))),
    el("td", { "data-label": "Command", class: "mono" }, op.command),
    el("td", { "data-label": "Result", class: "result" }, describe(op),
      op.result && op.status !== "success" && op.result.stderr
        ? el("details", {}, el("summary", {}, "output"), el("pre", {}, op.result.stderr, op.result.stdout))
        : null),
    el("td", { "data-label": "Age" }, `${age} ago`),
    el("td", { "data-label": "By", class: "muted" }, op.actor));
}

export async function showOperations(main, get) {
  try {
    for (const op of await get("/operations")) track(op);
  } catch { /* shown below as whatever is known */ }
  const body = el("tbody");
  const table = el("table", { class: "ops cards" },
    el("thead", {}, el("tr", {}, ["Status", "What", "CT", "Command", "Result", "Age", "By"].map((h) => el("th", {}, h)))),
    body);
  const draw = () => {
    const ops = recent();
    clear(body, ops.length ? ops.map(row) : el("tr", {}, el("td", { colspan: 7, class: "muted" }, "No operations yet.")));
  };
  draw();
  clear(main, el("h2", {}, "Operations"), el("p", { class: "muted" }, "Changes run as the vzctl, vzdump, vzrestore and vzmigrate commands; a failure shows the command's message and exit code."), table);
  return onOperation(draw);
}
