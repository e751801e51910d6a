// The event inspector: every event of the open session as a row (offset, type, brief),
// appended in batches on the next frame; a click shows the event's JSON.

import { $, el } from "./dom.mjs";
import { offsetPos } from "./format.mjs";
import { scheduleRender } from "./schedule.mjs";
import { state } from "./state.mjs";

const MAX_EVENT_ROWS = 3000;

export const inspector = {
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
    case "run-suspend":
      return `${ev.run_id} waits for ${(ev.waiting || []).map((w) => `${w.for} of ${w.tool_call_id || w.request_id}`).join(", ")}`;
    case "run-resume":
      return `${ev.run_id} on ${ev.worker || "?"}${ev.replayed ? `, ${ev.replayed} steps replayed` : ""}`;
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
    case "client-request":
      return `${ev.method} ${ev.request_id}`;
    case "client-response":
      return `${ev.request_id}${ev.error ? ` error ${ev.error.code}` : ""}`;
    default:
      return "";
  }
}

// ---------------------------------------------------------------------------

const INSPECTOR_STORE = "tether.inspector";

/** The inspector's controls: open and close it (closed until opened; this browser
 * remembers which), hide deltas, clear, load the full history. */
export function wireInspector() {
  const showInspector = (open) => {
    $("app").classList.toggle("inspector-open", open);
    $("toggle-inspector").setAttribute("aria-pressed", String(open));
    localStorage.setItem(INSPECTOR_STORE, open ? "open" : "closed");
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
  showInspector(localStorage.getItem(INSPECTOR_STORE) === "open");
}
