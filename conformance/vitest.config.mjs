// Vitest config for the Durable Streams conformance run (see conformance.test.mjs).
// The suite's own CLI points vitest at a file inside node_modules, which vitest
// excludes; we ship conformance.test.mjs and include only that file.
// Timeouts are deliberately left at vitest's defaults: the official CLI runs the
// suite without a config, so changing them here would let us pass tests the
// real judge fails (e.g. long-poll tests that rely on the 5 s default).
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["conformance.test.mjs"],
    passWithNoTests: false,
    watch: false,
  },
});
