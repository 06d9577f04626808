// The client package's scenario against two real replicas, the same in Node
// (facet-client-scenario.mjs) and in Chromium (e2e/tests/typescript_client.rs):
// the first connection goes to replica A, every later one to B (as a Service
// would route after A dies). `say` reports each step; `expectedRows` resolves to
// what every row must end as, once the harness has killed A and produced the rest.
// No imports: the browser loads this file's text as a module of its own.
export async function scenario({ createClient, WebSocket, urls: [urlA, urlB], tokenUri, ttl, say, expectedRows }) {
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
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
    WebSocket,
  });

  // Every change must move its row forward: a duplicate or a replayed change
  // would repeat or lower a row's `seq`.
  const subscription = client.subscribe("counter");
  const lastSeq = new Map();
  const problems = [];
  let snapshots = 0;
  let pages = 0;
  let paging = false;
  subscription.onUpdate((update) => {
    if (update.type === "snapshot") {
      // Pages of one snapshot until one comes without `more`.
      if (!paging) {
        snapshots++;
        lastSeq.clear();
      }
      pages++;
      paging = update.more === true;
      if (paging && subscription.status.state === "live") problems.push("live before the last page");
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
  say({ step: "live", rows: subscription.rows.size, pages });

  // Read-your-writes: when a waiting command resolves, the row shows it.
  const bumped = await client.command("bump", { id: "cmd", seq: 1 });
  say({ step: "command", status: bumped.status, seqAtResolve: subscription.rows.get("cmd")?.seq ?? null });

  // A retry with the same key is the same command.
  const first = await client.command("bump", { id: "retry", seq: 1 }, { idempotencyKey: "retry-key" });
  const again = await client.command("bump", { id: "retry", seq: 1 }, { idempotencyKey: "retry-key" });
  say({ step: "retried", first: first.commandId, again: again.commandId });

  // The harness kills A, keeps producing, then says what every row must end as.
  const expected = await expectedRows();
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
}
