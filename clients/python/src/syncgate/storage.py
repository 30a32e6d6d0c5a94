"""The replica on disk: SQLite from the standard library, off the event loop.

One connection, used only by one worker thread: ``sqlite3`` connections
are not to be shared between threads, and a single writer thread also keeps
every change in submission order (a write saved before its settlement is
removed, never after). Each change is one transaction, so a crash leaves
either all of it or none. ``synchronous=FULL``: a write the app was told is
saved survives a power cut, not only a crash of the process.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from .codec import decode, encode
from .replica import PendingOp, Record

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    collection TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, hlc TEXT NOT NULL,
    PRIMARY KEY (collection, key));
CREATE TABLE IF NOT EXISTS cursors (collection TEXT PRIMARY KEY, cursor TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, op_id TEXT NOT NULL UNIQUE,
    collection TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, hlc TEXT NOT NULL);
"""


@dataclass
class StorageChange:
    """Everything one event changes in storage, applied as one transaction."""

    add_ops: list[PendingOp] = field(default_factory=list)
    remove_ops: list[str] = field(default_factory=list)
    clear: list[str] = field(default_factory=list)
    """Collections whose confirmed records go (a reset), before ``put``."""
    put: list[tuple[str, Record]] = field(default_factory=list)
    cursors: list[tuple[str, str | None]] = field(default_factory=list)
    clock: tuple[int, int] | None = None


@dataclass
class Snapshot:
    """What storage holds, loaded at start."""

    node_id: str
    clock: tuple[int, int]
    collections: dict[str, tuple[list[Record], str | None]]
    outbox: list[PendingOp]


class SqliteStorage:
    """The replica in one SQLite file (or ``":memory:"``, for a replica that need not outlive the process)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="syncgate-sqlite")
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        db = self._db
        if db is None:
            raise RuntimeError("the storage is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, db)

    async def open(self) -> Snapshot:
        """Opens (creating if needed) and loads everything."""

        def connect() -> sqlite3.Connection:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            if self.path != ":memory:":
                db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            return db

        self._db = await asyncio.get_running_loop().run_in_executor(self._executor, connect)
        return await self._run(_load)

    async def apply(self, change: StorageChange) -> None:
        """Applies one change atomically."""
        await self._run(lambda db: _apply(db, change))

    async def close(self) -> None:
        """Closes the file; waits for every change submitted before."""
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.get_running_loop().run_in_executor(self._executor, db.close)
        self._executor.shutdown(wait=True)


def _load(db: sqlite3.Connection) -> Snapshot:
    meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
    node_id = meta.get("node_id")
    if node_id is None:
        node_id = "py-" + os.urandom(6).hex()
        db.execute("INSERT INTO meta (name, value) VALUES ('node_id', ?)", (node_id,))
    clock = (int(meta.get("clock_millis", "0")), int(meta.get("clock_counter", "0")))
    collections: dict[str, tuple[list[Record], str | None]] = {}
    for collection, key, value, hlc in db.execute("SELECT collection, key, value, hlc FROM records"):
        collections.setdefault(collection, ([], None))[0].append(Record(key, decode(value), hlc))
    for collection, cursor in db.execute("SELECT collection, cursor FROM cursors"):
        records = collections.get(collection, ([], None))[0]
        collections[collection] = (records, cursor)
    outbox = [
        PendingOp(op_id, collection, key, decode(value), hlc)
        for op_id, collection, key, value, hlc in db.execute(
            "SELECT op_id, collection, key, value, hlc FROM outbox ORDER BY seq"
        )
    ]
    return Snapshot(node_id, clock, collections, outbox)


def _apply(db: sqlite3.Connection, change: StorageChange) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        db.executemany(
            "INSERT OR IGNORE INTO outbox (op_id, collection, key, value, hlc) VALUES (?, ?, ?, ?, ?)",
            [(op.op_id, op.collection, op.key, encode(op.value), op.hlc) for op in change.add_ops],
        )
        db.executemany("DELETE FROM outbox WHERE op_id = ?", [(op_id,) for op_id in change.remove_ops])
        db.executemany("DELETE FROM records WHERE collection = ?", [(c,) for c in change.clear])
        db.executemany(
            "INSERT OR REPLACE INTO records (collection, key, value, hlc) VALUES (?, ?, ?, ?)",
            [(c, r.key, encode(r.value), r.hlc) for c, r in change.put],
        )
        for collection, cursor in change.cursors:
            if cursor is None:
                db.execute("DELETE FROM cursors WHERE collection = ?", (collection,))
            else:
                db.execute("INSERT OR REPLACE INTO cursors (collection, cursor) VALUES (?, ?)", (collection, cursor))
        if change.clock is not None:
            db.executemany(
                "INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)",
                [("clock_millis", str(change.clock[0])), ("clock_counter", str(change.clock[1]))],
            )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
