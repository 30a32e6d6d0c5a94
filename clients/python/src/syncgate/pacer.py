"""Paces one connection's messages within the rate its server announced.

The server counts every message in a token bucket
(``AUTH_ACK.limits.messagesPerSecond`` and ``messageBurst``) and closes with
4029 far past it. A client that re-sends its SUBs, SYNCs and replay at once
after a reconnect would be closed again on every attempt, so every frame
waits here. The bucket is one token smaller and 10% slower than the
server's: frames paced here can arrive bunched by the network and must still fit.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable


class Pacer:
    """A token bucket that frames wait in, one after another (one sender uses it)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._rate = 0.0
        self._capacity = 0.0
        self._tokens = 0.0
        self._refilled_at = 0.0
        self._sent_unpaced = 0

    def set_limits(self, messages_per_second: float | None, message_burst: float | None) -> None:
        """Applies announced limits; frames already sent on this socket are counted."""
        rate = float(messages_per_second or 0)
        burst = float(message_burst or 0)
        if rate <= 0 or burst <= 0:
            self._rate = 0.0
            return
        first = self._rate == 0
        self._rate = rate * 0.9
        self._capacity = max(1.0, burst - 1)
        if first:
            self._tokens = max(0.0, self._capacity - self._sent_unpaced)
            self._refilled_at = self._clock()
        self._tokens = min(self._tokens, self._capacity)

    def wait_time(self) -> float:
        """Seconds until the next frame may leave (0: now); takes the token when it is 0."""
        if self._rate == 0:
            self._sent_unpaced += 1
            return 0.0
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._refilled_at) * self._rate)
        self._refilled_at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self._rate

    async def acquire(self) -> None:
        """Waits until a frame may leave."""
        while True:
            wait = self.wait_time()
            if wait == 0:
                return
            await asyncio.sleep(wait)
