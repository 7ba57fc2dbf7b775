// The pyvz web console: log-in with an API token, then the views, routed by the URL's
// hash (#/, #/ct/ID, #/create, #/host, #/operations). Events from /api/v1/events keep the
// operations and the list current between polls.

import { el, clear, $, field, input, notice } from "./dom.js";
import { get, login, logout, session, setSession, whenLoggedOut } from "./api.js";
import { track, showOperations } from "./operations.js";
import { showList } from "./list.js";
import { showCt } from "./ct.js";
import { showCreate } from "./create.js";
import { showHost } from "./host.js";
import { setRole } from "./role.js";
import * as usage from "./usage.js";

const main = $("#main");
let leave = () => {};
let events = null;

function loggedIn(who) {
  setSession(who);
  setRole(who.role);
  $("#who").textContent = `${who.who} · ${who.role}`;
  $("#nav").hidden = false;
  $("#logout").hidden = false;
  usage.startPolling();
  listen();
  get("/operations").then((ops) => ops.forEach(track), () => {});
  route();
}

function loggedOut() {
  setSession(null);
  usage.stopPolling();
  if (events) { events.close(); events = null; }
  leave();
  leave = () => {};
  $("#who").textContent = "";
  $("#nav").hidden = true;
  $("#logout").hidden = true;
  showLogin();
}

function listen() {
  if (events) return;
  events = new EventSource("/api/v1/events");
  events.addEventListener("operation", (event) => {
    try { track(JSON.parse(event.data).operation); } catch { /* a malformed event is skipped */ }
  });
  for (const kind of ["ct-state", "ct-config", "ct-created", "ct-deleted"]) {
    events.addEventListener(kind, () => usage.refreshSoon());
  }
}

function showLogin(message) {
  const token = input("token", { type: "password", id: "token", required: true, autocomplete: "current-password", placeholder: "the token pyvzd token add printed" });
  const problem = el("p", { class: "error", role: "alert" }, message || "");
  const submit = el("button", { type: "submit", class: "primary", id: "login" }, "Log in");
  const form = el("form", { class: "login panel" },
    el("h2", {}, "Log in"),
    el("p", { class: "muted" }, "With an API token (", el("code", {}, "pyvzd token add NAME --role admin"), "): its role and scope are what this page may do."),
    field("API token", token), submit, problem);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    problem.textContent = "";
    try {
      loggedIn(await login(token.value.trim()));
    } catch (error) {
      problem.textContent = error.status === 401 ? "That token is not valid." : String(error);
    } finally {
      submit.disabled = false;
    }
  });
  clear(main, form);
  token.focus();
}

const VIEWS = [
  [/^#?\/?$/, "list", () => showList(main)],
  [/^#\/ct\/(\d+)$/, "list", (m) => showCt(main, Number(m[1]))],
  [/^#\/create$/, "create", () => showCreate(main)],
  [/^#\/host$/, "host", () => showHost(main)],
  [/^#\/operations$/, "operations", () => showOperations(main, get)],
];

async function route() {
  leave();
  leave = () => {};
  const hash = location.hash || "#/";
  for (const [pattern, nav, show] of VIEWS) {
    const match = pattern.exec(hash);
    if (!match) continue;
    for (const link of document.querySelectorAll("#nav a")) link.classList.toggle("active", link.dataset.view === nav);
    const undo = await show(match);
    leave = typeof undo === "function" ? undo : () => {};
    return;
  }
  clear(main, el("p", {}, "No such page. "), el("a", { href: "#/" }, "The list"));
}

window.addEventListener("hashchange", () => { if (!$("#nav").hidden) route(); });
$("#logout").addEventListener("click", async () => {
  try { await logout(); } catch (error) { notice(`Log-out: ${error}`, "error"); }
  loggedOut();
});
whenLoggedOut(() => { if (!$("#nav").hidden) { loggedOut(); notice("Your session ended: log in again.", "error"); } });

session().then((who) => (who ? loggedIn(who) : showLogin()), (error) => showLogin(String(error)));
