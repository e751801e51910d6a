// The fold: the same reduction of events into a message tree as the server's
// (sessions/fold.py). Pure: no DOM, no network, so Node runs it too (the golden
// fixtures in tests/fixtures/folds/ are replayed through it by tests/web/fold_golden.mjs).
// Parts and messages carry a `rev`, bumped on every change, so views redraw only what changed.

export class Fold {
  constructor() {
    this.gen = ++Fold.count; // views drawn from another fold are redrawn
    this.messages = new Map();
    this.children = new Map(); // parent id ("" for roots) -> child ids, oldest first
    this.leaf = null; // the newest message placed (or chosen): the end of the current branch
    this.activeRun = null;
    this.queue = [];
    this.status = "idle";
    this.lastError = null;
    this.usage = {}; // token counts of every message's usage in the log, summed
    this.parts = new Map(); // part id -> [message, part]
    this.toolCalls = new Map(); // tool call id -> part
    this.retries = new Map(); // run id -> last retry event
    this.errors = new Map(); // run id -> {code, message}
    this.requests = new Map(); // request id -> a client request (the client channel), in log order
    this.seen = new Set();
    this.complete = true; // false: seeded from a snapshot, other branches unknown
  }

  static fromSnapshot(snap) {
    const f = new Fold();
    f.status = snap.status || "idle";
    f.activeRun = snap.active_run || null;
    f.queue = snap.queue || [];
    f.lastError = snap.last_error || null;
    f.usage = { ...(snap.usage || {}) };
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
    for (const r of snap.client_requests || []) f.requests.set(r.request_id, { ...r });
    return f;
  }

  /** The client requests asked under message `id` (or, with null, by no run), oldest first. */
  requestsOf(id) {
    return [...this.requests.values()].filter((r) => (r.message_id ?? null) === id);
  }

  answerOf(runId) {
    const msgs = [...this.messages.values()];
    for (let i = msgs.length - 1; i >= 0; i--) {
      if (msgs[i].run_id === runId && msgs[i].role !== "user") return msgs[i];
    }
    return null;
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

/** Event types that are the server's own bookkeeping (a run's journal): not shown, not folded. */
export const INTERNAL_EVENTS = new Set(["journal"]);

/** The kinds of a user message's attachment parts, and what the snapshot says of them. */
const ATTACHMENTS = ["image", "file"];
const ATTACHMENT_KEYS = ["media_type", "name", "size", "url"];

Fold.handlers = {
  "user-message"(e) {
    if (this.messages.has(e.message_id)) return;
    const parts = (e.parts || []).map((p, i) => {
      const part = { id: `${e.message_id}:${i}`, kind: p.type || "text", text: p.text || "", done: true, rev: 0 };
      // An image or file: what it is; its bytes are read from the session's attachment route.
      if (ATTACHMENTS.includes(part.kind)) for (const key of ATTACHMENT_KEYS) if (key in p) part[key] = p[key];
      return part;
    });
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
    if ("signature" in e) part.signature = e.signature;
    if ("redacted" in e) part.redacted = e.redacted;
    this.touch(found[0], part);
  },
  "message-end"(e) {
    for (const [key, n] of Object.entries(e.usage || {})) {
      if (Number.isInteger(n)) this.usage[key] = (this.usage[key] || 0) + n;
    }
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
    if (e.option_id != null) part.approval.option_id = e.option_id;
    part.rev++;
    const found = this.parts.get(part.id);
    if (found) this.touch(found[0]);
  },
  // A run that waits on a person and holds no task on the server (for as long as
  // nobody answers, across restarts); still the active run. `suspended` is what it waits for.
  "run-suspend"(e) {
    if (this.activeRun && this.activeRun.run_id === e.run_id) {
      this.activeRun = { ...this.activeRun, suspended: e.waiting || [] };
    }
  },
  "run-resume"(e) {
    if (this.activeRun && this.activeRun.run_id === e.run_id && "suspended" in this.activeRun) {
      const { suspended, ...run } = this.activeRun;
      this.activeRun = run;
    }
  },
  // The client channel: a request for the session's clients, and its one answer.
  "client-request"(e) {
    if (typeof e.request_id !== "string" || this.requests.has(e.request_id)) return;
    const req = { request_id: e.request_id, method: e.method, answered: false };
    for (const key of ["params", "run_id", "expires_at"]) if (e[key] != null) req[key] = e[key];
    const msg = e.run_id ? this.answerOf(e.run_id) : null;
    if (msg) {
      req.message_id = msg.id;
      this.touch(msg);
    }
    this.requests.set(e.request_id, req);
  },
  "client-response"(e) {
    const req = this.requests.get(e.request_id);
    if (!req || req.answered) return; // the first answer is the answer
    req.answered = true;
    if (e.error != null) req.error = e.error;
    else req.result = e.result ?? null;
    const msg = req.message_id && this.messages.get(req.message_id);
    if (msg) this.touch(msg);
  },
  status(e) {
    this.status = e.status;
  },
  "queue-update"(e) {
    this.queue = e.queue || [];
  },
  // A client chose the branch ending at message_id. The server writes only ids in the log,
  // but a fold seeded from a snapshot may not know that branch yet: the page then reads
  // the whole log (render.mjs: a broken branch).
  "active-branch"(e) {
    if (e.message_id) this.leaf = e.message_id;
  },
};

// ---------------------------------------------------------------------------
// Application state
