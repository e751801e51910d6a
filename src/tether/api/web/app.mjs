// tether web UI: plain JavaScript modules, no build step, no dependencies.
//
// The entry point: wires the page's controls and opens the session the URL names.
// session.mjs follows a session's events into the same fold as the server's
// (fold.mjs, sessions/fold.py); render.mjs and message-view.mjs draw it.

import { apiKey, KEY_STORE, onUnauthorized } from "./api.mjs";
import { wireComposer } from "./composer.mjs";
import { wireCodeCopy } from "./copy.mjs";
import { $ } from "./dom.mjs";
import { wireInspector } from "./inspector.mjs";
import { wireJump } from "./render.mjs";
import { loadModels, refreshSessions, select, sessionFromHash, wireSessionList } from "./sessions.mjs";
import { state } from "./state.mjs";
import { wireTheme } from "./theme.mjs";

/** Show the key panel: the server answered 401. */
function needKey(message) {
  state.authNeeded = true;
  $("auth-panel").hidden = false;
  $("auth-message").textContent = apiKey()
    ? `The server did not accept this key (${message}).`
    : "This server needs an API key.";
}

function wireAuth() {
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
}

function init() {
  wireTheme();
  onUnauthorized(needKey);
  wireComposer();
  wireSessionList();
  wireInspector();
  wireAuth();
  wireJump();
  wireCodeCopy();
  window.addEventListener("online", () => {
    const s = state.current;
    if (s && s.ready && !s.es && !s.loadingFull) s.connect();
  });
  restart();
}

/** (Re)load everything: after the page loads, and after a key is entered. */
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
