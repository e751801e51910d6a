// Sends a user message with a file part (an image as a data URL, as useChat's
// sendMessage({files}) makes it) to tether's /v1/aisdk/chat through the real
// Vercel AI SDK's DefaultChatTransport, and prints the answer's text as JSON.
//
//   node tests/aisdk/attach.mjs <tether base url> <key> <model> <png base64>
//
// tests/api/test_attachments_e2e.py runs it against a tether with a fake upstream.

import { DefaultChatTransport, readUIMessageStream } from "ai";

const [baseUrl, key, model, png] = process.argv.slice(2);
const transport = new DefaultChatTransport({
  api: `${baseUrl}/v1/aisdk/chat`,
  headers: { authorization: `Bearer ${key}` },
  body: { model },
});
const stream = await transport.sendMessages({
  chatId: `attach-${Date.now()}`,
  trigger: "submit-message",
  messageId: undefined,
  abortSignal: undefined,
  messages: [
    {
      id: "u1",
      role: "user",
      parts: [
        { type: "file", mediaType: "image/png", filename: "dot.png", url: `data:image/png;base64,${png}` },
        { type: "text", text: "What is in this image?" },
      ],
    },
  ],
});
let last;
for await (const message of readUIMessageStream({ stream, terminateOnError: true })) last = message;
const text = (last?.parts ?? []).filter((p) => p.type === "text").map((p) => p.text).join("");
console.log(JSON.stringify({ text }));
