// Drawing the open session: the header, the messages of the branch on screen, the
// retry notice, the queue and the composer's buttons; then the inspector's new rows.

import { api, sessionPath } from "./api.mjs";
import { $, act, el } from "./dom.mjs";
import { inspector } from "./inspector.mjs";
import { messageView, views } from "./message-view.mjs";
import { requestCards } from "./requests-view.mjs";
import { setStatusTag } from "./sessions.mjs";
import { drawWith } from "./schedule.mjs";
import { state } from "./state.mjs";

function render() {
  renderHeader();
  renderMessages();
  renderComposer();
  inspector.flush();
}

export function renderHeader() {
  const s = state.current;
  const record = s && s.record;
  $("session-title").textContent = record ? record.title : s ? "Loading…" : "No chat selected";
  $("session-meta").textContent = record
    ? `${record.agent ? "agent " + record.agent : record.model || "demo"}${record.system ? " · system prompt" : ""}`
    : "";
  $("session-meta").title = record && record.system ? record.system : "";
  $("inspector-session").textContent = record ? `session ${record.id}` : s ? `session ${s.id}` : "";
  const badge = $("run-status");
  const status = s && s.ready ? s.fold.status : "idle";
  badge.hidden = status === "idle";
  badge.dataset.status = status;
  badge.textContent = status === "paused" ? `paused: waiting for you${waitsUntil(s)}` : status;
  document.title = record ? `${record.title} · tether` : "tether";
  for (const item of document.querySelectorAll(".session-item")) {
    const active = !!s && item.dataset.sessionId === s.id;
    item.classList.toggle("active", active);
    if (active && s.ready) setStatusTag(item.querySelector(".s-status"), status);
  }
}

/** " (until 14:05)" when the suspended run's wait expires (the run then ends in an error). */
function waitsUntil(s) {
  const run = s && s.fold.activeRun;
  const ends = ((run && run.suspended) || []).map((w) => w.expires_at).filter((t) => t != null);
  if (!ends.length) return "";
  const at = new Date(Math.min(...ends.map((t) => (typeof t === "number" ? t * 1000 : Date.parse(t)))));
  return ` (until ${at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })})`;
}

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
  if (s && s.ready) wanted.push(...requestCards(s, null)); // a backend's requests (no run asked)
  const keep = new Set(wanted);
  for (const child of [...box.children]) if (child.id !== "empty" && !keep.has(child)) child.remove();
  let before = $("empty").nextSibling;
  for (const node of wanted) {
    if (node !== before) box.insertBefore(node, before);
    before = node.nextSibling;
  }
  for (const [id, v] of views) if (!keep.has(v.el)) views.delete(id);
  if (stick) box.scrollTop = box.scrollHeight;
  showJump();

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

/** "Jump to latest": shown while the messages are scrolled up from their end. */
function showJump() {
  const box = $("messages");
  $("jump-latest").hidden = box.scrollHeight - box.scrollTop - box.clientHeight < 120;
}

export function wireJump() {
  $("messages").addEventListener("scroll", showJump, { passive: true });
  $("jump-latest").addEventListener("click", () => {
    const box = $("messages");
    box.scrollTop = box.scrollHeight;
    showJump();
  });
}

drawWith(render);
