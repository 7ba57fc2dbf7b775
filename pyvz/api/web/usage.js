// One poller for the whole page: every few seconds the CT list with the fields the views
// need (vzlist's, so the same numbers vzlist shows), and the CPU time of each CT from
// /metrics when this session may read it (it needs a grant for every CT). Views subscribe.

import { get } from "./api.js";
import { History } from "./spark.js";
import { UBC } from "./failcnt.js";

export const EVERY = 3000; // ms between samples
const PAGE = 4096; // physpages and swappages count pages
const FIELDS = ["ctid", "name", "hostname", "description", "status", "ip", "ostemplate", "uptime",
  "diskspace", "cpus", "cpulimit", "cpuunits", "onboot", "layout", ...UBC].join(",");

export const memory = new History();
export const cpu = new History();
export let cts = []; // the last list
export let cpuNote = "CPU use comes from /metrics";
let cpuRetry = 0; // when to ask /metrics again (ms, performance.now()); Infinity: never
const RETRY = 60000;
let lastCpu = new Map(); // ctid -> [seconds, when]
const listeners = new Set();
let timer = null;
let busy = false;

export function onSample(listener) {
  listeners.add(listener);
  if (cts.length) listener(cts);
  return () => listeners.delete(listener);
}

const finite = (value) => typeof value === "number" && value < 2 ** 53;

export function memoryOf(ct) {
  const pages = ct.physpages;
  if (!pages || !finite(pages.held)) return { used: null, limit: null };
  return { used: pages.held * PAGE, limit: finite(pages.limit) ? pages.limit * PAGE : null };
}

/** pyvz_ct_cpu_seconds_total per CTID out of the Prometheus text. */
export function cpuSeconds(text) {
  const found = new Map();
  for (const line of text.split("\n")) {
    const match = /^pyvz_ct_cpu_seconds_total\{ctid="(\d+)"/.exec(line);
    if (!match) continue;
    const value = Number(line.slice(line.lastIndexOf(" ") + 1));
    if (Number.isFinite(value)) found.set(Number(match[1]), value);
  }
  return found;
}

async function readCpu() {
  if (performance.now() < cpuRetry) return null;
  try {
    const response = await fetch("/metrics", { credentials: "same-origin", cache: "no-store" });
    if (!response.ok) {
      // 403: this grant does not cover every CT, and will not; else ask again later.
      cpuRetry = response.status === 403 ? Infinity : performance.now() + RETRY;
      cpuNote = response.status === 403 ? "CPU use needs a grant for every CT (/metrics)" : "CPU use: /metrics is not available";
      return null;
    }
    cpuNote = "CPU use: % of one CPU, from /metrics";
    return cpuSeconds(await response.text());
  } catch {
    return null;
  }
}

export async function sample() {
  if (busy) return;
  busy = true;
  try {
    const [list, seconds] = await Promise.all([get(`/cts?fields=${FIELDS}`), readCpu()]);
    const now = performance.now() / 1000;
    const next = new Map();
    for (const ct of list) {
      const { used } = memoryOf(ct);
      memory.push(ct.ctid, used || 0);
      if (seconds && seconds.has(ct.ctid)) {
        const value = seconds.get(ct.ctid);
        const before = lastCpu.get(ct.ctid);
        if (before && value >= before[0] && now > before[1]) cpu.push(ct.ctid, (100 * (value - before[0])) / (now - before[1]));
        next.set(ct.ctid, [value, now]);
      } else if (seconds) {
        cpu.push(ct.ctid, 0); // not running: no CPU time
      }
    }
    lastCpu = next;
    const ids = new Set(list.map((ct) => ct.ctid));
    memory.forget((id) => ids.has(id));
    cpu.forget((id) => ids.has(id));
    cts = list;
    for (const listener of listeners) listener(list);
  } catch (error) {
    if (error.status !== 401) for (const listener of listeners) listener(null, error);
  } finally {
    busy = false;
  }
}

export function startPolling() {
  if (timer === null) {
    sample();
    timer = setInterval(sample, EVERY);
  }
}

export function stopPolling() {
  clearInterval(timer);
  timer = null;
}

export const refreshSoon = (() => {
  let pending = null;
  return () => {
    if (pending) return;
    pending = setTimeout(() => { pending = null; sample(); }, 150);
  };
})();

