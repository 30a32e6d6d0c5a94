"""The local replica and outbox, without I/O: the same model as the other clients.

Two layers per record: what the server confirmed (``SYNC_DATA``, ``CHANGE``,
accepted ops) and the ops still queued. The visible value is the
last-writer-wins winner of both, exactly as the server decides it, so a
refused op rolls back simply by leaving the outbox. Stamps alone decide: the
server refuses a second value under one stamp, so an equal stamp is only
ever the same write again and a replica keeps what it holds.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterable

from .codec import Value
from .codes import is_final_op_code
from .hlc import Hlc, HlcClock, hlc_key, parse_hlc

_POSITION = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class Record:
    """One record as the server sends it (``value`` ``None`` is a tombstone)."""

    key: str
    value: Value
    hlc: str


@dataclass(frozen=True)
class PendingOp:
    """A local write not yet settled by the server."""

    op_id: str
    collection: str
    key: str
    value: Value
    hlc: str

    def wire(self) -> dict[str, Any]:
        """The op as ``OP_BATCH`` carries it."""
        return {"opId": self.op_id, "collection": self.collection, "key": self.key, "value": self.value, "hlc": self.hlc}


@dataclass(frozen=True)
class Settled:
    """A write that left the outbox: accepted, or refused for good (rolled back)."""

    op: PendingOp
    ok: bool
    code: str | None = None
    message: str | None = None


@dataclass
class SettleReport:
    """What one ``OP_RESULT`` did: ops settled, and ops kept for a retry with their codes."""

    settled: list[Settled] = field(default_factory=list)
    retrying: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class _Confirmed:
    value: Value
    hlc: Hlc
    text: str


@dataclass
class _CollectionState:
    confirmed: dict[str, _Confirmed] = field(default_factory=dict)
    cursor: str | None = None


def parse_cursor(cursor: str) -> tuple[str, int] | None:
    """A cursor's epoch and position (``<hex epoch>:<position>[:<horizon>]``, or a bare position)."""
    parts = cursor.split(":")
    if len(parts) > 3:
        return None
    epoch, position = ("", parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    return (epoch, int(position)) if _POSITION.fullmatch(position) else None


class Replica:
    """Confirmed records, cursors and the outbox of one client."""

    def __init__(self, node_id: str, start: tuple[int, int] = (0, 0)) -> None:
        self.clock = HlcClock(node_id, start)
        # Random per instance: op ids never repeat across restarts.
        self._incarnation = os.urandom(4).hex()
        self._next_op = 1
        self._collections: dict[str, _CollectionState] = {}
        self._ops: OrderedDict[str, PendingOp] = OrderedDict()
        # Pending ops by collection and key: reads stay O(1) however long the outbox is.
        self._by_key: dict[str, dict[str, list[PendingOp]]] = {}

    @property
    def outbox(self) -> list[PendingOp]:
        """The queued ops, oldest first."""
        return list(self._ops.values())

    def outbox_len(self) -> int:
        return len(self._ops)

    def first_ops(self, n: int) -> list[PendingOp]:
        """The ``n`` oldest queued ops (without copying the whole outbox)."""
        out: list[PendingOp] = []
        for op in self._ops.values():
            if len(out) >= n:
                break
            out.append(op)
        return out

    def _state(self, collection: str) -> _CollectionState:
        state = self._collections.get(collection)
        if state is None:
            state = self._collections[collection] = _CollectionState()
        return state

    def _index(self, op: PendingOp) -> None:
        self._by_key.setdefault(op.collection, {}).setdefault(op.key, []).append(op)

    def _drop(self, op_ids: Iterable[str]) -> list[PendingOp]:
        dropped = []
        for op_id in op_ids:
            op = self._ops.pop(op_id, None)
            if op is None:
                continue
            dropped.append(op)
            keys = self._by_key.get(op.collection, {})
            rest = [o for o in keys.get(op.key, []) if o.op_id != op_id]
            if rest:
                keys[op.key] = rest
            else:
                keys.pop(op.key, None)
        return dropped

    def write(self, collection: str, key: str, value: Value, now_ms: int) -> PendingOp:
        """Writes locally: visible at once, queued for the server."""
        hlc = self.clock.tick(now_ms)
        op = PendingOp(f"{hlc.node}-{self._incarnation}-{self._next_op}", collection, key, value, str(hlc))
        self._next_op += 1
        self._ops[op.op_id] = op
        self._index(op)
        return op

    def discard(self, op_id: str) -> None:
        """Removes a queued op without settling it (it could not be saved)."""
        self._drop([op_id])

    def _winner(self, collection: str, key: str) -> tuple[Value, Hlc] | None:
        best: tuple[Value, Hlc] | None = None
        confirmed = self._collections.get(collection)
        if confirmed is not None and key in confirmed.confirmed:
            c = confirmed.confirmed[key]
            best = (c.value, c.hlc)
        for op in self._by_key.get(collection, {}).get(key, []):
            hlc = parse_hlc(op.hlc)
            if hlc is not None and (best is None or hlc_key(hlc) > hlc_key(best[1])):
                best = (op.value, hlc)
        return best

    def get(self, collection: str, key: str) -> Value:
        """The visible value of a record (``None`` if absent or deleted)."""
        best = self._winner(collection, key)
        return None if best is None else best[0]

    def items(self, collection: str) -> list[tuple[str, Value]]:
        """Every visible record of a collection, sorted by key (tombstones left out)."""
        keys = set(self._collections.get(collection, _CollectionState()).confirmed)
        keys.update(self._by_key.get(collection, {}))
        out: list[tuple[str, Value]] = []
        for key in sorted(keys):
            value = self.get(collection, key)
            if value is not None:
                out.append((key, value))
        return out

    def reset(self, collection: str) -> None:
        """Drops what the server confirmed of a collection (``SYNC_DATA.reset``); pending writes stay."""
        state = self._state(collection)
        state.confirmed.clear()
        state.cursor = None

    def merge(self, collection: str, records: Iterable[Record], now_ms: int) -> list[Record]:
        """Merges server records seen at ``now_ms``; returns those that changed the confirmed layer."""
        state = self._state(collection)
        changed = []
        for record in records:
            hlc = parse_hlc(record.hlc)
            if hlc is None:
                continue
            self.clock.observe(hlc, now_ms)
            current = state.confirmed.get(record.key)
            if current is None or hlc_key(hlc) > hlc_key(current.hlc):
                state.confirmed[record.key] = _Confirmed(record.value, hlc, record.hlc)
                changed.append(record)
        return changed

    def set_cursor(self, collection: str, cursor: str) -> bool:
        """Keeps the latest cursor: a later position of the same epoch, or any cursor of a new epoch."""
        state = self._state(collection)
        old = None if state.cursor is None else parse_cursor(state.cursor)
        new = parse_cursor(cursor)
        if old is not None and new is not None and old[0] == new[0] and new[1] <= old[1]:
            return False
        state.cursor = cursor
        return True

    def cursor(self, collection: str) -> str | None:
        state = self._collections.get(collection)
        return None if state is None else state.cursor

    def confirmed_record(self, collection: str, key: str) -> Record | None:
        """The confirmed (merged) record of a key: what storage keeps, never a raw op."""
        state = self._collections.get(collection)
        c = None if state is None else state.confirmed.get(key)
        return None if c is None else Record(key, c.value, c.text)

    def confirmed(self, collection: str) -> list[Record]:
        state = self._collections.get(collection)
        if state is None:
            return []
        return [Record(key, c.value, c.text) for key, c in state.confirmed.items()]

    def settle(self, outcomes: Iterable[dict[str, Any]], now_ms: int) -> SettleReport:
        """Applies ``OP_RESULT`` verdicts.

        Accepted ops join the confirmed layer (merged: a newer record there
        stays) and leave the outbox, as do ops refused for good (the
        rollback); ops refused with a retryable code stay queued.
        """
        report = SettleReport()
        verdicts: dict[str, dict[str, Any]] = {}
        for outcome in outcomes:
            op_id = outcome.get("opId")
            if not isinstance(op_id, str):
                continue
            code = outcome.get("code")
            code = code if isinstance(code, str) else "rejected"
            if outcome.get("ok") is not True and not is_final_op_code(code):
                report.retrying.append((op_id, code))
            else:
                verdicts[op_id] = outcome
        for op in self._drop(list(verdicts)):
            outcome = verdicts[op.op_id]
            if outcome.get("ok") is True:
                self.merge(op.collection, [Record(op.key, op.value, op.hlc)], now_ms)
                report.settled.append(Settled(op, True))
            else:
                code = outcome.get("code")
                message = outcome.get("message")
                report.settled.append(
                    Settled(
                        op,
                        False,
                        code if isinstance(code, str) else "rejected",
                        message if isinstance(message, str) else None,
                    )
                )
        return report

    def refuse_locally(self, op_id: str, code: str, message: str) -> Settled | None:
        """Refuses a queued op that can never be sent; it leaves the outbox."""
        dropped = self._drop([op_id])
        return Settled(dropped[0], False, code, message) if dropped else None

    def load_collection(self, collection: str, records: Iterable[Record], cursor: str | None) -> None:
        """Replaces a collection's confirmed layer and cursor (loaded from storage)."""
        state = self._state(collection)
        state.confirmed.clear()
        for record in records:
            hlc = parse_hlc(record.hlc)
            if hlc is not None:
                state.confirmed[record.key] = _Confirmed(record.value, hlc, record.hlc)
        state.cursor = cursor

    def add_ops(self, ops: Iterable[PendingOp]) -> None:
        """Adds stored ops (written before a restart), keeping their order, and absorbs their stamps."""
        for op in ops:
            if op.op_id in self._ops:
                continue
            self._ops[op.op_id] = op
            self._index(op)
            hlc = parse_hlc(op.hlc)
            if hlc is not None:
                self.clock.observe(hlc, 2**62)
