// tether web UI: plain JavaScript, no build step, no dependencies.
//
// A session is rendered from its snapshot (GET /v1/sessions/{id}), which is
// complete up to an offset, and then kept current by the live events after
// that offset (GET /v1/sessions/{id}/events, SSE). Every SSE event's id is
// the stream offset after it, so the browser's EventSource resumes by itself
// (Last-Event-ID) and nothing is applied twice. The client keeps the same
// fold of events into a message tree as the server (sessions/fold.py).
"use strict";

const KEY_STORE = "tether.key";
const MODEL_STORE = "tether.model";
const MAX_EVENT_ROWS = 3000;
const DEFAULT_TITLE = "New session";

// ---------------------------------------------------------------------------
// Small helpers

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function esc(s) {
  return String(s).replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c],
  );
}

/** Position in a stream offset token ("0000000000000000_0000000000000042" -> 42). */
function offsetPos(offset) {
  if (!offset || offset === "-1") return 0;
  const i = offset.indexOf("_");
  return Number(i < 0 ? offset : offset.slice(i + 1));
}

function formatOffset(pos) {
  return "0000000000000000_" + String(pos).padStart(16, "0");
}

function pretty(value) {
  if (typeof value === "string") return value;
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

function timeAgo(ts) {
  if (!ts) return "";
  const s = Math.max(0, Date.now() / 1000 - ts);
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(ts * 1000).toLocaleDateString();
}

function toast(message, kind = "error") {
  const node = el("div", { class: `toast ${kind}`, role: "status", text: message });
  $("toasts").append(node);
  setTimeout(() => node.remove(), kind === "error" ? 6000 : 3000);
}

// ---------------------------------------------------------------------------
// Markdown: a small, safe subset. Everything is escaped; only the tags below
// are produced, and links only to http(s), mailto or same-origin paths.

function safeUrl(url) {
  const u = url.trim();
  if (/^(https?:|mailto:)/i.test(u) || /^\/(?!\/)/.test(u) || u.startsWith("#")) return u;
  return null;
}

function inline(src) {
  const slots = [];
  const keep = (html) => "\u0000" + (slots.push(html) - 1) + "\u0000";
  let s = src.replace(/\u0000/g, "");
  s = s.replace(/(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/g, (_, _ticks, code) =>
    keep("<code>" + esc(code) + "</code>"),
  );
  s = s.replace(/\[([^\]\n]+)\]\(([^()\s]+)\)/g, (all, label, url) => {
    const u = safeUrl(url);
    if (!u) return all;
    return keep(`<a href="${esc(u)}" target="_blank" rel="noopener noreferrer">`) + label + keep("</a>");
  });
  s = s.replace(/\bhttps?:\/\/[^\s<>()"'`\u0000]*[^\s<>()"'`.,;:!?\u0000]/g, (u) =>
    keep(`<a href="${esc(u)}" target="_blank" rel="noopener noreferrer">${esc(u)}</a>`),
  );
  s = esc(s);
  s = s.replace(/\*\*(?=\S)([^\n]*?\S)\*\*/g, "<strong>$1</strong>");
  s = s.replace(/(^|[^\w])__(?=\S)([^\n]*?\S)__(?!\w)/g, "$1<strong>$2</strong>");
  s = s.replace(/(^|[^*\w])\*([^*\s]|[^*\s][^*\n]*?[^*\s])\*(?![*\w])/g, "$1<em>$2</em>");
  s = s.replace(/(^|[^\w])_([^_\s]|[^_\s][^_\n]*?[^_\s])_(?!\w)/g, "$1<em>$2</em>");
  s = s.replace(/~~(?=\S)([^\n]*?\S)~~/g, "<del>$1</del>");
  return s.replace(/\u0000(\d+)\u0000/g, (_, i) => slots[Number(i)]);
}

const FENCE_RE = /^\s{0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/;
const HEADING_RE = /^\s{0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$/;
const HR_RE = /^\s{0,3}([-*_])(?:\s*\1){2,}\s*$/;
const QUOTE_RE = /^\s{0,3}>/;
const LIST_RE = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const TABLE_SEP_RE = /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;

function startsBlock(line) {
  return FENCE_RE.test(line) || HEADING_RE.test(line) || HR_RE.test(line) || QUOTE_RE.test(line) ||
    LIST_RE.test(line);
}

function splitRow(line) {
  let s = line.trim();
  if (s.startsWith("|")) s = s.slice(1);
  if (s.endsWith("|") && !s.endsWith("\\|")) s = s.slice(0, -1);
  return s.split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, "|"));
}

function markdown(src) {
  const lines = src.replace(/\r\n?/g, "\n").split("\n");
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if (!line.trim()) {
      i++;
    } else if ((m = line.match(FENCE_RE))) {
      const fence = m[1];
      const lang = m[2];
      const body = [];
      i++;
      while (i < lines.length && !lines[i].trim().startsWith(fence)) body.push(lines[i++]);
      i++;
      const label = lang ? `<span class="lang">${esc(lang)}</span>` : "";
      out.push(`<pre class="code">${label}<code>${esc(body.join("\n"))}</code></pre>`);
    } else if ((m = line.match(HEADING_RE))) {
      const n = m[1].length;
      out.push(`<h${n}>${inline(m[2])}</h${n}>`);
      i++;
    } else if (HR_RE.test(line)) {
      out.push("<hr>");
      i++;
    } else if (QUOTE_RE.test(line)) {
      const body = [];
      while (i < lines.length && lines[i].trim() && QUOTE_RE.test(lines[i])) {
        body.push(lines[i++].replace(/^\s{0,3}>\s?/, ""));
      }
      out.push(`<blockquote>${markdown(body.join("\n"))}</blockquote>`);
    } else if ((m = line.match(LIST_RE))) {
      i = list(lines, i, out);
    } else if (line.includes("|") && i + 1 < lines.length && lines[i + 1].includes("-") &&
               TABLE_SEP_RE.test(lines[i + 1])) {
      const head = splitRow(line);
      const aligns = splitRow(lines[i + 1]).map((c) =>
        c.startsWith(":") && c.endsWith(":") ? "center" : c.endsWith(":") ? "right" : "",
      );
      i += 2;
      const rows = [];
      while (i < lines.length && lines[i].trim() && lines[i].includes("|")) rows.push(splitRow(lines[i++]));
      const cell = (tag, text, k) =>
        `<${tag}${aligns[k] ? ` class="align-${aligns[k]}"` : ""}>${inline(text || "")}</${tag}>`;
      out.push(
        "<table><thead><tr>" + head.map((c, k) => cell("th", c, k)).join("") + "</tr></thead><tbody>" +
        rows.map((r) => "<tr>" + head.map((_, k) => cell("td", r[k], k)).join("") + "</tr>").join("") +
        "</tbody></table>",
      );
    } else {
      const para = [lines[i++]];
      while (i < lines.length && lines[i].trim() && !startsBlock(lines[i])) para.push(lines[i++]);
      out.push(`<p>${para.map((p) => inline(p.trim())).join("<br>")}</p>`);
    }
  }
  return out.join("");
}

function list(lines, i, out) {
  const first = lines[i].match(LIST_RE);
  const base = first[1].length;
  const ordered = /\d/.test(first[2]);
  const items = [];
  let cur = null;
  while (i < lines.length) {
    const line = lines[i];
    const m = line.match(LIST_RE);
    if (m && m[1].length <= base + 1) {
      if (/\d/.test(m[2]) !== ordered) break;
      cur = [m[3]];
      items.push(cur);
      i++;
    } else if (line.trim() && (line.length - line.trimStart().length >= base + 2 || !startsBlock(line))) {
      cur.push(line.slice(Math.min(base + 2, line.length - line.trimStart().length)));
      i++;
    } else if (!line.trim() && i + 1 < lines.length) {
      const next = lines[i + 1];
      const nm = next.match(LIST_RE);
      const indented = next.trim() && next.length - next.trimStart().length >= base + 2;
      if (!(nm && nm[1].length <= base + 1 && /\d/.test(nm[2]) === ordered) && !indented) break;
      cur.push("");
      i++;
    } else {
      break;
    }
  }
  const start = ordered ? parseInt(first[2], 10) : 1;
  const tag = ordered ? "ol" : "ul";
  const attrs = ordered && start !== 1 ? ` start="${start}"` : "";
  const lis = items.map((item) => {
    const body = item.length === 1 ? inline(item[0]) : markdown(item.join("\n"));
    return `<li>${body}</li>`;
  });
  out.push(`<${tag}${attrs}>${lis.join("")}</${tag}>`);
  return i;
}

// ---------------------------------------------------------------------------
// HTTP

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function apiKey() {
  return localStorage.getItem(KEY_STORE) || "";
}

function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function api(method, path, body) {
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
    if (res.status === 401) needKey(err.message);
    throw err;
  }
  return data;
}

const titleFrom = (text) => text.split("\n")[0].trim().slice(0, 60) || DEFAULT_TITLE;

const sessionPath = (id, rest = "") => `/v1/sessions/${encodeURIComponent(id)}${rest}`;

// ---------------------------------------------------------------------------
// The fold: the same reduction of events into a message tree as the server's.

class Fold {
  constructor() {
    this.gen = ++Fold.count; // views drawn from another fold are redrawn
    this.messages = new Map();
    this.children = new Map(); // parent id ("" for roots) -> child ids, oldest first
    this.leaf = null; // the newest message placed: the end of the current branch
    this.activeRun = null;
    this.queue = [];
    this.status = "idle";
    this.lastError = null;
    this.parts = new Map(); // part id -> [message, part]
    this.toolCalls = new Map(); // tool call id -> part
    this.retries = new Map(); // run id -> last retry event
    this.errors = new Map(); // run id -> {code, message}
    this.seen = new Set();
    this.complete = true; // false: seeded from a snapshot, other branches unknown
  }

  static fromSnapshot(snap) {
    const f = new Fold();
    f.status = snap.status || "idle";
    f.activeRun = snap.active_run || null;
    f.queue = snap.queue || [];
    f.lastError = snap.last_error || null;
    for (const m of snap.messages || []) {
      const msg = {
        id: m.id, role: m.role, parent_id: m.parent_id ?? null, status: m.status,
        run_id: m.run_id ?? null, usage: m.usage ?? null, edit_of: m.edit_of ?? null,
        parts: [], rev: 0,
      };
      for (const p of m.parts || []) {
        const part = Object.assign({ text: "", done: true }, p, { rev: 0 });
        if (!("needs_approval" in p)) part.needs_approval = undefined; // not told
        msg.parts.push(part);
        f.parts.set(part.id, [msg, part]);
        if (part.tool_call_id) f.toolCalls.set(part.tool_call_id, part);
      }
      f.messages.set(msg.id, msg);
      const siblings = (m.siblings && m.siblings.length ? m.siblings : [msg.id]).slice();
      f.children.set(msg.parent_id ?? "", siblings);
      if (siblings.some((id) => id !== msg.id)) f.complete = false;
    }
    const msgs = snap.messages || [];
    f.leaf = msgs.length ? msgs[msgs.length - 1].id : null;
    return f;
  }

  kids(parentId) {
    return this.children.get(parentId ?? "") || [];
  }

  apply(e) {
    if (e.id) {
      if (this.seen.has(e.id)) return false;
      this.seen.add(e.id);
    }
    const handler = Fold.handlers[e.type];
    if (handler) handler.call(this, e);
    return true;
  }

  touch(msg, part) {
    msg.rev++;
    if (part) part.rev++;
  }

  place(msg) {
    this.messages.set(msg.id, msg);
    const key = msg.parent_id ?? "";
    const kids = this.children.get(key) || [];
    if (!kids.includes(msg.id)) kids.push(msg.id);
    this.children.set(key, kids);
    this.leaf = msg.id;
  }

  /** Messages from the root to `leaf`; `broken` if a message on the way is not known here. */
  branch(leaf) {
    const out = [];
    let cur = leaf === undefined ? this.leaf : leaf;
    let broken = false;
    const guard = new Set();
    while (cur) {
      const msg = this.messages.get(cur);
      if (!msg || guard.has(cur)) {
        broken = true;
        break;
      }
      guard.add(cur);
      out.push(msg);
      cur = msg.parent_id;
    }
    out.reverse();
    return { messages: out, broken };
  }

  isAncestorOrSelf(ancestor, id) {
    for (let cur = id; cur; cur = this.messages.get(cur)?.parent_id) if (cur === ancestor) return true;
    return false;
  }

  /** The leaf to show for a message: the current leaf if below it, else its newest descendants. */
  descend(id) {
    if (this.leaf && this.isAncestorOrSelf(id, this.leaf)) return this.leaf;
    let cur = id;
    for (;;) {
      const kids = this.kids(cur).filter((k) => this.messages.has(k));
      if (!kids.length) return cur;
      cur = kids[kids.length - 1];
    }
  }
}

Fold.count = 0;

Fold.handlers = {
  "user-message"(e) {
    if (this.messages.has(e.message_id)) return;
    const parts = (e.parts || []).map((p, i) => ({
      id: `${e.message_id}:${i}`, kind: p.type || "text", text: p.text || "", done: true, rev: 0,
    }));
    this.place({
      id: e.message_id, role: "user", parent_id: e.parent_id ?? null, parts, status: "complete",
      run_id: null, usage: null, edit_of: e.edit_of ?? null, rev: 0,
    });
  },
  "message-start"(e) {
    if (this.messages.has(e.message_id)) return;
    this.place({
      id: e.message_id, role: e.role || "assistant", parent_id: e.parent_id ?? null, parts: [],
      status: "streaming", run_id: e.run_id ?? null, usage: null, edit_of: null, rev: 0,
    });
  },
  "part-start"(e) {
    const msg = this.messages.get(e.message_id);
    if (!msg || this.parts.has(e.part_id)) return;
    const part = {
      id: e.part_id, kind: e.kind || "text", text: "", done: false, rev: 0,
      tool_call_id: e.tool_call_id, tool_name: e.tool_name, needs_approval: !!e.needs_approval,
    };
    msg.parts.push(part);
    this.parts.set(part.id, [msg, part]);
    if (part.tool_call_id) this.toolCalls.set(part.tool_call_id, part);
    this.touch(msg, part);
  },
  "part-delta"(e) {
    const found = this.parts.get(e.part_id);
    if (!found) return;
    found[1].text += e.delta || "";
    this.touch(found[0], found[1]);
  },
  "part-end"(e) {
    const found = this.parts.get(e.part_id);
    if (!found) return;
    const part = found[1];
    part.done = true;
    if ("value" in e) part.value = e.value;
    if ("text" in e) part.text = e.text;
    this.touch(found[0], part);
  },
  "message-end"(e) {
    const msg = this.messages.get(e.message_id);
    if (!msg) return;
    msg.status = e.status || "complete";
    msg.usage = e.usage || msg.usage;
    for (const part of msg.parts) {
      part.done = true;
      part.rev++;
    }
    this.touch(msg);
  },
  "run-start"(e) {
    this.activeRun = { run_id: e.run_id, trigger: e.trigger, model: e.model, started_at: e.ts };
    this.status = "running";
  },
  "run-end"(e) {
    const reason = e.reason || "complete";
    for (const msg of this.messages.values()) {
      if (msg.run_id === e.run_id && msg.status === "streaming") {
        msg.status = reason === "complete" ? "complete" : reason;
        for (const part of msg.parts) {
          part.done = true;
          part.rev++;
        }
        this.touch(msg);
      }
    }
    if (this.activeRun && this.activeRun.run_id === e.run_id) {
      this.activeRun = null;
      this.status = "idle";
    }
  },
  retry(e) {
    for (const partId of e.discard || []) {
      const found = this.parts.get(partId);
      if (!found) continue;
      this.parts.delete(partId);
      found[0].parts = found[0].parts.filter((p) => p !== found[1]);
      this.touch(found[0]);
    }
    this.retries.set(e.run_id, e);
  },
  error(e) {
    this.lastError = { code: e.code, message: e.message };
    if (e.run_id) this.errors.set(e.run_id, this.lastError);
  },
  "tool-result"(e) {
    const part = this.toolCalls.get(e.tool_call_id);
    if (!part) return;
    part.result = e.output ?? null;
    part.error = e.error ?? null;
    part.answered = true;
    part.rev++;
    const found = this.parts.get(part.id);
    if (found) this.touch(found[0]);
  },
  "tool-approval"(e) {
    const part = this.toolCalls.get(e.tool_call_id);
    if (!part) return;
    part.approval = { approved: !!e.approved, reason: e.reason ?? null };
    part.rev++;
    const found = this.parts.get(part.id);
    if (found) this.touch(found[0]);
  },
  status(e) {
    this.status = e.status;
  },
  "queue-update"(e) {
    this.queue = e.queue || [];
  },
};

// ---------------------------------------------------------------------------
// Application state

const state = {
  sessions: [],
  models: [],
  current: null, // the open Session
  authNeeded: false,
};

// ---------------------------------------------------------------------------
// Connection indicator

const conn = {
  set(kind, text) {
    const node = $("conn");
    node.dataset.state = kind;
    $("conn-text").textContent = text;
    node.title = `event stream: ${text}`;
  },
};

// ---------------------------------------------------------------------------
// A session: its fold, its event stream and the branch being viewed.

class Session {
  constructor(id) {
    this.id = id;
    this.record = null;
    /** The first load (snapshot), set by select(). */
    this.opening = null;
    this.fold = new Fold();
    this.offset = null; // offset of the last event applied
    this.viewLeaf = null; // the end of the branch on screen
    this.es = null;
    this.opened = false; // the stream has been open at least once
    this.closed = false;
    this.backoff = 0;
    this.retryTimer = null;
    this.loadingFull = null;
    this.ready = false;
  }

  async open() {
    conn.set("connecting", "loading…");
    const snap = await api("GET", sessionPath(this.id));
    if (this.closed) return;
    this.record = snap;
    this.fold = Fold.fromSnapshot(snap);
    this.offset = snap.offset;
    this.viewLeaf = this.fold.leaf;
    this.ready = true;
    inspector.reset();
    inspector.marker(`snapshot: complete up to offset ${offsetPos(snap.offset)}`);
    const unknownApproval = [...this.fold.toolCalls.values()].some(
      (p) => p.needs_approval === undefined && !p.answered && p.result == null && p.error == null &&
        !p.approval,
    );
    render();
    if (unknownApproval && this.fold.activeRun) {
      // The snapshot does not say whether this pending call needs approval; the log does.
      await this.loadFull();
    } else {
      this.connect();
    }
  }

  close() {
    this.closed = true;
    clearTimeout(this.retryTimer);
    this.closeStream();
  }

  closeStream() {
    if (this.es) {
      this.es.close();
      this.es = null;
    }
  }

  async connect() {
    if (this.closed) return;
    this.closeStream();
    clearTimeout(this.retryTimer);
    let url = `${sessionPath(this.id, "/events")}?offset=${encodeURIComponent(this.offset)}`;
    if (apiKey()) {
      try {
        const t = await api("POST", sessionPath(this.id, "/read-token"));
        url += `&token=${encodeURIComponent(t.token)}`;
      } catch (err) {
        if (err.status === 401 || err.status === 404) {
          conn.set("error", err.message);
          return;
        }
        this.scheduleReconnect();
        return;
      }
      if (this.closed) return;
    }
    const es = new EventSource(url);
    this.es = es;
    if (this.opened) conn.set("reconnecting", `reconnecting from offset ${offsetPos(this.offset)}…`);
    else conn.set("connecting", "connecting…");
    es.onopen = () => {
      if (this.es !== es) return;
      this.backoff = 0;
      const pos = offsetPos(this.offset);
      if (!this.opened) {
        this.opened = true;
        conn.set("connected", `live from offset ${pos}`);
      } else {
        conn.set("resumed", `resumed from offset ${pos}`);
        inspector.marker(`stream resumed from offset ${pos}`);
      }
    };
    es.onmessage = (m) => {
      if (this.es === es) this.onEvent(m.lastEventId, m.data);
    };
    es.onerror = () => {
      if (this.es !== es) return;
      if (es.readyState === EventSource.CLOSED) {
        // The server refused: an expired token (mint another), or the chat is gone.
        this.closeStream();
        api("GET", sessionPath(this.id)).then(
          () => this.scheduleReconnect(),
          (err) => {
            if (this.closed) return;
            if (err.status === 404) conn.set("error", "this chat no longer exists");
            else if (err.status === 401) conn.set("error", "not authorized");
            else this.scheduleReconnect();
          },
        );
      }
      conn.set("reconnecting", `reconnecting from offset ${offsetPos(this.offset)}…`);
    };
  }

  scheduleReconnect() {
    if (this.closed) return;
    this.backoff = Math.min(this.backoff ? this.backoff * 2 : 500, 8000);
    conn.set("reconnecting", `reconnecting from offset ${offsetPos(this.offset)}…`);
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), this.backoff);
  }

  onEvent(id, data) {
    let ev;
    try {
      ev = JSON.parse(data);
    } catch {
      return;
    }
    // The snapshot (or an earlier event) already covers this offset.
    if (id && offsetPos(id) <= offsetPos(this.offset)) return;
    if (id) this.offset = id;
    inspector.add(id, ev);
    const leaf = this.fold.leaf;
    this.fold.apply(ev);
    if (this.fold.leaf !== leaf) this.viewLeaf = this.fold.leaf; // follow what was just placed
    if (ev.type === "run-end") refreshSessions();
    scheduleRender();
  }

  /** Read the whole log (a plain catch-up read of the session's stream) and fold it all. */
  loadFull() {
    if (this.loadingFull) return this.loadingFull;
    this.loadingFull = (async () => {
      this.closeStream();
      const events = [];
      let offset = "-1";
      for (;;) {
        const url = `/v1/stream/sessions/${encodeURIComponent(this.id)}?offset=${encodeURIComponent(offset)}`;
        const res = await fetch(url, { headers: authHeaders(), cache: "no-store" });
        if (!res.ok) throw new ApiError(res.status, "history", `could not read the history (${res.status})`);
        const batch = await res.json();
        const start = offsetPos(offset);
        batch.forEach((e, i) => events.push([formatOffset(start + i + 1), e]));
        offset = res.headers.get("Stream-Next-Offset") || formatOffset(start + batch.length);
        if (res.headers.get("Stream-Up-To-Date") === "true" || !batch.length) break;
      }
      if (this.closed) return;
      const fold = new Fold();
      for (const [, e] of events) fold.apply(e);
      const viewLeaf = this.viewLeaf;
      this.fold = fold;
      this.offset = offset;
      this.viewLeaf = viewLeaf && fold.messages.has(viewLeaf) ? viewLeaf : fold.leaf;
      inspector.reset();
      for (const [off, e] of events) inspector.add(off, e);
      inspector.marker(`history: all ${events.length} events, up to offset ${offsetPos(offset)}`);
      render();
    })()
      .catch((err) => toast(err.message))
      .finally(() => {
        this.loadingFull = null;
        this.connect();
      });
    return this.loadingFull;
  }

  // -- inputs ----------------------------------------------------------------

  async send(text) {
    // Take the snapshot first: a message sent before it would be folded into it
    // (a fast run ends before the page reads it), and never seen as live events.
    await this.opening?.catch(() => {});
    const body = { content: text };
    if (this.viewLeaf && this.viewLeaf !== this.fold.leaf) body.parent_id = this.viewLeaf;
    await api("POST", sessionPath(this.id, "/messages"), body);
    if (this.record && this.record.title === DEFAULT_TITLE) {
      const title = titleFrom(text);
      this.record.title = title;
      renderHeader();
      api("PATCH", sessionPath(this.id), { title }).then(refreshSessions, () => {});
    }
  }

  async switchBranch(messageId, step) {
    const msg = this.fold.messages.get(messageId);
    if (!msg) return;
    const siblings = this.fold.kids(msg.parent_id);
    const target = siblings[siblings.indexOf(messageId) + step];
    if (!target) return;
    if (!this.fold.messages.has(target)) await this.loadFull();
    if (!this.fold.messages.has(target)) return;
    this.viewLeaf = this.fold.descend(target);
    render();
  }
}

// ---------------------------------------------------------------------------
// Event inspector

const inspector = {
  rows: 0,
  pending: [],
  reset() {
    $("event-list").replaceChildren();
    this.pending = [];
    this.rows = 0;
    this.count();
  },
  marker(text) {
    this.pending.push(el("li", { class: "marker", text }));
    scheduleRender();
  },
  add(offset, ev) {
    const pos = offset ? offsetPos(offset) : "";
    const row = el(
      "li",
      { class: `ev ev-${ev.type}`, "data-offset": offset || "", title: offset || "" },
      el("span", { class: "off", text: pos }),
      el("span", { class: "type", text: ev.type }),
      el("span", { class: "brief", text: brief(ev) }),
    );
    row._event = ev;
    this.pending.push(row);
    this.rows++;
  },
  flush() {
    if (!this.pending.length) return;
    const list = $("event-list");
    const stick = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    list.append(...this.pending);
    this.pending = [];
    while (list.childElementCount > MAX_EVENT_ROWS) list.firstElementChild.remove();
    if (stick) list.scrollTop = list.scrollHeight;
    this.count();
  },
  count() {
    const s = state.current;
    const at = s && s.offset ? ` · offset ${offsetPos(s.offset)}` : "";
    $("event-count").textContent = `${this.rows} shown${at}`;
  },
};

function brief(ev) {
  switch (ev.type) {
    case "part-delta":
      return JSON.stringify(ev.delta);
    case "part-start":
      return `${ev.kind}${ev.tool_name ? " " + ev.tool_name : ""} ${ev.part_id}`;
    case "part-end":
      return ev.part_id;
    case "user-message":
      return JSON.stringify((ev.parts || []).map((p) => p.text || "").join(" ").slice(0, 60));
    case "message-start":
    case "message-end":
      return `${ev.message_id}${ev.status ? " " + ev.status : ""}`;
    case "run-start":
      return `${ev.run_id} ${ev.model || ""}`;
    case "run-end":
      return `${ev.run_id} ${ev.reason}`;
    case "status":
      return ev.status;
    case "queue-update":
      return `${(ev.queue || []).length} queued`;
    case "retry":
      return `attempt ${ev.attempt}: ${ev.error}`;
    case "error":
      return ev.message || ev.code || "";
    case "tool-result":
    case "tool-approval":
      return ev.tool_call_id;
    case "cancel":
      return ev.run_id || "all";
    default:
      return "";
  }
}

// ---------------------------------------------------------------------------
// Rendering

let renderQueued = false;

function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  // requestAnimationFrame pauses in hidden tabs; the timer keeps them current.
  const run = () => {
    if (!renderQueued) return;
    renderQueued = false;
    render();
  };
  requestAnimationFrame(run);
  setTimeout(run, 100);
}

function render() {
  renderHeader();
  renderMessages();
  renderComposer();
  inspector.flush();
}

function renderHeader() {
  const s = state.current;
  const record = s && s.record;
  $("session-title").textContent = record ? record.title : s ? "Loading…" : "No chat selected";
  $("session-meta").textContent = record
    ? `${record.agent ? "agent " + record.agent : record.model || "demo"} · ${record.id}`
    : "";
  const badge = $("run-status");
  const status = s && s.ready ? s.fold.status : "idle";
  badge.hidden = status === "idle";
  badge.dataset.status = status;
  badge.textContent = status === "waiting" ? "waiting for you" : status;
  document.title = record ? `${record.title} · tether` : "tether";
  for (const item of document.querySelectorAll(".session-item")) {
    item.classList.toggle("active", !!s && item.dataset.sessionId === s.id);
  }
}

const views = new Map(); // message id -> view of the open session

function renderMessages() {
  const box = $("messages");
  const s = state.current;
  let list = [];
  if (s && s.ready) {
    const b = s.fold.branch(s.viewLeaf);
    if (b.broken && !s.loadingFull) s.loadFull();
    list = b.messages;
  }
  $("empty").hidden = list.length > 0;
  const stick = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  const wanted = list.map((msg) => messageView(s, msg));
  const keep = new Set(wanted);
  for (const child of [...box.children]) if (child.id !== "empty" && !keep.has(child)) child.remove();
  let before = $("empty").nextSibling;
  for (const node of wanted) {
    if (node !== before) box.insertBefore(node, before);
    before = node.nextSibling;
  }
  for (const [id, v] of views) if (!keep.has(v.el)) views.delete(id);
  if (stick) box.scrollTop = box.scrollHeight;

  const notice = $("notice");
  const run = s && s.ready && s.fold.activeRun;
  const retry = run && s.fold.retries.get(run.run_id);
  if (retry) {
    notice.hidden = false;
    notice.textContent = `Attempt ${retry.attempt} failed (${retry.error}); retrying in ${retry.delay_ms} ms…`;
  } else {
    notice.hidden = true;
  }
  renderQueue(s);
}

function renderQueue(s) {
  const box = $("queue");
  const queue = s && s.ready ? s.fold.queue : [];
  box.hidden = !queue.length;
  const sig = JSON.stringify(queue);
  if (box.dataset.sig === sig) return;
  box.dataset.sig = sig;
  box.replaceChildren(
    ...queue.map((q) =>
      el(
        "div",
        { class: "queued" },
        el("span", { class: "muted", text: q.kind === "regenerate" ? "queued: regenerate" : "queued:" }),
        el("span", { class: "queued-text", text: (q.parts || []).map((p) => p.text || "").join(" ") }),
        el("button", {
          class: "ghost small", type: "button", text: "Remove",
          onclick: () => act(() => api("POST", sessionPath(s.id, "/cancel"), { run_id: q.run_id })),
        }),
      ),
    ),
  );
}

function renderComposer() {
  const s = state.current;
  const running = !!(s && s.ready && s.fold.activeRun);
  $("stop").hidden = !running;
  $("send").textContent = running ? "Queue" : "Send";
}

function messageView(s, msg) {
  let v = views.get(msg.id);
  if (!v) {
    v = { el: null, parts: new Map(), sig: null, editing: false };
    v.el = el("article", { class: `msg ${msg.role}`, "data-message-id": msg.id, "data-role": msg.role });
    v.head = el("div", { class: "msg-head" });
    v.body = el("div", { class: "parts" });
    v.foot = el("div", { class: "msg-foot" });
    v.el.append(v.head, v.body, v.foot);
    views.set(msg.id, v);
  }
  const siblings = s.fold.kids(msg.parent_id);
  const sig = [s.fold.gen, msg.rev, msg.status, siblings.join(","), v.editing, s.fold.status].join("|");
  v.el.dataset.status = msg.status;
  if (v.sig === sig) return v.el;
  v.sig = sig;
  renderHead(s, msg, v, siblings);
  if (!v.editing) renderParts(s, msg, v);
  renderFoot(s, msg, v);
  return v.el;
}

function renderHead(s, msg, v, siblings) {
  const children = [el("span", { class: "role", text: msg.role === "user" ? "You" : "Assistant" })];
  if (msg.edit_of) children.push(el("span", { class: "tag", text: "edited" }));
  if (msg.status !== "complete" && msg.status !== "streaming") {
    children.push(el("span", { class: `tag status-${msg.status}`, text: msg.status }));
  }
  if (siblings.length > 1) {
    const i = siblings.indexOf(msg.id);
    children.push(
      el(
        "span",
        { class: "branch", title: "other versions of this message" },
        el("button", {
          class: "branch-prev", type: "button", "aria-label": "previous version", text: "‹",
          disabled: i <= 0, onclick: () => s.switchBranch(msg.id, -1),
        }),
        el("span", { class: "branch-pos", text: `${i + 1}/${siblings.length}` }),
        el("button", {
          class: "branch-next", type: "button", "aria-label": "next version", text: "›",
          disabled: i >= siblings.length - 1, onclick: () => s.switchBranch(msg.id, 1),
        }),
      ),
    );
  }
  v.head.replaceChildren(...children);
}

function renderFoot(s, msg, v) {
  const items = [];
  if (msg.status === "error") {
    const err = s.fold.errors.get(msg.run_id) || s.fold.lastError;
    if (err) items.push(el("span", { class: "error-text", text: err.message || err.code }));
  }
  if (msg.role === "user" && !v.editing) {
    items.push(el("button", { class: "ghost small action-edit", type: "button", text: "Edit",
      onclick: () => startEdit(s, msg, v) }));
  }
  if (msg.role === "assistant" && msg.status !== "streaming") {
    items.push(el("button", { class: "ghost small action-regenerate", type: "button", text: "Regenerate",
      onclick: () => act(() => api("POST", sessionPath(s.id, "/regenerate"), { message_id: msg.id })) }));
  }
  if (msg.usage && (msg.usage.input_tokens || msg.usage.output_tokens)) {
    items.push(el("span", { class: "muted usage",
      text: `${msg.usage.input_tokens || 0} in · ${msg.usage.output_tokens || 0} out` }));
  }
  v.foot.replaceChildren(...items);
}

function startEdit(s, msg, v) {
  v.editing = true;
  const text = msg.parts.filter((p) => p.kind === "text").map((p) => p.text).join("");
  const area = el("textarea", { class: "edit-input", rows: 3, "aria-label": "Edit message" });
  area.value = text;
  const done = () => {
    v.editing = false;
    v.sig = null;
    v.parts.clear();
    v.body.replaceChildren();
    render();
  };
  const form = el(
    "form",
    {
      class: "edit-form",
      onsubmit: (e) => {
        e.preventDefault();
        const content = area.value.trim();
        if (!content) return;
        act(async () => {
          await api("PATCH", sessionPath(s.id, `/messages/${encodeURIComponent(msg.id)}`), { content });
          done();
        });
      },
    },
    area,
    el(
      "div",
      { class: "edit-buttons" },
      el("button", { class: "ghost small", type: "button", text: "Cancel", onclick: done }),
      el("button", { class: "primary small", type: "submit", text: "Save & send" }),
    ),
  );
  area.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    } else if (e.key === "Escape") {
      done();
    }
  });
  v.parts.clear();
  v.body.replaceChildren(form);
  v.sig = null;
  render();
  area.focus();
}

function renderParts(s, msg, v) {
  const wanted = [];
  for (const part of msg.parts) {
    let pv = v.parts.get(part.id);
    if (!pv) {
      pv = { el: el("div", { class: `part part-${part.kind}`, "data-part-id": part.id }), sig: null };
      v.parts.set(part.id, pv);
    }
    const sig = `${s.fold.gen}|${part.rev}|${msg.status}`;
    if (pv.sig !== sig) {
      pv.sig = sig;
      renderPart(s, msg, part, pv);
    }
    wanted.push(pv.el);
  }
  if (!msg.parts.length && msg.status === "streaming") {
    wanted.push(v.typing || (v.typing = el("div", { class: "typing", "aria-label": "thinking" },
      el("span"), el("span"), el("span"))));
  }
  const ids = new Set(msg.parts.map((p) => p.id));
  for (const id of [...v.parts.keys()]) if (!ids.has(id)) v.parts.delete(id);
  const current = [...v.body.children];
  if (current.length !== wanted.length || current.some((n, i) => n !== wanted[i])) {
    v.body.replaceChildren(...wanted);
  }
  const last = msg.parts[msg.parts.length - 1];
  v.el.classList.toggle("streaming", msg.status === "streaming" && !!last && last.kind === "text");
}

function renderPart(s, msg, part, pv) {
  const node = pv.el;
  if (part.kind === "text") {
    node.classList.add("markdown");
    node.innerHTML = msg.role === "user" ? `<p>${esc(part.text).replace(/\n/g, "<br>")}</p>` : markdown(part.text);
  } else if (part.kind === "reasoning") {
    if (!pv.details) {
      pv.body = el("div", { class: "markdown" });
      pv.details = el("details", { open: !part.done }, el("summary", { text: "Reasoning" }), pv.body);
      node.append(pv.details);
    }
    pv.details.querySelector("summary").textContent = part.done ? "Reasoning" : "Reasoning…";
    pv.body.innerHTML = markdown(part.text);
  } else if (part.kind === "tool-call") {
    node.dataset.toolCallId = part.tool_call_id || "";
    renderToolCall(s, msg, part, pv);
  } else {
    node.replaceChildren(
      el("div", { class: "muted", text: part.kind }),
      el("pre", { class: "json", text: pretty(part.value ?? part.text) }),
    );
  }
}

/**
 * A tool call: its name and arguments, then what it waits for. Redrawn only when
 * that changes (not on every event of the run), and its inputs are kept across
 * redraws, so nothing typed into them is lost.
 */
function renderToolCall(s, msg, part, pv) {
  const answered = !!part.answered || part.result != null || part.error != null;
  const live = msg.status === "streaming";
  const approvalPending = !part.approval && part.needs_approval !== false;
  const askApproval = live && !answered && approvalPending;
  // Unknown whether approval is needed (an old server's snapshot): offer both.
  const askResult = live && !answered && !(part.needs_approval && !part.approval);
  let stateText = "waiting for a result";
  if (part.approval && !part.approval.approved) stateText = "denied";
  else if (part.error != null) stateText = "failed";
  else if (answered) stateText = "returned";
  else if (!live) stateText = "not answered";
  else if (part.needs_approval && !part.approval) stateText = "needs approval";
  const shape = JSON.stringify([
    s.fold.gen, stateText, askApproval, askResult, part.tool_name, part.value ?? part.text ?? null,
    part.result ?? null, part.error ?? null, part.approval ?? null,
  ]);
  if (pv.shape === shape) return;
  pv.shape = shape;

  const out = [
    el(
      "div",
      { class: "tool-head" },
      el("span", { class: "tool-icon", text: "ƒ" }),
      el("span", { text: "Tool call " }),
      el("code", { class: "tool-name", text: part.tool_name || "?" }),
      el("span", { class: `tag tool-state state-${stateText.replace(/ /g, "-")}`, text: stateText }),
    ),
    el("pre", { class: "json tool-args", text: pretty(part.value ?? part.text ?? {}) }),
  ];
  if (part.approval && part.approval.reason) {
    out.push(el("div", { class: "muted", text: `reason: ${part.approval.reason}` }));
  }
  if (part.error != null) out.push(el("pre", { class: "json tool-error", text: pretty(part.error) }));
  else if (part.result != null) out.push(el("pre", { class: "json tool-result", text: pretty(part.result) }));

  const callId = part.tool_call_id;
  const redraw = () => {
    part.rev++;
    msg.rev++;
    render();
  };
  if (askApproval) {
    const reason = pv.reason || (pv.reason = el("input", {
      class: "tool-reason", type: "text", placeholder: "reason (optional)", "aria-label": "Reason",
    }));
    const answer = (approved) =>
      act(async () => {
        const why = reason.value.trim() || null;
        try {
          await api("POST", sessionPath(s.id, "/tool-approvals"), { tool_call_id: callId, approved, reason: why });
        } catch (err) {
          if (err.status !== 409) throw err; // 409: someone answered first; their answer stands
        }
        if (!part.approval) part.approval = { approved, reason: why };
        if (!approved) part.answered = true;
        redraw();
      });
    out.push(
      el(
        "div",
        { class: "tool-approval" },
        el("span", { text: part.needs_approval ? "The agent asks to run this tool." : "If this call needs approval:" }),
        reason,
        el("button", { class: "primary small approve", type: "button", text: "Approve", onclick: () => answer(true) }),
        el("button", { class: "danger small deny", type: "button", text: "Deny", onclick: () => answer(false) }),
      ),
    );
  }
  if (askResult) {
    if (!pv.input) {
      pv.input = el("textarea", { class: "tool-input", rows: 3, "aria-label": "Tool result (JSON)" });
      pv.input.value = "{\n  \n}";
      pv.problem = el("div", { class: "error-text", hidden: true });
    }
    const input = pv.input;
    const problem = pv.problem;
    const submit = (asError) =>
      act(async () => {
        const body = { tool_call_id: callId };
        if (asError) {
          body.error = input.value.trim() || "tool failed";
        } else {
          try {
            body.output = JSON.parse(input.value);
          } catch (err) {
            problem.hidden = false;
            problem.textContent = `not valid JSON: ${err.message}`;
            return;
          }
        }
        problem.hidden = true;
        try {
          await api("POST", sessionPath(s.id, "/tool-results"), body);
        } catch (err) {
          if (err.status !== 409) throw err;
        }
        part.answered = true;
        redraw();
      });
    out.push(
      el(
        "form",
        { class: "tool-form", onsubmit: (e) => { e.preventDefault(); submit(false); } },
        el("label", { class: "muted", text: "Result (JSON)" }),
        input,
        problem,
        el(
          "div",
          { class: "tool-buttons" },
          el("button", { class: "ghost small send-error", type: "button", text: "Send as error",
            onclick: () => submit(true) }),
          el("button", { class: "primary small send-result", type: "submit", text: "Send result" }),
        ),
      ),
    );
  }
  pv.el.replaceChildren(...out);
}

// ---------------------------------------------------------------------------
// Sessions list, models, auth

async function refreshSessions() {
  try {
    const archived = $("show-archived").checked;
    const data = await api("GET", `/v1/sessions${archived ? "?archived=true" : ""}`);
    state.sessions = data.sessions;
    renderSessions();
  } catch (err) {
    if (err.status !== 401) toast(err.message);
  }
}

function renderSessions() {
  const nav = $("session-list");
  const cur = state.current;
  nav.replaceChildren(
    ...state.sessions.map((rec) =>
      el(
        "div",
        {
          class: `session-item${cur && cur.id === rec.id ? " active" : ""}${rec.archived ? " archived" : ""}`,
          "data-session-id": rec.id,
          role: "button",
          tabindex: 0,
          onclick: () => go(rec.id),
          onkeydown: (e) => { if (e.key === "Enter") go(rec.id); },
        },
        el("div", { class: "s-title", text: rec.title || DEFAULT_TITLE }),
        el("div", { class: "s-meta", text: `${rec.agent ? "agent " + rec.agent : rec.model || "demo"} · ${timeAgo(rec.updated_at)}` }),
        el("button", {
          class: "s-archive ghost small", type: "button",
          title: rec.archived ? "Unarchive" : "Archive", text: rec.archived ? "Unarchive" : "Archive",
          onclick: (e) => {
            e.stopPropagation();
            act(async () => {
              if (rec.archived) await api("PATCH", sessionPath(rec.id), { archived: false });
              else await api("POST", sessionPath(rec.id, "/archive"));
              await refreshSessions();
            });
          },
        }),
      ),
    ),
  );
  if (!state.sessions.length) nav.append(el("div", { class: "muted small pad", text: "No chats yet." }));
}

async function loadModels() {
  let models = ["demo"];
  try {
    const data = await api("GET", "/v1/models");
    models = data.data.map((m) => m.id);
  } catch (err) {
    if (err.status !== 401) toast(err.message);
  }
  state.models = models;
  const picker = $("model-picker");
  const saved = localStorage.getItem(MODEL_STORE);
  picker.replaceChildren(...models.map((m) => el("option", { value: m, text: m })));
  picker.value = models.includes(saved) ? saved : models.includes("demo") ? "demo" : models[0];
}

async function createSession(title) {
  const choice = $("model-picker").value;
  const body = choice && choice.startsWith("agent:") ? { agent: choice.slice(6) } : { model: choice || null };
  if (title) body.title = title;
  const rec = await api("POST", "/v1/sessions", body);
  state.sessions.unshift(rec);
  renderSessions();
  go(rec.id);
  return rec;
}

function needKey(message) {
  state.authNeeded = true;
  $("auth-panel").hidden = false;
  $("auth-message").textContent = apiKey()
    ? `The server did not accept this key (${message}).`
    : "This server needs an API key.";
}

// ---------------------------------------------------------------------------
// Navigation: #/s/<session id> selects a session, so a reload comes back to it.

function sessionFromHash() {
  const m = location.hash.match(/^#\/s\/([\w-]+)$/);
  return m ? m[1] : null;
}

function go(id) {
  select(id);
  const want = id ? `#/s/${id}` : "";
  if (location.hash === want) return;
  if (want) location.hash = want; // the hashchange that follows finds it selected already
  else history.pushState(null, "", location.pathname + location.search);
}

function select(id) {
  if (state.current && state.current.id === id) return;
  if (state.current) state.current.close();
  views.clear();
  for (const child of [...$("messages").children]) if (child.id !== "empty") child.remove();
  inspector.reset();
  state.current = null;
  if (!id) {
    conn.set("idle", "not connected");
    render();
    return;
  }
  const s = new Session(id);
  state.current = s;
  render();
  s.opening = s.open();
  s.opening.catch((err) => {
    if (state.current !== s) return;
    conn.set("error", err.message);
    if (err.status === 404) {
      toast("That chat does not exist (or is not yours).");
      go(null);
    } else if (err.status !== 401) {
      toast(err.message);
    }
  });
  renderSessions();
}

async function act(fn) {
  try {
    await fn();
  } catch (err) {
    if (err.status !== 401) toast(err.message);
  }
}

// ---------------------------------------------------------------------------
// Wiring

function init() {
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("input");
    const text = input.value;
    if (!text.trim()) return;
    const sendButton = $("send");
    sendButton.disabled = true;
    act(async () => {
      let s = state.current;
      if (!s) {
        await createSession(titleFrom(text));
        s = state.current;
      }
      await s.send(text);
      input.value = "";
    }).finally(() => {
      sendButton.disabled = false;
      input.focus();
    });
  });
  $("input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => {
    const s = state.current;
    if (!s) return;
    const run = s.fold.activeRun;
    act(() => api("POST", sessionPath(s.id, "/cancel"), run ? { run_id: run.run_id } : {}));
  });
  $("new-session").addEventListener("click", () => act(() => createSession()));
  $("model-picker").addEventListener("change", (e) => localStorage.setItem(MODEL_STORE, e.target.value));
  $("show-archived").addEventListener("change", refreshSessions);
  const showInspector = (open) => {
    $("app").classList.toggle("inspector-open", open);
    $("toggle-inspector").setAttribute("aria-pressed", String(open));
  };
  $("toggle-inspector").addEventListener("click", () =>
    showInspector(!$("app").classList.contains("inspector-open")),
  );
  $("close-inspector").addEventListener("click", () => showInspector(false));
  $("hide-deltas").addEventListener("change", (e) =>
    $("event-list").classList.toggle("hide-deltas", e.target.checked),
  );
  $("clear-events").addEventListener("click", () => inspector.reset());
  $("load-history").addEventListener("click", () => state.current && state.current.loadFull());
  $("event-list").addEventListener("click", (e) => {
    const row = e.target.closest("li.ev");
    if (!row) return;
    const open = row.querySelector("pre");
    if (open) open.remove();
    else row.append(el("pre", { class: "json", text: JSON.stringify(row._event, null, 2) }));
  });
  $("key-button").addEventListener("click", () => {
    const panel = $("auth-panel");
    panel.hidden = !panel.hidden;
    $("auth-message").textContent = apiKey() ? "A key is saved in this browser." : "Paste an API key.";
  });
  $("auth-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = $("auth-key").value.trim();
    if (!key) return;
    localStorage.setItem(KEY_STORE, key);
    $("auth-key").value = "";
    $("auth-panel").hidden = true;
    state.authNeeded = false;
    restart();
  });
  $("auth-clear").addEventListener("click", () => {
    localStorage.removeItem(KEY_STORE);
    $("auth-message").textContent = "Key forgotten.";
  });
  window.addEventListener("hashchange", () => select(sessionFromHash()));
  window.addEventListener("focus", () => {
    if (!state.authNeeded) refreshSessions();
  });
  window.addEventListener("online", () => {
    const s = state.current;
    if (s && s.ready && !s.es && !s.loadingFull) s.connect();
  });
  if (window.matchMedia("(max-width: 900px)").matches) showInspector(false);
  restart();
}

function restart() {
  const id = sessionFromHash();
  if (state.current) {
    state.current.close();
    state.current = null;
  }
  loadModels();
  refreshSessions();
  select(id);
}

document.addEventListener("DOMContentLoaded", init);
