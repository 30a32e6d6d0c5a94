"""What the connection needs from the client, how it is configured, and the errors its requests raise."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Protocol

from .backoff import Backoff
from .codec import Message
from .replica import Record, Replica, Settled

TokenProvider = Callable[[str], Awaitable[str | None]]
"""``async (reason) -> token``; reason is ``connect``, ``refresh`` or ``rejected``; ``None`` signs out."""


class ConnectionLostError(ConnectionError):
    """The socket closed before the request's answer came."""


class NotConnectedError(ConnectionError):
    """The request needs a live session and there is none right now."""


class Host(Protocol):
    """What the connection needs from the client."""

    @property
    def replica(self) -> Replica: ...
    def wanted_topics(self) -> dict[str, dict[str, Any]]: ...
    def wanted_syncs(self) -> Iterable[str]: ...
    def emit(self, event: object) -> None: ...
    def set_state(self, state: str) -> None: ...
    def deliver(self, message: Message) -> None: ...
    def sub_answered(self, topic: str, error: tuple[str, str] | None) -> None: ...
    def sync_refused(self, collection: str, code: str, message: str) -> None: ...
    async def merged(self, collection: str, records: list[Record], cursor: str, reset: bool) -> None: ...
    async def settled(self, settled: list[Settled], retrying: list[tuple[str, str]]) -> None: ...


@dataclass
class Options:
    """How the connection behaves (see :class:`syncgate.Client`)."""

    url: str
    get_token: TokenProvider | None
    token_in: str = "message"
    backoff: Backoff = field(default_factory=Backoff)
    replay_batch: int = 250
    max_rejections: int = 3
    max_message_bytes: int | None = 64 * 1024 * 1024
    max_queued: int = 1000
