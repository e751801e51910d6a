// The session list, the model picker, and navigation: #/s/<session id> selects a
// session, so a reload comes back to it.

import { api, DEFAULT_TITLE, sessionPath } from "./api.mjs";
import { $, act, el, toast } from "./dom.mjs";
import { timeAgo } from "./format.mjs";
import { inspector } from "./inspector.mjs";
import { views } from "./message-view.mjs";
import { render } from "./schedule.mjs";
import { Session } from "./session.mjs";
import { conn, state } from "./state.mjs";

const MODEL_STORE = "tether.model";

export async function refreshSessions() {
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
        el(
          "div",
          { class: "s-meta" },
          statusTag(cur && cur.id === rec.id && cur.ready ? cur.fold.status : rec.status),
          `${rec.agent ? "agent " + rec.agent : rec.model || "demo"} · ${timeAgo(rec.updated_at)}`,
        ),
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

export async function createSession(title) {
  // An agent's model name (agent:<name>) names the session's agent.
  const body = { model: $("model-picker").value || null };
  if (title) body.title = title;
  const rec = await api("POST", "/v1/sessions", body);
  state.sessions.unshift(rec);
  renderSessions();
  go(rec.id);
  return rec;
}

export function sessionFromHash() {
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
  const s = new Session(id, refreshSessions);
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

/** The sidebar's controls and the navigation: new chat, model picker, archived, #/s/<id>. */
export function wireSessionList() {
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
