// Entry point for the official Durable Streams server conformance suite.
// The server under test is given by CONFORMANCE_BASE_URL (e.g. http://127.0.0.1:4437);
// tests/streams/test_conformance.py starts tether and sets it.
import { runConformanceTests } from "@durable-streams/server-conformance-tests";

const baseUrl = process.env.CONFORMANCE_BASE_URL;
if (!baseUrl) {
  throw new Error(
    "CONFORMANCE_BASE_URL is not set: point it at a running server, " +
      "e.g. CONFORMANCE_BASE_URL=http://127.0.0.1:4437 npx vitest run",
  );
}

// CONFORMANCE_SUBSCRIPTIONS=1 also runs the reserved subscription APIs (PROTOCOL.md
// sections 6 and 7); their webhook receiver listens on 127.0.0.1, so the server must
// allow loopback webhooks (tether serve --webhook-allow-loopback).
const subscriptions = process.env.CONFORMANCE_SUBSCRIPTIONS === "1";

runConformanceTests({ baseUrl: baseUrl.replace(/\/+$/, ""), subscriptions });
