/** Jittered exponential backoff ("equal jitter"), as in the Rust client. */
export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 250, maxMs: 30_000 };

/** The delay before retry number `attempt` (0-based): uniform in [d/2, d], d = min(max, initial·2^attempt). */
export function backoffDelay(options: BackoffOptions, attempt: number, random: () => number = Math.random): number {
  const ceiling = Math.min(options.maxMs, options.initialMs * 2 ** Math.min(attempt, 20));
  return ceiling / 2 + (ceiling / 2) * random();
}
