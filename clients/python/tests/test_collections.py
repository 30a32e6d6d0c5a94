"""Collections through the real server: sync, offline writes and replay, rollback, restart and delta."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import msgpack

from syncgate import Change, Client, ClientError, Disconnected, OpSettled, Synced
from syncgate.api import Api

from .conftest import FAST, SECRET, StartServer, eventually, mint, token_provider


async def test_two_clients_see_each_others_writes_and_deletes(start_server: StartServer) -> None:
    server = await start_server("--jwt-secret", SECRET)
    async with Client(server.url, token_provider("alice"), backoff=FAST) as a, Client(
        server.url, token_provider("bob"), backoff=FAST
    ) as b:
        todos_a, todos_b = a.collection("todos"), b.collection("todos")
        await todos_a.wait_synced(10)
        await todos_b.wait_synced(10)
        assert todos_a.synced
        changes = todos_b.changes()
        await todos_a.set("t1", {"title": "buy milk", "done": False})
        assert todos_a.get("t1") == {"title": "buy milk", "done": False}  # visible at once
        change = await asyncio.wait_for(changes.__anext__(), 10)
        assert change.keys == ["t1"]
        assert todos_b.get("t1") == {"title": "buy milk", "done": False}
        await todos_b.delete("t1")
        await eventually(lambda: todos_a.get("t1") is None, what="the delete to arrive")
        assert todos_a.items() == [] and todos_b.items() == []
        await changes.aclose()


async def test_offline_writes_are_saved_replayed_once_after_restarts_and_resumed_by_delta(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = await start_server("--jwt-secret", SECRET, store="disk")
    storage = tmp_path / "replica.db"
    async with Api(server.http, mint("svc", roles=["service"])) as api:
        results = await api.write_ops("notes", [{"key": f"seed{i}", "value": i} for i in range(5)])
        assert all(r.ok for r in results)

    settled: list[OpSettled] = []
    first = Client(server.url, token_provider("alice"), storage, backoff=FAST)
    first.on(OpSettled, settled.append)
    await first.connect()
    notes = first.collection("notes")
    await notes.wait_synced(10)
    assert len(notes.items()) == 5

    await server.stop()
    await first.wait_for(Disconnected, timeout=10)
    op_id = await notes.set("n1", {"text": "written offline"})
    assert notes.get("n1") == {"text": "written offline"}
    # Saved before `set` returned: the op is in the file now.
    with sqlite3.connect(storage) as db:
        assert db.execute("SELECT op_id FROM outbox").fetchall() == [(op_id,)]
    await first.close()

    await server.start()  # same port, same data
    second = Client(server.url, token_provider("alice"), storage, backoff=FAST)
    second.on(OpSettled, settled.append)
    await second.connect()
    notes = second.collection("notes")
    assert notes.get("n1") == {"text": "written offline"}  # the replica survived, offline
    assert second.outbox_size() == 1
    await second.wait_for(OpSettled, lambda e: e.op_id == op_id, timeout=10)
    assert second.outbox_size() == 0
    await notes.wait_synced(10)
    await second.close()

    third = Client(server.url, token_provider("alice"), storage, backoff=FAST)
    third.on(OpSettled, settled.append)
    synced = asyncio.ensure_future(third.wait_for(Synced, timeout=10))
    await third.connect()
    assert third.outbox_size() == 0
    notes = third.collection("notes")
    assert (await synced).records == 0  # resumed from its cursor: nothing new, nothing resent
    assert notes.get("n1") == {"text": "written offline"} and len(notes.items()) == 6
    await third.close()
    assert [(s.op_id, s.ok) for s in settled] == [(op_id, True)]  # replayed exactly once

    async with Api(server.http, mint("svc", roles=["service"])) as api:
        page = await api.read_all("notes")
        assert {r.key: r.value for r in page.records}["n1"] == {"text": "written offline"}


async def test_a_refused_write_is_rolled_back_with_an_event(start_server: StartServer, tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[rules]]\nroles = ["user"]\nresource = "**"\nactions = ["read"]\n\n'
        '[[rules]]\nroles = ["service"]\nresource = "**"\nactions = ["read", "write"]\n'
    )
    server = await start_server("--jwt-secret", SECRET, "--rules", str(rules))
    async with Api(server.http, mint("svc", roles=["service"])) as api:
        assert (await api.write_ops("readonly", [{"key": "k", "value": "from the server"}]))[0].ok
    storage = tmp_path / "replica.db"
    async with Client(server.url, token_provider("alice"), storage, backoff=FAST) as client:
        readonly = client.collection("readonly")
        await readonly.wait_synced(10)
        assert readonly.get("k") == "from the server"
        changes: list[Change] = []
        client.on(Change, changes.append)
        settled = asyncio.ensure_future(client.wait_for(OpSettled, timeout=10))
        op_id = await readonly.set("k", "mine")
        assert readonly.get("k") == "mine"
        refusal = await settled
        assert (refusal.op_id, refusal.ok, refusal.code, refusal.key) == (op_id, False, "forbidden", "k")
        assert readonly.get("k") == "from the server"
        assert changes[-1] == Change("readonly", ["k"])
        assert client.outbox_size() == 0
    with sqlite3.connect(storage) as db:
        assert db.execute("SELECT count(*) FROM outbox").fetchone() == (0,)
        (value,) = db.execute("SELECT value FROM records WHERE key = 'k'").fetchone()
        assert msgpack.unpackb(value) == "from the server"  # the server's record, not the refused op


async def test_a_reconnect_is_paced_within_the_announced_rate(start_server: StartServer) -> None:
    """30 subscriptions and 60 single-op batches after the AUTH_ACK, against a server allowing 40 messages/s."""
    server = await start_server("--jwt-secret", SECRET, "--messages-per-second", "40", "--message-burst", "10")
    errors: list[str] = []
    closes: list[int | None] = []
    client = Client(server.url, token_provider("alice"), backoff=FAST, replay_batch=1)
    client.on(ClientError, lambda e: errors.append(e.message))
    client.on(Disconnected, lambda e: closes.append(e.code))
    await client.connect()
    for i in range(30):
        await client.subscribe(f"rooms/{i}")
    paced = client.collection("paced")
    for i in range(60):
        await paced.set(f"k{i}", i)
    await client.wait_connected(10)
    await eventually(lambda: client.outbox_size() == 0, timeout=20, what="the outbox to drain")
    await client.close()
    assert closes == [] and not [e for e in errors if "rate_limited" in e], (closes, errors)
