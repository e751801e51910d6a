// Drives tether's /v1/aisdk/chat with the real Vercel AI SDK (the `ai` package
// pinned in package-lock.json) and prints what it saw as one JSON object.
//
//   node tests/aisdk/run.mjs http://127.0.0.1:4437
//
// tests/api/test_aisdk.py starts tether, runs this, and asserts on the output.
// Scenarios:
//   count      DefaultChatTransport.sendMessages + readUIMessageStream, "/count 3"
//   resume     a reader of the POST stream, and reconnectToStream mid-run: the two
//              final messages; then reconnectToStream after the run (null: 204)
//   dropped    the POST is aborted mid-run, reconnectToStream gets the whole answer
//   tool       "/tool ...": the tool result is posted to the native session API,
//              under the session id the `start` chunk's messageMetadata names
//   chat       AbstractChat (what useChat runs): two turns, regenerate, an edit
//   chatResume a second AbstractChat with the same id resumes a running answer

import { AbstractChat, DefaultChatTransport, readUIMessageStream } from "ai";

const baseUrl = process.argv[2];
if (!baseUrl) {
  console.error("usage: node run.mjs <tether base url>");
  process.exit(2);
}
const api = `${baseUrl}/v1/aisdk/chat`;
const transport = new DefaultChatTransport({ api });
const runId = Math.random().toString(36).slice(2, 10);
let ids = 0;
const newId = (prefix) => `${prefix}-${runId}-${++ids}`;

const overall = setTimeout(() => {
  console.error("run.mjs: timed out after 90 s");
  process.exit(3);
}, 90_000);

const userMessage = (text, id = newId("u")) => ({
  id,
  role: "user",
  parts: [{ type: "text", text }],
});

const send = (chatId, messages, extra = {}) =>
  transport.sendMessages({
    chatId,
    messages,
    trigger: "submit-message",
    messageId: undefined,
    abortSignal: undefined,
    ...extra,
  });

/** Reads a chunk stream to its end; returns the final message and the chunk types. */
async function read(stream, onMessage) {
  const types = [];
  const tapped = stream.pipeThrough(
    new TransformStream({
      transform(chunk, controller) {
        types.push(chunk.type);
        controller.enqueue(chunk);
      },
    }),
  );
  let last;
  for await (const message of readUIMessageStream({
    stream: tapped,
    terminateOnError: true,
  })) {
    last = message;
    if (onMessage) await onMessage(message, types);
  }
  return { message: last, types };
}

const textOf = (message) =>
  (message?.parts ?? [])
    .filter((p) => p.type === "text")
    .map((p) => p.text)
    .join("");

async function count() {
  const chatId = newId("chat");
  const { message, types } = await read(
    await send(chatId, [userMessage("/count 3")]),
  );
  return { chatId, message, types, text: textOf(message) };
}

async function resume() {
  const chatId = newId("chat");
  const direct = await send(chatId, [userMessage("/count 40 40")]);
  let reconnect;
  let textAtReconnect;
  const first = read(direct, async (message) => {
    // Mid-run: a few numbers in, reconnect as a reloaded page would.
    if (reconnect === undefined && textOf(message).split(" ").length >= 3) {
      textAtReconnect = textOf(message);
      reconnect = transport
        .reconnectToStream({ chatId })
        .then((stream) => (stream === null ? null : read(stream)));
    }
  });
  const uninterrupted = await first;
  const resumed = await reconnect;
  const after = await transport.reconnectToStream({ chatId });
  return {
    chatId,
    uninterrupted: uninterrupted.message,
    resumed: resumed?.message ?? null,
    resumedTypes: resumed?.types ?? null,
    textAtReconnect,
    afterRunIsNull: after === null,
  };
}

async function dropped() {
  const chatId = newId("chat");
  const abort = new AbortController();
  const stream = await send(chatId, [userMessage("/count 30 40")], {
    abortSignal: abort.signal,
  });
  let messageId;
  let textAtDrop = "";
  try {
    await read(stream, async (message) => {
      messageId = message.id;
      textAtDrop = textOf(message);
      if (textAtDrop.split(" ").length >= 3) abort.abort();
    });
  } catch (err) {
    if (err.name !== "AbortError") throw err;
  }
  const resumed = await read(await transport.reconnectToStream({ chatId }));
  return {
    chatId,
    messageIdBeforeDrop: messageId,
    textAtDrop,
    message: resumed.message,
    text: textOf(resumed.message),
  };
}

async function tool() {
  const chatId = newId("chat");
  let posted = null;
  const { message, types } = await read(
    await send(chatId, [userMessage('/tool weather {"city": "Paris"}')]),
    async (message) => {
      const call = message.parts.find(
        (p) => p.type === "tool-weather" && p.state === "input-available",
      );
      if (call && posted === null) {
        const sessionId = message.metadata.tether.sessionId;
        const r = await fetch(
          `${baseUrl}/v1/sessions/${sessionId}/tool-results`,
          {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({
              tool_call_id: call.toolCallId,
              output: { temp_c: 21 },
            }),
          },
        );
        posted = r.status;
      }
    },
  );
  return { chatId, message, types, posted, text: textOf(message) };
}

/** The smallest ChatState: what useChat keeps in React state, kept in an object. */
class State {
  status = "ready";
  error = undefined;
  messages = [];
  pushMessage = (m) => {
    this.messages = this.messages.concat(m);
  };
  popMessage = () => {
    this.messages = this.messages.slice(0, -1);
  };
  replaceMessage = (i, m) => {
    this.messages = [
      ...this.messages.slice(0, i),
      this.snapshot(m),
      ...this.messages.slice(i + 1),
    ];
  };
  snapshot = (value) => structuredClone(value);
}

class Chat extends AbstractChat {
  constructor(init) {
    super({ ...init, state: new State() });
  }
}

const summary = (chat) =>
  chat.messages.map((m) => ({ id: m.id, role: m.role, text: textOf(m) }));

async function chat() {
  const errors = [];
  const c = new Chat({
    id: newId("chat"),
    transport,
    onError: (e) => errors.push(String(e)),
  });
  const steps = {};
  await c.sendMessage({ text: "/count 3" });
  steps.first = summary(c);
  await c.sendMessage({ text: "/count 2" });
  steps.second = summary(c);
  await c.regenerate();
  steps.regenerated = summary(c);
  await c.sendMessage({ text: "/count 4", messageId: c.messages[0].id });
  steps.edited = summary(c);
  return {
    chatId: c.id,
    steps,
    status: c.status,
    errors,
    sessionId: c.messages.at(-1).metadata?.tether?.sessionId,
  };
}

async function chatResume() {
  const errors = [];
  const id = newId("chat");
  const a = new Chat({ id, transport, onError: (e) => errors.push(String(e)) });
  const sent = a.sendMessage({ text: "/count 30 40" });
  while (!(textOf(a.messages.at(-1)).split(" ").length >= 3)) {
    await new Promise((r) => setTimeout(r, 10));
  }
  // A second tab (or the page after a reload) with no messages yet.
  const b = new Chat({ id, transport, onError: (e) => errors.push(String(e)) });
  await b.resumeStream();
  await sent;
  const resumedAgain = new Chat({ id, transport });
  await resumedAgain.resumeStream(); // the run is over: 204, nothing changes
  return {
    original: a.messages.at(-1),
    resumed: b.messages,
    afterRun: resumedAgain.messages,
    statuses: [a.status, b.status, resumedAgain.status],
    errors,
  };
}

try {
  const out = {};
  for (const [name, fn] of Object.entries({
    count,
    resume,
    dropped,
    tool,
    chat,
    chatResume,
  })) {
    out[name] = await fn();
  }
  clearTimeout(overall);
  process.stdout.write(JSON.stringify(out) + "\n");
} catch (err) {
  console.error(err?.stack ?? String(err));
  process.exit(1);
}
