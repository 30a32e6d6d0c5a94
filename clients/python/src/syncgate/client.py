"""``Client``: the public API. It owns the replica (loaded from and saved to
SQLite) and runs the connection, which only speaks the protocol."""

from __future__ import annotations

import asyncio
import os
import time
from types import TracebackType
from typing import Any, Callable, Iterable, Mapping, TypeVar

from .backoff import Backoff
from .codec import Message, Value, encode, value_problem
from .collection import Collection
from .connection import Connection
from .host import Options, TokenProvider
from .events import (
    Change,
    ClientError,
    Disconnected,
    Emitter,
    Member,
    OpRetrying,
    OpSettled,
    PresenceJoin,
    PresenceLeave,
    Synced,
)
from .events import Message as MessageEvent
from .replica import Record, Replica, Settled
from .storage import SqliteStorage, StorageChange
from .subscription import Subscription, SubscriptionError

E = TypeVar("E")


class RequestError(Exception):
    """The server answered a request with ``ERROR`` (``code``: ``forbidden``, ``invalid``, ``rate_limited``...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class InvalidValueError(ValueError):
    """A value the protocol cannot carry (refused before it is queued)."""


class Client:
    """A syncgate client: an authenticated session, an offline replica with an outbox, pub/sub.

    ``get_token(reason)`` is awaited on every ``AUTH_REQUIRED`` (``"connect"``),
    before expiry and on ``TOKEN_EXPIRING`` (``"refresh"``, in band, without
    reconnecting), and after a 4001 (``"rejected"``: return another token).
    Returning ``None`` signs out: the client stops. ``storage`` is a SQLite
    file path, or ``":memory:"`` for a replica that dies with the process.
    """

    def __init__(
        self,
        url: str,
        get_token: TokenProvider | None = None,
        storage: str | os.PathLike[str] = ":memory:",
        *,
        token_in: str = "message",
        backoff: Backoff | None = None,
        replay_batch: int = 250,
        max_rejections: int = 3,
        max_message_bytes: int | None = 64 * 1024 * 1024,
        max_queued_deliveries: int = 10_000,
    ) -> None:
        if token_in not in ("message", "query"):
            raise ValueError("token_in is 'message' or 'query'")
        self._options = Options(
            url, get_token, token_in, backoff or Backoff(), replay_batch, max_rejections, max_message_bytes
        )
        self._storage = SqliteStorage(storage)
        self._events = Emitter()
        self._replica: Replica | None = None
        self._connection: Connection | None = None
        self._collections: dict[str, Collection] = {}
        self._subscriptions: dict[str, list[Subscription]] = {}
        self._topic_options: dict[str, dict[str, Any]] = {}
        self._max_queued = max_queued_deliveries
        self._state = "idle"
        self._events.on(Synced, self._on_synced)
        self._events.on(Disconnected, self._on_disconnected)

    # -- lifecycle ---------------------------------------------------------

    async def connect(self) -> None:
        """Loads the stored replica and starts connecting (reconnecting by itself from then on)."""
        if self._connection is not None:
            return
        snapshot = await self._storage.open()
        replica = Replica(snapshot.node_id, snapshot.clock)
        for name, (records, cursor) in snapshot.collections.items():
            replica.load_collection(name, records, cursor)
        replica.add_ops(snapshot.outbox)
        self._replica = replica
        self._connection = Connection(self, self._options)
        self._connection.start()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Waits until the session is authenticated."""
        await asyncio.wait_for(self._require_connection().connected.wait(), timeout)

    async def close(self) -> None:
        """Closes the connection (1000) and the storage; queued writes stay saved for next time."""
        if self._connection is not None:
            await self._connection.stop()
        for subs in self._subscriptions.values():
            for sub in subs:
                sub._end(None)
        await self._storage.close()

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def state(self) -> str:
        """``idle``, ``connecting``, ``connected``, ``disconnected`` or ``stopped``."""
        return self._state

    @property
    def replica(self) -> Replica:
        if self._replica is None:
            raise RuntimeError("call connect() first (or use `async with`)")
        return self._replica

    @property
    def node_id(self) -> str:
        """This replica's node id, the last part of its stamps (kept in storage)."""
        return self.replica.clock.node

    def outbox_size(self) -> int:
        """Writes not yet settled by the server."""
        return self.replica.outbox_len()

    def on(self, kind: type[E], handler: Callable[[E], None]) -> Callable[[], None]:
        """Calls ``handler`` with every event of class ``kind``; returns a remover."""
        return self._events.on(kind, handler)

    async def wait_for(self, kind: type[E], predicate: Callable[[E], bool] = lambda _: True, timeout: float | None = None) -> E:
        """The next event of class ``kind`` that satisfies ``predicate``."""
        future: asyncio.Future[E] = asyncio.get_running_loop().create_future()

        def handler(event: E) -> None:
            if not future.done() and predicate(event):
                future.set_result(event)

        remove = self._events.on(kind, handler)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            remove()

    def _require_connection(self) -> Connection:
        if self._connection is None:
            raise RuntimeError("call connect() first (or use `async with`)")
        return self._connection

    # -- collections -------------------------------------------------------

    def collection(self, name: str) -> Collection:
        """The collection ``name``, synced from now on (its stored records are readable at once)."""
        collection = self._collections.get(name)
        if collection is None:
            collection = self._collections[name] = Collection(self, name)
            if self._connection is not None:
                self._connection.wake()
        return collection

    async def write(self, collection: str, values: Mapping[str, Value]) -> list[str]:
        """Writes records locally (visible at once), saves them, then wakes the sender."""
        replica = self.replica
        connection = self._require_connection()
        link = connection.link
        limits = link.limits if link is not None else None
        for key, value in values.items():
            if not isinstance(key, str) or not 1 <= len(key.encode()) <= 256:
                raise InvalidValueError("a key is a string of 1 to 256 bytes")
            problem = value_problem(value, limits.max_value_depth if limits else 16)
            if problem is None and limits is not None and len(encode(value)) > limits.max_value_bytes:
                problem = f"encodes larger than the server's {limits.max_value_bytes} bytes"
            if problem is not None:
                raise InvalidValueError(f"invalid value for {key!r}: the value {problem}")
        now = int(time.time() * 1000)
        ops = [replica.write(collection, key, value, now) for key, value in values.items()]
        self._events.emit(Change(collection, list(values)))
        await self._storage.apply(StorageChange(add_ops=ops, clock=replica.clock.state()))
        connection.wake()
        return [op.op_id for op in ops]

    # -- pub/sub and presence ------------------------------------------------

    async def subscribe(self, topic: str, *, presence: bool = False, info: Value = None) -> Subscription:
        """Subscribes to ``topic``; waits for the server's answer when connected.

        ``presence=True`` makes this connection present on the topic (with
        ``info`` for the others to see); presence events arrive on the iterator.
        """
        sub = Subscription(self, topic, self._max_queued)
        extra: dict[str, Any] = {}
        if presence:
            extra["presence"] = True
            if info is not None:
                extra["info"] = info
        self._subscriptions.setdefault(topic, []).append(sub)
        self._topic_options[topic] = extra
        connection = self._require_connection()
        if connection.link is not None:
            # Sent again even when the topic is subscribed already: the server
            # answers OK again (and takes new presence info), so this one is confirmed too.
            connection.link.topics.discard(topic)
        connection.wake()
        if connection.link is not None and topic in connection.link.topics:
            waiter = asyncio.ensure_future(sub.subscribed.wait())
            ended = asyncio.ensure_future(sub._queue.get())
            done, _ = await asyncio.wait({waiter, ended}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            ended.cancel()
            if ended in done:
                item = ended.result()
                sub._queue.put_nowait(item)
                if isinstance(item, BaseException):
                    raise item
        return sub

    async def _unsubscribe(self, sub: Subscription) -> None:
        subs = self._subscriptions.get(sub.topic, [])
        if sub in subs:
            subs.remove(sub)
        if subs:
            return
        self._subscriptions.pop(sub.topic, None)
        self._topic_options.pop(sub.topic, None)
        if self._connection is None:
            return
        answer = self._connection.send_unsub(sub.topic)
        if answer is not None:
            await _ok(await answer)

    async def publish(self, topic: str, data: Value) -> None:
        """Publishes; waits for the server's ``OK`` (queued while offline), raises :class:`RequestError`."""
        problem = value_problem(data)
        if problem is not None:
            raise InvalidValueError(f"invalid data: the value {problem}")
        answer = await self._require_connection().request(
            {"type": "PUB", "topic": topic, "data": data}, queue_offline=True
        )
        await _ok(answer)

    async def presence(self, topic: str) -> list[Member]:
        """Who is present on ``topic`` now (every page of ``PRESENCE_STATE``); needs a live session."""
        members: list[Member] = []
        after: int | None = None
        while True:
            request: Message = {"type": "PRESENCE", "topic": topic}
            if after is not None:
                request["after"] = after
            answer = await self._require_connection().request(request, queue_offline=False)
            if answer.get("type") != "PRESENCE_STATE":
                await _ok(answer)
                return members
            page = answer.get("members")
            for member in page if isinstance(page, list) else []:
                members.append(Member(str(member.get("sub")), int(member.get("connId", 0)), member.get("info")))
            if not answer.get("more") or not members:
                return members
            after = members[-1].conn_id

    # -- the connection's host ---------------------------------------------

    def wanted_topics(self) -> dict[str, dict[str, Any]]:
        return dict(self._topic_options)

    def wanted_syncs(self) -> Iterable[str]:
        return list(self._collections)

    def emit(self, event: object) -> None:
        self._events.emit(event)

    def set_state(self, state: str) -> None:
        self._state = state

    def deliver(self, message: Message) -> None:
        topic = str(message.get("topic"))
        kind = message["type"]
        item: MessageEvent | PresenceJoin | PresenceLeave
        if kind == "MESSAGE":
            item = MessageEvent(topic, message.get("data"), str(message.get("from")))
        elif kind == "PRESENCE_JOIN":
            item = PresenceJoin(topic, str(message.get("sub")), int(message.get("connId", 0)), message.get("info"))
        else:
            item = PresenceLeave(topic, str(message.get("sub")), int(message.get("connId", 0)))
        for sub in self._subscriptions.get(topic, []):
            sub._deliver(item)

    def sub_answered(self, topic: str, error: tuple[str, str] | None) -> None:
        subs = self._subscriptions.get(topic, [])
        if error is None:
            for sub in subs:
                sub.subscribed.set()
            return
        self._subscriptions.pop(topic, None)
        self._topic_options.pop(topic, None)
        for sub in subs:
            sub._end(SubscriptionError(topic, *error))

    def sync_refused(self, collection: str, code: str, message: str) -> None:
        self._collections.pop(collection, None)
        self._events.emit(ClientError(f"sync of {collection} refused: {code}: {message}"))

    async def merged(self, collection: str, records: list[Record], cursor: str, reset: bool) -> None:
        """Server records into the replica and storage (the merged winners, never raw input)."""
        replica = self.replica
        change = StorageChange()
        if reset:
            replica.reset(collection)
            change.clear.append(collection)
        changed = replica.merge(collection, records, int(time.time() * 1000))
        moved = replica.set_cursor(collection, cursor)
        put = replica.confirmed(collection) if reset else changed
        change.put = [(collection, record) for record in put]
        if moved or reset:
            change.cursors.append((collection, replica.cursor(collection)))
        change.clock = replica.clock.state()
        await self._save(change)
        if changed or reset:
            self._events.emit(Change(collection, [record.key for record in changed]))

    async def settled(self, settled: list[Settled], retrying: list[tuple[str, str]]) -> None:
        """Settled ops out of storage; accepted ones stored as the merged winner of their key."""
        replica = self.replica
        put = []
        for s in settled:
            if s.ok:
                record = replica.confirmed_record(s.op.collection, s.op.key)
                if record is not None:
                    put.append((s.op.collection, record))
        await self._save(StorageChange(remove_ops=[s.op.op_id for s in settled], put=put))
        for s in settled:
            self._events.emit(OpSettled(s.op.op_id, s.ok, s.op.collection, s.op.key, s.code, s.message))
        for op_id, code in retrying:
            self._events.emit(OpRetrying(op_id, code))
        touched: dict[str, list[str]] = {}
        for s in settled:
            touched.setdefault(s.op.collection, []).append(s.op.key)
        for collection, keys in touched.items():
            self._events.emit(Change(collection, keys))

    async def _save(self, change: StorageChange) -> None:
        try:
            await self._storage.apply(change)
        except Exception as e:
            self._events.emit(ClientError(f"the replica could not be saved: {e!r}"))

    def _on_synced(self, event: Synced) -> None:
        collection = self._collections.get(event.collection)
        if collection is not None:
            collection._on_synced(event)

    def _on_disconnected(self, event: Disconnected) -> None:
        for collection in self._collections.values():
            collection._on_disconnected()


async def _ok(answer: Message) -> None:
    if answer.get("type") == "ERROR":
        raise RequestError(str(answer.get("code")), str(answer.get("message")))
