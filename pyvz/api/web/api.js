// Talking to /api/v1 with the session cookie. Every change carries the session's CSRF
// token (X-CSRF-Token), which the page learns from /ui/login or /ui/session and keeps in
// memory only. Errors keep the API's shape: HTTP status, vzctl's exit code, message.

import { track } from "./operations.js";

let csrf = "";
let onLoggedOut = () => {};

export function setSession(session) { csrf = session ? session.csrf : ""; }
export function whenLoggedOut(callback) { onLoggedOut = callback; }

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
  toString() {
    return this.code ? `${this.message} (exit code ${this.code})` : this.message;
  }
}

export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, credentials: "same-origin", cache: "no-store",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await response.json(); } catch { data = null; }
  if (response.status === 401 && !path.startsWith("/ui/login")) onLoggedOut();
  if (!response.ok) {
    const error = data && data.error ? data.error : {};
    throw new ApiError(response.status, error.code, error.message || `HTTP ${response.status}`);
  }
  return data;
}

export const get = (path) => api("GET", `/api/v1${path}`);

/** Start a background operation and follow it to its end: the final operation, or an
 * ApiError carrying the command's message and exit code when it failed. */
export async function run(method, path, body) {
  let op = await api(method, `/api/v1${path}${path.includes("?") ? "&" : "?"}wait=1`, body);
  track(op);
  while (op.status === "pending" || op.status === "running") {
    op = await api("GET", `/api/v1/operations/${encodeURIComponent(op.id)}/wait?timeout=30`);
    track(op);
  }
  if (op.status !== "success") {
    const result = op.result || {};
    const why = result.message || (result.stderr || "").trim().split("\n").pop() || op.status;
    throw new ApiError(200, result.exit_code, why);
  }
  return op;
}

export async function login(token) {
  return api("POST", "/ui/login", { token });
}

export async function session() {
  try { return await api("GET", "/ui/session"); } catch (error) {
    if (error.status === 401) return null;
    throw error;
  }
}

export async function logout() {
  await api("POST", "/ui/logout");
  csrf = "";
}
