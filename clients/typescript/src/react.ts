// `useProjection`: a projection's rows as React state. A separate entry point
// (`@facet/client/react`), so the core has no React dependency.

import { useEffect, useState } from "react";
import type { FacetClient, SchemaLike } from "./client.js";
import type { SubscribeOptions, SubscriptionStatus } from "./subscription.js";

export interface ProjectionState<Row> {
  /** The rows in key order. */
  rows: Row[];
  status: SubscriptionStatus;
}

/** Subscribes while the component is mounted; a change of `projection` or of
 * the options (compared as JSON) subscribes anew. */
export function useProjection<S extends SchemaLike, P extends keyof S["rows"] & string>(
  client: FacetClient<S>,
  projection: P,
  options: SubscribeOptions<P extends keyof S["filters"] ? S["filters"][P] : never> = {},
): ProjectionState<S["rows"][P]> {
  const [state, setState] = useState<ProjectionState<S["rows"][P]>>({ rows: [], status: { state: "connecting" } });
  const selection = JSON.stringify(options);
  useEffect(() => {
    const subscription = client.subscribe(projection, JSON.parse(selection));
    const update = () => setState({ rows: subscription.rows.rows(), status: subscription.status });
    const stopRows = subscription.onRows(update);
    const stopStatus = subscription.onStatus(update);
    return () => {
      stopRows();
      stopStatus();
      subscription.close();
    };
  }, [client, projection, selection]);
  return state;
}
