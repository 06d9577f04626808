// A stock graphql-ws client, as a frontend would use it (Node has no WebSocket of
// its own before v22, so `ws` stands in for the browser's).
// Usage: node graphql-ws-subscriber.mjs <ws-url> <subscription> [bearer-token]
// Prints each result (`next` payload) as one JSON line; on the first line "ready"
// once the connection is acknowledged; exits when the server completes or closes.
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const [url, query, token] = process.argv.slice(2);
const client = createClient({
  url,
  webSocketImpl: WebSocket,
  connectionParams: token ? { Authorization: `Bearer ${token}` } : undefined,
  retryAttempts: 0,
  on: { connected: () => console.log(JSON.stringify("ready")) },
});

client.subscribe(
  { query },
  {
    next: (result) => console.log(JSON.stringify(result)),
    error: (error) => {
      console.error("subscription failed:", error?.message ?? error?.reason ?? error);
      process.exit(1);
    },
    complete: () => process.exit(0),
  },
);
