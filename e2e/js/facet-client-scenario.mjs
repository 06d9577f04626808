// The TypeScript client package (clients/typescript, built to dist/) against two
// real replicas, driven by e2e/tests/typescript_client.rs. The first connection
// goes to replica A, every later one to B (as a Service would route after A dies).
// Prints one JSON line per step; reads the final expected rows on stdin.
import { createInterface } from "node:readline";
import { createClient } from "../../clients/typescript/dist/index.js";

const [urlA, urlB] = process.env.FACET_URLS.split(",");
const tokenUri = process.env.FACET_TOKEN_URI;
const ttl = Number(process.env.FACET_TOKEN_TTL);
const say = (line) => console.log(JSON.stringify(line));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
setTimeout(() => {
  say({ step: "timeout", statuses, problems });
  process.exit(1);
}, 150_000).unref();
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

let connections = 0;
const tokenReasons = {};
const statuses = [];
const started = Date.now();
const client = createClient({
  url: () => (connections++ === 0 ? urlA : urlB),
  getToken: async (reason) => {
    tokenReasons[reason] = (tokenReasons[reason] ?? 0) + 1;
    return (await fetch(`${tokenUri}?sub=ada&aud=ticker&ttl=${ttl}`)).text();
  },
  onStatus: (status) => statuses.push(status),
  // Node 22 has a WebSocket of its own; Node 20 only behind a flag.
  WebSocket: globalThis.WebSocket ?? (await import("ws")).WebSocket,
});

// Every change must move its row forward: a duplicate or a replayed change
// would repeat or lower a row's `seq`.
const subscription = client.subscribe("counter");
const lastSeq = new Map();
const problems = [];
let snapshots = 0;
subscription.onUpdate((update) => {
  if (update.type === "snapshot") {
    snapshots++;
    lastSeq.clear();
    for (const { key, row } of update.rows) lastSeq.set(key, row.seq);
  } else if (update.type === "change" && update.op === "upsert") {
    const before = lastSeq.get(update.key) ?? -1;
    if (update.row.seq <= before) problems.push(`${update.key}: seq ${update.row.seq} after ${before}`);
    lastSeq.set(update.key, update.row.seq);
  } else if (update.type !== "change") {
    problems.push(`unexpected ${update.type}: ${JSON.stringify(update)}`);
  }
});
while (subscription.status.state !== "live") await sleep(20);
say({ step: "live", rows: subscription.rows.size });

// Read-your-writes: when a waiting command resolves, the row shows it.
const bumped = await client.command("bump", { id: "cmd", seq: 1 });
say({ step: "command", status: bumped.status, seqAtResolve: subscription.rows.get("cmd")?.seq ?? null });

// A retry with the same key is the same command.
const first = await client.command("bump", { id: "retry", seq: 1 }, { idempotencyKey: "retry-key" });
const again = await client.command("bump", { id: "retry", seq: 1 }, { idempotencyKey: "retry-key" });
say({ step: "retried", first: first.commandId, again: again.commandId });

// The harness kills A, keeps producing, then says what every row must end as.
const expected = JSON.parse((await lines.next()).value);
const matches = () => Object.entries(expected).every(([key, seq]) => subscription.rows.get(key)?.seq === seq)
  && subscription.rows.size === Object.keys(expected).length;
const deadline = Date.now() + 60_000;
while (!matches() && Date.now() < deadline) await sleep(50);
// Outlive the first token by the server's leeway (30 s): without the in-band
// refresh the connection would have been closed with 4401 by now.
while (Date.now() - started < (ttl + 33) * 1000) await sleep(200);
say({
  step: "done",
  matches: matches(),
  rows: Object.fromEntries(subscription.rows.keys().map((key) => [key, subscription.rows.get(key).seq])),
  problems,
  snapshots,
  opens: statuses.filter((s) => s.state === "open").length,
  closeCodes: statuses.filter((s) => s.state !== "open" && s.state !== "connecting").map((s) => s.code),
  tokenReasons,
  status: subscription.status.state,
});
client.close();
process.exit(0);
