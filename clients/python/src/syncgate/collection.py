"""A collection of the local replica: reads, writes and a feed of its changes."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, AsyncGenerator, Mapping

from .codec import Value
from .events import Change, Synced

if TYPE_CHECKING:
    from .client import Client


class Collection:
    """Last-writer-wins records under one name, readable offline.

    Reads are from the local replica and never wait for the network. A write
    is visible at once and saved before ``set`` returns; the client sends it
    when connected and reports its fate with an :class:`~syncgate.OpSettled` event.
    """

    def __init__(self, client: Client, name: str) -> None:
        self._client = client
        self.name = name
        self._synced = asyncio.Event()

    @property
    def synced(self) -> bool:
        """Whether the server's snapshot of this collection arrived in this session."""
        return self._synced.is_set()

    async def wait_synced(self, timeout: float | None = None) -> None:
        """Waits until the snapshot arrived (``asyncio.TimeoutError`` after ``timeout`` seconds)."""
        await asyncio.wait_for(self._synced.wait(), timeout)

    def _on_synced(self, event: Synced) -> None:
        self._synced.set()

    def _on_disconnected(self) -> None:
        self._synced.clear()

    def get(self, key: str) -> Value:
        """The visible value of a record (``None`` if absent or deleted)."""
        return self._client.replica.get(self.name, key)

    def items(self) -> list[tuple[str, Value]]:
        """Every visible record, sorted by key (deleted ones left out)."""
        return self._client.replica.items(self.name)

    async def set(self, key: str, value: Value) -> str:
        """Writes a record; returns the op id once the write is saved locally."""
        return (await self._client.write(self.name, {key: value}))[0]

    async def set_many(self, values: Mapping[str, Value]) -> list[str]:
        """Writes several records, saved together in one transaction; returns their op ids."""
        return await self._client.write(self.name, values)

    async def delete(self, key: str) -> str:
        """Deletes a record (a tombstone, so the delete wins over older writes)."""
        return (await self._client.write(self.name, {key: None}))[0]

    async def changes(self) -> AsyncGenerator[Change, None]:
        """Yields a :class:`~syncgate.Change` each time records of this collection change.

        A slow consumer loses nothing but granularity: changes queue unbounded
        in memory while it runs, so read ``items()`` for the current state.
        """
        queue: asyncio.Queue[Change] = asyncio.Queue()

        def on_change(event: Change) -> None:
            if event.collection == self.name:
                queue.put_nowait(event)

        remove = self._client.on(Change, on_change)
        try:
            while True:
                yield await queue.get()
        finally:
            remove()
