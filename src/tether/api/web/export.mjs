// Export a chat as a file: JSON (its snapshot and its whole event log, what a program
// reads) or Markdown (the conversation on its current branch, what a person reads).

import { api, DEFAULT_TITLE, readLog, sessionPath } from "./api.mjs";
import { el } from "./dom.mjs";
import { pretty } from "./format.mjs";

/** Offer `text` as a download named `name`. */
function download(name, type, text) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = el("a", { href: url, download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

function fileName(rec, ext) {
  const base = (rec.title || DEFAULT_TITLE).replace(/[^\w.-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 60);
  return `${base || "chat"}.${ext}`;
}

export async function exportJSON(rec) {
  const snapshot = await api("GET", sessionPath(rec.id));
  const { events } = await readLog(rec.id, new Set());
  const doc = { session: snapshot, events: events.map(([offset, event]) => ({ offset, event })) };
  download(fileName(rec, "json"), "application/json", JSON.stringify(doc, null, 2) + "\n");
}

export async function exportMarkdown(rec) {
  const snap = await api("GET", sessionPath(rec.id));
  download(fileName(rec, "md"), "text/markdown", conversationMarkdown(snap));
}

/** The snapshot's branch as Markdown: a heading per message, its text, its tool calls. */
export function conversationMarkdown(snap) {
  const out = [`# ${snap.title || DEFAULT_TITLE}`, ""];
  if (snap.system) out.push(`> System prompt: ${snap.system.replace(/\n/g, "\n> ")}`, "");
  for (const msg of snap.messages || []) {
    out.push(`## ${msg.role === "user" ? "You" : "Assistant"}`, "");
    for (const part of msg.parts || []) {
      if (part.kind === "text" && part.text) out.push(part.text, "");
      else if (part.kind === "tool-call") {
        out.push(`Tool call \`${part.tool_name}\`:`, "", "```json", pretty(part.value ?? {}), "```", "");
        if (part.error != null) out.push(`Failed: ${part.error}`, "");
        else if (part.result !== undefined) out.push("Result:", "", "```json", pretty(part.result), "```", "");
      } else if (part.kind === "image" || part.kind === "file") {
        out.push(`*(${part.kind}: ${part.name || part.media_type || "attachment"})*`, "");
      }
    }
  }
  return out.join("\n");
}
