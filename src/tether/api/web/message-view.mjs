// The view of one message: its head (role, tags, branch switcher), its parts (text as
// markdown, reasoning, tool calls with their approval and result forms) and its foot
// (edit, regenerate, usage). Each view redraws only when its message's `rev` changed.

import { api, authHeaders, sessionPath } from "./api.mjs";
import { addCodeCopyButtons, copyText } from "./copy.mjs";
import { act, el } from "./dom.mjs";
import { esc, pretty } from "./format.mjs";
import { markdown } from "./markdown.mjs";
import { requestCards } from "./requests-view.mjs";
import { render } from "./schedule.mjs";

/** Message id -> view of the open session. */
export const views = new Map();

export function messageView(s, msg) {
  let v = views.get(msg.id);
  if (!v) {
    v = { el: null, parts: new Map(), sig: null, editing: false };
    v.el = el("article", { class: `msg ${msg.role}`, "data-message-id": msg.id, "data-role": msg.role });
    v.head = el("div", { class: "msg-head" });
    v.body = el("div", { class: "parts" });
    v.foot = el("div", { class: "msg-foot" });
    v.el.append(v.head, v.body, v.foot);
    views.set(msg.id, v);
  }
  const siblings = s.fold.kids(msg.parent_id);
  const sig = [s.fold.gen, msg.rev, msg.status, siblings.join(","), v.editing, s.fold.status].join("|");
  v.el.dataset.status = msg.status;
  if (v.sig === sig) return v.el;
  v.sig = sig;
  renderHead(s, msg, v, siblings);
  if (!v.editing) renderParts(s, msg, v);
  renderFoot(s, msg, v);
  return v.el;
}

function renderHead(s, msg, v, siblings) {
  const children = [el("span", { class: "role", text: msg.role === "user" ? "You" : "Assistant" })];
  if (msg.edit_of) children.push(el("span", { class: "tag", text: "edited" }));
  if (msg.status !== "complete" && msg.status !== "streaming") {
    children.push(el("span", { class: `tag status-${msg.status}`, text: msg.status }));
  }
  if (siblings.length > 1) {
    const i = siblings.indexOf(msg.id);
    children.push(
      el(
        "span",
        { class: "branch", title: "other versions of this message" },
        el("button", {
          class: "branch-prev", type: "button", "aria-label": "previous version", text: "‹",
          disabled: i <= 0, onclick: () => s.switchBranch(msg.id, -1),
        }),
        el("span", { class: "branch-pos", text: `${i + 1}/${siblings.length}` }),
        el("button", {
          class: "branch-next", type: "button", "aria-label": "next version", text: "›",
          disabled: i >= siblings.length - 1, onclick: () => s.switchBranch(msg.id, 1),
        }),
      ),
    );
  }
  v.head.replaceChildren(...children);
}

function renderFoot(s, msg, v) {
  const items = [];
  if (msg.status === "error") {
    const err = s.fold.errors.get(msg.run_id) || s.fold.lastError;
    if (err) items.push(el("span", { class: "error-text", text: err.message || err.code }));
  }
  const text = messageText(msg);
  if (text && !v.editing && msg.status !== "streaming") {
    const copy = el("button", { class: "ghost small action-copy", type: "button", text: "Copy",
      onclick: () => copyText(messageText(msg), copy) });
    items.push(copy);
  }
  if (msg.role === "user" && !v.editing) {
    items.push(el("button", { class: "ghost small action-edit", type: "button", text: "Edit",
      onclick: () => startEdit(s, msg, v) }));
  }
  if (msg.role === "assistant" && msg.status !== "streaming") {
    items.push(el("button", { class: "ghost small action-regenerate", type: "button", text: "Regenerate",
      onclick: () => act(() => api("POST", sessionPath(s.id, "/regenerate"), { message_id: msg.id })) }));
  }
  if (msg.usage && (msg.usage.input_tokens || msg.usage.output_tokens)) {
    items.push(el("span", { class: "muted usage",
      text: `${msg.usage.input_tokens || 0} in · ${msg.usage.output_tokens || 0} out` }));
  }
  v.foot.replaceChildren(...items);
}

/** What a message says: its text parts (what Copy copies, what an edit starts from). */
function messageText(msg) {
  return msg.parts.filter((p) => p.kind === "text").map((p) => p.text).join("");
}

function startEdit(s, msg, v) {
  v.editing = true;
  const text = messageText(msg);
  const area = el("textarea", { class: "edit-input", rows: 3, "aria-label": "Edit message" });
  area.value = text;
  const done = () => {
    v.editing = false;
    v.sig = null;
    v.parts.clear();
    v.body.replaceChildren();
    render();
  };
  const form = el(
    "form",
    {
      class: "edit-form",
      onsubmit: (e) => {
        e.preventDefault();
        const content = area.value.trim();
        if (!content) return;
        act(async () => {
          await api("PATCH", sessionPath(s.id, `/messages/${encodeURIComponent(msg.id)}`), { content });
          done();
        });
      },
    },
    area,
    el(
      "div",
      { class: "edit-buttons" },
      el("button", { class: "ghost small", type: "button", text: "Cancel", onclick: done }),
      el("button", { class: "primary small", type: "submit", text: "Save & send" }),
    ),
  );
  area.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    } else if (e.key === "Escape") {
      done();
    }
  });
  v.parts.clear();
  v.body.replaceChildren(form);
  v.sig = null;
  render();
  area.focus();
}

function renderParts(s, msg, v) {
  const wanted = [];
  for (const part of msg.parts) {
    let pv = v.parts.get(part.id);
    if (!pv) {
      pv = { el: el("div", { class: `part part-${part.kind}`, "data-part-id": part.id }), sig: null };
      v.parts.set(part.id, pv);
    }
    const sig = `${s.fold.gen}|${part.rev}|${msg.status}`;
    if (pv.sig !== sig) {
      pv.sig = sig;
      renderPart(s, msg, part, pv);
    }
    wanted.push(pv.el);
  }
  if (!msg.parts.length && msg.status === "streaming") {
    wanted.push(v.typing || (v.typing = el("div", { class: "typing", "aria-label": "thinking" },
      el("span"), el("span"), el("span"))));
  }
  wanted.push(...requestCards(s, msg.id)); // what the run asked the session's clients
  const ids = new Set(msg.parts.map((p) => p.id));
  for (const id of [...v.parts.keys()]) if (!ids.has(id)) v.parts.delete(id);
  const current = [...v.body.children];
  if (current.length !== wanted.length || current.some((n, i) => n !== wanted[i])) {
    v.body.replaceChildren(...wanted);
  }
  const last = msg.parts[msg.parts.length - 1];
  v.el.classList.toggle("streaming", msg.status === "streaming" && !!last && last.kind === "text");
}

function renderPart(s, msg, part, pv) {
  const node = pv.el;
  if (part.kind === "text") {
    node.classList.add("markdown");
    node.innerHTML = msg.role === "user" ? `<p>${esc(part.text).replace(/\n/g, "<br>")}</p>` : markdown(part.text);
    addCodeCopyButtons(node);
  } else if (part.kind === "reasoning") {
    if (!pv.details) {
      pv.body = el("div", { class: "markdown" });
      pv.details = el("details", { open: !part.done }, el("summary", { text: "Reasoning" }), pv.body);
      node.append(pv.details);
    }
    pv.details.querySelector("summary").textContent = part.done ? "Reasoning" : "Reasoning…";
    pv.body.innerHTML = markdown(part.text);
    addCodeCopyButtons(pv.body);
  } else if (part.kind === "tool-call") {
    node.dataset.toolCallId = part.tool_call_id || "";
    renderToolCall(s, msg, part, pv);
  } else if (msg.role === "user" && (part.kind === "image" || part.kind === "file")) {
    if (!node.firstChild) node.append(attachmentView(s, part));
  } else {
    node.replaceChildren(
      el("div", { class: "muted", text: part.kind }),
      el("pre", { class: "json", text: pretty(part.value ?? part.text) }),
    );
  }
}

/**
 * An image of a user message as a thumbnail (a link to the full image), any other
 * file as a chip with its name (a download). The bytes come from the session's
 * attachment route, read with this page's key, as a blob URL.
 */
function attachmentView(s, part) {
  const name = part.name || (part.kind === "image" ? "image" : "file");
  const link = el("a", { class: part.kind === "image" ? "attachment-image" : "file-chip",
    title: name, target: "_blank", rel: "noopener" });
  if (part.kind === "image") {
    const img = el("img", { class: "thumb", alt: name });
    link.append(img);
    if (part.url) {
      img.src = link.href = part.url;
      return link;
    }
    attachmentURL(s, part).then((url) => { img.src = link.href = url; }, () => img.classList.add("broken"));
    return link;
  }
  link.append(el("span", { class: "file-name", text: name }));
  if (part.size) link.append(el("span", { class: "muted", text: sizeText(part.size) }));
  link.download = name;
  attachmentURL(s, part).then((url) => { link.href = url; }, () => link.classList.add("broken"));
  return link;
}

/** Part id -> blob URL of its bytes (parts never change: read once per page). */
const blobs = new Map();

function attachmentURL(s, part) {
  const key = `${s.id}/${part.id}`;
  if (!blobs.has(key)) {
    const path = sessionPath(s.id, `/attachments/${encodeURIComponent(part.id)}`);
    const url = fetch(path, { headers: authHeaders() }).then((res) => {
      if (!res.ok) throw new Error(`attachment: HTTP ${res.status}`);
      return res.blob();
    }).then((blob) => URL.createObjectURL(blob));
    url.catch(() => blobs.delete(key));
    blobs.set(key, url);
  }
  return blobs.get(key);
}

export function sizeText(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(n < 10240 ? 1 : 0)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

/**
 * A tool call: its name and arguments, then what it waits for. Redrawn only when
 * that changes (not on every event of the run), and its inputs are kept across
 * redraws, so nothing typed into them is lost.
 */
function renderToolCall(s, msg, part, pv) {
  const answered = !!part.answered || part.result != null || part.error != null;
  const live = msg.status === "streaming";
  const approvalPending = !part.approval && part.needs_approval !== false;
  const askApproval = live && !answered && approvalPending;
  // Unknown whether approval is needed (an old server's snapshot): offer both.
  const askResult = live && !answered && !(part.needs_approval && !part.approval);
  let stateText = "waiting for a result";
  if (part.approval && !part.approval.approved) stateText = "denied";
  else if (part.error != null) stateText = "failed";
  else if (answered) stateText = "returned";
  else if (!live) stateText = "not answered";
  else if (part.needs_approval && !part.approval) stateText = "needs approval";
  const shape = JSON.stringify([
    s.fold.gen, stateText, askApproval, askResult, part.tool_name, part.value ?? part.text ?? null,
    part.result ?? null, part.error ?? null, part.approval ?? null,
  ]);
  if (pv.shape === shape) return;
  pv.shape = shape;

  const out = [
    el(
      "div",
      { class: "tool-head" },
      el("span", { class: "tool-icon", text: "ƒ" }),
      el("span", { text: "Tool call " }),
      el("code", { class: "tool-name", text: part.tool_name || "?" }),
      el("span", { class: `tag tool-state state-${stateText.replace(/ /g, "-")}`, text: stateText }),
    ),
    el("pre", { class: "json tool-args", text: pretty(part.value ?? part.text ?? {}) }),
  ];
  if (part.approval && part.approval.reason) {
    out.push(el("div", { class: "muted", text: `reason: ${part.approval.reason}` }));
  }
  if (part.error != null) out.push(el("pre", { class: "json tool-error", text: pretty(part.error) }));
  else if (part.result != null) out.push(el("pre", { class: "json tool-result", text: pretty(part.result) }));

  const callId = part.tool_call_id;
  const redraw = () => {
    part.rev++;
    msg.rev++;
    render();
  };
  if (askApproval) {
    const reason = pv.reason || (pv.reason = el("input", {
      class: "tool-reason", type: "text", placeholder: "reason (optional)", "aria-label": "Reason",
    }));
    const answer = (approved) =>
      act(async () => {
        const why = reason.value.trim() || null;
        try {
          await api("POST", sessionPath(s.id, "/tool-approvals"), { tool_call_id: callId, approved, reason: why });
        } catch (err) {
          if (err.status !== 409) throw err; // 409: someone answered first; their answer stands
        }
        if (!part.approval) part.approval = { approved, reason: why };
        if (!approved) part.answered = true;
        redraw();
      });
    out.push(
      el(
        "div",
        { class: "tool-approval" },
        el("span", { text: part.needs_approval ? "The agent asks to run this tool." : "If this call needs approval:" }),
        reason,
        el("button", { class: "primary small approve", type: "button", text: "Approve", onclick: () => answer(true) }),
        el("button", { class: "danger small deny", type: "button", text: "Deny", onclick: () => answer(false) }),
      ),
    );
  }
  if (askResult) {
    if (!pv.input) {
      pv.input = el("textarea", { class: "tool-input", rows: 3, "aria-label": "Tool result (JSON)" });
      pv.input.value = "{\n  \n}";
      pv.problem = el("div", { class: "error-text", hidden: true });
    }
    const input = pv.input;
    const problem = pv.problem;
    const submit = (asError) =>
      act(async () => {
        const body = { tool_call_id: callId };
        if (asError) {
          body.error = input.value.trim() || "tool failed";
        } else {
          try {
            body.output = JSON.parse(input.value);
          } catch (err) {
            problem.hidden = false;
            problem.textContent = `not valid JSON: ${err.message}`;
            return;
          }
        }
        problem.hidden = true;
        try {
          await api("POST", sessionPath(s.id, "/tool-results"), body);
        } catch (err) {
          if (err.status !== 409) throw err;
        }
        part.answered = true;
        redraw();
      });
    out.push(
      el(
        "form",
        { class: "tool-form", onsubmit: (e) => { e.preventDefault(); submit(false); } },
        el("label", { class: "muted", text: "Result (JSON)" }),
        input,
        problem,
        el(
          "div",
          { class: "tool-buttons" },
          el("button", { class: "ghost small send-error", type: "button", text: "Send as error",
            onclick: () => submit(true) }),
          el("button", { class: "primary small send-result", type: "submit", text: "Send result" }),
        ),
      ),
    );
  }
  pv.el.replaceChildren(...out);
}

// ---------------------------------------------------------------------------
