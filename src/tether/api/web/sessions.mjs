// The session list, the model picker, and navigation: #/s/<session id> selects a
// session, so a reload comes back to it.

import { api, DEFAULT_TITLE, sessionPath } from "./api.mjs";
import { exportJSON, exportMarkdown } from "./export.mjs";
import { $, act, el, toast } from "./dom.mjs";
import { timeAgo } from "./format.mjs";
import { inspector } from "./inspector.mjs";
import { views } from "./message-view.mjs";
import { renderHeader } from "./render.mjs";
import { render } from "./schedule.mjs";
import { Session } from "./session.mjs";
import { conn, state } from "./state.mjs";

const MODEL_STORE = "tether.model";
/** Seconds between two reads of the list while the page is visible (other clients' changes). */
const POLL_MS = 5000;
/** Tabs of this browser tell each other at once when one of them changed the list. */
const channel = "BroadcastChannel" in window ? new BroadcastChannel("tether.sessions") : null;

/** The list's state that a redraw must not lose: the open menu, a rename in progress. */
const listUi = { menu: null, renaming: null, sig: "" };

export async function refreshSessions() {
  try {
    const archived = $("show-archived").checked;
    const data = await api("GET", `/v1/sessions${archived ? "?archived=true" : ""}`);
    state.sessions = data.sessions;
    const cur = state.current;
    const mine = cur && cur.record && data.sessions.find((r) => r.id === cur.id);
    if (mine && mine.title !== cur.record.title) {
      cur.record.title = mine.title; // renamed elsewhere
      renderHeader();
    }
    renderSessions();
  } catch (err) {
    if (err.status !== 401) toast(err.message);
  }
}

/** The list changed: read it again, and if this tab changed it (`mine`), tell the others. */
export function sessionsChanged(mine = false) {
  if (mine && channel) channel.postMessage("changed");
  return refreshSessions();
}

function renderSessions(force = false) {
  const nav = $("session-list");
  const cur = state.current;
  const query = $("session-search").value.trim().toLowerCase();
  const shown = state.sessions.filter((rec) => !query || (rec.title || DEFAULT_TITLE).toLowerCase().includes(query));
  // Redraw only what changed, and never under a rename or an open menu (a poll comes often).
  const sig = JSON.stringify([shown, cur && cur.id, listUi.menu, Math.floor(Date.now() / 60000)]);
  if (listUi.renaming || (!force && sig === listUi.sig)) return;
  listUi.sig = sig;
  nav.replaceChildren(...shown.map((rec) => sessionItem(rec, cur)));
  if (!shown.length) {
    nav.append(el("div", { class: "muted small pad", text: query ? "No chats match." : "No chats yet." }));
  }
}

function sessionItem(rec, cur) {
  const open = listUi.menu === rec.id;
  const item = el(
    "div",
    {
      class: `session-item${cur && cur.id === rec.id ? " active" : ""}${rec.archived ? " archived" : ""}${open ? " menu-open" : ""}`,
      "data-session-id": rec.id,
      role: "button",
      tabindex: 0,
      onclick: () => go(rec.id),
      onkeydown: (e) => { if (e.key === "Enter" && e.target === item) go(rec.id); },
    },
    el("div", { class: "s-title", text: rec.title || DEFAULT_TITLE }),
    el(
      "div",
      { class: "s-meta" },
      statusTag(cur && cur.id === rec.id && cur.ready ? cur.fold.status : rec.status),
      `${rec.agent ? "agent " + rec.agent : rec.model || "demo"} · ${timeAgo(rec.updated_at)}`,
    ),
    el("button", {
      class: "s-menu-button ghost small", type: "button", title: "Rename, export, archive, delete",
      "aria-label": "Chat actions", "aria-expanded": String(open), text: "⋯",
      onclick: (e) => {
        e.stopPropagation();
        listUi.menu = open ? null : rec.id;
        renderSessions(true);
      },
    }),
  );
  if (open) item.append(sessionMenu(rec, item));
  return item;
}

/** A chat's actions: rename, export (JSON: its snapshot and log; Markdown: the
 * conversation), archive or unarchive, delete. */
function sessionMenu(rec, item) {
  const button = (cls, text, fn) =>
    el("button", {
      class: `ghost small ${cls}`, type: "button", text,
      onclick: (e) => {
        e.stopPropagation();
        fn();
      },
    });
  const done = (fn) => act(async () => {
    await fn();
    listUi.menu = null;
    await sessionsChanged(true);
  });
  return el(
    "div",
    { class: "s-menu", role: "menu" },
    button("s-rename", "Rename", () => rename(rec, item)),
    button("s-export-json", "Export JSON", () => act(() => exportJSON(rec))),
    button("s-export-md", "Export Markdown", () => act(() => exportMarkdown(rec))),
    button("s-archive", rec.archived ? "Unarchive" : "Archive", () => done(() =>
      rec.archived
        ? api("PATCH", sessionPath(rec.id), { archived: false })
        : api("POST", sessionPath(rec.id, "/archive")))),
    button("s-delete", "Delete", () => {
      if (!confirm(`Delete “${rec.title || DEFAULT_TITLE}” for good? Its whole history goes.`)) return;
      done(async () => {
        await api("DELETE", sessionPath(rec.id));
        if (state.current && state.current.id === rec.id) go(null);
      });
    }),
  );
}

function rename(rec, item) {
  const input = el("input", { class: "s-rename-input", type: "text", "aria-label": "Chat title",
    maxlength: 500 });
  input.value = rec.title || "";
  listUi.renaming = rec.id;
  let finished = false;
  const finish = (save) => {
    if (finished) return;
    finished = true;
    listUi.renaming = null;
    listUi.menu = null;
    const title = input.value.trim();
    if (!save || !title || title === rec.title) {
      renderSessions(true);
      return;
    }
    act(async () => {
      await api("PATCH", sessionPath(rec.id), { title });
      await sessionsChanged(true);
    });
  };
  input.addEventListener("click", (e) => e.stopPropagation());
  input.addEventListener("keydown", (e) => {
    e.stopPropagation();
    if (e.key === "Enter") finish(true);
    else if (e.key === "Escape") finish(false);
  });
  input.addEventListener("blur", () => finish(true));
  item.querySelector(".s-title").replaceChildren(input);
  item.querySelector(".s-menu").remove();
  input.focus();
  input.select();
}

// The session's status as the list shows it (hidden while idle); the open session's tag
// follows its live fold (render.mjs), the others' come from the listing.
export function statusTag(status) {
  const tag = el("span", { class: "s-status" });
  setStatusTag(tag, status || "idle");
  return tag;
}

export function setStatusTag(tag, status) {
  tag.dataset.status = status;
  tag.textContent = status;
}

/** The picker's choices: what /v1/models lists (upstreams' models, as the server
 * discovers them, and agents as agent:<name>); the choice stays if still listed. */
export async function loadModels() {
  let models = ["demo"];
  try {
    const data = await api("GET", "/v1/models");
    models = data.data.map((m) => m.id);
  } catch (err) {
    if (err.status !== 401) toast(err.message);
  }
  const picker = $("model-picker");
  if (models.join("\n") === state.models.join("\n") && picker.options.length) return;
  state.models = models;
  const choice = picker.value || localStorage.getItem(MODEL_STORE);
  picker.replaceChildren(...models.map((m) => el("option", { value: m, text: m })));
  picker.value = models.includes(choice) ? choice : models.includes("demo") ? "demo" : models[0];
}

/** A new chat with the picker's model and the system prompt field's instructions. */
export async function createSession(title) {
  // An agent's model name (agent:<name>) names the session's agent.
  const body = { model: $("model-picker").value || null };
  const system = $("system-prompt").value.trim();
  if (system) body.system = system;
  if (title) body.title = title;
  const rec = await api("POST", "/v1/sessions", body);
  state.sessions.unshift(rec);
  renderSessions();
  go(rec.id);
  if (channel) channel.postMessage("changed");
  return rec;
}

export function sessionFromHash() {
  const m = location.hash.match(/^#\/s\/([\w-]+)$/);
  return m ? m[1] : null;
}

function go(id) {
  showDrawer(false);
  select(id);
  const want = id ? `#/s/${id}` : "";
  if (location.hash === want) return;
  if (want) location.hash = want; // the hashchange that follows finds it selected already
  else history.pushState(null, "", location.pathname + location.search);
}

export function select(id) {
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
  const s = new Session(id, sessionsChanged);
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

/** On a narrow screen the sidebar is a drawer: ☰ opens it, choosing a chat closes it. */
function showDrawer(open) {
  $("app").classList.toggle("sidebar-open", open);
  $("scrim").hidden = !open;
  $("toggle-sidebar").setAttribute("aria-expanded", String(open));
}

/**
 * The sidebar's controls and the navigation: new chat, model picker, search,
 * archived, the drawer, #/s/<id>. The list stays current without a reload: a
 * tab that changes it tells this browser's other tabs (BroadcastChannel, at
 * once), and every visible tab reads it every few seconds (another browser, the
 * API, a CLI: what no message between tabs can tell). A read of a page of
 * records is cheap; a hidden tab does not poll, and catches up when shown.
 */
export function wireSessionList() {
  $("toggle-sidebar").addEventListener("click", () => showDrawer(!$("app").classList.contains("sidebar-open")));
  $("scrim").addEventListener("click", () => showDrawer(false));
  $("session-search").addEventListener("input", () => renderSessions());
  if (channel) channel.onmessage = () => refreshSessions();
  setInterval(() => {
    if (document.visibilityState === "visible" && !state.authNeeded) refreshSessions();
  }, POLL_MS);
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && !state.authNeeded) refreshSessions();
  });
  document.addEventListener("click", () => {
    if (listUi.menu) {
      listUi.menu = null;
      renderSessions(true);
    }
  });
  $("new-session").addEventListener("click", () => act(() => createSession()));
  $("model-picker").addEventListener("change", (e) => localStorage.setItem(MODEL_STORE, e.target.value));
  // The server refreshes its upstreams' models: so does the picker, as it is opened.
  $("model-picker").addEventListener("focus", () => {
    if (!state.authNeeded) loadModels();
  });
  $("show-archived").addEventListener("change", refreshSessions);
  window.addEventListener("hashchange", () => select(sessionFromHash()));
  window.addEventListener("focus", () => {
    if (!state.authNeeded) refreshSessions();
  });
}
