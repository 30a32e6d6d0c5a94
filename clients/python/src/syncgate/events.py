"""The client's events, one dataclass each, and the small emitter that hands them out.

Handlers are registered by event class (``client.on(OpSettled, handler)``),
so a handler's argument is typed. A handler that raises is reported through
the ``logging`` module and never breaks the connection.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from .codec import Unreadable, Value

log = logging.getLogger("syncgate")

E = TypeVar("E")


@dataclass(frozen=True)
class Connecting:
    """A connection attempt starts (``attempt`` counts failures since the last success)."""

    attempt: int


@dataclass(frozen=True)
class Connected:
    """The server answered ``AUTH_ACK``: the session is authenticated."""

    sub: str
    roles: list[str]
    expires_at: int | None


@dataclass(frozen=True)
class Refreshed:
    """An in-band refresh was accepted: the same session lives until ``expires_at``."""

    expires_at: int | None


@dataclass(frozen=True)
class Disconnected:
    """The socket closed (``code`` ``None``: it dropped without a close frame); the client reconnects."""

    code: int | None
    reason: str


@dataclass(frozen=True)
class Stopped:
    """The client stopped for good: closed by the app, signed out, or a close code that says stop."""

    code: int | None
    reason: str


@dataclass(frozen=True)
class OpSettled:
    """A write left the outbox: accepted, or refused for good and rolled back (``code`` says why)."""

    op_id: str
    ok: bool
    collection: str
    key: str
    code: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class OpRetrying:
    """A write was refused with a retryable code: it stays queued and visible."""

    op_id: str
    code: str


@dataclass(frozen=True)
class Synced:
    """A collection's whole snapshot (every page) arrived."""

    collection: str
    records: int
    reset: bool


@dataclass(frozen=True)
class Change:
    """Records of a collection changed (from the server, a local write, or a rollback)."""

    collection: str
    keys: list[str]


@dataclass(frozen=True)
class ClientError:
    """Something went wrong that the client handles on its own (a token provider error, a failed save)."""

    message: str


@dataclass(frozen=True)
class UnreadableData:
    """A record or publication from the server breaks the value rule: it was set aside."""

    unreadable: Unreadable


@dataclass(frozen=True)
class Message:
    """A publication on a subscribed topic (``sender`` is the publisher's ``sub``)."""

    topic: str
    data: Value
    sender: str


@dataclass(frozen=True)
class PresenceJoin:
    """A member joined a topic's presence (or announced new ``info``)."""

    topic: str
    sub: str
    conn_id: int
    info: Value = None


@dataclass(frozen=True)
class PresenceLeave:
    """A member left a topic's presence."""

    topic: str
    sub: str
    conn_id: int


@dataclass(frozen=True)
class Member:
    """One present connection of a topic, from ``PRESENCE_STATE``."""

    sub: str
    conn_id: int
    info: Value = None


class Emitter:
    """Handlers by event class."""

    def __init__(self) -> None:
        self._handlers: dict[type, list[Callable[[Any], None]]] = {}

    def on(self, kind: type[E], handler: Callable[[E], None]) -> Callable[[], None]:
        """Calls ``handler`` with every event of class ``kind``; returns a function that removes it."""
        handlers = self._handlers.setdefault(kind, [])
        handlers.append(handler)

        def remove() -> None:
            if handler in handlers:
                handlers.remove(handler)

        return remove

    def emit(self, event: object) -> None:
        for handler in list(self._handlers.get(type(event), [])):
            try:
                handler(event)
            except Exception:
                log.exception("a %s handler raised", type(event).__name__)
