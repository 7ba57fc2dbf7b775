// A CT's snapshots, backups, clone and migration: the lists, and the forms that run
// vzctl snapshot*, vzdump, vzrestore, vzctl clone and vzmigrate as operations.

import { el, clear, button, bytes, notice, confirmDialog, field, input, select } from "./dom.js";
import { get, run } from "./api.js";
import { form, checkbox, given } from "./forms.js";
import { label } from "./list.js";
import { may } from "./role.js";
import * as usage from "./usage.js";

function when(text) {
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? String(text || "–") : date.toLocaleString();
}

async function act(what, method, path, body, then) {
  try {
    await run(method, path, body);
    notice(`${what}: done`);
  } catch (error) {
    notice(`${what} failed: ${error}`, "error");
  } finally {
    then();
    usage.refreshSoon();
  }
}

export function snapshotsSection(ct) {
  const body = el("tbody");
  const base = `/cts/${ct.ctid}/snapshots`;
  const refresh = async () => {
    let list;
    try { list = await get(base); } catch (error) {
      clear(body, el("tr", {}, el("td", { colspan: 4, class: "error" }, String(error))));
      return;
    }
    clear(body, list.length ? list.map((s) => el("tr", { class: s.current ? "current" : null, dataset: { uuid: s.uuid } },
      el("td", { "data-label": "Name", class: "snapshot-name" }, s.name || "–", s.current ? el("small", { class: "badge" }, "current") : null),
      el("td", { "data-label": "Taken" }, when(s.date)),
      el("td", { "data-label": "Description" }, s.description || ""),
      el("td", { class: "actions" },
        button("Switch", async () => {
          if (!(await confirmDialog(`Switch CT ${label(ct)} to snapshot ${s.name || s.uuid}? Changes since then are lost.`, "Switch"))) return;
          act(`Switch to ${s.name || s.uuid}`, "POST", `${base}/${s.uuid}/switch`, {}, refresh);
        }, { disabled: !may("admin") }),
        button("Delete", async () => {
          if (!(await confirmDialog(`Delete snapshot ${s.name || s.uuid} of CT ${label(ct)}?`, "Delete"))) return;
          act(`Delete snapshot ${s.name || s.uuid}`, "DELETE", `${base}/${s.uuid}`, undefined, refresh);
        }, { disabled: !may("operator"), class: "danger" }))))
      : el("tr", {}, el("td", { colspan: 4, class: "muted" }, "No snapshots.")));
  };
  const take = form([
    field("Name", input("name", { placeholder: "before-upgrade", maxlength: 256, id: "snapshot-name" })),
    field("Description", input("description", { maxlength: 1024 })),
    checkbox("skip_suspend", "don't freeze the CT while taking it"),
  ], "Take snapshot", async (values) => {
    const body = given(values, ["name", "description"]);
    if (values.skip_suspend) body.skip_suspend = true;
    await run("POST", base, body);
    refresh();
    return "snapshot taken";
  }, { disabled: !may("operator"), id: "snapshot-take" });
  refresh();
  const node = el("div", {}, el("table", { class: "snapshots cards" },
    el("thead", {}, el("tr", {}, ["Name", "Taken", "Description", ""].map((h) => el("th", {}, h)))), body), take);
  return { node, refresh };
}

export function backupsSection(ct) {
  const body = el("tbody");
  const base = `/cts/${ct.ctid}/backups`;
  const refresh = async () => {
    let list;
    try { list = await get(base); } catch (error) {
      clear(body, el("tr", {}, el("td", { colspan: 4, class: "error" }, String(error))));
      return;
    }
    clear(body, list.length ? list.map((b) => el("tr", {},
      el("td", { "data-label": "Archive", class: "mono" }, b.archive),
      el("td", { "data-label": "Date" }, when(b.date)),
      el("td", { "data-label": "Size" }, bytes(b.size)),
      el("td", { class: "actions" },
        button("Restore", async () => {
          if (!(await confirmDialog(`Restore CT ${label(ct)} from ${b.archive}? The CT's files and config are replaced by the backup's.`, "Restore"))) return;
          act(`Restore ${b.archive}`, "POST", `${base}/restore`, { archive: b.archive, force: true }, refresh);
        }, { disabled: !may("admin") }),
        button("Verify", () => act(`Verify ${b.archive}`, "POST", `${base}/verify`, { archive: b.archive }, refresh)))))
      : el("tr", {}, el("td", { colspan: 4, class: "muted" }, "No backups.")));
  };
  const backup = form([
    field("Mode", select("mode", [["snapshot", "snapshot (CT keeps running)"], ["suspend", "suspend"], ["stop", "stop"]], "snapshot")),
    field("Compression", select("compress", [["zstd", "zstd"], ["gzip", "gzip"], ["none", "none"]], "zstd")),
    checkbox("incremental", "incremental (since the last full backup)"),
  ], "Back up now", async (values) => {
    const body = { mode: values.mode, compress: values.compress };
    if (values.incremental) body.incremental = true;
    await run("POST", base, body);
    refresh();
    return "backup done";
  }, { disabled: !may("operator"), id: "backup-run" });
  refresh();
  const node = el("div", {}, el("table", { class: "backups cards" },
    el("thead", {}, el("tr", {}, ["Archive", "Date", "Size", ""].map((h) => el("th", {}, h)))), body), backup);
  return { node, refresh };
}

export function cloneSection(ct) {
  return form([
    field("New CTID", input("target", { inputmode: "numeric", required: true, placeholder: String(ct.ctid + 1) })),
    field("Name", input("name")),
    field("Hostname", input("hostname")),
  ], "Clone", async (values) => {
    const target = Number(values.target);
    if (!Number.isInteger(target) || target <= 0) throw new Error("give the new CT's numeric ID");
    const params = given(values, ["name", "hostname"]);
    await run("POST", `/cts/${ct.ctid}/clone`, { target, params });
    usage.refreshSoon();
    return `cloned to CT ${target}`;
  }, { disabled: !may("admin") });
}

export function migrateSection(ct) {
  return form([
    field("Destination", input("destination", { placeholder: "root@host2 or host2", required: true }), "another pyvz host, reached over SSH as vzmigrate does"),
    checkbox("online", "online (live, with CRIU)"),
    checkbox("keep_dst", "keep what reached the destination if it fails"),
    checkbox("remove_source", "remove the CT here afterwards", true),
  ], "Migrate", async (values) => {
    if (!values.destination) throw new Error("give a destination host");
    const ok = await confirmDialog(`Migrate CT ${label(ct)} to ${values.destination}?`, "Migrate");
    if (!ok) return "not migrated";
    const body = { destination: values.destination, online: values.online, keep_dst: values.keep_dst, remove_source: values.remove_source };
    await run("POST", `/cts/${ct.ctid}/migrate`, body);
    usage.refreshSoon();
    return `migrated to ${values.destination}`;
  }, { disabled: !may("admin") });
}
