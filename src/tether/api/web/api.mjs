// The HTTP API client: JSON requests with the key saved in this browser, errors as ApiError.

import { formatOffset, offsetPos } from "./format.mjs";

export const KEY_STORE = "tether.key";
export const DEFAULT_TITLE = "New session";

let unauthorized = () => {};

/** Call `handler(message)` whenever the server answers 401 (the page then asks for a key). */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function apiKey() {
  return localStorage.getItem(KEY_STORE) || "";
}

export function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

export async function api(method, path, body) {
  const init = { method, headers: authHeaders(), cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, "network", `cannot reach the server (${err.message})`);
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!res.ok) {
    const e = (data && data.error) || {};
    const err = new ApiError(res.status, e.code || `http_${res.status}`, e.message || res.statusText);
    if (res.status === 401) unauthorized(err.message);
    throw err;
  }
  return data;
}

/** A title from a message, as the server makes one (sessions/service.py: title_from). */
export function titleFrom(text) {
  const line = text.split("\n").map((l) => l.split(/\s+/).filter(Boolean).join(" ")).find(Boolean);
  if (!line) return DEFAULT_TITLE;
  return line.length <= 80 ? line : line.slice(0, 79) + "…";
}

export const sessionPath = (id, rest = "") => `/v1/sessions/${encodeURIComponent(id)}${rest}`;

/**
 * A session's whole log, by plain catch-up reads of its stream from `offset`:
 * `{events: [[offset after it, event], ...], offset}` (the offset to go live from).
 * The server's bookkeeping (`skip`) is left out.
 */
export async function readLog(id, skip, offset = "-1") {
  const events = [];
  for (;;) {
    const url = `/v1/stream/sessions/${encodeURIComponent(id)}?offset=${encodeURIComponent(offset)}`;
    const res = await fetch(url, { headers: authHeaders(), cache: "no-store" });
    if (!res.ok) throw new ApiError(res.status, "history", `could not read the history (${res.status})`);
    const batch = await res.json();
    const start = offsetPos(offset);
    batch.forEach((e, i) => {
      if (!skip.has(e.type)) events.push([formatOffset(start + i + 1), e]);
    });
    offset = res.headers.get("Stream-Next-Offset") || formatOffset(start + batch.length);
    if (res.headers.get("Stream-Up-To-Date") === "true" || !batch.length) return { events, offset };
  }
}
