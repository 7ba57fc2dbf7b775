// What the logged-in grant may do, to grey out what the daemon would refuse anyway
// (the daemon decides; this only spares a click).

const RANK = { viewer: 0, operator: 1, admin: 2 };
let role = "viewer";

export function setRole(name) { role = name in RANK ? name : "viewer"; }
export function may(needed) { return RANK[role] >= RANK[needed]; }
