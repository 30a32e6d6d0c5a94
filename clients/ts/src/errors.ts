/**
 * The one error type the client reports: `code` is the protocol's code
 * (`forbidden`, `too_many_subscriptions`, `token_invalid`, …) or one of the
 * client's own (`closed`, `offline_queue_full`, `not_saved`, `provider`), so
 * an app can branch on it instead of parsing a message string.
 */
export class SyncgateError extends Error {
  constructor(
    readonly code: string,
    message: string,
    /** What the error concerns, when it is one topic or collection. */
    readonly context: { topic?: string; collection?: string } = {},
  ) {
    super(message.startsWith(`${code}: `) || message === code ? message : `${code}: ${message}`);
    this.name = "SyncgateError";
  }
}
