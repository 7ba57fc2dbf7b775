// One CT's page: its facts and beancounters as they go, lifecycle, settings and limits
// applied live (and saved), a terminal, snapshots, backups, clone, migrate, destroy.

import { el, clear, button, bytes, duration, notice, confirmDialog, field, input } from "./dom.js";
import { get, run } from "./api.js";
import { sparkline } from "./spark.js";
import { looked, risen, UBC } from "./failcnt.js";
import { form, checkbox, given, words } from "./forms.js";
import { Console } from "./terminal.js";
import { label, lifecycle } from "./list.js";
import { may } from "./role.js";
import { snapshotsSection, backupsSection, cloneSection, migrateSection } from "./ct_data.js";
import * as usage from "./usage.js";

const BIG = 2 ** 53;
const limitText = (v) => (typeof v !== "number" || v >= BIG ? "unlimited" : String(v));

function section(title, ...children) {
  return el("section", { class: "panel" }, el("h3", {}, title), children);
}

function facts(ct) {
  const disk = ct.diskspace || {};
  const rows = [
    ["Status", el("span", { class: ["status", ct.status] }, ct.status)],
    ["Hostname", ct.hostname || "–"],
    ["Name", ct.name || "–"],
    ["Description", ct.description || "–"],
    ["OS template", ct.ostemplate || "–"],
    ["IP addresses", (ct.ip || []).join(" ") || "–"],
    ["Uptime", ct.status === "running" ? duration(ct.uptime) : "–"],
    ["Disk", disk.usage !== undefined ? `${bytes(disk.usage * 1024)} of ${disk.hardlimit ? bytes(disk.hardlimit * 1024) : "unlimited"}` : "–"],
    ["CPUs", ct.cpus || "all"], ["CPU limit", ct.cpulimit ? `${ct.cpulimit} %` : "none"],
    ["Layout", ct.layout || "–"],
  ];
  const { used, limit } = usage.memoryOf(ct);
  const cpuValues = usage.cpu.of(ct.ctid);
  return el("div", { class: "facts" },
    el("dl", {}, rows.map(([k, v]) => [el("dt", {}, k), el("dd", { class: k === "Hostname" ? "hostname" : k === "Description" ? "description" : null }, v)])),
    el("div", { class: "charts" },
      el("figure", {}, sparkline(usage.memory.of(ct.ctid), limit || 0, "memory"),
        el("figcaption", {}, `Memory ${used === null ? "–" : bytes(used)}${limit ? ` / ${bytes(limit)}` : ""}`)),
      el("figure", {}, sparkline(cpuValues, 100, "CPU"),
        el("figcaption", {}, cpuValues.length ? `CPU ${cpuValues[cpuValues.length - 1].toFixed(1)} %` : usage.cpuNote))));
}

function beancounters(ct, rose) {
  const rows = UBC.filter((name) => ct[name]).map((name) => {
    const c = ct[name];
    return el("tr", { class: rose.has(name) ? "rose" : null },
      el("td", { "data-label": "Resource" }, name), el("td", { "data-label": "held" }, limitText(c.held)),
      el("td", { "data-label": "maxheld" }, limitText(c.maxheld)), el("td", { "data-label": "barrier" }, limitText(c.barrier)),
      el("td", { "data-label": "limit" }, limitText(c.limit)), el("td", { "data-label": "failcnt", class: "failcnt" }, String(c.failcnt)));
  });
  return el("table", { class: "ubc cards" },
    el("thead", {}, el("tr", {}, ["resource", "held", "maxheld", "barrier", "limit", "failcnt"].map((h) => el("th", {}, h)))),
    el("tbody", {}, rows));
}

function settingsForm(ct) {
  const current = (value) => (value ? `now: ${value}` : undefined);
  const { limit } = usage.memoryOf(ct);
  const disk = ct.diskspace || {};
  const fields = [
    field("Hostname", input("hostname", { placeholder: ct.hostname || "" })),
    field("Name", input("name", { placeholder: ct.name || "" })),
    field("Description", input("description", { placeholder: ct.description || "" })),
    field("Add addresses", input("ipadd", { placeholder: "10.0.0.5 10.0.0.6" })),
    field("Remove addresses", input("ipdel", { placeholder: (ct.ip || []).join(" ") })),
    field("RAM", input("ram", { placeholder: "512M" }), current(limit ? bytes(limit) : "unlimited")),
    field("Swap", input("swap", { placeholder: "256M" })),
    field("CPUs", input("cpus", { placeholder: "2", inputmode: "numeric" }), current(ct.cpus ? String(ct.cpus) : "all")),
    field("CPU limit %", input("cpulimit", { placeholder: "50", inputmode: "numeric" }), current(ct.cpulimit ? `${ct.cpulimit} %` : "none")),
    field("Disk space", input("diskspace", { placeholder: "10G or 9G:10G" }), current(disk.hardlimit ? bytes(disk.hardlimit * 1024) : null)),
    field("Processes (numproc)", input("numproc", { placeholder: "400" })),
    checkbox("save", "save to the config too (else live only)", true),
  ];
  return form(fields, "Apply", async (values) => {
    const params = given(values, ["hostname", "name", "description", "ram", "swap", "cpus", "cpulimit", "diskspace", "numproc"]);
    for (const list of ["ipadd", "ipdel"]) if (values[list]) params[list] = words(values[list]);
    if (!Object.keys(params).length) throw new Error("nothing to set: fill in a field");
    const op = await run("PATCH", `/cts/${ct.ctid}`, { params, save: values.save });
    usage.refreshSoon();
    return (op.result && op.result.stdout.trim()) || "applied";
  }, { disabled: !may("admin"), id: "settings" });
}

function header(ct) {
  const running = ct.status === "running";
  const operator = !may("operator");
  return el("div", { class: "titlebar" },
    el("h2", {}, "CT ", el("span", { class: "ctid" }, label(ct)), " ", el("span", { class: ["status", ct.status] }, ct.status)),
    el("div", { class: "actions" },
      running ? null : button("Start", () => lifecycle(ct, "start"), { disabled: operator, id: "ct-start" }),
      running ? button("Stop", () => lifecycle(ct, "stop"), { disabled: operator, id: "ct-stop" }) : null,
      running ? button("Restart", () => lifecycle(ct, "restart"), { disabled: operator, id: "ct-restart" }) : null,
      button("Destroy", () => destroy(ct), { class: "danger", disabled: !may("admin"), id: "ct-destroy" })));
}

async function destroy(ct) {
  const running = ct.status === "running";
  const text = `Destroy CT ${label(ct)}${ct.hostname ? ` (${ct.hostname})` : ""}? Its files, config and snapshots are deleted.` +
    (running ? " It is running: it will be stopped first." : "");
  if (!(await confirmDialog(text, "Destroy"))) return;
  try {
    if (running) await run("POST", `/cts/${ct.ctid}/stop`, {});
    await run("DELETE", `/cts/${ct.ctid}`);
    notice(`CT ${label(ct)} destroyed`);
    location.hash = "#/";
  } catch (error) {
    notice(`Destroying CT ${label(ct)} failed: ${error}`, "error");
  } finally {
    usage.refreshSoon();
  }
}

export async function showCt(main, ctid) {
  let ct;
  try {
    ct = await get(`/cts/${encodeURIComponent(ctid)}`);
  } catch (error) {
    clear(main, el("h2", {}, `CT ${ctid}`), el("p", { class: "error" }, String(error)));
    return () => {};
  }
  const top = el("div", {});
  const factsBox = el("div", {});
  const ubcBox = el("div", {});
  const terminal = new Console(ct.ctid);
  const rose = new Set(); // counters that rose since last looked, marked while the page is open
  const draw = (fresh) => {
    ct = fresh;
    for (const [name] of risen(ct)) rose.add(name);
    looked(ct); // the page shows the beancounters: this is looking
    clear(top, header(ct));
    clear(factsBox, facts(ct));
    clear(ubcBox, beancounters(ct, rose));
  };
  draw(ct);
  const settings = el("div", {}, settingsForm(ct));
  const snapshots = snapshotsSection(ct);
  const backups = backupsSection(ct);
  clear(main, top,
    el("div", { class: "grid" },
      section("Overview", factsBox),
      section("Terminal", may("operator") ? terminal.node : el("p", { class: "muted" }, "A terminal needs the operator role."))),
    el("div", { class: "grid" },
      section("Settings and limits", el("p", { class: "muted small" }, "Applied to the running CT at once (vzctl set); leave a field empty to keep it."), settings),
      section("Beancounters", ubcBox)),
    el("div", { class: "grid" }, section("Snapshots", snapshots.node), section("Backups", backups.node)),
    el("div", { class: "grid" }, section("Clone", cloneSection(ct)), section("Migrate", migrateSection(ct))));
  const stop = usage.onSample((list) => {
    if (!list) return;
    const fresh = list.find((c) => c.ctid === ct.ctid);
    if (!fresh) return;
    const changed = fresh.status !== ct.status;
    draw(fresh);
    if (changed) { snapshots.refresh(); backups.refresh(); }
  });
  return () => { stop(); terminal.dispose(); };
}

