"""A backend helper for syncgate's HTTP server API and change feed, on ``httpx``.

For a Django/FastAPI backend, a script or a pipeline: publish like a
client's ``PUB``, write ops (one result per op), read a collection page by
page, and follow its changes as Server-Sent Events (parsed by ``httpx-sse``).
The feed resumes from its last event id after a cut connection, so nothing
is lost and nothing repeats, and surfaces ``reset`` when its cursor can no
longer be resumed from.

    async with Api("http://127.0.0.1:8080", token=service_token) as api:
        await api.write_ops("todos", [{"key": "t1", "value": {"title": "ship it"}}])
        async for event in api.changes("todos"):
            ...
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, AsyncGenerator, Awaitable, Callable, Literal, Sequence
from urllib.parse import quote

import httpx
from httpx_sse import SSEError, aconnect_sse

from .backoff import Backoff
from .codec import Value, decode, encode

TokenSource = str | Callable[[], Awaitable[str]]
"""A bearer token, or an async function returning a fresh one for each request."""


class ApiError(Exception):
    """The server refused a request: ``status`` (HTTP) and the protocol's ``code``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class FeedEnded(Exception):
    """The server ended a change feed for good (``code``: ``token_expired``, ``forbidden``...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"the change feed ended: {code}: {message}")
        self.code = code


@dataclass(frozen=True)
class ApiRecord:
    """One record as the API shows it (``value`` ``None`` is a tombstone)."""

    key: str
    value: Any
    hlc: str


@dataclass(frozen=True)
class OpResult:
    """The verdict on one op (``code``: ``forbidden``, ``invalid``, ``clock_skew``, ``stale``...)."""

    op_id: str | int | None
    ok: bool
    code: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class Page:
    """One read of a collection after a cursor; ask again with ``cursor`` while ``more``."""

    records: list[ApiRecord]
    cursor: str
    more: bool
    reset: bool
    unreadable: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class FeedEvent:
    """One change-feed event: ``change`` (records after ``cursor``) or ``reset`` (the full state follows)."""

    kind: Literal["change", "reset"]
    records: list[ApiRecord]
    cursor: str | None


def _records(items: Any) -> list[ApiRecord]:
    if not isinstance(items, list):
        return []
    return [ApiRecord(str(r["key"]), r.get("value"), str(r["hlc"])) for r in items if isinstance(r, dict)]


class Api:
    """The server API at ``base_url`` (``http://host:port``), authenticated with a bearer token."""

    def __init__(
        self,
        base_url: str,
        token: TokenSource,
        *,
        timeout: float = 10.0,
        http: httpx.AsyncClient | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._token = token
        self._http = http or httpx.AsyncClient(timeout=timeout)
        self._own_http = http is None
        self._backoff = backoff or Backoff()

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _headers(self) -> dict[str, str]:
        token = self._token if isinstance(self._token, str) else await self._token()
        return {"Authorization": f"Bearer {token}"}

    def _url(self, *segments: str) -> str:
        return self._base + "/api/" + "/".join(quote(s, safe="/") for s in segments)

    async def _post(self, url: str, body: Any, params: dict[str, str] | None = None) -> Any:
        # MessagePack, so that every protocol value (bytes included) keeps its kind.
        headers = {**await self._headers(), "Content-Type": "application/msgpack"}
        response = await self._http.post(url, content=encode(body), headers=headers, params=params)
        return _answer(response)

    async def publish(self, topic: str, data: Value) -> int:
        """Publishes like a client's ``PUB`` (``from`` is the token's ``sub``); returns deliveries on this node."""
        answer = await self._post(self._url("publish"), {"topic": topic, "data": data})
        delivered = answer.get("deliveredHere", 0) if isinstance(answer, dict) else 0
        return delivered if isinstance(delivered, int) else 0

    async def write_ops(self, collection: str, ops: Sequence[dict[str, Any]]) -> list[OpResult]:
        """Writes ops ``{"key", "value", "opId"?, "hlc"?}``; one result per op, in order.

        Without ``hlc`` the server's clock stamps the op, so it orders
        correctly against clients' offline writes.
        """
        answer = await self._post(self._url("collections", collection, "ops"), {"ops": list(ops)})
        results = answer.get("results") if isinstance(answer, dict) else None
        return [
            OpResult(r.get("opId"), r.get("ok") is True, r.get("code"), r.get("message"))
            for r in (results if isinstance(results, list) else [])
        ]

    async def read_page(self, collection: str, since: str | None = None) -> Page:
        """Records changed after ``since`` (all of them when ``None``), one page."""
        response = await self._http.get(
            self._url("collections", collection), params={"since": since or ""}, headers=await self._headers()
        )
        body = _answer(response)
        return Page(
            _records(body.get("records")),
            str(body.get("cursor")),
            body.get("more") is True,
            body.get("reset") is True,
            list(body.get("unreadable") or []),
        )

    async def read_all(self, collection: str, since: str | None = None) -> Page:
        """Every page after ``since``, as one page (``reset`` if any page said so)."""
        records: list[ApiRecord] = []
        reset = False
        while True:
            page = await self.read_page(collection, since)
            records.extend(page.records)
            reset = reset or page.reset
            since = page.cursor
            if not page.more:
                return Page(records, page.cursor, False, reset)

    async def changes(self, collection: str, since: str | None = None) -> AsyncGenerator[FeedEvent, None]:
        """Follows a collection's changes; resumes from the last event id after a disconnect.

        Yields ``reset`` when the cursor cannot be resumed from (drop what you
        mirrored: the full state follows as ``change`` events). When the
        token expires and the token source is a function, a fresh token is
        asked for and the feed resumes. Raises :class:`FeedEnded` when the
        server ends the feed for good and
        :class:`ApiError` when it refuses it (401, 403...); a lost connection
        or a 429/503 is retried with backoff.
        """
        cursor = since
        failures = 0
        url = self._url("collections", collection, "changes")
        while True:
            headers = await self._headers()
            if cursor is not None:
                headers["Last-Event-ID"] = cursor
            try:
                async with aconnect_sse(self._http, "GET", url, headers=headers, timeout=httpx.Timeout(10.0, read=60.0)) as source:
                    if source.response.status_code != 200:
                        await source.response.aread()
                        error = _error(source.response)
                        if source.response.status_code not in (429, 503):
                            raise error
                    else:
                        async for sse in source.aiter_sse():
                            failures = 0
                            if sse.event == "reset":
                                yield FeedEvent("reset", [], cursor)
                            elif sse.event == "change":
                                data = json.loads(sse.data)
                                cursor = sse.id or data.get("cursor") or cursor
                                yield FeedEvent("change", _records(data.get("records")), cursor)
                            elif sse.event == "error":
                                data = json.loads(sse.data)
                                code = str(data.get("code"))
                                # With a token source to ask, an expired token is
                                # replaced and the feed resumes from its cursor.
                                if code == "token_expired" and not isinstance(self._token, str):
                                    break
                                raise FeedEnded(code, str(data.get("message")))
            except (httpx.TransportError, SSEError):
                pass
            await asyncio.sleep(self._backoff.delay(failures))
            failures += 1


def _error(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    return ApiError(response.status_code, str(body.get("code", "http_error")), str(body.get("message", response.text)))


def _answer(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise _error(response)
    if "msgpack" in response.headers.get("content-type", ""):
        return decode(response.content)
    return response.json()
