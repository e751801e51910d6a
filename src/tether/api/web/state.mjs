// What the page holds (the open session, the session list) and the connection indicator.

import { $ } from "./dom.mjs";

export const state = {
  sessions: [],
  models: [],
  current: null, // the open Session
  authNeeded: false,
};

/** The event stream indicator in the header, in words; its offsets go to the inspector. */
export const conn = {
  set(kind, text, detail = "") {
    const node = $("conn");
    node.dataset.state = kind;
    $("conn-text").textContent = text;
    node.title = `event stream: ${text}`;
    $("inspector-conn").textContent = `stream: ${detail || text}`;
  },
};
