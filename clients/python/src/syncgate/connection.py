"""The connection: open, authenticate, refresh in band, resume subscriptions
and syncs, replay the outbox, and reconnect by the close-code table.

The client (``client.py``) owns the replica and its storage; this class only
speaks the protocol and reports through :class:`Host`. Messages of one
socket are handled one after another, in order, even when handling awaits
storage, so a ``CHANGE`` never overtakes the ``SYNC_DATA`` before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.parse
from dataclasses import dataclass

import websockets
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from .batches import next_batch
from .codec import Message, decode_server_message
from .codes import CloseAction, close_action, is_temporary_error
from .events import Connected, Connecting, Disconnected, Refreshed, Stopped, Synced, UnreadableData
from .events import ClientError as ClientErrorEvent
from .host import ConnectionLostError, Host, NotConnectedError, Options
from .link import Limits, Link, ReplayRequest, SubRequest, SyncRequest
from .replica import Record

@dataclass
class _End:
    code: int | None
    reason: str
    connected: bool
    no_token: bool = False


class _NoToken(Exception):
    pass


class Connection:
    """Runs until stopped: one socket at a time, reconnecting by the close-code table."""

    def __init__(self, host: Host, options: Options) -> None:
        self._host = host
        self._options = options
        self._link: Link | None = None
        self._stopped = False
        self._task: asyncio.Task[None] | None = None
        self._wake_sleep = asyncio.Event()
        self._retry: asyncio.TimerHandle | None = None
        self._refresh: asyncio.Task[None] | None = None
        self._refresh_at = 0.0
        self._refreshed_at = -1.0e9
        self._retry_failures = 0
        self._queued: list[tuple[Message, asyncio.Future[Message]]] = []
        self.connected = asyncio.Event()
        self._halted = False
        self._background: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Closes the socket (1000) and ends the task."""
        self._stopped = True
        self._clear_timers()
        self._wake_sleep.set()
        link = self._link
        if link is not None:
            with contextlib.suppress(Exception):
                await link.ws.close(1000, "closed by the app")
        if self._task is not None:
            # A connection attempt in progress (a slow handshake) is not waited for.
            done, _ = await asyncio.wait({self._task}, timeout=2)
            if not done:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._halt(1000, "closed by the app")

    @property
    def link(self) -> Link | None:
        return self._link if self._link is not None and self._link.connected else None

    def wake(self) -> None:
        """New local writes, subscriptions or syncs: bring the connection in line."""
        link = self.link
        if link is not None:
            self._resume(link)

    async def request(self, message: Message, *, queue_offline: bool) -> Message:
        """Sends a request and returns its answer (``OK``, ``ERROR``, ``PRESENCE_STATE``...).

        Offline, ``queue_offline`` requests (publications) wait for the next
        session, at most ``max_queued`` of them; others raise :class:`NotConnectedError`.
        """
        link = self.link
        if link is not None:
            return await link.request(message)
        if self._stopped:
            raise NotConnectedError("the client is stopped")
        if not queue_offline:
            raise NotConnectedError("not connected")
        if len(self._queued) >= self._options.max_queued:
            raise NotConnectedError("too many requests queued while offline")
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._queued.append((message, future))
        return await future

    def send_unsub(self, topic: str) -> asyncio.Future[Message] | None:
        """Sends ``UNSUB`` on the live link (``None`` offline: the next session simply won't subscribe)."""
        link = self.link
        if link is None:
            link = self._link
            if link is not None:
                link.topics.discard(topic)
            return None
        link.topics.discard(topic)
        for id_, internal in list(link.internal.items()):
            if isinstance(internal, SubRequest) and internal.topic == topic:
                del link.internal[id_]
        return link.request({"type": "UNSUB", "topic": topic})

    async def _run(self) -> None:
        attempt = 0
        reason = "connect"
        rate_limited = 0
        rejections = 0
        while not self._stopped:
            self._host.set_state("connecting")
            self._host.emit(Connecting(attempt))
            end = await self._connect_once(reason)
            self._clear_timers()
            self.connected.clear()
            if self._stopped:
                return
            if end.no_token:
                self._halt(None, end.reason)
                return
            self._host.set_state("disconnected")
            self._host.emit(Disconnected(end.code, end.reason))
            if end.connected:
                attempt = 0
                rejections = 0
            if end.code != 4029:
                rate_limited = 0
            action = close_action(end.code)
            if action is CloseAction.STOP:
                self._halt(end.code, end.reason)
                return
            if action is CloseAction.NEW_TOKEN:
                rejections += 1
                if rejections >= self._options.max_rejections:
                    self._halt(end.code, f"{rejections} tokens in a row were refused: {end.reason}")
                    return
                reason = "rejected"
            elif action is CloseAction.REFRESH_TOKEN:
                reason = "refresh"
            elif action is CloseAction.BACK_OFF:
                # Rate limited: start well up the curve, and higher after each 4029 in a row.
                attempt = max(attempt, 4 + rate_limited)
                rate_limited += 1
                reason = "connect"
            else:
                reason = "connect"
            await self._sleep(self._options.backoff.delay(attempt))
            attempt += 1

    def _halt(self, code: int | None, reason: str) -> None:
        if self._halted:
            return
        self._halted = True
        self._stopped = True
        self._host.set_state("stopped")
        self._host.emit(Stopped(code, reason))
        for _, future in self._queued:
            if not future.done():
                future.set_exception(NotConnectedError(f"the client stopped: {reason}"))
        self._queued.clear()

    async def _sleep(self, seconds: float) -> None:
        self._wake_sleep.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake_sleep.wait(), seconds)

    async def _token(self, reason: str) -> str | None:
        if self._options.get_token is None:
            raise _NoToken("the server requires a token and no get_token is set")
        return await self._options.get_token(reason)

    async def _connect_once(self, reason: str) -> _End:
        url = self._options.url
        if self._options.token_in == "query" and self._options.get_token is not None:
            try:
                token = await self._token(reason)
            except Exception as e:
                self._host.emit(ClientErrorEvent(f"get_token failed: {e!r}"))
                return _End(None, f"get_token failed: {e!r}", False)
            if token is None:
                return _End(None, "get_token returned no token (signed out)", False, no_token=True)
            url += ("&" if "?" in url else "?") + "token=" + urllib.parse.quote(token, safe="")
        try:
            ws = await connect(
                url, max_size=self._options.max_message_bytes, compression=None, open_timeout=10, close_timeout=3
            )
        except (OSError, asyncio.TimeoutError, websockets.exceptions.InvalidHandshake) as e:
            return _End(None, f"cannot connect: {e}", False)
        link = Link(ws)
        self._link = link
        why = reason
        no_token = ""
        try:
            async for raw in ws:
                if isinstance(raw, str):
                    continue
                decoded = decode_server_message(raw)
                for unreadable in decoded.unreadable:
                    self._host.emit(UnreadableData(unreadable))
                if decoded.message is None:
                    continue
                try:
                    why = await self._handle(link, decoded.message, why) or why
                except _NoToken as e:
                    no_token = str(e)
                    await ws.close(1000, "signed out")
                except Exception as e:
                    self._host.emit(ClientErrorEvent(f"handling {decoded.message['type']}: {e!r}"))
        except ConnectionClosed:
            pass
        finally:
            if self._link is link:
                self._link = None
            self.connected.clear()
            await link.finish(ConnectionLostError("disconnected before the answer"))
        code = ws.close_code if ws.close_code not in (None, 1005, 1006) else None
        text = ": ".join(part for part in (ws.close_reason or "", link.auth_fail) if part) or "connection closed"
        if no_token:
            return _End(code, no_token, link.connected, no_token=True)
        return _End(code, text, link.connected)

    async def _handle(self, link: Link, message: Message, why: str) -> str | None:
        """Handles one message; returns the token reason for the next ``AUTH`` when it changes."""
        kind = message["type"]
        if kind == "AUTH_REQUIRED":
            try:
                token = await self._token(why)
            except _NoToken:
                raise
            except Exception as e:
                self._host.emit(ClientErrorEvent(f"get_token failed: {e!r}"))
                await link.ws.close(1000, "no token")
                return None
            if token is None:
                raise _NoToken("get_token returned no token (signed out)")
            link.send({"type": "AUTH", "token": token})
            return None
        if kind == "AUTH_ACK":
            return self._authenticated(link, message)
        if kind == "AUTH_FAIL":
            link.auth_fail = f"{message.get('code')}: {message.get('message')}"
            return None
        if kind == "TOKEN_EXPIRING":
            # Refreshed by the timer, not at once: a provider whose tokens live
            # shorter than the server's notice would otherwise refresh in a loop.
            expires_at = message.get("expiresAt")
            self._schedule_refresh(link, expires_at if isinstance(expires_at, int) else int(time.time()), notice=True)
            return None
        if kind in ("MESSAGE", "PRESENCE_JOIN", "PRESENCE_LEAVE"):
            self._host.deliver(message)
            return None
        if kind == "CHANGE":
            await self._change(link, message)
            return None
        await self._answer(link, message)
        return None

    def _authenticated(self, link: Link, message: Message) -> str:
        limits = message.get("limits")
        link.limits = Limits.from_wire(limits)
        if isinstance(limits, dict):
            link.pacer.set_limits(limits.get("messagesPerSecond"), limits.get("messageBurst"))
        expires_at = message.get("expiresAt")
        expires_at = expires_at if isinstance(expires_at, int) else None
        self._schedule_refresh(link, expires_at)
        if link.connected:
            self._host.emit(Refreshed(expires_at))
            return "refresh"
        link.connected = True
        self._retry_failures = 0
        self._host.set_state("connected")
        roles = message.get("roles")
        self._host.emit(
            Connected(str(message.get("sub")), [r for r in roles if isinstance(r, str)] if isinstance(roles, list) else [], expires_at)
        )
        queued, self._queued = self._queued, []
        for request, future in queued:
            answer = link.request(request)
            answer.add_done_callback(lambda done, f=future: _forward(done, f))  # type: ignore[misc]
        self._resume(link)
        self.connected.set()
        return "refresh"

    async def _change(self, link: Link, message: Message) -> None:
        collection = message["collection"]
        paging = link.paging.get(collection)
        records = _records(message)
        if paging is not None:
            paging = (paging[0] + len(records), paging[1])
            link.paging[collection] = paging
        await self._host.merged(collection, records, str(message.get("cursor")), False)
        if paging is not None and not message.get("more"):
            del link.paging[collection]
            self._host.emit(Synced(collection, paging[0], paging[1]))

    async def _answer(self, link: Link, message: Message) -> None:
        id_ = message.get("id")
        if not isinstance(id_, int):
            if message["type"] == "ERROR":
                self._host.emit(ClientErrorEvent(f"{message.get('code')}: {message.get('message')}"))
            return
        internal = link.internal.get(id_)
        if internal is None:
            future = link.requests.pop(id_, None)
            if future is not None and not future.done():
                future.set_result(message)
            return
        code, text = str(message.get("code")), str(message.get("message"))
        if isinstance(internal, ReplayRequest):
            del link.internal[id_]
            link.replaying = False
            if message["type"] == "OP_RESULT":
                results = message.get("results")
                report = self._host.replica.settle(results if isinstance(results, list) else [], _now_ms())
                await self._host.settled(report.settled, report.retrying)
                if report.retrying:
                    self._retry_later(link)
                else:
                    self._retry_failures = 0
                    self._replay(link)
            elif message["type"] == "ERROR":
                self._host.emit(ClientErrorEvent(f"replay refused ({code}): {text}; retrying"))
                self._retry_later(link)
            return
        if isinstance(internal, SyncRequest) and message["type"] == "SYNC_DATA":
            reset = message.get("reset") is True
            # A SYNC without a cursor is answered with the whole state: what the
            # replica confirmed earlier but the server no longer has must go, as after a reset.
            await self._host.merged(internal.collection, _records(message), str(message.get("cursor")), reset or internal.full)
            if message.get("more"):
                link.paging[internal.collection] = (len(_records(message)), reset)
            else:
                self._host.emit(Synced(internal.collection, len(_records(message)), reset))
            return
        if isinstance(internal, SubRequest) and message["type"] == "OK":
            self._host.sub_answered(internal.topic, None)
            return
        if message["type"] == "ERROR":
            del link.internal[id_]
            if isinstance(internal, SubRequest):
                link.topics.discard(internal.topic)
            elif isinstance(internal, SyncRequest):
                link.syncs.discard(internal.collection)
            if is_temporary_error(code):
                self._retry_later(link)
            elif isinstance(internal, SyncRequest):
                self._host.sync_refused(internal.collection, code, text)
            elif isinstance(internal, SubRequest):
                self._host.sub_answered(internal.topic, (code, text))

    def _resume(self, link: Link) -> None:
        """Subscribes, syncs and replays what this link does not have yet."""
        for topic, extra in self._host.wanted_topics().items():
            if topic in link.topics:
                continue
            link.topics.add(topic)
            id_ = link.allocate()
            link.internal[id_] = SubRequest(topic)
            link.send({"type": "SUB", "id": id_, "topic": topic, **extra})
        for collection in self._host.wanted_syncs():
            if collection in link.syncs:
                continue
            link.syncs.add(collection)
            id_ = link.allocate()
            since = self._host.replica.cursor(collection)
            link.internal[id_] = SyncRequest(collection, since is None)
            request: Message = {"type": "SYNC", "id": id_, "collection": collection}
            if since is not None:
                request["since"] = since
            link.send(request)
        self._replay(link)

    def _replay(self, link: Link) -> None:
        """Sends the next batch of the outbox (one in flight at a time)."""
        if link.replaying or self._retry is not None or not link.connected:
            return
        ops, refused = next_batch(self._host.replica, link.limits, self._options.replay_batch)
        if refused:
            # Kept referenced until done: the event loop holds tasks only weakly.
            task = asyncio.create_task(self._host.settled(refused, []))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        if not ops:
            return
        id_ = link.allocate()
        link.replaying = True
        link.internal[id_] = ReplayRequest()
        link.send({"type": "OP_BATCH", "id": id_, "ops": ops})

    def _retry_later(self, link: Link) -> None:
        """Holds replay (and renewal of refused subscriptions) back for a backoff delay."""
        if self._retry is not None:
            return
        delay = self._options.backoff.delay(self._retry_failures)
        self._retry_failures += 1

        def fire() -> None:
            self._retry = None
            if self._link is link and link.connected:
                self._resume(link)

        self._retry = asyncio.get_running_loop().call_later(delay, fire)

    def _schedule_refresh(self, link: Link, expires_at: int | None, notice: bool = False) -> None:
        """Refreshes 30 s before expiry, or halfway through a shorter life.

        On ``TOKEN_EXPIRING`` (``notice``) an earlier planned refresh is kept.
        """
        if expires_at is None:
            return
        left = expires_at - time.time()
        wait = left - 30 if left > 60 else max(0.0, left / 2)
        loop = asyncio.get_running_loop()
        # At most one refresh a second: a provider that hands out the same
        # (or as short-lived) token again must not be asked ever faster near expiry.
        wait = max(wait, self._refreshed_at + 1.0 - loop.time())
        if notice and self._refresh is not None and not self._refresh.done() and self._refresh_at <= loop.time() + wait:
            return
        if self._refresh is not None:
            self._refresh.cancel()
            self._refresh = None
        self._refresh_at = loop.time() + wait

        async def later() -> None:
            await asyncio.sleep(wait)
            await self._refresh_now(link)

        self._refresh = asyncio.create_task(later())

    async def _refresh_now(self, link: Link) -> None:
        self._refreshed_at = asyncio.get_running_loop().time()
        try:
            token = await self._token("refresh")
        except Exception as e:
            self._host.emit(ClientErrorEvent(f"get_token failed: {e!r}"))
            return
        if token is not None and self._link is link:
            link.send({"type": "AUTH", "token": token})

    def _clear_timers(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._refresh is not None and self._refresh is not asyncio.current_task():
            self._refresh.cancel()
        self._refresh = None


def _records(message: Message) -> list[Record]:
    records = message.get("records")
    return [Record(r["key"], r.get("value"), r["hlc"]) for r in records] if isinstance(records, list) else []


def _forward(done: asyncio.Future[Message], target: asyncio.Future[Message]) -> None:
    if target.done():
        return
    if done.exception() is not None:
        target.set_exception(done.exception())  # type: ignore[arg-type]
    else:
        target.set_result(done.result())


def _now_ms() -> int:
    return int(time.time() * 1000)
