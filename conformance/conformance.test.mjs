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

runConformanceTests({ baseUrl: baseUrl.replace(/\/+$/, "") });
