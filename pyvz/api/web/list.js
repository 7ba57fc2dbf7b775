// The CT list: status, addresses, CPU and memory as they go (sparklines of the last
// samples), a mark on every CT whose beancounter failcnt rose since this browser last
// looked, and the everyday actions.

import { el, clear, button, bytes, duration, notice } from "./dom.js";
import { run } from "./api.js";
import { sparkline } from "./spark.js";
import { risen, looked } from "./failcnt.js";
import * as usage from "./usage.js";
import { may } from "./role.js";

export function label(ct) {
  return ct.name ? `${ct.name} (${ct.ctid})` : String(ct.ctid);
}

export async function lifecycle(ct, action) {
  try {
    await run("POST", `/cts/${ct.ctid}/${action}`, {});
    notice(`CT ${label(ct)}: ${action} done`);
  } catch (error) {
    notice(`CT ${label(ct)}: ${action} failed: ${error}`, "error");
  } finally {
    usage.refreshSoon();
  }
}

function failMark(ct) {
  const rose = risen(ct);
  if (!rose.length) return el("span", { class: "fail-none" });
  const what = rose.map(([name, then, now]) => `${name} failcnt ${then} → ${now}`).join("; ");
  return el("button", {
    type: "button", class: "fail-mark", title: `${what} (click: seen)`, "aria-label": `failcnt rose: ${what}`,
    onclick: () => { looked(ct); usage.refreshSoon(); },
  }, "!");
}

function cpuCell(ct) {
  const values = usage.cpu.of(ct.ctid);
  if (!values.length) return el("td", { "data-label": "CPU", class: "muted", title: usage.cpuNote }, "–");
  const last = values[values.length - 1];
  return el("td", { "data-label": "CPU", class: "chart" },
    sparkline(values, 100, `CPU ${last.toFixed(1)} %`), el("span", { class: "figure" }, `${last.toFixed(1)} %`));
}

function memoryCell(ct) {
  const { used, limit } = usage.memoryOf(ct);
  if (used === null) return el("td", { "data-label": "Memory", class: "muted" }, "–");
  const text = limit ? `${bytes(used)} / ${bytes(limit)}` : bytes(used);
  return el("td", { "data-label": "Memory", class: "chart" },
    sparkline(usage.memory.of(ct.ctid), limit || 0, `memory ${text}`), el("span", { class: "figure" }, text));
}

function actions(ct) {
  const running = ct.status === "running";
  const operator = may("operator");
  return el("td", { class: "actions" },
    running
      ? [button("Stop", () => lifecycle(ct, "stop"), { disabled: !operator }),
        button("Restart", () => lifecycle(ct, "restart"), { disabled: !operator })]
      : button("Start", () => lifecycle(ct, "start"), { disabled: !operator }),
    el("a", { class: "button", href: `#/ct/${ct.ctid}` }, "Open"));
}

function row(ct) {
  return el("tr", { dataset: { ctid: String(ct.ctid) } },
    el("td", { class: "mark" }, failMark(ct)),
    el("td", { "data-label": "CT" }, el("a", { href: `#/ct/${ct.ctid}`, class: "ctid" }, String(ct.ctid)),
      ct.name ? el("span", { class: "name" }, ct.name) : null),
    el("td", { "data-label": "Hostname", class: "hostname" }, ct.hostname || "–"),
    el("td", { "data-label": "Status" }, el("span", { class: ["status", ct.status] }, ct.status),
      ct.status === "running" && ct.uptime ? el("small", { class: "muted" }, ` ${duration(ct.uptime)}`) : null),
    el("td", { "data-label": "IP", class: "mono" }, (ct.ip || []).length ? ct.ip.join(" ") : "–"),
    cpuCell(ct),
    memoryCell(ct),
    el("td", { "data-label": "Description", class: "description" }, ct.description || null),
    actions(ct));
}

export function showList(main) {
  const body = el("tbody");
  const status = el("p", { class: "muted small" });
  const table = el("table", { class: "cts cards" },
    el("thead", {}, el("tr", {}, ["", "CT", "Hostname", "Status", "IP", "CPU", "Memory", "Description", ""].map((h) => el("th", {}, h)))),
    body);
  clear(main,
    el("div", { class: "titlebar" }, el("h2", {}, "Containers"),
      may("admin") ? el("a", { class: "button primary", href: "#/create" }, "Create") : null),
    table, status);
  const draw = (list, error) => {
    if (error) { status.textContent = `Could not refresh: ${error}`; return; }
    clear(body, list.length ? list.map(row)
      : el("tr", {}, el("td", { colspan: 9, class: "muted" }, "No containers yet.")));
    status.textContent = `${list.length} CT${list.length === 1 ? "" : "s"}; refreshed every ${usage.EVERY / 1000} s. ${usage.cpuNote}.`;
  };
  return usage.onSample(draw);
}
