// When to ask for a fresh token: before the current one expires, never after.

/** The `exp` claim of a JWT in ms since the epoch, or undefined when it has
 * none (or is not a JWT: then it is never refreshed ahead). */
export function expiresAt(token: string): number | undefined {
  const payload = token.split(".")[1];
  if (!payload) return undefined;
  try {
    const json = atob(payload.replace(/-/g, "+").replace(/_/g, "/"));
    const exp = JSON.parse(json).exp;
    return typeof exp === "number" ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

/** How long to wait before refreshing a token that expires at `exp`: `ahead`
 * before it, or half-way for a token that lives shorter than twice that. */
export function refreshDelay(exp: number, now: number, ahead: number): number {
  const left = exp - now;
  return Math.max(0, left - Math.min(ahead, left / 2));
}
