// The client scenario (client-scenario.mjs) in Node, with the package built to
// clients/typescript/dist; driven by e2e/tests/typescript_client.rs: one JSON
// line per step on stdout, the expected rows as one line on stdin.
import { createInterface } from "node:readline";
import { createClient } from "../../clients/typescript/dist/index.js";
import { scenario } from "./client-scenario.mjs";

const say = (line) => console.log(JSON.stringify(line));
setTimeout(() => {
  say({ step: "timeout" });
  process.exit(1);
}, 150_000).unref();
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
await scenario({
  createClient,
  // Node 22 has a WebSocket of its own; Node 20 only behind a flag.
  WebSocket: globalThis.WebSocket ?? (await import("ws")).WebSocket,
  urls: process.env.FACET_URLS.split(","),
  tokenUri: process.env.FACET_TOKEN_URI,
  ttl: Number(process.env.FACET_TOKEN_TTL),
  say,
  expectedRows: async () => JSON.parse((await lines.next()).value),
});
process.exit(0);
