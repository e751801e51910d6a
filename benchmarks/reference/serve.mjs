// Start the Durable Streams reference server (@durable-streams/server, pinned in
// package.json) for benchmarking.
//
//   node serve.mjs --port 4437 [--host 127.0.0.1] [--data-dir DIR] [--no-compression]
//
// Without --data-dir the server uses its in-memory store; with it, the
// file-backed store (LMDB metadata + append-only segment files, fsync per append).
// Streams are served at /v1/stream/{path}.
//
// Prints one line "READY <url> pid=<pid>" on stdout once listening. Stops on
// SIGTERM/SIGINT, and also when stdin reaches EOF (so the server dies with the
// benchmark process that spawned it, even if that process is killed hard).

import { DurableStreamTestServer } from "@durable-streams/server"

function parseArgs(argv) {
  const opts = { host: `127.0.0.1`, port: 0, dataDir: undefined, compression: true }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    const next = () => {
      const value = argv[++i]
      if (value === undefined) throw new Error(`missing value for ${arg}`)
      return value
    }
    if (arg === `--port`) opts.port = Number.parseInt(next(), 10)
    else if (arg === `--host`) opts.host = next()
    else if (arg === `--data-dir`) opts.dataDir = next()
    else if (arg === `--no-compression`) opts.compression = false
    else throw new Error(`unknown argument: ${arg}`)
  }
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
    throw new Error(`invalid --port`)
  }
  return opts
}

const opts = parseArgs(process.argv.slice(2))
const server = new DurableStreamTestServer({
  host: opts.host,
  port: opts.port,
  dataDir: opts.dataDir,
  compression: opts.compression,
})

let stopping = false
async function shutdown(code) {
  if (stopping) return
  stopping = true
  const force = setTimeout(() => process.exit(code), 3000)
  force.unref()
  try {
    await server.stop()
  } catch (err) {
    console.error(`stop failed:`, err)
  }
  process.exit(code)
}

process.on(`SIGTERM`, () => void shutdown(0))
process.on(`SIGINT`, () => void shutdown(0))
process.stdin.on(`end`, () => void shutdown(0))
process.stdin.on(`error`, () => void shutdown(0))
process.stdin.resume()

const url = await server.start()
const mode = opts.dataDir ? `file:${opts.dataDir}` : `memory`
process.stdout.write(`READY ${url} pid=${process.pid} mode=${mode}\n`)
