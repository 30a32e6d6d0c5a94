"""MessagePack on the wire, with the ``msgpack`` package.

Every message is one map with a string ``type``. Decoding never gives up on a
whole connection because of one value: a record or a publication whose value
breaks the protocol's value rule (a map key that is not a string, an
extension type) is set aside and reported, and the rest of the message is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

import msgpack

Value = Union[None, bool, int, float, str, bytes, list["Value"], dict[str, "Value"]]
"""Any value the protocol carries: what ``msgpack`` decodes, with string map keys."""

Message = dict[str, Any]
"""One protocol message as a map; field names are camelCase, as on the wire."""

MAX_VALUE_DEPTH = 16
"""Deepest nesting of arrays and maps in a value (``proto/PROTOCOL.md``, *Values*)."""

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


class ProtocolError(ValueError):
    """Bytes that are not a syncgate message (not a map, no string ``type``)."""


def encode(value: Any) -> bytes:
    """The MessagePack encoding of a message or a value (maps keep their key order)."""
    return msgpack.packb(value, use_bin_type=True)


def decode(data: bytes) -> Any:
    """Decodes any MessagePack value; non-string map keys survive to be reported."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def decode_message(data: bytes) -> Message:
    """Decodes one message; raises :class:`ProtocolError` when it is not a map with a string type."""
    try:
        value = decode(data)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
        raise ProtocolError(f"undecodable MessagePack: {e}") from e
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise ProtocolError("not a syncgate message (a map with a string `type`)")
    return value


@dataclass
class Unreadable:
    """What the client set aside: a record, a publication, or a whole message."""

    reason: str
    collection: str | None = None
    key: str | None = None
    topic: str | None = None


@dataclass
class Decoded:
    """A server message with what could not be read taken out (``message`` is ``None`` when unusable)."""

    message: Message | None
    unreadable: list[Unreadable] = field(default_factory=list)


def decode_server_message(data: bytes) -> Decoded:
    """Decodes leniently: bad records leave ``SYNC_DATA``/``CHANGE``, a bad ``MESSAGE`` is dropped."""
    try:
        message = decode_message(data)
    except ProtocolError as e:
        return Decoded(None, [Unreadable(f"undecodable server message: {e}")])
    kind = message["type"]
    if kind in ("SYNC_DATA", "CHANGE"):
        collection = message.get("collection")
        records = message.get("records")
        if not isinstance(collection, str) or not isinstance(records, list):
            return Decoded(None, [Unreadable(f"a {kind} without a collection or records")])
        kept: list[dict[str, Any]] = []
        unreadable: list[Unreadable] = []
        for record in records:
            reason = _record_problem(record)
            if reason is None:
                kept.append(record)
            else:
                key = record.get("key") if isinstance(record, dict) else None
                unreadable.append(Unreadable(reason, collection=collection, key=str(key)))
        return Decoded({**message, "records": kept}, unreadable)
    if kind == "MESSAGE":
        reason = unreadable_reason(message.get("data"))
        if reason is not None:
            return Decoded(None, [Unreadable(reason, topic=str(message.get("topic")))])
    return Decoded(message)


def _record_problem(record: Any) -> str | None:
    if not isinstance(record, dict):
        return "the record is not a map"
    if not isinstance(record.get("key"), str) or not isinstance(record.get("hlc"), str):
        return "the key or the hlc is not a string"
    return unreadable_reason(record.get("value"))


def unreadable_reason(value: Any) -> str | None:
    """Why a decoded value breaks the value rule, or ``None`` when it keeps it."""
    if isinstance(value, (msgpack.ExtType, msgpack.Timestamp)):
        return "holds a MessagePack extension type"
    if isinstance(value, list):
        for item in value:
            reason = unreadable_reason(item)
            if reason is not None:
                return reason
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return "has a map key that is not a string"
            reason = unreadable_reason(item)
            if reason is not None:
                return reason
    return None


def value_problem(value: object, max_depth: int = MAX_VALUE_DEPTH, _depth: int = 0) -> str | None:
    """Why a value an app wants to write breaks the value rule, or ``None``.

    Checked at write time, before the op is queued: the server would refuse it
    as ``invalid`` anyway, and a refusal found now is an exception the caller
    sees instead of a rollback later.
    """
    if value is None or isinstance(value, (bool, float, str, bytes)):
        return None
    if isinstance(value, int):
        return None if _INT_MIN <= value <= _INT_MAX else "holds an integer outside 64 bits"
    if isinstance(value, (list, tuple, dict)):
        if _depth + 1 > max_depth:
            return f"nests arrays and maps deeper than {max_depth}"
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    return "has a map key that is not a string"
                problem = value_problem(item, max_depth, _depth + 1)
                if problem is not None:
                    return problem
            return None
        for item in value:
            problem = value_problem(item, max_depth, _depth + 1)
            if problem is not None:
                return problem
        return None
    return f"holds a {type(value).__name__}, which MessagePack cannot carry as a plain value"
