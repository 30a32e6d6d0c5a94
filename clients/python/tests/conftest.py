"""Test helpers: the real ``syncgate`` binary on free ports, tokens, and clients."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import jwt
import pytest

import syncgate

REPO = Path(__file__).resolve().parents[3]
BIN = os.environ.get("SYNCGATE_BIN") or str(REPO / "target" / "debug" / "syncgate")
SECRET = "python-test-secret-0123456789abcdef"
VECTORS = REPO / "proto" / "vectors.json"
FAST = syncgate.Backoff(initial=0.05, maximum=0.3)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def mint(sub: str, ttl: float = 3600, roles: list[str] | None = None, secret: str = SECRET, **claims: object) -> str:
    """An HS256 token, as an identity provider would mint it."""
    payload = {"sub": sub, "exp": int(time.time() + ttl), "roles": roles if roles is not None else ["user"], **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


class Server:
    """One ``syncgate serve`` process; ``restart()`` brings it back on the same port and data."""

    def __init__(self, args: list[str], port: int, data_dir: Path) -> None:
        self.args = args
        self.port = port
        self.data_dir = data_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"server-{port}.log"

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCGATE_")}
        argv = [BIN, "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", str(self.data_dir), *self.args]
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"syncgate exited ({self.process.returncode}): {self.log()}")
            if re.search(rf"addr=127\.0\.0\.1:{self.port}\b", self.log()):
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"syncgate did not start: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_bytes().decode("utf-8", "replace")

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        process.send_signal(signal.SIGINT)  # a second signal exits at once, without the drain
        for _ in range(100):
            if process.poll() is not None:
                return
            await asyncio.sleep(0.05)
        process.kill()
        process.wait()

    async def restart(self) -> None:
        await self.stop()
        await self.start()


StartServer = Callable[..., Awaitable[Server]]


@pytest.fixture
async def start_server(tmp_path: Path) -> AsyncIterator[StartServer]:
    """Starts servers (``--store memory`` unless ``store`` says otherwise); all stop at the end."""
    servers: list[Server] = []

    async def start(*args: str, store: str = "memory") -> Server:
        data_dir = Path(tempfile.mkdtemp(dir=tmp_path))
        server = Server(["--store", store, *args], free_port(), data_dir)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


def token_provider(sub: str = "alice", ttl: float = 3600, reasons: list[str] | None = None) -> syncgate.TokenProvider:
    """A ``get_token`` that mints a fresh token each time and records why it was asked."""

    async def get_token(reason: str) -> str | None:
        if reasons is not None:
            reasons.append(reason)
        return mint(sub, ttl)

    return get_token


async def eventually(check: Callable[[], bool], timeout: float = 10.0, what: str = "the condition") -> None:
    """Waits until ``check()`` holds (polling), failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
