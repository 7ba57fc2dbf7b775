// The host: version and features, capacity and overcommit as vzmemcheck, vzcpucheck and
// vzoversell print them, and the template cache.

import { el, clear, bytes } from "./dom.js";
import { get } from "./api.js";

export async function showHost(main) {
  const info = el("div", {}, el("p", { class: "muted" }, "Loading…"));
  const capacity = el("div", { class: "capacity" }, el("p", { class: "muted" }, "Asking vzmemcheck, vzcpucheck and vzoversell…"));
  const templates = el("div", {});
  clear(main, el("h2", {}, "Host"),
    el("div", { class: "grid" }, el("section", { class: "panel" }, el("h3", {}, "This host"), info),
      el("section", { class: "panel" }, el("h3", {}, "Templates"), templates)),
    el("section", { class: "panel" }, el("h3", {}, "Capacity and overcommit"), capacity));
  get("/host").then((host) => {
    const features = host.features || {};
    const criu = features.criu || {}, lxcfs = features.lxcfs || {};
    const rows = [["pyvz", host.version], ["API", host.api], ["Kernel", host.kernel], ["Architecture", host.architecture],
      ["CPUs", host.cpus], ["cgroups", host.cgroup], ["Root", host.root],
      ["CRIU", criu.available ? `yes (${criu.path})` : `no: ${criu.why || "not found"}`],
      ["LXCFS", lxcfs.running ? `running (pid ${lxcfs.pid})` : "not running"]];
    clear(info, el("dl", {}, rows.map(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v ?? "–"))])));
  }, (error) => clear(info, el("p", { class: "error" }, String(error))));
  get("/templates").then((list) => {
    clear(templates, el("table", { class: "templates cards" },
      el("thead", {}, el("tr", {}, ["Template", "Size", "Signed"].map((h) => el("th", {}, h)))),
      el("tbody", {}, list.map((t) => el("tr", {},
        el("td", { "data-label": "Template" }, t.name, t.embedded ? el("small", { class: "muted" }, " built in") : null),
        el("td", { "data-label": "Size" }, t.size === null ? "–" : bytes(t.size)),
        el("td", { "data-label": "Signed" }, t.embedded ? "–" : t.signed ? "yes" : "no"))))));
  }, (error) => clear(templates, el("p", { class: "error" }, String(error))));
  get("/host/capacity").then((found) => {
    clear(capacity, Object.entries(found).map(([tool, text]) =>
      el("div", { class: "tool" }, el("h4", {}, tool), el("pre", { class: "mono", id: `capacity-${tool}` }, text))));
  }, (error) => clear(capacity, el("p", { class: "error" }, String(error))));
  return () => {};
}
