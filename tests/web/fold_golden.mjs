// The web UI's fold reproduces the golden fixtures, under Node, no browser.
//
//   node tests/web/fold_golden.mjs
//
// For each tests/fixtures/folds/*.json (and folds-by-hand/*.json): the events folded from nothing, and the
// recorded snapshot seeded into a fold (what the page does on load), must both
// read back as the recorded snapshot. "Read back" is the server's snapshot shape
// (sessions/fold.py: SessionFold.snapshot), written out here from the UI fold's
// fields. Prints one line per check; exits 1 if any failed.

import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { Fold } from "../../src/tether/api/web/fold.mjs";

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), "..", "fixtures");
// Recorded cases, and those written by hand (what no scenario records yet).
const FOLDS = ["folds", "folds-by-hand"].map((d) => join(FIXTURES, d));
const present = (v) => v !== undefined && v !== null;

function partJson(p) {
  const out = { id: p.id, kind: p.kind, done: p.done };
  if (p.kind === "text" || p.kind === "reasoning" || p.text) out.text = p.text;
  for (const key of ["media_type", "name", "size", "url"]) if (present(p[key])) out[key] = p[key];
  for (const key of ["value", "tool_call_id", "tool_name", "result", "error", "approval", "signature", "redacted"]) {
    if (present(p[key])) out[key] = p[key];
  }
  if (p.kind === "tool-call") out.needs_approval = p.needs_approval;
  return out;
}

function messageJson(fold, m) {
  const out = {
    id: m.id, role: m.role, parent_id: m.parent_id, status: m.status,
    parts: m.parts.map(partJson), siblings: [...fold.kids(m.parent_id)],
  };
  for (const key of ["run_id", "usage", "edit_of"]) if (present(m[key])) out[key] = m[key];
  return out;
}

function snapshotOf(fold) {
  const snap = {
    status: fold.status,
    messages: fold.branch().messages.map((m) => messageJson(fold, m)),
    active_run: fold.activeRun,
    queue: fold.queue,
    last_error: fold.lastError,
    usage: fold.usage,
  };
  if (fold.requests.size) snap.client_requests = [...fold.requests.values()];
  return JSON.parse(JSON.stringify(snap)); // as on the wire: no undefined fields
}

let failed = 0;
function check(label, fn) {
  try {
    fn();
    console.log(`ok ${label}`);
  } catch (err) {
    failed++;
    console.log(`FAIL ${label}\n${err.message}`);
  }
}

const files = FOLDS.flatMap((dir) =>
  readdirSync(dir).filter((f) => f.endsWith(".json")).sort().map((f) => join(dir, f)),
);
if (!files.length) {
  console.log(`FAIL no fixtures in ${FOLDS.join(", ")}`);
  failed++;
}
for (const path of files) {
  const file = path.slice(FIXTURES.length + 1);
  const fixture = JSON.parse(readFileSync(path, "utf8"));
  check(`${file}: events folded`, () => {
    const fold = new Fold();
    for (const e of fixture.events) fold.apply(e);
    assert.deepEqual(snapshotOf(fold), fixture.snapshot);
  });
  check(`${file}: snapshot seeded`, () => {
    assert.deepEqual(snapshotOf(Fold.fromSnapshot(fixture.snapshot)), fixture.snapshot);
  });
}
process.exit(failed ? 1 : 0);
