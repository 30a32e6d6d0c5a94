"""The protocol's shared vectors (proto/vectors.json): the Rust, TypeScript and Python clients read the same file."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import websockets

import syncgate
from syncgate.codec import decode_message, encode
from syncgate.replica import Record, Replica

from .conftest import VECTORS, StartServer, mint

VECTORS_JSON: dict[str, Any] = json.loads(VECTORS.read_text())


def unhex(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def test_client_messages_encode_to_the_exact_bytes() -> None:
    assert VECTORS_JSON["client"], "no client vectors"
    for case in VECTORS_JSON["client"]:
        assert encode(case["message"]) == unhex(case["hex"]), case["name"]


def test_server_messages_decode_to_the_documented_maps() -> None:
    assert VECTORS_JSON["server"], "no server vectors"
    for case in VECTORS_JSON["server"]:
        assert decode_message(unhex(case["hex"])) == case["message"], case["name"]
        # What decodes re-encodes to the same bytes (key order is kept).
        assert encode(decode_message(unhex(case["hex"]))) == unhex(case["hex"]), case["name"]


def test_hlc_stamps_parse_format_and_order_as_the_vectors_say() -> None:
    from syncgate.hlc import MAX_MILLIS, compare_hlc, parse_hlc

    section = VECTORS_JSON["hlc"]
    assert section["maxMillis"] == MAX_MILLIS
    for case in section["parse"]:
        parsed = parse_hlc(case["text"])
        if case["ok"]:
            assert parsed is not None, case["text"]
            assert (parsed.millis, parsed.counter, parsed.node) == (case["millis"], case["counter"], case["node"])
            assert str(parsed) == case["format"], case["text"]
        else:
            assert parsed is None, (case["text"], case.get("why"))
    order = [parse_hlc(text) for text in section["order"]]
    for i, a in enumerate(order):
        for j, b in enumerate(order):
            assert a is not None and b is not None
            assert compare_hlc(a, b) == (i > j) - (i < j), (a, b)


def test_close_and_op_codes_act_as_the_vectors_say() -> None:
    from syncgate.codes import close_action, is_final_op_code

    for case in VECTORS_JSON["closeCodes"]["cases"]:
        assert close_action(case["code"]).value == case["action"], case
    for code in VECTORS_JSON["opCodes"]["final"]:
        assert is_final_op_code(code), code
    for code in VECTORS_JSON["opCodes"]["retryable"]:
        assert not is_final_op_code(code), code


def test_presence_messages_encode_and_decode_as_the_vectors_say() -> None:
    for case in VECTORS_JSON["presence"]["client"]:
        assert encode(case["message"]) == unhex(case["hex"]), case["name"]
    for case in VECTORS_JSON["presence"]["server"]:
        assert decode_message(unhex(case["hex"])) == case["message"], case["name"]


def lww_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = VECTORS_JSON["lww"]["cases"]
    assert cases
    return cases


def test_a_replica_decides_by_stamp_as_the_vectors_say() -> None:
    for case in lww_cases():
        replica = Replica("tester")
        current = msgpack.unpackb(unhex(case["current"]["value"]))
        incoming = msgpack.unpackb(unhex(case["incoming"]["value"]))
        replica.merge("c", [Record("k", current, case["current"]["hlc"])], 0)
        changed = replica.merge("c", [Record("k", incoming, case["incoming"]["hlc"])], 0)
        expected = case["replica"]
        assert expected in ("replaces", "keeps"), case["name"]
        assert bool(changed) == (expected == "replaces"), case["name"]
        record = replica.confirmed_record("c", "k")
        assert record is not None
        winner = case["incoming"] if expected == "replaces" else case["current"]
        assert record.hlc == winner["hlc"], case["name"]
        assert encode(record.value) == unhex(winner["value"]), case["name"]


async def test_the_server_answers_each_lww_case_as_the_vectors_say(start_server: StartServer) -> None:
    """The same cases through the real server: the Python encoding of each op is judged as documented."""
    server = await start_server("--jwt-secret", "python-test-secret-0123456789abcdef")
    async with websockets.connect(server.url) as ws:
        assert decode_message(await ws.recv())["type"] == "AUTH_REQUIRED"  # type: ignore[arg-type]
        await ws.send(encode({"type": "AUTH", "token": mint("vectors")}))
        assert decode_message(await ws.recv())["type"] == "AUTH_ACK"  # type: ignore[arg-type]
        for i, case in enumerate(lww_cases()):
            ops = []
            for n, side in enumerate(("current", "incoming")):
                value = msgpack.unpackb(unhex(case[side]["value"]))
                assert encode(value) == unhex(case[side]["value"]), "the value must travel byte for byte"
                ops.append({"opId": f"{i}-{n}", "collection": "vectors", "key": f"k{i}", "value": value, "hlc": case[side]["hlc"]})
            await ws.send(encode({"type": "OP_BATCH", "id": i + 1, "ops": ops}))
            answer = decode_message(await ws.recv())  # type: ignore[arg-type]
            assert answer["type"] == "OP_RESULT", answer
            first, second = answer["results"]
            assert first["ok"] is True, (case["name"], first)
            expected = case["server"]
            if expected == "refused":
                assert second["ok"] is False and second["code"] == "invalid", (case["name"], second)
            else:
                assert second["ok"] is True, (case["name"], second)
        await ws.send(encode({"type": "SYNC", "id": 9999, "collection": "vectors"}))
        data = decode_message(await ws.recv())  # type: ignore[arg-type]
        stored = {r["key"]: r for r in data["records"]}
        for i, case in enumerate(lww_cases()):
            winner = case["incoming"] if case["server"] == "stored" else case["current"]
            assert stored[f"k{i}"]["hlc"] == winner["hlc"], case["name"]
            assert encode(stored[f"k{i}"]["value"]) == unhex(winner["value"]), case["name"]


def test_close_codes_follow_the_protocol_table() -> None:
    # proto/PROTOCOL.md section 5, "client should".
    table = {
        1000: syncgate.CloseAction.RECONNECT,
        1001: syncgate.CloseAction.RECONNECT,
        1002: syncgate.CloseAction.STOP,
        1009: syncgate.CloseAction.STOP,
        4000: syncgate.CloseAction.STOP,
        4001: syncgate.CloseAction.NEW_TOKEN,
        4003: syncgate.CloseAction.STOP,
        4008: syncgate.CloseAction.RECONNECT,
        4029: syncgate.CloseAction.BACK_OFF,
        4100: syncgate.CloseAction.REFRESH_TOKEN,
        4200: syncgate.CloseAction.RESYNC,
        None: syncgate.CloseAction.RECONNECT,
    }
    for code, action in table.items():
        assert syncgate.close_action(code) is action, code
    for final in ("forbidden", "invalid", "clock_skew", "stale"):
        assert syncgate.is_final_op_code(final)
    for retryable in ("unavailable", "rate_limited", "a_code_from_the_future"):
        assert not syncgate.is_final_op_code(retryable)
