"""The backend helper (syncgate.api) against the real server: publish, ops, pages, and the change feed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import AsyncIterator

import pytest

from syncgate import Client, Message
from syncgate.api import Api, ApiError, FeedEnded, FeedEvent

from .conftest import FAST, SECRET, StartServer, eventually, mint, token_provider


class Proxy:
    """A TCP proxy the test can cut: ``down()`` drops every connection and refuses new ones."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.connections = 0
        self.is_down = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_down:
            writer.close()
            return
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def down(self) -> None:
        self.is_down = True
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        self.down()
        if self._server is not None:
            self._server.close()


async def collect(feed: AsyncIterator[FeedEvent], into: list[FeedEvent]) -> None:
    async for event in feed:
        into.append(event)


async def test_publish_reaches_a_client_subscriber(start_server: StartServer) -> None:
    server = await start_server("--jwt-secret", SECRET)
    async with Client(server.url, token_provider("alice"), backoff=FAST) as client, Api(
        server.http, mint("backend", roles=["service"])
    ) as api:
        await client.wait_connected(10)
        sub = await client.subscribe("rooms/lobby")
        assert await api.publish("rooms/lobby", {"text": "deploy finished"}) == 1
        assert await sub.get(10) == Message("rooms/lobby", {"text": "deploy finished"}, "backend")


async def test_ops_pages_and_errors(start_server: StartServer) -> None:
    server = await start_server("--jwt-secret", SECRET)
    async with Api(server.http, mint("backend", roles=["service"])) as api:
        results = await api.write_ops(
            "todos", [{"opId": "a", "key": "t1", "value": {"title": "ship it"}}, {"opId": "b", "key": "", "value": 1}]
        )
        assert [(r.op_id, r.ok, r.code) for r in results] == [("a", True, None), ("b", False, "invalid")]
        page = await api.read_page("todos")
        assert [(r.key, r.value) for r in page.records] == [("t1", {"title": "ship it"})]
        assert not page.more and not page.reset
        assert (await api.read_page("todos", since=page.cursor)).records == []
        with pytest.raises(ApiError) as error:
            await api.read_page("todos", since="not a cursor")
        assert (error.value.status, error.value.code) == (400, "invalid")
    async with Api(server.http, "not-a-token") as api:
        with pytest.raises(ApiError) as error:
            await api.read_page("todos")
        assert error.value.status == 401


async def test_the_change_feed_resumes_exactly_after_a_cut_connection(start_server: StartServer) -> None:
    server = await start_server("--jwt-secret", SECRET)
    proxy = Proxy(server.port)
    port = await proxy.start()
    writer = Api(server.http, mint("backend", roles=["service"]))
    reader = Api(f"http://127.0.0.1:{port}", mint("reader", roles=["service"]), backoff=FAST)
    events: list[FeedEvent] = []
    task = asyncio.create_task(collect(reader.changes("feed"), events))

    def keys() -> list[str]:
        return [r.key for e in events for r in e.records]

    try:
        await eventually(lambda: proxy.connections == 1, what="the feed to connect")
        for i in range(3):
            await writer.write_ops("feed", [{"key": f"k{i}", "value": i}])
        await eventually(lambda: len(keys()) == 3, what="the first changes")
        proxy.down()  # cut: the feed's connection is gone, and so is any new one
        for i in range(3, 6):
            await writer.write_ops("feed", [{"key": f"k{i}", "value": i}])
        await asyncio.sleep(0.3)
        proxy.is_down = False
        await eventually(lambda: len(keys()) >= 6, what="the changes written during the cut")
        await asyncio.sleep(0.3)  # anything repeated would arrive now
        assert keys() == [f"k{i}" for i in range(6)]  # nothing lost, nothing repeated, in order
        assert proxy.connections >= 2  # it did reconnect
        assert all(e.kind == "change" for e in events)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await proxy.close()
        await writer.aclose()
        await reader.aclose()


async def test_the_change_feed_surfaces_reset(start_server: StartServer) -> None:
    server = await start_server("--jwt-secret", SECRET)
    async with Api(server.http, mint("backend", roles=["service"])) as api:
        await api.write_ops("feed", [{"key": "a", "value": 1}, {"key": "b", "value": 2}])
        feed = api.changes("feed", since="0123456789abcdef:5")  # a cursor of another store epoch
        first = await asyncio.wait_for(feed.__anext__(), 10)
        second = await asyncio.wait_for(feed.__anext__(), 10)
        await feed.aclose()
        assert first.kind == "reset"
        assert second.kind == "change" and sorted(r.key for r in second.records) == ["a", "b"]


async def test_the_change_feed_outlives_its_token_when_it_can_ask_for_another(start_server: StartServer) -> None:
    server = await start_server("--jwt-secret", SECRET, "--jwt-leeway", "0")
    minted: list[float] = []

    async def token() -> str:
        minted.append(time.time())
        return mint("reader", ttl=2, roles=["service"])

    writer = Api(server.http, mint("backend", roles=["service"]))
    reader = Api(server.http, token, backoff=FAST)
    events: list[FeedEvent] = []
    task = asyncio.create_task(collect(reader.changes("feed"), events))
    try:
        await writer.write_ops("feed", [{"key": "before", "value": 1}])
        await eventually(lambda: len(events) == 1, what="the first change")
        await eventually(lambda: len(minted) >= 2, timeout=10, what="the feed to ask for a new token")
        await writer.write_ops("feed", [{"key": "after", "value": 2}])
        await eventually(lambda: len(events) == 2, what="the change after the new token")
        assert [r.key for e in events for r in e.records] == ["before", "after"]
        assert not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await writer.aclose()
        await reader.aclose()


async def test_the_change_feed_ends_with_a_fixed_expired_token(start_server: StartServer) -> None:
    server = await start_server("--jwt-secret", SECRET, "--jwt-leeway", "0")
    async with Api(server.http, mint("reader", ttl=1, roles=["service"])) as api:
        with pytest.raises(FeedEnded) as ended:
            async for _ in api.changes("feed"):
                pass
        assert ended.value.code == "token_expired"
