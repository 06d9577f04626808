// A React component on `useProjection` (clients/typescript/dist/react.js), as an
// application writes it; bundled with React by bundle.mjs and mounted in
// Chromium by e2e/tests/typescript_client.rs.
import { createElement as h } from "react";
import { createRoot } from "react-dom/client";
import { createClient } from "../../clients/typescript/dist/index.js";
import { useProjection } from "../../clients/typescript/dist/react.js";

function Counters({ client }) {
  const { rows, status } = useProjection(client, "counter");
  return h(
    "div",
    null,
    h("p", { id: "status" }, status.state),
    h("ul", { id: "rows" }, rows.map((row) => h("li", { key: row.id }, `${row.id}=${row.seq}`))),
  );
}

export function mount(element, { url, token }) {
  const client = createClient({ url, getToken: () => token });
  createRoot(element).render(h(Counters, { client }));
}
