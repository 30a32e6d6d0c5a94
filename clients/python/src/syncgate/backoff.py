"""Jittered exponential backoff, as in the Rust and TypeScript clients."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Backoff:
    """Delays between reconnection attempts ("equal jitter").

    Jitter spreads the reconnections of many clients after a server restart,
    so they do not all arrive in the same instant.
    """

    initial: float = 0.25
    """The first delay's ceiling, in seconds."""
    maximum: float = 30.0
    """No delay exceeds this, in seconds."""

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """The delay before retry number ``attempt`` (0-based): uniform in [d/2, d]."""
        ceiling = min(self.maximum, self.initial * float(2 ** min(max(attempt, 0), 20)))
        return ceiling / 2 + ceiling / 2 * rand()
