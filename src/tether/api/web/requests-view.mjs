// The client channel in the conversation: what the session asks its clients (sign in to
// toolsets, confirm, give values) drawn as cards under the answer that asked (or after the
// messages, for a backend's request), with the buttons that answer; once answered, the answer.

import { api, sessionPath } from "./api.mjs";
import { act, el } from "./dom.mjs";
import { pretty } from "./format.mjs";
import { render } from "./schedule.mjs";

/** Request id -> its card: {el, sig, signin: {toolset id -> status}, fields}. */
const cards = new Map();

/** The cards of the requests asked under message `messageId` (null: by no run). */
export function requestCards(s, messageId) {
  return s.fold.requestsOf(messageId).map((req) => requestCard(s, req));
}

function requestCard(s, req) {
  let c = cards.get(req.request_id);
  if (!c) {
    c = { el: el("div", { class: "client-request", "data-request-id": req.request_id,
      "data-method": req.method }), sig: null, signin: {}, fields: null };  // prettier-ignore
    cards.set(req.request_id, c);
  }
  const sig = [s.fold.gen, req.answered, s.fold.activeRun && s.fold.activeRun.run_id, JSON.stringify(req.result ?? null), JSON.stringify(req.error ?? null),
    JSON.stringify(c.signin)].join("|");
  if (c.sig === sig) return c.el;
  c.sig = sig;
  c.el.dataset.answered = String(!!req.answered);
  // A run's request is answerable while that run is active; a backend's, always.
  const run = s.fold.activeRun;
  const live = !req.run_id || (!!run && run.run_id === req.run_id);
  c.el.replaceChildren(...(req.answered ? answeredView(req) : live ? askView(s, req, c) : endedView(req)));
  return c.el;
}

/** Send the answer; a 409 means another client answered first (its answer stands). */
function respond(s, req, answer) {
  return act(async () => {
    try {
      await api("POST", sessionPath(s.id, "/client-responses"), { request_id: req.request_id, ...answer });
    } catch (err) {
      if (err.status !== 409) throw err;
      return;
    }
    if (!req.answered) {
      req.answered = true;
      if (answer.error) req.error = answer.error;
      else req.result = answer.result;
    }
    if (req.message_id && s.fold.messages.get(req.message_id)) s.fold.messages.get(req.message_id).rev++;
    render();
  });
}

function button(cls, text, onclick) {
  return el("button", { class: `small ${cls}`, type: "button", text, onclick });
}

function askView(s, req, c) {
  const p = req.params || {};
  if (req.method === "confirm") {
    return [
      el("div", { class: "request-message", text: p.message || "Confirm?" }),
      el("div", { class: "request-buttons" },
        button("primary answer-yes", "Yes", () => respond(s, req, { result: { confirmed: true } })),
        button("ghost answer-no", "No", () => respond(s, req, { result: { confirmed: false } }))),
    ];  // prettier-ignore
  }
  if (req.method === "signin") return signinView(s, req, c, p.toolsets || []);
  if (req.method === "input") return inputView(s, req, c, p);
  return [
    el("div", { class: "muted", text: `The session asks its clients: ${req.method}` }),
    el("pre", { class: "json", text: pretty(req.params ?? null) }),
  ];
}

/** Each toolset: a button that opens its sign-in page, then Done or Decline; the answer
 * goes when every toolset has one. */
function signinView(s, req, c, toolsets) {
  const decide = (id, status) => {
    c.signin[id] = status;
    if (toolsets.every((t) => c.signin[t.id])) {
      const result = Object.fromEntries(toolsets.map((t) => [t.id, { status: c.signin[t.id] }]));
      respond(s, req, { result });
    } else {
      render();
    }
  };
  const rows = toolsets.map((t) => {
    const decided = c.signin[t.id];
    return el("div", { class: "signin-toolset", "data-toolset": t.id },
      el("span", { class: "toolset-name", text: t.name || t.id }),
      decided
        ? el("span", { class: "tag", text: decided.replace("_", " ") })
        : [
          button("primary signin-open", "Sign in", () => window.open(t.url, "_blank", "noopener")),
          button("ghost signin-done", "Done", () => decide(t.id, "signed_in")),
          button("ghost signin-decline", "Decline", () => decide(t.id, "declined")),
        ]);  // prettier-ignore
  });
  return [el("div", { class: "request-message", text: "Sign in to use these tools:" }), ...rows];
}

/** A small form from the schema's properties (strings, numbers, integers, booleans). */
function inputView(s, req, c, p) {
  const props = (p.schema && p.schema.properties) || {};
  const required = new Set((p.schema && p.schema.required) || []);
  if (!c.fields) {
    c.fields = Object.entries(props).map(([name, prop]) => {
      const label = prop.title || name;
      let input;
      if (prop.type === "boolean") input = el("input", { type: "checkbox", name });
      else if (Array.isArray(prop.enum)) input = el("select", { name }, ...prop.enum.map((v) => el("option", { value: v, text: v })));
      else input = el("input", { type: prop.type === "string" ? "text" : "number", name,
        step: prop.type === "integer" ? "1" : "any", required: required.has(name) });  // prettier-ignore
      return { name, prop, input, row: el("label", { class: "input-field" }, el("span", { text: label }), input) };
    });
  }
  const content = () => {
    const out = {};
    for (const { name, prop, input } of c.fields) {
      if (prop.type === "boolean") out[name] = input.checked;
      else if (input.value === "") continue;
      else if (prop.type === "integer") out[name] = parseInt(input.value, 10);
      else if (prop.type === "number") out[name] = parseFloat(input.value);
      else out[name] = input.value;
    }
    return out;
  };
  const form = el("form", { class: "input-form", onsubmit: (e) => {
    e.preventDefault();
    respond(s, req, { result: { action: "accept", content: content() } });
  } },
  ...c.fields.map((f) => f.row),
  el("div", { class: "request-buttons" },
    el("button", { class: "primary small answer-send", type: "submit", text: "Send" }),
    button("ghost answer-decline", "Decline", () => respond(s, req, { result: { action: "decline" } })),
    button("ghost answer-cancel", "Cancel", () => respond(s, req, { result: { action: "cancel" } }))));  // prettier-ignore
  return [el("div", { class: "request-message", text: p.message || "" }), form];
}

function endedView(req) {
  const p = req.params || {};
  return [
    el("div", { class: "request-message muted", text: p.message || req.method }),
    el("div", { class: "request-answer muted", text: "not answered: the run that asked has ended" }),
  ];
}

function answeredView(req) {
  const p = req.params || {};
  const what = req.method === "signin" ? "Sign in" : p.message || req.method;
  let answer;
  if (req.error) answer = `error: ${req.error.message} (${req.error.code})`;
  else if (req.method === "confirm") answer = req.result && req.result.confirmed ? "Yes" : "No";
  else if (req.method === "signin") {
    answer = Object.entries(req.result || {}).map(([id, r]) => `${id}: ${String(r.status).replace("_", " ")}`).join(", ");
  } else if (req.method === "input" && req.result) {
    answer = req.result.action === "accept" ? pretty(req.result.content ?? {}) : req.result.action;
  } else answer = pretty(req.result ?? null);
  return [
    el("div", { class: "request-message muted", text: what }),
    el("div", { class: "request-answer", text: answer }),
  ];
}
