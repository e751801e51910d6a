// The composer: send (or queue, while a run is busy) with Enter or the button, and Stop.
// Sending with no chat open creates one, titled after the message.

import { api, sessionPath, titleFrom } from "./api.mjs";
import { $, act } from "./dom.mjs";
import { createSession } from "./sessions.mjs";
import { state } from "./state.mjs";

export function wireComposer() {
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
}
