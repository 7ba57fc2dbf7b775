// "Since you last looked": each CT's beancounter failcnts as this browser last saw them,
// kept in localStorage. A CT is marked when a failcnt is higher now; opening the CT's page
// (where its beancounters are shown) counts as looking. A counter lower than remembered
// was reset (the CT restarted), so the lower number becomes the one to compare with.

const KEY = (ctid) => `pyvz.failcnt.${ctid}`;
export const UBC = ["kmemsize", "lockedpages", "privvmpages", "shmpages", "numproc", "physpages",
  "vmguarpages", "oomguarpages", "numtcpsock", "numflock", "numpty", "numsiginfo", "tcpsndbuf",
  "tcprcvbuf", "othersockbuf", "dgramrcvbuf", "numothersock", "dcachesize", "numfile", "numiptent",
  "swappages"];

export function failcnts(ct) {
  const found = {};
  for (const name of UBC) {
    const counter = ct[name];
    if (counter && typeof counter.failcnt === "number") found[name] = counter.failcnt;
  }
  return found;
}

function load(ctid) {
  try { return JSON.parse(localStorage.getItem(KEY(ctid)) || "null"); } catch { return null; }
}

function save(ctid, counts) {
  try { localStorage.setItem(KEY(ctid), JSON.stringify(counts)); } catch { /* private mode: no memory */ }
}

/** The counters that rose since last looked: [[name, then, now], ...]. */
export function risen(ct) {
  const now = failcnts(ct);
  const then = load(ct.ctid);
  if (then === null) { save(ct.ctid, now); return []; } // first sight: nothing to compare with
  const rose = [];
  let reset = false;
  for (const [name, count] of Object.entries(now)) {
    const before = then[name] ?? 0;
    if (count > before) rose.push([name, before, count]);
    else if (count < before) { then[name] = count; reset = true; }
  }
  if (reset) save(ct.ctid, then);
  return rose;
}

export function looked(ct) { save(ct.ctid, failcnts(ct)); }

export function forget(ctid) { try { localStorage.removeItem(KEY(ctid)); } catch { /* nothing kept */ } }
