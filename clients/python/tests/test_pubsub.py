"""Pub/sub and presence through the real server."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from syncgate import Client, Connected, Message, PresenceJoin, PresenceLeave, RequestError, SubscriptionError

from .conftest import FAST, SECRET, StartServer, token_provider


async def test_publish_subscribe_and_unsubscribe(start_server: StartServer) -> None:
    server = await start_server("--jwt-secret", SECRET)
    async with Client(server.url, token_provider("alice"), backoff=FAST) as alice, Client(
        server.url, token_provider("bob"), backoff=FAST
    ) as bob:
        await alice.wait_connected(10)
        await bob.wait_connected(10)
        sub = await alice.subscribe("rooms/lobby")
        assert sub.subscribed.is_set()
        await bob.publish("rooms/lobby", {"text": "hi", "n": [1, 2.5, None]})
        assert await sub.get(10) == Message("rooms/lobby", {"text": "hi", "n": [1, 2.5, None]}, "bob")
        await sub.unsubscribe()
        with pytest.raises(StopAsyncIteration):
            await sub.get(1)
        await bob.publish("rooms/lobby", "nobody listens")


async def test_presence_joins_state_and_leave_on_unsubscribe(start_server: StartServer) -> None:
    server = await start_server("--jwt-secret", SECRET)
    async with Client(server.url, token_provider("alice"), backoff=FAST) as alice, Client(
        server.url, token_provider("bob"), backoff=FAST
    ) as bob:
        await alice.wait_connected(10)
        await bob.wait_connected(10)
        watching = await alice.subscribe("rooms/lobby", presence=True)
        joined = await watching.get(10)
        assert isinstance(joined, PresenceJoin) and joined.sub == "alice"
        bobs = await bob.subscribe("rooms/lobby", presence=True, info={"status": "typing"})
        joined = await watching.get(10)
        assert isinstance(joined, PresenceJoin) and (joined.sub, joined.info) == ("bob", {"status": "typing"})
        members = await alice.presence("rooms/lobby")
        assert sorted((m.sub, m.info) for m in members) == [("alice", None), ("bob", {"status": "typing"})]
        await bobs.unsubscribe()  # sends UNSUB: the others see bob leave
        left = await watching.get(10)
        assert isinstance(left, PresenceLeave) and left.sub == "bob" and left.conn_id == joined.conn_id
        assert [m.sub for m in await alice.presence("rooms/lobby")] == ["alice"]


async def test_refusals_raise(start_server: StartServer, tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rules]]\nroles = ["user"]\nresource = "public/**"\nactions = ["read", "write"]\n')
    server = await start_server("--jwt-secret", SECRET, "--rules", str(rules))
    async with Client(server.url, token_provider("alice"), backoff=FAST) as alice:
        await alice.wait_connected(10)
        with pytest.raises(SubscriptionError) as refused:
            await alice.subscribe("private/room")
        assert refused.value.code == "forbidden"
        with pytest.raises(RequestError) as error:
            await alice.publish("private/room", 1)
        assert error.value.code == "forbidden"
        await alice.publish("public/room", 1)
        await asyncio.sleep(0)


async def test_subscriptions_are_renewed_after_a_server_restart(start_server: StartServer) -> None:
    server = await start_server("--jwt-secret", SECRET)
    async with Client(server.url, token_provider("alice"), backoff=FAST) as alice:
        await alice.wait_connected(10)
        sub = await alice.subscribe("rooms/lobby")
        again = await alice.subscribe("rooms/lobby")  # a second one on the same topic is confirmed too
        assert again.subscribed.is_set()
        await server.restart()
        await alice.wait_for(Connected, timeout=10)
        async with Client(server.url, token_provider("bob"), backoff=FAST) as bob:
            await bob.wait_connected(10)
            for _ in range(100):  # the renewed SUB may still be on its way
                await bob.publish("rooms/lobby", "after the restart")
                with contextlib.suppress(asyncio.TimeoutError):
                    assert await sub.get(0.1) == Message("rooms/lobby", "after the restart", "bob")
                    break
            else:
                raise AssertionError("the subscription was not renewed")
            assert await again.get(5) == Message("rooms/lobby", "after the restart", "bob")
