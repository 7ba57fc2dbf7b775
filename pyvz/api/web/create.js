// Creating a CT: vzctl create with a template, a sample config, limits, addresses and
// names; then, if asked, vzctl start.

import { el, clear, field, input, select, notice } from "./dom.js";
import { get, run } from "./api.js";
import { form, checkbox, given, words } from "./forms.js";
import { may } from "./role.js";
import * as usage from "./usage.js";

// The samples `make install` puts in /etc/vz/conf (ve-NAME.conf-sample); any other name works too.
const SAMPLES = ["basic", "light", "vswap-256m"];

export async function showCreate(main) {
  let templates = [];
  try {
    const seen = new Set(); // the built-in busybox and its cached archive have one name
    templates = (await get("/templates")).filter((t) => !seen.has(t.name) && seen.add(t.name));
  } catch (error) { notice(`Templates: ${error}`, "error"); }
  const taken = new Set(usage.cts.map((ct) => ct.ctid));
  let next = 101;
  while (taken.has(next)) next++;
  const samples = el("datalist", { id: "samples" }, SAMPLES.map((s) => el("option", { value: s })));
  const create = form([
    field("CTID", input("ctid", { value: String(next), inputmode: "numeric", required: true, id: "create-ctid" })),
    field("Template", select("ostemplate", templates.map((t) => [t.name, t.embedded ? `${t.name} (built in)` : t.name]),
      templates.length ? templates[0].name : undefined)),
    field("Sample config", input("config", { list: "samples", placeholder: "vz.conf's CONFIGFILE" })),
    field("Name", input("name", { placeholder: "web" })),
    field("Hostname", input("hostname", { placeholder: "web.example.lan", id: "create-hostname" })),
    field("IP addresses", input("ipadd", { placeholder: "10.0.0.5 10.0.0.6" })),
    field("RAM", input("ram", { placeholder: "512M" })),
    field("CPUs", input("cpus", { placeholder: "1", inputmode: "numeric" })),
    field("Disk space", input("diskspace", { placeholder: "10G" })),
    checkbox("start", "start it when created", true),
  ], "Create", async (values) => {
    const ctid = Number(values.ctid);
    if (!Number.isInteger(ctid) || ctid <= 0) throw new Error("the CTID is a positive number");
    const params = given(values, ["ostemplate", "config", "name", "hostname", "ram", "cpus", "diskspace"]);
    if (values.ipadd) params.ipadd = words(values.ipadd);
    await run("POST", "/cts", { ctid, params });
    usage.refreshSoon();
    if (values.start) await run("POST", `/cts/${ctid}/start`, {});
    notice(`CT ${ctid} created${values.start ? " and started" : ""}`);
    location.hash = `#/ct/${ctid}`;
    return "created";
  }, { disabled: !may("admin"), id: "create", class: "wide" });
  clear(main, el("h2", {}, "Create a container"), samples,
    may("admin") ? null : el("p", { class: "muted" }, "Creating CTs needs the admin role."), create);
  return () => {};
}
