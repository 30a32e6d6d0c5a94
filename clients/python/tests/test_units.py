"""The pure parts: clock, backoff, pacer, replica, value rule, storage."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncgate import Backoff, HlcClock, parse_hlc
from syncgate.batches import next_batch
from syncgate.codec import decode_server_message, encode, value_problem
from syncgate.link import Limits
from syncgate.hlc import MAX_COUNTER, Hlc
from syncgate.pacer import Pacer
from syncgate.replica import Record, Replica
from syncgate.storage import SqliteStorage, StorageChange


def test_hlc_parses_only_stamps() -> None:
    assert parse_hlc("1800000000000:0:d1") == Hlc(1800000000000, 0, "d1")
    assert parse_hlc("1:2:node:with:colons") == Hlc(1, 2, "node:with:colons")
    for bad in ("", "1:2", "a:0:n", "1:65536:n", "1:0:", "1:0:" + "x" * 65, "1:0:a\nb", "-1:0:n", "١:0:n"):
        assert parse_hlc(bad) is None, bad
    assert str(Hlc(5, 6, "n")) == "5:6:n"


def test_hlc_clock_is_monotonic_bounded_and_ignores_stamps_far_ahead() -> None:
    clock = HlcClock("n", (100, MAX_COUNTER))
    assert clock.tick(50) == Hlc(101, 0, "n")  # a full counter moves on a millisecond
    assert clock.tick(101) == Hlc(101, 1, "n")
    assert clock.observe(Hlc(200, 7, "x"), now_ms=150)
    assert clock.tick(150) == Hlc(200, 8, "n")
    assert not clock.observe(Hlc(10**9, 0, "x"), now_ms=150)
    assert clock.tick(150) == Hlc(200, 9, "n")


def test_backoff_is_jittered_within_its_curve() -> None:
    b = Backoff(initial=1.0, maximum=8.0)
    assert b.delay(0, lambda: 0.0) == 0.5 and b.delay(0, lambda: 1.0) == 1.0
    assert b.delay(2, lambda: 1.0) == 4.0
    assert b.delay(50, lambda: 1.0) == 8.0


def test_pacer_keeps_below_the_announced_rate() -> None:
    now = [0.0]
    pacer = Pacer(clock=lambda: now[0])
    assert pacer.wait_time() == 0  # before the limits: unpaced, but counted
    pacer.set_limits(10, 5)  # 9/s, capacity 4, one already sent
    assert [pacer.wait_time() for _ in range(3)] == [0, 0, 0]
    assert pacer.wait_time() == pytest.approx(1 / 9)
    now[0] += 1 / 9
    assert pacer.wait_time() == 0


def test_replica_rolls_back_a_final_refusal_and_keeps_a_retryable_one() -> None:
    replica = Replica("me")
    replica.merge("c", [Record("k", "server", "10:0:srv")], 0)
    refused = replica.write("c", "k", "mine", 20)
    retried = replica.write("c", "j", "later", 20)
    assert replica.get("c", "k") == "mine"
    report = replica.settle(
        [{"opId": refused.op_id, "ok": False, "code": "forbidden"}, {"opId": retried.op_id, "ok": False, "code": "new_code"}],
        30,
    )
    assert [s.op.op_id for s in report.settled] == [refused.op_id]
    assert report.retrying == [(retried.op_id, "new_code")]
    assert replica.get("c", "k") == "server"
    assert replica.get("c", "j") == "later"
    assert replica.outbox_len() == 1


def test_an_accepted_op_older_than_the_confirmed_record_does_not_replace_it() -> None:
    replica = Replica("me")
    op = replica.write("c", "k", "mine", 20)
    replica.merge("c", [Record("k", "newer", "99:0:other")], 0)
    replica.settle([{"opId": op.op_id, "ok": True}], 100)
    record = replica.confirmed_record("c", "k")
    assert record is not None and record.value == "newer"  # the stored record is the winner, not the op


def test_cursors_only_move_forward_within_an_epoch() -> None:
    replica = Replica("me")
    assert replica.set_cursor("c", "ab:5")
    assert not replica.set_cursor("c", "ab:4")
    assert replica.set_cursor("c", "cd:1")
    assert replica.cursor("c") == "cd:1"


def test_value_rule() -> None:
    assert value_problem({"a": [1, 2.5, None, b"x", True]}) is None
    assert value_problem({1: "x"}) == "has a map key that is not a string"
    assert value_problem(2**64) is not None
    assert value_problem(object()) is not None
    deep: object = 1
    for _ in range(17):
        deep = [deep]
    assert value_problem(deep) is not None


def test_unreadable_records_are_set_aside() -> None:
    message = {"type": "CHANGE", "collection": "c", "cursor": "1", "records": [
        {"key": "ok", "value": 1, "hlc": "1:0:a"}, {"key": "bad", "value": {1: 2}, "hlc": "1:0:a"}]}
    decoded = decode_server_message(encode(message))
    assert decoded.message is not None and [r["key"] for r in decoded.message["records"]] == ["ok"]
    assert decoded.unreadable[0].key == "bad"
    assert decode_server_message(b"\xc1").message is None


async def test_storage_round_trips_and_applies_changes_atomically(tmp_path: Path) -> None:
    path = tmp_path / "replica.db"
    storage = SqliteStorage(path)
    first = await storage.open()
    replica = Replica(first.node_id)
    op = replica.write("c", "k", {"v": b"\x00"}, 5)
    await storage.apply(StorageChange(add_ops=[op], put=[("c", Record("j", [1], "1:0:x"))], cursors=[("c", "e:1")], clock=(5, 0)))
    await storage.close()
    storage = SqliteStorage(path)
    again = await storage.open()
    assert again.node_id == first.node_id
    assert again.clock == (5, 0)
    assert again.outbox == [op]
    assert again.collections == {"c": ([Record("j", [1], "1:0:x")], "e:1")}
    with pytest.raises(Exception):
        # A change that fails half-way leaves nothing behind.
        await storage.apply(StorageChange(remove_ops=[op.op_id], put=[("c", Record("x", object(), "1:0:x"))]))  # type: ignore[arg-type]
    await storage.close()
    storage = SqliteStorage(path)
    assert (await storage.open()).outbox == [op]
    await storage.close()


def test_batches_fit_the_servers_limits_and_refuse_what_never_fits() -> None:
    replica = Replica("me")
    huge = replica.write("c", "huge", "x" * 2000, 1)
    for i in range(30):
        replica.write("c", f"k{i}", "y" * 100, 1)
    ops, refused = next_batch(replica, Limits(max_message_bytes=1500, max_value_bytes=1000, max_batch_ops=20), 250)
    assert [s.op.op_id for s in refused] == [huge.op_id] and refused[0].code == "invalid"
    assert 0 < len(ops) < 20 and len(encode({"type": "OP_BATCH", "id": 1, "ops": ops})) <= 1500
    ops, _ = next_batch(replica, Limits(max_batch_ops=20), 250)
    assert len(ops) == 20
    ops, _ = next_batch(replica, Limits(), 7)
    assert len(ops) == 7
