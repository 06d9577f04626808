// Commands: one idempotency key per logical call, reused by every retry, so a
// command sent twice (a reconnect, a lost answer) is produced once per pod and
// carries the same command id everywhere (docs/protocol.md, "Idempotency").

export interface CommandResult {
  commandId: string;
  /** `visible` once its effect can be read at `position`. */
  status: "accepted" | "visible";
  position?: string;
}

export interface CommandOptions {
  /** Resolve once the effect is visible (read-your-writes), or accepted when the
   * server's wait ends first. Default true. */
  wait?: boolean;
  /** Reuse a key of your own (for a call retried across page loads). */
  idempotencyKey?: string;
}

/** A command the server refused: `code` as the server names it
 * (`invalid_input`, `forbidden`, …), `field` for an input error. */
export class CommandError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly field?: string,
  ) {
    super(message);
    this.name = "CommandError";
  }
}

/** A command sent on the socket and not answered yet. */
export interface PendingCommand {
  name: string;
  input: unknown;
  key: string;
  wait: boolean;
  /** The server said produced and a second answer follows. */
  produced: boolean;
  resolve: (result: CommandResult) => void;
  reject: (error: Error) => void;
}

export function newIdempotencyKey(): string {
  return globalThis.crypto.randomUUID();
}

/** The socket message for `command`, under message id `id`. */
export function commandMessage(id: string, command: PendingCommand): string {
  return JSON.stringify({ type: "command", id, name: command.name, input: command.input, idempotencyKey: command.key });
}

/** Handles an `ack` or `error` for `command`; true when it is answered. */
export function answer(command: PendingCommand, message: Record<string, any>): boolean {
  if (message.type === "error") {
    command.reject(new CommandError(message.code ?? "error", message.message, message.field));
    return true;
  }
  // The first ack says produced; one that waits takes the second (visible, or
  // accepted when the server's wait ended).
  if (message.status === "accepted" && command.wait && !command.produced) {
    command.produced = true;
    return false;
  }
  command.resolve({ commandId: message.commandId, status: message.status, position: message.position });
  return true;
}

/** Sends `command` over HTTP (no socket open), retrying network failures and
 * 503s with the same key. */
export async function commandOverHttp(
  fetcher: typeof fetch,
  url: string,
  headers: Record<string, string>,
  command: PendingCommand,
  delay: (attempt: number) => number,
): Promise<CommandResult> {
  const request = {
    method: "POST",
    headers: {
      ...headers,
      "content-type": "application/json",
      "idempotency-key": command.key,
      prefer: command.wait ? "wait=30" : "respond-async",
    },
    body: JSON.stringify(command.input),
  };
  for (let attempt = 0; ; attempt++) {
    let response: Response | undefined;
    try {
      response = await fetcher(url, request);
    } catch (error) {
      if (attempt >= 4) throw error;
    }
    if (response && response.status !== 503) {
      const body = await response.json();
      if (response.ok) return body as CommandResult;
      throw new CommandError(body.error?.code ?? String(response.status), body.error?.message ?? response.statusText, body.error?.field);
    }
    if (response && attempt >= 4) throw new CommandError("unavailable", "the command could not be produced (503)");
    await new Promise((resolve) => setTimeout(resolve, delay(attempt)));
  }
}
