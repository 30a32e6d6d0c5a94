"""Hybrid logical clocks, ``"<millis>:<counter>:<nodeId>"``.

The same rules as the server and the other clients: a total order by
(millis, counter, node id as UTF-8 bytes), 16-bit counters, and a clock that
follows a remote stamp only when it is at most the drift bound ahead of its
own wall clock, so that no stamp can drag it into the future.
"""

from __future__ import annotations

import re
from typing import NamedTuple

MAX_COUNTER = 0xFFFF
MAX_MILLIS = (1 << 53) - 1
"""The largest millis a stamp may carry: what a JavaScript number holds exactly."""
DEFAULT_MAX_AHEAD_MS = 60_000

_MILLIS = re.compile(r"[0-9]{1,16}")
_COUNTER = re.compile(r"[0-9]{1,5}")
_CONTROL = re.compile("[\u0000-\u001f\u007f-\u009f]")


class Hlc(NamedTuple):
    """One stamp. Compare stamps with :func:`hlc_key`, not with tuple order."""

    millis: int
    counter: int
    node: str

    def __str__(self) -> str:
        return f"{self.millis}:{self.counter}:{self.node}"


def parse_hlc(text: str) -> Hlc | None:
    """Parses a stamp; ``None`` when it is not one (the node id may contain ``:``)."""
    parts = text.split(":", 2)
    if len(parts) != 3:
        return None
    millis, counter, node = parts
    if not _MILLIS.fullmatch(millis) or not _COUNTER.fullmatch(counter):
        return None
    count = int(counter)
    if int(millis) > MAX_MILLIS:
        return None
    node_bytes = len(node.encode("utf-8", "surrogatepass"))
    if count > MAX_COUNTER or node_bytes == 0 or node_bytes > 64 or _CONTROL.search(node):
        return None
    return Hlc(int(millis), count, node)


def hlc_key(hlc: Hlc) -> tuple[int, int, bytes]:
    """The sort key of a stamp: node ids compare as UTF-8 bytes, as Rust compares them."""
    return (hlc.millis, hlc.counter, hlc.node.encode("utf-8", "surrogatepass"))


def compare_hlc(a: Hlc, b: Hlc) -> int:
    """-1, 0 or 1 as ``a`` is older than, equal to or newer than ``b``."""
    ka, kb = hlc_key(a), hlc_key(b)
    return (ka > kb) - (ka < kb)


class HlcClock:
    """A node's clock: monotonic, after everything it saw, never dragged far ahead."""

    def __init__(
        self,
        node: str,
        start: tuple[int, int] = (0, 0),
        max_ahead_ms: int = DEFAULT_MAX_AHEAD_MS,
    ) -> None:
        self.node = node
        self._millis = start[0]
        self._counter = min(start[1], MAX_COUNTER)
        self._max_ahead_ms = max_ahead_ms

    def tick(self, now_ms: int) -> Hlc:
        """A fresh stamp at wall time ``now_ms``; a full counter moves on a millisecond."""
        if now_ms > self._millis:
            self._millis, self._counter = now_ms, 0
        elif self._counter >= MAX_COUNTER:
            self._millis, self._counter = self._millis + 1, 0
        else:
            self._counter += 1
        return Hlc(self._millis, self._counter, self.node)

    def observe(self, seen: Hlc, now_ms: int) -> bool:
        """Absorbs a stamp seen at ``now_ms``; ``False`` (nothing absorbed) when too far ahead."""
        if seen.millis > now_ms + self._max_ahead_ms:
            return False
        if (seen.millis, seen.counter) > (self._millis, self._counter):
            self._millis, self._counter = seen.millis, min(seen.counter, MAX_COUNTER)
        return True

    def state(self) -> tuple[int, int]:
        """(millis, counter) of the last stamp, for saving across restarts."""
        return (self._millis, self._counter)
