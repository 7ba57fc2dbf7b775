"use strict";
// Placeholder page until the console lands: log in with a token, list CTs.
const main = document.getElementById("main");
function text(tag, value) { const e = document.createElement(tag); e.textContent = value; return e; }
async function api(path, options = {}) {
  const r = await fetch(path, { credentials: "same-origin", ...options });
  return [r.status, await r.json()];
}
async function showList() {
  const [status, cts] = await api("/api/v1/cts");
  if (status === 401) return showLogin();
  main.replaceChildren();
  const table = document.createElement("table");
  for (const ct of cts) {
    const row = document.createElement("tr");
    row.append(text("td", String(ct.ctid)), text("td", ct.hostname || ""), text("td", ct.status));
    table.append(row);
  }
  main.append(table);
}
function showLogin() {
  main.replaceChildren();
  const form = document.createElement("form");
  const input = document.createElement("input");
  input.type = "password"; input.placeholder = "API token"; input.id = "token";
  const button = text("button", "Log in");
  form.append(input, button);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const [status] = await api("/ui/login", { method: "POST", body: JSON.stringify({ token: input.value }) });
    if (status === 200) showList(); else form.append(text("p", "That token is not valid."));
  });
  main.append(form);
}
showList();
