"""Cutting the outbox into ``OP_BATCH``es that the server accepts."""

from __future__ import annotations

from typing import Any

from .codec import encode
from .link import Limits
from .replica import Replica, Settled

BATCH_OVERHEAD = 64
"""Room in a batch for the ``OP_BATCH`` map around its ops."""


def next_batch(replica: Replica, limits: Limits, replay_batch: int) -> tuple[list[dict[str, Any]], list[Settled]]:
    """The oldest queued ops that fit in one batch, and the ops refused locally on the way.

    A batch holds at most ``replay_batch`` ops and the server's
    ``maxBatchOps``, and encodes below ``maxMessageBytes``. An op that can
    never fit (its value above ``maxValueBytes``, or alone too large for a
    message) is refused here as ``invalid``: sending it would close the
    connection (1009) on every attempt, and the outbox would never drain.
    """
    budget = limits.max_message_bytes - BATCH_OVERHEAD
    max_ops = max(1, min(replay_batch, limits.max_batch_ops))
    ops: list[dict[str, Any]] = []
    refused: list[Settled] = []
    size_total = 0
    for op in replica.first_ops(max_ops + 64):
        if len(ops) >= max_ops:
            break
        wire = op.wire()
        size = len(encode(wire))
        if size > budget or len(encode(op.value)) > limits.max_value_bytes:
            why = (
                f"the op ({size} bytes) is larger than the server accepts "
                f"(messages {limits.max_message_bytes} bytes, values {limits.max_value_bytes} bytes)"
            )
            settled = replica.refuse_locally(op.op_id, "invalid", why)
            if settled is not None:
                refused.append(settled)
            continue
        if size_total + size > budget:
            break
        size_total += size
        ops.append(wire)
    return ops, refused
