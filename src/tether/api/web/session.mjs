// A session: its fold, the event follower that keeps it current, and the branch being viewed.
//
// A session is rendered from its snapshot (GET /v1/sessions/{id}), which is
// complete up to an offset, and then kept current by the live events after
// that offset (GET /v1/sessions/{id}/events, SSE). Every SSE event's id is
// the stream offset after it, so the browser's EventSource resumes by itself
// (Last-Event-ID) and nothing is applied twice.

import { api, apiKey, DEFAULT_TITLE, readLog, sessionPath, titleFrom } from "./api.mjs";
import { toast } from "./dom.mjs";
import { Fold, INTERNAL_EVENTS } from "./fold.mjs";
import { offsetPos } from "./format.mjs";
import { inspector } from "./inspector.mjs";
import { renderHeader } from "./render.mjs";
import { render, scheduleRender } from "./schedule.mjs";
import { conn } from "./state.mjs";

export class Session {
  /** `listChanged(mine)` is called when the session list may have changed (a run ended, a
   * message sent: `mine`, this tab did it). */
  constructor(id, listChanged) {
    this.id = id;
    this.listChanged = listChanged;
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
    if (this.opened) this.reconnecting();
    else conn.set("connecting", "connecting…");
    es.onopen = () => {
      if (this.es !== es) return;
      this.backoff = 0;
      const pos = offsetPos(this.offset);
      if (!this.opened) {
        this.opened = true;
        conn.set("connected", "live", `live from offset ${pos}`);
        inspector.marker(`stream live from offset ${pos}`);
      } else {
        conn.set("resumed", "reconnected", `resumed from offset ${pos}`);
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
      this.reconnecting();
    };
  }

  reconnecting() {
    conn.set("reconnecting", "reconnecting…", `reconnecting from offset ${offsetPos(this.offset)}…`);
  }

  scheduleReconnect() {
    if (this.closed) return;
    this.backoff = Math.min(this.backoff ? this.backoff * 2 : 500, 8000);
    this.reconnecting();
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
    if (INTERNAL_EVENTS.has(ev.type)) return;
    inspector.add(id, ev);
    const leaf = this.fold.leaf;
    this.fold.apply(ev);
    if (this.fold.leaf !== leaf) this.viewLeaf = this.fold.leaf; // follow what was just placed
    if (ev.type === "run-end") this.listChanged();
    scheduleRender();
  }

  /** Read the whole log (a plain catch-up read of the session's stream) and fold it all. */
  loadFull() {
    if (this.loadingFull) return this.loadingFull;
    this.loadingFull = (async () => {
      this.closeStream();
      const { events, offset } = await readLog(this.id, INTERNAL_EVENTS);
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

  async send(text, attachments = []) {
    // Take the snapshot first: a message sent before it would be folded into it
    // (a fast run ends before the page reads it), and never seen as live events.
    await this.opening?.catch(() => {});
    const body = { content: text };
    // Images and files first, then the text (if any): the parts the API takes.
    if (attachments.length) body.content = [...attachments, ...(text.trim() ? [{ type: "text", text }] : [])];
    if (this.viewLeaf && this.viewLeaf !== this.fold.leaf) body.parent_id = this.viewLeaf;
    await api("POST", sessionPath(this.id, "/messages"), body);
    // The server names an untitled session after its first message: show it at once.
    if (this.record && this.record.title === DEFAULT_TITLE && text.trim()) {
      this.record.title = titleFrom(text);
      renderHeader();
    }
    this.listChanged(true);
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
    // The session's current branch, on the server: a reload and the other tabs show it too.
    const leaf = this.viewLeaf;
    api("PATCH", sessionPath(this.id), { active_branch: leaf }).catch((err) => {
      if (err.status !== 401) toast(err.message);
    });
  }
}
