// One subscription: its selection, its rows, its last position and its status.

import { RowSet, type ServerUpdate } from "./rows.js";

export type SubscriptionStatus =
  | { state: "connecting" }
  | { state: "live" }
  /** The server could not prove what was missed: a fresh snapshot follows. */
  | { state: "resyncing"; reason?: string }
  | { state: "closed"; reason: string };

export interface SubscribeOptions<Filter> {
  /** One row by its key. */
  key?: string;
  /** Only rows whose fields equal these values. */
  where?: Filter;
  /** Changes to rows the client has come as merge patches (smaller messages). */
  delta?: boolean;
}

type Listener<T> = (value: T) => void;

export class Subscription<Row> {
  /** The rows this subscription may see, in key order. */
  readonly rows = new RowSet<Row>();
  /** The position of the last update applied: where a resume continues from. */
  position: string | undefined;
  status: SubscriptionStatus = { state: "connecting" };
  private readonly rowListeners = new Set<Listener<Subscription<Row>>>();
  private readonly statusListeners = new Set<Listener<SubscriptionStatus>>();
  private readonly updateListeners = new Set<Listener<ServerUpdate>>();

  /** @internal */
  constructor(
    readonly id: string,
    readonly projection: string,
    readonly options: SubscribeOptions<unknown>,
    private readonly onClose: (subscription: Subscription<Row>) => void,
  ) {}

  /** Calls `listener` after every change of the rows; returns a function that stops it. */
  onRows(listener: Listener<Subscription<Row>>): () => void {
    this.rowListeners.add(listener);
    return () => this.rowListeners.delete(listener);
  }

  /** Calls `listener` on every change of status; returns a function that stops it. */
  onStatus(listener: Listener<SubscriptionStatus>): () => void {
    this.statusListeners.add(listener);
    return () => this.statusListeners.delete(listener);
  }

  /** Calls `listener` with every update the server sends (a change to animate,
   * a reset to announce), after it is applied; returns a function that stops it. */
  onUpdate(listener: Listener<ServerUpdate>): () => void {
    this.updateListeners.add(listener);
    return () => this.updateListeners.delete(listener);
  }

  /** Stops the subscription on the server and here. */
  close(): void {
    this.onClose(this);
    this.setStatus({ state: "closed", reason: "closed by the client" });
  }

  /** @internal The subscribe message, resuming from the last position if any
   * (the rows it has are as of that position: pages of a snapshot since are dropped). */
  subscribeMessage(): Record<string, unknown> {
    this.rows.dropPages();
    const { key, where, delta } = this.options;
    return { type: "subscribe", id: this.id, projection: this.projection, key, where, delta, since: this.position };
  }

  /** @internal */
  receive(update: ServerUpdate): void {
    if (update.type === "reset") this.setStatus({ state: "resyncing", reason: update.reason });
    const changed = this.rows.apply(update);
    if ("position" in update && update.position) this.position = update.position;
    if (update.type === "snapshot" && !update.more) this.setStatus({ state: "live" });
    for (const listener of this.updateListeners) listener(update);
    if (changed) for (const listener of this.rowListeners) listener(this);
  }

  /** @internal */
  setStatus(status: SubscriptionStatus): void {
    if (this.status.state === "closed") return;
    this.status = status;
    for (const listener of this.statusListeners) listener(status);
  }
}
