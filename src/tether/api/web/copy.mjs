// Copy buttons: a message's text, and each code block's code, to the clipboard.

import { $, el, toast } from "./dom.mjs";

/** Put `text` in the clipboard; the button says so for a moment. */
export async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (err) {
    toast(`could not copy (${err.message})`);
    return;
  }
  const was = button.textContent;
  button.textContent = "Copied";
  button.classList.add("copied");
  setTimeout(() => {
    button.textContent = was;
    button.classList.remove("copied");
  }, 1500);
}

/** A copy button on every code block under `node` (markdown.mjs draws them as pre.code). */
export function addCodeCopyButtons(node) {
  for (const pre of node.querySelectorAll("pre.code")) {
    pre.append(el("button", { class: "ghost small copy-code", type: "button", text: "Copy",
      "aria-label": "Copy code" }));
  }
}

/** One listener for every code block's button, however often the messages are redrawn. */
export function wireCodeCopy() {
  $("messages").addEventListener("click", (e) => {
    const button = e.target.closest("button.copy-code");
    if (!button) return;
    const code = button.closest("pre.code").querySelector("code");
    copyText(code.textContent, button);
  });
}
