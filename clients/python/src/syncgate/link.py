"""The state of one socket: ids, answers awaited, what it subscribed and synced, and its paced sender."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from .codec import Message, encode
from .pacer import Pacer


@dataclass(frozen=True)
class Limits:
    """The limits a server announces in ``AUTH_ACK.limits`` (the protocol's defaults when absent)."""

    max_message_bytes: int = 1024 * 1024
    max_value_bytes: int = 256 * 1024
    max_batch_ops: int = 1000
    max_value_depth: int = 16

    @staticmethod
    def from_wire(limits: Any) -> Limits:
        if not isinstance(limits, dict):
            return Limits()
        default = Limits()

        def number(name: str, fallback: int) -> int:
            value = limits.get(name)
            return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else fallback

        return Limits(
            number("maxMessageBytes", default.max_message_bytes),
            number("maxValueBytes", default.max_value_bytes),
            number("maxBatchOps", default.max_batch_ops),
            number("maxValueDepth", default.max_value_depth),
        )


@dataclass(frozen=True)
class SubRequest:
    """A ``SUB`` this link sent (kept after ``OK``: a rules reload may end it with ``ERROR`` of its id)."""

    topic: str


@dataclass(frozen=True)
class SyncRequest:
    """A ``SYNC`` this link sent; ``full``: without a cursor, so its answer is the whole state."""

    collection: str
    full: bool


@dataclass(frozen=True)
class ReplayRequest:
    """The ``OP_BATCH`` of the outbox in flight (one at a time)."""


Internal = SubRequest | SyncRequest | ReplayRequest


class Link:
    """One socket's session. Every frame leaves through one sender task, paced."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.next_id = 1
        self.connected = False
        self.limits = Limits()
        self.internal: dict[int, Internal] = {}
        self.requests: dict[int, asyncio.Future[Message]] = {}
        self.topics: set[str] = set()
        self.syncs: set[str] = set()
        self.paging: dict[str, tuple[int, bool]] = {}
        self.replaying = False
        self.auth_fail = ""
        self.pacer = Pacer()
        self._outgoing: asyncio.Queue[bytes] = asyncio.Queue()
        self._sender = asyncio.create_task(self._send_loop())

    def allocate(self) -> int:
        id_ = self.next_id
        self.next_id += 1
        return id_

    def send(self, message: Message) -> None:
        """Queues a message; it leaves when the pacer allows, in order."""
        self._outgoing.put_nowait(encode(message))

    def request(self, message: Message) -> asyncio.Future[Message]:
        """Sends a request with a fresh id; the future resolves with its answer."""
        id_ = self.allocate()
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self.requests[id_] = future
        self.send({**message, "id": id_})
        return future

    async def _send_loop(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                frame = await self._outgoing.get()
                await self.pacer.acquire()
                await self.ws.send(frame)

    async def finish(self, error: BaseException) -> None:
        """Stops the sender and fails every request still waiting for an answer."""
        self._sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._sender
        for future in self.requests.values():
            if not future.done():
                future.set_exception(error)
        self.requests.clear()
