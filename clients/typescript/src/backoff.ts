// Reconnect delays: exponential with jitter, so that clients a pod dropped at
// once do not all come back at once.

export interface BackoffOptions {
  /** The first delay before jitter (ms). */
  initialMs?: number;
  /** The largest delay before jitter (ms). */
  maxMs?: number;
}

/** The delay before reconnect attempt `attempt` (0 = the first): half of the
 * exponential step, plus a random part up to the other half. */
export function backoffDelay(attempt: number, options: BackoffOptions = {}, random = Math.random): number {
  const initial = options.initialMs ?? 250;
  const max = options.maxMs ?? 10_000;
  const step = Math.min(max, initial * 2 ** Math.min(attempt, 30));
  return step / 2 + random() * (step / 2);
}
