"""Every auth mode against the real server, refresh in band, expiry, and the close-code reactions."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Iterator

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import syncgate
from syncgate import Client, Connected, Disconnected, Refreshed, Stopped

from .conftest import FAST, SECRET, StartServer, mint, token_provider


async def connected(client: Client, timeout: float = 10) -> Connected:
    waiter = asyncio.ensure_future(client.wait_for(Connected, timeout=timeout))
    await client.connect()
    return await waiter


async def test_mode_none_connects_without_a_token(start_server: StartServer) -> None:
    server = await start_server("--anonymous-roles", "user")
    async with Client(server.url, backoff=FAST) as client:
        ack = await client.wait_for(Connected, timeout=10)
        assert ack.sub == "anonymous" and ack.roles == ["user"] and ack.expires_at is None


async def test_mode_token_accepts_the_static_token(start_server: StartServer) -> None:
    secret = "static-token-0123456789abcdef0123456789"
    server = await start_server("--auth", "token", "--token", secret, "--token-sub", "homelab")

    async def get_token(reason: str) -> str:
        return secret

    client = Client(server.url, get_token, backoff=FAST)
    ack = await connected(client)
    assert ack.sub == "homelab" and ack.expires_at is None
    await client.close()


async def test_repeated_rejection_asks_for_new_tokens_then_stops(start_server: StartServer) -> None:
    server = await start_server("--auth", "token", "--token", "static-token-0123456789abcdef0123456789")
    reasons: list[str] = []
    closes: list[int | None] = []

    async def get_token(reason: str) -> str:
        reasons.append(reason)
        return "wrong"

    client = Client(server.url, get_token, backoff=FAST, max_rejections=3)
    client.on(Disconnected, lambda e: closes.append(e.code))
    stopped = asyncio.ensure_future(client.wait_for(Stopped, timeout=10))
    await client.connect()
    stop = await stopped
    assert closes == [4001, 4001, 4001]
    assert reasons == ["connect", "rejected", "rejected"]
    assert stop.code == 4001 and "token_invalid" in stop.reason
    assert client.state == "stopped"
    await client.close()


async def test_mode_jwt_hs256(start_server: StartServer) -> None:
    server = await start_server("--jwt-secret", SECRET)
    client = Client(server.url, token_provider("alice"), backoff=FAST)
    ack = await connected(client)
    assert ack.sub == "alice" and ack.roles == ["user"] and ack.expires_at is not None
    await client.close()


async def test_mode_jwt_es256_public_key_and_token_in_the_query(start_server: StartServer, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "issuer.pem"
    pem.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    server = await start_server("--jwt-public-key", str(pem))

    async def get_token(reason: str) -> str:
        return jwt.encode({"sub": "erin", "exp": int(time.time()) + 600, "role": "user"}, key, algorithm="ES256")

    client = Client(server.url, get_token, backoff=FAST, token_in="query")
    ack = await connected(client)
    assert ack.sub == "erin" and ack.roles == ["user"]
    await client.close()


@pytest.fixture
def introspection() -> Iterator[str]:
    """An introspection endpoint (RFC 7662 shape): only the token "good" is active."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            answer = {"active": True, "sub": "carol", "roles": ["user"]} if body.get("token") == "good" else {"active": False}
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/introspect"
    httpd.shutdown()
    httpd.server_close()


async def test_mode_introspect(start_server: StartServer, introspection: str) -> None:
    server = await start_server(
        "--auth", "introspect", "--introspect-url", introspection, "--introspect-token", "internal-0123456789abcdef0123456789"
    )

    async def get_token(reason: str) -> str:
        return "good" if reason == "rejected" else "revoked-long-ago"

    client = Client(server.url, get_token, backoff=FAST)
    disconnected = asyncio.ensure_future(client.wait_for(Disconnected, timeout=10))
    ack = await connected(client)
    assert ack.sub == "carol"
    assert (await disconnected).code == 4001  # the first token was refused: a new one was asked for
    await client.close()


async def test_refresh_in_band_keeps_the_session(start_server: StartServer) -> None:
    server = await start_server("--jwt-secret", SECRET, "--jwt-leeway", "0")
    reasons: list[str] = []

    async def get_token(reason: str) -> str:
        reasons.append(reason)
        return mint("alice", ttl=3 if reason == "connect" else 3600)

    client = Client(server.url, get_token, backoff=FAST)
    disconnects: list[Disconnected] = []
    client.on(Disconnected, disconnects.append)
    refreshed = asyncio.ensure_future(client.wait_for(Refreshed, timeout=10))
    first = await connected(client)
    assert first.expires_at is not None and first.expires_at <= time.time() + 3
    after = await refreshed
    assert after.expires_at is not None and after.expires_at > time.time() + 3000
    await asyncio.sleep(max(0.0, first.expires_at - time.time()) + 1.5)  # past the first token's expiry
    await client.publish("rooms/still-here", "hello")  # the same session still serves
    assert disconnects == [] and client.state == "connected"
    assert reasons[0] == "connect" and "refresh" in reasons
    await client.close()


async def test_expiry_closes_4100_and_the_client_reconnects_with_a_refreshed_token(start_server: StartServer) -> None:
    server = await start_server("--jwt-secret", SECRET, "--jwt-leeway", "0")
    short = mint("alice", ttl=2)
    expired = False
    reasons: list[str] = []

    async def get_token(reason: str) -> str:
        # A provider that keeps handing out its cached token until the session ends.
        reasons.append(reason)
        return mint("alice", ttl=3600) if expired else short

    def on_disconnected(event: Disconnected) -> None:
        nonlocal expired
        expired = expired or event.code == 4100

    client = Client(server.url, get_token, backoff=FAST)
    client.on(Disconnected, on_disconnected)
    await connected(client)
    closed = await client.wait_for(Disconnected, timeout=10)
    assert closed.code == 4100
    again = await client.wait_for(Connected, timeout=10)
    assert again.expires_at is not None and again.expires_at > time.time() + 3000
    assert reasons[-1] == "refresh"
    await client.close()


async def test_refresh_for_another_subject_stops_with_4003(start_server: StartServer) -> None:
    server = await start_server("--jwt-secret", SECRET)

    async def get_token(reason: str) -> str:
        return mint("alice" if reason == "connect" else "mallory", ttl=3)

    client = Client(server.url, get_token, backoff=FAST)
    stopped = asyncio.ensure_future(client.wait_for(Stopped, timeout=10))
    await client.connect()
    assert (await stopped).code == 4003
    await client.close()


async def test_no_token_signs_out(start_server: StartServer) -> None:
    server = await start_server("--jwt-secret", SECRET)

    async def get_token(reason: str) -> str | None:
        return None

    client = Client(server.url, get_token, backoff=FAST)
    stopped = asyncio.ensure_future(client.wait_for(Stopped, timeout=10))
    await client.connect()
    assert "signed out" in (await stopped).reason
    with pytest.raises(syncgate.NotConnectedError):
        await client.publish("t", 1)
    await client.close()
