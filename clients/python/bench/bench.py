"""Benchmarks of the Python client (figures in the README; not a timed test).

    SYNCGATE_BIN=target/release/syncgate clients/python/.venv/bin/python clients/python/bench/bench.py

1. Ops/s for one client writing batches of 10 against ``--store memory``:
   closed loop (write 10, wait for their verdicts, repeat) and streaming
   (keep writing; the outbox goes out in ``OP_BATCH``es of 10).
2. Replay time for 10,000 writes queued offline: from ``connect()`` of a
   restarted client to an empty outbox.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from syncgate import Backoff, Client, OpSettled

BIN = os.environ.get("SYNCGATE_BIN") or str(Path(__file__).resolve().parents[3] / "target" / "debug" / "syncgate")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def serve(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [BIN, "serve", "--listen", f"127.0.0.1:{port}", "--store", "memory", "--anonymous-roles", "user", "--log", "warn"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return process
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError("the server did not start")


async def closed_loop(url: str, storage: str, seconds: float) -> float:
    async with Client(url, storage=storage, replay_batch=10) as client:
        await client.wait_connected(10)
        bench = client.collection("bench")
        done, n, start = asyncio.Event(), 0, time.perf_counter()
        waiting: set[str] = set()

        def settled(event: OpSettled) -> None:
            waiting.discard(event.op_id)
            if not waiting:
                done.set()

        client.on(OpSettled, settled)
        while time.perf_counter() - start < seconds:
            done.clear()
            waiting.update(await bench.set_many({f"k{n + i}": {"n": n + i, "text": "x" * 64} for i in range(10)}))
            await done.wait()
            n += 10
        return n / (time.perf_counter() - start)


async def streaming(url: str, storage: str, total: int) -> float:
    async with Client(url, storage=storage, replay_batch=10) as client:
        await client.wait_connected(10)
        bench = client.collection("stream")
        start = time.perf_counter()
        for n in range(0, total, 10):
            await bench.set_many({f"k{n + i}": {"n": n + i, "text": "x" * 64} for i in range(10)})
        while client.outbox_size() > 0:
            await asyncio.sleep(0.001)
        return total / (time.perf_counter() - start)


async def replay(url: str, storage: str, total: int) -> tuple[float, float]:
    offline = Client("ws://127.0.0.1:9/ws", storage=storage, backoff=Backoff(10, 10))
    await offline.connect()
    start = time.perf_counter()
    for n in range(0, total, 100):
        await offline.collection("replay").set_many({f"k{n + i}": {"n": n + i} for i in range(100)})
    queued = time.perf_counter() - start
    await offline.close()
    client = Client(url, storage=storage)
    start = time.perf_counter()
    await client.connect()
    assert client.outbox_size() == total
    while client.outbox_size() > 0:
        await asyncio.sleep(0.001)
    took = time.perf_counter() - start
    await client.close()
    return queued, took


async def main() -> None:
    port = free_port()
    server = await serve(port)
    url = f"ws://127.0.0.1:{port}/ws"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for label, storage in ((":memory:", ":memory:"), ("file", f"{tmp}/a.db")):
                print(f"closed loop, batches of 10, replica {label}: {await closed_loop(url, storage, 5):,.0f} ops/s")
            for label, storage in ((":memory:", ":memory:"), ("file", f"{tmp}/b.db")):
                print(f"streaming, OP_BATCH of 10, replica {label}: {await streaming(url, storage, 20_000):,.0f} ops/s")
            queued, took = await replay(url, f"{tmp}/c.db", 10_000)
            print(f"10,000 offline writes: queued in {queued:.2f} s, replayed in {took:.2f} s")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
