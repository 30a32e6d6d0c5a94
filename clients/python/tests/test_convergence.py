"""Two Python clients and the TypeScript client write the same keys offline and converge to the server's value."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from syncgate import Client, Disconnected
from syncgate.api import Api

from .conftest import FAST, REPO, SECRET, StartServer, eventually, mint, token_provider

TS_DIR = REPO / "clients" / "ts"
PEER = Path(__file__).parent / "peers" / "ts_peer.mjs"


@pytest.fixture(scope="session")
def ts_client_build() -> Path:
    """The TypeScript client compiled to clients/ts/build (what its own tests build), built here if missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("node and npm are needed for the cross-client test (the TypeScript client runs in Node)")
    if not (TS_DIR / "node_modules").exists():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=TS_DIR, check=True)
    if not (TS_DIR / "build" / "src" / "index.js").exists():
        subprocess.run([npm, "exec", "--", "tsc", "-p", "tsconfig.test.json"], cwd=TS_DIR, check=True)
    return TS_DIR


class TsPeer:
    """The TypeScript client in a Node process, driven line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []
        self._answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    @staticmethod
    async def start(ts_dir: Path, url: str, token: str) -> TsPeer:
        process = await asyncio.create_subprocess_exec(
            "node", str(PEER), str(ts_dir), url, token, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        return TsPeer(process)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            message = json.loads(line)
            if "answer" in message:
                await self._answers.put(message["answer"])
            else:
                self.events.append(message)

    async def call(self, **command: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(command) + "\n").encode())
        await self.process.stdin.drain()
        answer = await asyncio.wait_for(self._answers.get(), 10)
        assert answer["ok"], answer
        return answer

    def saw(self, event: str) -> int:
        return sum(1 for e in self.events if e["event"] == event)

    async def close(self) -> None:
        if self.process.returncode is None:
            try:
                await self.call(cmd="close")
            finally:
                await asyncio.wait_for(self.process.wait(), 10)
        self._reader.cancel()


async def test_python_and_typescript_clients_converge_on_the_server_value(
    start_server: StartServer, ts_client_build: Path, tmp_path: Path
) -> None:
    server = await start_server("--jwt-secret", SECRET, store="disk")
    keys = ["k0", "k1", "k2"]
    one = Client(server.url, token_provider("alice"), tmp_path / "one.db", backoff=FAST)
    two = Client(server.url, token_provider("alice"), tmp_path / "two.db", backoff=FAST)
    ts = await TsPeer.start(ts_client_build, server.url, mint("alice"))
    try:
        for client in (one, two):
            await client.connect()
            await client.collection("team/doc").wait_synced(10)
        await ts.call(cmd="sync", collection="team/doc")
        await eventually(lambda: ts.saw("synced") >= 1, what="the TypeScript client to sync")

        await server.stop()
        await one.wait_for(Disconnected, timeout=10)
        await eventually(lambda: ts.saw("disconnected") >= 1 and two.state != "connected", what="everyone offline")
        # The same keys, written offline by all three, in different orders.
        for i, key in enumerate(keys):
            await one.collection("team/doc").set(key, {"by": "python one", "n": i})
            await ts.call(cmd="set", collection="team/doc", key=keys[-1 - i], value={"by": "typescript", "n": i})
            await two.collection("team/doc").set(keys[(i + 1) % 3], {"by": "python two", "n": i})
        await server.start()  # same port, same data

        async def pending() -> int:
            return int((await ts.call(cmd="state"))["pending"])

        for _ in range(500):
            if one.outbox_size() == 0 and two.outbox_size() == 0 and await pending() == 0:
                break
            await asyncio.sleep(0.02)
        assert one.outbox_size() == 0 and two.outbox_size() == 0 and await pending() == 0

        async with Api(server.http, mint("svc", roles=["service"])) as api:
            stored = {r.key: r.value for r in (await api.read_all("team/doc")).records}
        assert sorted(stored) == keys

        async def views() -> list[dict[str, Any]]:
            ts_view = {key: (await ts.call(cmd="get", collection="team/doc", key=key))["value"] for key in keys}
            return [{key: c.collection("team/doc").get(key) for key in keys} for c in (one, two)] + [ts_view]

        for _ in range(500):
            if all(view == stored for view in await views()):
                break
            await asyncio.sleep(0.02)
        assert await views() == [stored, stored, stored]
        # Each key's winner is one of the three offline writes: nobody's write was dropped unseen.
        assert {value["by"] for value in stored.values()} <= {"python one", "python two", "typescript"}
    finally:
        await ts.close()
        await one.close()
        await two.close()
