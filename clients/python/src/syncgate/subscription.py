"""A pub/sub subscription: an async iterator of messages and presence events."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, AsyncIterator, Union

from .events import Message, PresenceJoin, PresenceLeave

if TYPE_CHECKING:
    from .client import Client

Delivery = Union[Message, PresenceJoin, PresenceLeave]


class SubscriptionError(Exception):
    """The server refused the subscription or ended it (``code``: ``forbidden``, ``invalid``...)."""

    def __init__(self, topic: str, code: str, message: str) -> None:
        super().__init__(f"subscription to {topic} refused: {code}: {message}")
        self.topic = topic
        self.code = code


class Subscription:
    """What arrives on one topic while subscribed; renewed after every reconnect.

    Pub/sub is at most once: what is published while the client is offline
    is not delivered later. Iterate with ``async for``; the iteration ends
    after :meth:`unsubscribe` and raises :class:`SubscriptionError` when the
    server refuses or ends the subscription.
    """

    def __init__(self, client: Client, topic: str, max_queued: int) -> None:
        self._client = client
        self.topic = topic
        self._queue: asyncio.Queue[Delivery | BaseException | None] = asyncio.Queue()
        self._max_queued = max_queued
        self.dropped = 0
        """Deliveries dropped because the iterator fell more than ``max_queued`` behind."""
        self.subscribed = asyncio.Event()
        self._ended = False

    def _deliver(self, item: Delivery) -> None:
        if self._ended:
            return
        if self._queue.qsize() >= self._max_queued:
            self.dropped += 1
            return
        self._queue.put_nowait(item)

    def _end(self, error: BaseException | None) -> None:
        if not self._ended:
            self._ended = True
            self._queue.put_nowait(error)

    async def unsubscribe(self) -> None:
        """Stops the subscription (sends ``UNSUB`` when this was the topic's last one)."""
        if self._ended:
            return
        self._end(None)
        await self._client._unsubscribe(self)

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self

    async def __anext__(self) -> Delivery:
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._queue.put_nowait(item)
            raise item
        return item

    async def get(self, timeout: float | None = None) -> Delivery:
        """The next delivery, waiting at most ``timeout`` seconds."""
        return await asyncio.wait_for(self.__anext__(), timeout)
