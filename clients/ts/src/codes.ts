/**
 * The wire codes and what a client does about them: the same tables as
 * proto/PROTOCOL.md and the Rust client (`CloseAction`, `is_final_op_code`).
 */

/** What to do after the server closes with a code. */
export type CloseAction = "stop" | "newToken" | "refreshToken" | "backOff" | "resync" | "reconnect";

/** The action for a close code (`null`: the connection dropped without one). */
export function closeAction(code: number | null): CloseAction {
  switch (code) {
    case 1002:
    case 1009:
    case 4000:
    case 4003:
      return "stop";
    case 4001:
      return "newToken";
    case 4100:
      return "refreshToken";
    case 4029:
      return "backOff";
    case 4200:
      return "resync";
    default:
      return "reconnect";
  }
}

const FINAL_OP_CODES = new Set(["forbidden", "invalid", "clock_skew", "stale"]);

/**
 * Whether an op refused with `code` is refused for good (rolled back).
 * Everything else, including codes this client does not know, is retryable.
 */
export function isFinalOpCode(code: string): boolean {
  return FINAL_OP_CODES.has(code);
}

/** Whether a request's ERROR code means "not now" rather than "no". */
export function isTemporaryError(code: string): boolean {
  return code === "rate_limited" || code === "unavailable";
}
