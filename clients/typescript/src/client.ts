// One connection per client, multiplexing every subscription and command:
// connects lazily, reconnects with backoff and resumes each subscription from
// its last position on whichever replica answers, refreshes the token in band.

import { backoffDelay, type BackoffOptions } from "./backoff.js";
import {
  answer,
  commandMessage,
  commandOverHttp,
  newIdempotencyKey,
  type CommandOptions,
  type CommandResult,
  type PendingCommand,
} from "./commands.js";
import type { ServerUpdate } from "./rows.js";
import { Subscription, type SubscribeOptions } from "./subscription.js";
import { expiresAt, refreshDelay } from "./token.js";

/** Why a token is asked for: to connect, because the current one expires soon,
 * or because the server refused the last one (close code 4401). */
export type TokenReason = "connect" | "expiring" | "refused";

export type ConnectionStatus =
  | { state: "connecting" }
  | { state: "open" }
  /** Closed by the server or the network; `retryInMs` until the next attempt. */
  | { state: "reconnecting"; code: number; reason: string; retryInMs: number }
  | { state: "closed"; code: number; reason: string };

export interface ClientOptions {
  /** The runtime's base URL (`https://shop.example.com`), or a function giving
   * one per connection (any replica will do: positions hold on all of them). */
  url: string | (() => string);
  /** A JWT for the connection; called to connect and before the token expires. */
  getToken?: (reason: TokenReason) => string | null | undefined | Promise<string | null | undefined>;
  /** Refresh the token this long before it expires (ms, default 30,000). */
  refreshAheadMs?: number;
  /** Extra query parameters of the socket (dev mode's `as=<user>`). */
  query?: Record<string, string>;
  /** Extra headers of HTTP requests (commands sent without a socket). */
  headers?: Record<string, string>;
  backoff?: BackoffOptions;
  onStatus?: (status: ConnectionStatus) => void;
  WebSocket?: typeof WebSocket;
  fetch?: typeof fetch;
}

/** The shape of the types `facet-bff schema --typescript` writes (`FacetSchema`). */
export interface SchemaLike {
  rows: object;
  filters: object;
  commands: object;
}

interface AnySchema {
  rows: Record<string, Record<string, unknown>>;
  filters: Record<string, Record<string, unknown>>;
  commands: Record<string, Record<string, unknown>>;
}

type FilterOf<S extends SchemaLike, P> = P extends keyof S["filters"] ? S["filters"][P] : never;

/** Closes after which the client resumes at once: too slow (4008), the pod is
 * going away (1001). */
const RESUME_AT_ONCE = new Set([4008, 1001]);
/** Closes that retrying cannot fix: the client broke the protocol or a limit. */
const POLICY = new Set([1003, 1008, 1009]);
const TOKEN_REFUSED = 4401;

export class FacetClient<S extends SchemaLike = AnySchema> {
  status: ConnectionStatus = { state: "closed", code: 1000, reason: "not connected yet" };
  private socket: WebSocket | undefined;
  private token: string | null | undefined;
  private tokenRefused = false;
  private attempts = 0;
  private ids = 0;
  private closedByUser = false;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly subscriptions = new Map<string, Subscription<any>>();
  private readonly commands = new Map<string, PendingCommand>();

  constructor(private readonly options: ClientOptions) {}

  /** Subscribes to a projection's rows (all, one `key`, or those matching `where`). */
  subscribe<P extends keyof S["rows"] & string>(
    projection: P,
    options: SubscribeOptions<FilterOf<S, P>> = {},
  ): Subscription<S["rows"][P]> {
    if (this.closedByUser) throw new Error("the client was closed: create another to subscribe");
    const subscription = new Subscription<S["rows"][P]>(`s${++this.ids}`, projection, options, (s) => {
      this.subscriptions.delete(s.id);
      this.send({ type: "unsubscribe", id: s.id });
    });
    this.subscriptions.set(subscription.id, subscription);
    if (this.isOpen()) this.send(subscription.subscribeMessage());
    else this.connect();
    return subscription;
  }

  /** Sends a command on the socket (over HTTP when none is open); resolves when
   * it is visible (with `wait`, the default) or produced, rejects with a `CommandError`. */
  command<C extends keyof S["commands"] & string>(
    name: C,
    input: S["commands"][C],
    options: CommandOptions = {},
  ): Promise<CommandResult> {
    return new Promise((resolve, reject) => {
      const command: PendingCommand = {
        name,
        input,
        key: options.idempotencyKey ?? newIdempotencyKey(),
        wait: options.wait ?? true,
        produced: false,
        resolve,
        reject,
      };
      if (this.closedByUser) {
        reject(new Error("the client was closed: create another to send commands"));
        return;
      }
      if (!this.socket) {
        this.overHttp(command).then(resolve, reject);
        return;
      }
      const id = `c${++this.ids}`;
      this.commands.set(id, command);
      if (this.isOpen()) this.socket.send(commandMessage(id, command));
    });
  }

  /** Closes the connection and every subscription; pending commands fail. */
  close(): void {
    this.closedByUser = true;
    clearTimeout(this.refreshTimer);
    clearTimeout(this.reconnectTimer);
    this.socket?.close(1000, "closed by the client");
    this.end(1000, "closed by the client");
  }

  /** Closes every subscription and fails every pending command with `reason`. */
  private end(code: number, reason: string): void {
    for (const subscription of this.subscriptions.values()) subscription.setStatus({ state: "closed", reason });
    for (const command of this.commands.values()) command.reject(new Error(`connection closed (${code}): ${reason}`));
    this.subscriptions.clear();
    this.commands.clear();
    this.setStatus({ state: "closed", code, reason });
  }

  private isOpen(): boolean {
    return this.socket?.readyState === 1;
  }

  private send(message: Record<string, unknown>): void {
    if (this.isOpen()) this.socket!.send(JSON.stringify(message));
  }

  private baseUrl(): string {
    const url = this.options.url;
    return (typeof url === "function" ? url() : url).replace(/\/$/, "");
  }

  private setStatus(status: ConnectionStatus): void {
    this.status = status;
    this.options.onStatus?.(status);
  }

  private async connect(): Promise<void> {
    if (this.socket || this.closedByUser) return;
    this.setStatus({ state: "connecting" });
    // A placeholder, so that calls while the token is fetched do not connect twice.
    this.socket = {} as WebSocket;
    let url: string;
    try {
      await this.freshToken();
      url = this.socketUrl();
    } catch (error) {
      this.socket = undefined;
      this.retry(1006, `no token: ${error}`);
      return;
    }
    const Socket = this.options.WebSocket ?? globalThis.WebSocket;
    const socket = new Socket(url);
    this.socket = socket;
    socket.onopen = () => this.opened();
    socket.onmessage = (event) => this.received(JSON.parse(String(event.data)));
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = undefined;
      clearTimeout(this.refreshTimer);
      this.closed(event.code, event.reason);
    };
  }

  /** Asks for a token when there is none, the last was refused, or it expires soon. */
  private async freshToken(): Promise<void> {
    const getToken = this.options.getToken;
    if (!getToken) return;
    const exp = this.token ? expiresAt(this.token) : undefined;
    const expiring = exp !== undefined && exp - Date.now() < (this.options.refreshAheadMs ?? 30_000);
    if (this.token && !this.tokenRefused && !expiring) return;
    this.token = await getToken(this.tokenRefused ? "refused" : this.token ? "expiring" : "connect");
    this.tokenRefused = false;
  }

  private socketUrl(): string {
    const url = new URL(this.baseUrl() + "/ws");
    url.protocol = url.protocol === "https:" ? "wss:" : url.protocol === "http:" ? "ws:" : url.protocol;
    for (const [name, value] of Object.entries(this.options.query ?? {})) url.searchParams.set(name, value);
    if (this.token) url.searchParams.set("access_token", this.token);
    return url.toString();
  }

  private opened(): void {
    this.setStatus({ state: "open" });
    for (const subscription of this.subscriptions.values()) {
      this.send(subscription.subscribeMessage());
      // A resume continues with the rows it has; a first subscription waits for its snapshot.
      if (subscription.position) subscription.setStatus({ state: "live" });
    }
    for (const [id, command] of this.commands) {
      command.produced = false;
      this.socket!.send(commandMessage(id, command));
    }
    this.scheduleRefresh();
  }

  private received(message: Record<string, any>): void {
    this.attempts = 0;
    const id = message.id as string | undefined;
    const command = id === undefined ? undefined : this.commands.get(id);
    if (command) {
      if (answer(command, message)) this.commands.delete(id!);
      return;
    }
    const subscription = id === undefined ? undefined : this.subscriptions.get(id);
    if (!subscription) return;
    if (message.type === "error") {
      this.subscriptions.delete(subscription.id);
      subscription.setStatus({ state: "closed", reason: message.message });
    } else {
      subscription.receive(message as ServerUpdate);
    }
  }

  private closed(code: number, reason: string): void {
    if (this.closedByUser) return;
    if (POLICY.has(code)) {
      this.end(code, reason);
      return;
    }
    if (code === TOKEN_REFUSED) this.tokenRefused = true;
    for (const subscription of this.subscriptions.values()) {
      if (subscription.status.state === "live") subscription.setStatus({ state: "connecting" });
    }
    this.retry(code, reason);
  }

  /** Reconnects: at once when the server asked for a resume, else after a backoff
   * that grows until a connection delivers a message. */
  private retry(code: number, reason: string): void {
    const delay = RESUME_AT_ONCE.has(code) && this.attempts === 0 ? 0 : backoffDelay(this.attempts, this.options.backoff);
    this.attempts++;
    this.setStatus({ state: "reconnecting", code, reason, retryInMs: delay });
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  /** Sends a fresh token in band before the current one expires. */
  private scheduleRefresh(): void {
    clearTimeout(this.refreshTimer);
    const exp = this.token ? expiresAt(this.token) : undefined;
    const getToken = this.options.getToken;
    if (exp === undefined || !getToken) return;
    // At most one refresh a second, even when `getToken` keeps handing out a
    // token that is about to expire.
    const delay = Math.max(1000, refreshDelay(exp, Date.now(), this.options.refreshAheadMs ?? 30_000));
    this.refreshTimer = setTimeout(async () => {
      try {
        const token = await getToken("expiring");
        if (token) {
          this.token = token;
          this.send({ type: "auth", token });
        }
      } catch {
        // Asked again below, or at the reconnect a 4401 leads to.
      }
      if (this.isOpen()) this.scheduleRefresh();
    }, delay);
  }

  private async overHttp(command: PendingCommand): Promise<CommandResult> {
    await this.freshToken();
    const headers = { ...this.options.headers };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    const url = `${this.baseUrl()}/v1/commands/${encodeURIComponent(command.name)}`;
    const fetcher = this.options.fetch ?? globalThis.fetch.bind(globalThis);
    return commandOverHttp(fetcher, url, headers, command, (attempt) => backoffDelay(attempt, this.options.backoff));
  }
}

/** A client of the runtime at `options.url`; typed by the `FacetSchema` that
 * `facet-bff schema SPEC --typescript` writes. */
export function createClient<S extends SchemaLike = AnySchema>(options: ClientOptions): FacetClient<S> {
  return new FacetClient<S>(options);
}
