// The composer: send (or queue, while a run is busy) with Enter or the button, and Stop.
// Sending with no chat open creates one, titled after the message.
// Images and files are attached with the attach button or dropped onto the composer;
// they are shown above the message (thumbnails, or chips with the name) until sent.

import { api, sessionPath, titleFrom } from "./api.mjs";
import { $, act, el } from "./dom.mjs";
import { sizeText } from "./message-view.mjs";
import { createSession } from "./sessions.mjs";
import { state } from "./state.mjs";

/** Files attached to the next message: {file, part (as the API takes it), preview URL}. */
const attached = [];

export function wireComposer() {
  const composer = $("composer");
  const input = $("input");
  const picker = el("input", { id: "attach-input", type: "file", multiple: true, hidden: true,
    "aria-label": "Attach files", onchange: () => { attach(picker.files); picker.value = ""; } });
  const button = el("button", { id: "attach", class: "ghost", type: "button", title: "Attach images or files",
    text: "Attach", onclick: () => picker.click() });
  composer.prepend(el("div", { id: "attachments", class: "attachments", hidden: true }));
  $("send").before(button);
  composer.append(picker);

  composer.addEventListener("dragover", (e) => {
    if (![...e.dataTransfer.types].includes("Files")) return;
    e.preventDefault();
    composer.classList.add("dropping");
  });
  composer.addEventListener("dragleave", (e) => {
    if (!composer.contains(e.relatedTarget)) composer.classList.remove("dropping");
  });
  composer.addEventListener("drop", (e) => {
    composer.classList.remove("dropping");
    if (!e.dataTransfer.files.length) return;
    e.preventDefault();
    attach(e.dataTransfer.files);
  });

  composer.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = input.value;
    if (!text.trim() && !attached.length) return;
    const sendButton = $("send");
    sendButton.disabled = true;
    act(async () => {
      const parts = await Promise.all(attached.map((a) => a.part));
      let s = state.current;
      if (!s) {
        // The server names the chat after the message's text; a file alone names it here.
        await createSession(text.trim() ? null : titleFrom(attached[0].file.name));
        s = state.current;
      }
      await s.send(text, parts);
      input.value = "";
      clearAttached();
    }).finally(() => {
      sendButton.disabled = false;
      input.focus();
    });
  });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      composer.requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => {
    const s = state.current;
    if (!s) return;
    const run = s.fold.activeRun;
    act(() => api("POST", sessionPath(s.id, "/cancel"), run ? { run_id: run.run_id } : {}));
  });
}

function attach(files) {
  for (const file of files) {
    const image = file.type.startsWith("image/");
    attached.push({
      file,
      part: dataURL(file).then((data) => ({ type: image ? "image" : "file", data, name: file.name })),
      preview: image ? URL.createObjectURL(file) : null,
    });
  }
  showAttached();
}

/** The file as a data URL (its media type and its bytes as base64), as the API takes it. */
function dataURL(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`cannot read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

function clearAttached() {
  for (const a of attached) if (a.preview) URL.revokeObjectURL(a.preview);
  attached.length = 0;
  showAttached();
}

function showAttached() {
  const box = $("attachments");
  box.hidden = !attached.length;
  box.replaceChildren(
    ...attached.map((a, i) => {
      const remove = el("button", { class: "ghost small remove", type: "button", text: "×",
        "aria-label": `Remove ${a.file.name}`, onclick: () => {
          if (a.preview) URL.revokeObjectURL(a.preview);
          attached.splice(i, 1);
          showAttached();
        } });
      const shown = a.preview
        ? el("img", { class: "thumb", src: a.preview, alt: a.file.name })
        : el("span", { class: "file-name", text: a.file.name });
      return el("span", { class: a.preview ? "attachment-image pending" : "file-chip pending", title: a.file.name },
        shown, a.preview ? null : el("span", { class: "muted", text: sizeText(a.file.size) }), remove);
    }),
  );
}
