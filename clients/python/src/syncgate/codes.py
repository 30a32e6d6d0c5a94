"""The wire codes and what a client does about them.

The same tables as ``proto/PROTOCOL.md`` (section 5, close codes; section 4,
op result codes), the Rust client's ``CloseAction`` and the TypeScript
client's ``codes.ts``: the three clients must react to a close alike.
"""

from __future__ import annotations

import enum


class CloseAction(enum.Enum):
    """What the client does after the server closes with a code."""

    STOP = "stop"
    """Fix the client, or the identity is not allowed: retrying cannot help."""
    NEW_TOKEN = "new_token"
    """4001: the token was refused; ask for another one (reason ``rejected``)."""
    REFRESH_TOKEN = "refresh_token"
    """4100: the token expired; ask for a fresh one (reason ``refresh``)."""
    BACK_OFF = "back_off"
    """4029: rate limited; reconnect from high up the backoff curve."""
    RESYNC = "resync"
    """4200: slow consumer; reconnect and resume every sync from its cursor."""
    RECONNECT = "reconnect"
    """Anything else (1001, 4008, a dropped socket): reconnect with backoff."""


def close_action(code: int | None) -> CloseAction:
    """The action for a close code (``None``: the connection dropped without one)."""
    if code in (1002, 1009, 4000, 4003):
        return CloseAction.STOP
    if code == 4001:
        return CloseAction.NEW_TOKEN
    if code == 4100:
        return CloseAction.REFRESH_TOKEN
    if code == 4029:
        return CloseAction.BACK_OFF
    if code == 4200:
        return CloseAction.RESYNC
    return CloseAction.RECONNECT


FINAL_OP_CODES = frozenset({"forbidden", "invalid", "clock_skew", "stale"})
"""Op refusals that are for good: the op leaves the outbox and its record rolls back."""


def is_final_op_code(code: str) -> bool:
    """Whether an op refused with ``code`` is refused for good.

    Everything else, including codes this client does not know, is retryable:
    a newer server may add a code, and dropping a write on an unknown code
    would lose it.
    """
    return code in FINAL_OP_CODES


def is_temporary_error(code: str) -> bool:
    """Whether a request's ``ERROR`` code means "not now" rather than "no"."""
    return code in ("rate_limited", "unavailable")
