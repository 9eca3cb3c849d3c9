"""SQLiteLedger: durable budgets shared by every process on one host. ``sqlite:///path.db``.

Every reserve, commit and release is one ``BEGIN IMMEDIATE`` transaction, so it is atomic
across all of its charges and serialised with every other process using the file. The
database runs in WAL mode (readers never wait for the writer); a writer waits up to the busy
timeout for the lock, then the call fails with ``LedgerUnavailable`` and the warden applies
its fault policy. Each thread has its own connection; a forked child opens new ones.

URI: ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (three slashes then the
path, as SQLAlchemy spells it), with optional ``?timeout=<seconds>`` (busy timeout, default 5)
and ``?synchronous=normal|full`` (``normal``, the default, survives a crashed or killed
process; ``full`` also survives a power cut, at one fsync per operation).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from ..errors import LedgerUnavailable
from .base import COMMIT_MEMORY_SECONDS, BucketState, Charge, ReserveOutcome, SyncLedger

__all__ = ["SQLiteLedger"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets (
    key TEXT PRIMARY KEY,
    committed REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS holds (
    rid TEXT NOT NULL,
    key TEXT NOT NULL,
    amount REAL NOT NULL,
    lease_until REAL NOT NULL,
    PRIMARY KEY (rid, key)
);
CREATE INDEX IF NOT EXISTS holds_by_key ON holds (key, lease_until);
CREATE INDEX IF NOT EXISTS holds_by_lease ON holds (lease_until);
CREATE TABLE IF NOT EXISTS marks (key TEXT PRIMARY KEY, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS cancels (target TEXT PRIMARY KEY, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS commits (rid TEXT PRIMARY KEY, until REAL NOT NULL);
CREATE TABLE IF NOT EXISTS vals (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL);
"""
_PURGE_EVERY_SECONDS = 60.0
_SYNCHRONOUS = ("normal", "full")


@dataclass(frozen=True, slots=True)
class _Options:
    path: str
    busy_timeout: float
    synchronous: str


def _parse_uri(uri: str) -> _Options:
    """The file and options of a ``sqlite:///path`` URI."""
    parts = urlsplit(uri)
    if parts.scheme.lower() != "sqlite" or parts.netloc or not parts.path.startswith("/"):
        raise ValueError(f"bad SQLite ledger URI {uri!r}: use sqlite:///path/to/file.db")
    path = parts.path[1:]
    if not path or path == ":memory:":
        raise ValueError(
            f"SQLite ledger URI {uri!r} names no file: use sqlite:///path/to/file.db "
            "(memory:// is the in-process ledger)"
        )
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = sorted(set(query) - {"timeout", "synchronous"})
    if unknown:
        raise ValueError(f"unknown SQLite ledger option(s) {unknown}: use timeout, synchronous")
    synchronous = query.get("synchronous", "normal").lower()
    if synchronous not in _SYNCHRONOUS:
        raise ValueError(f"synchronous={synchronous!r}: use normal or full")
    return _Options(path, float(query.get("timeout", "5")), synchronous)


class SQLiteLedger(SyncLedger):
    """A ledger in one SQLite file, safe across threads and processes on one host.

    ``SQLiteLedger("sqlite:///spend.db")``; the file and its tables are created on first use.
    Async twins run in a worker thread, so a waiting writer never blocks an event loop.
    """

    offload = True

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._options = _parse_uri(uri)
        self._pid = os.getpid()
        self._local = threading.local()
        self._lock = threading.Lock()
        # Weak: a thread that ends takes its connection with it; close() closes the others.
        self._connections: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._orphans: list[_Connection] = []  # inherited across fork: never touched
        self._next_purge = 0.0
        Path(self._options.path).parent.mkdir(parents=True, exist_ok=True)
        self._connection()  # creates the schema now, so a bad path fails here

    # ------------------------------------------------------------------ Ledger protocol
    def reserve(
        self,
        reservation_id: str,
        charges: Sequence[Charge],
        *,
        now: float,
        lease_until: float,
        watch: Sequence[str] = (),
    ) -> ReserveOutcome:
        """Reserve all charges or none, within each bucket's limit, in one transaction."""
        with self._write(now) as db:
            target = _first_cancelled(db, watch)
            if target is not None:
                return ReserveOutcome(ok=False, cancelled=target)
            states = []
            for charge in charges:
                state = _bucket_state(db, charge.key, charge.limit, now)
                if charge.amount > 0 and state.committed + state.reserved + charge.amount > (
                    charge.limit
                ):
                    return ReserveOutcome.refusal(state, charge.amount)
                states.append(state)
            for charge in charges:
                _hold(db, reservation_id, charge, lease_until)
            return ReserveOutcome.granted(states, charges)

    def commit(
        self, reservation_id: str, charges: Sequence[Charge], *, now: float
    ) -> tuple[BucketState, ...]:
        """Drop the reservation and add the real amounts, once per reservation id, in one
        transaction."""
        with self._write(now) as db:
            db.execute("DELETE FROM holds WHERE rid = ?", (reservation_id,))
            first = (
                db.execute(
                    "INSERT INTO commits (rid, until) VALUES (?, ?) ON CONFLICT (rid) DO NOTHING",
                    (reservation_id, now + COMMIT_MEMORY_SECONDS),
                ).rowcount
                == 1
            )
            states = []
            for charge in charges:
                _add(db, charge if first else replace(charge, amount=0.0))
                states.append(_bucket_state(db, charge.key, charge.limit, now))
            return tuple(states)

    def release(self, reservation_id: str, *, now: float) -> None:
        """Drop the reservation; nothing is spent."""
        with self._write(now) as db:
            db.execute("DELETE FROM holds WHERE rid = ?", (reservation_id,))

    def state(self, key: str, *, now: float, limit: float = 0.0) -> BucketState:
        """A bucket's committed spend and live reservations (zero once its window ended)."""
        with self._read() as db:
            row = db.execute("SELECT expires_at FROM buckets WHERE key = ?", (key,)).fetchone()
            if row is None or row[0] <= now:
                return BucketState(key, 0.0, 0.0, limit)
            return _bucket_state(db, key, limit, now)

    def mark_once(self, key: str, *, expires_at: float) -> bool:
        """True the first time ``key`` is marked (until it is purged after ``expires_at``)."""
        with self._read() as db:
            cursor = db.execute(
                "INSERT INTO marks (key, expires_at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                (key, expires_at),
            )
            return cursor.rowcount == 1

    def cancel(self, target: str, *, reason: str = "") -> None:
        """Set a cancel marker, kept until lifted."""
        with self._read() as db:
            db.execute(
                "INSERT INTO cancels (target, reason) VALUES (?, ?) "
                "ON CONFLICT (target) DO UPDATE SET reason = excluded.reason",
                (target, reason),
            )

    def uncancel(self, target: str) -> None:
        """Lift a cancel marker."""
        with self._read() as db:
            db.execute("DELETE FROM cancels WHERE target = ?", (target,))

    def cancelled(self, targets: Sequence[str]) -> str | None:
        """The first of ``targets`` that is cancelled, or None."""
        with self._read() as db:
            return _first_cancelled(db, targets)

    def put_value(self, key: str, value: str, *, expires_at: float | None = None) -> None:
        """Store ``value`` under ``key`` (until ``expires_at``, epoch seconds, if given)."""
        with self._read() as db:
            db.execute(
                "INSERT INTO vals (key, value, expires_at) VALUES (?, ?, ?) ON CONFLICT (key) "
                "DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                (key, value, expires_at),
            )

    def get_value(self, key: str) -> str | None:
        """The value stored under ``key``, or None (also once it expired)."""
        with self._read() as db:
            row = db.execute(
                "SELECT value FROM vals WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)",
                (key, time.time()),
            ).fetchone()
        return None if row is None else str(row[0])

    def delete_value(self, key: str) -> None:
        """Forget ``key``."""
        with self._read() as db:
            db.execute("DELETE FROM vals WHERE key = ?", (key,))

    def list_values(self, prefix: str) -> list[str]:
        """Every unexpired key that starts with ``prefix``, sorted."""
        with self._read() as db:
            rows = db.execute(
                "SELECT key FROM vals WHERE substr(key, 1, ?) = ? "
                "AND (expires_at IS NULL OR expires_at > ?) ORDER BY key",
                (len(prefix), prefix, time.time()),
            ).fetchall()
        return [str(row[0]) for row in rows]

    def close(self) -> None:
        """Close every connection this process opened."""
        with self._lock:
            connections = list(self._connections)
            self._connections = weakref.WeakSet()
            self._local = threading.local()
        if os.getpid() != self._pid:
            return
        for connection in connections:
            connection.close()

    # ------------------------------------------------------------------ connections
    @contextmanager
    def _write(self, now: float | None = None) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on error."""
        db = self._connection()
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise LedgerUnavailable(self.uri, exc) from exc
        try:
            yield db
            if now is not None:
                self._maybe_purge(db, now)
            db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            _rollback(db)
            raise LedgerUnavailable(self.uri, exc) from exc
        except BaseException:
            _rollback(db)
            raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A connection for one autocommit statement or a consistent read."""
        try:
            yield self._connection()
        except sqlite3.OperationalError as exc:
            raise LedgerUnavailable(self.uri, exc) from exc

    def _connection(self) -> _Connection:
        """This thread's connection, opened on first use (and again after a fork)."""
        if os.getpid() != self._pid:
            self._after_fork()
        db: _Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = self._open()
            self._local.db = db
            with self._lock:
                self._connections.add(db)
        return db

    def _after_fork(self) -> None:
        """Forget the parent's connections without closing them (they belong to it)."""
        self._orphans.extend(self._connections)
        self._connections = weakref.WeakSet()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def _open(self) -> _Connection:
        try:
            db = sqlite3.connect(
                self._options.path,
                timeout=self._options.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
                factory=_Connection,
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self._options.synchronous.upper()}")
            db.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}COMMIT;")
        except sqlite3.OperationalError as exc:
            raise LedgerUnavailable(self.uri, exc) from exc
        return db

    def _maybe_purge(self, db: sqlite3.Connection, now: float) -> None:
        """Now and then, forget expired holds, ended windows and expired marks."""
        tick = time.monotonic()
        if tick < self._next_purge:
            return
        self._next_purge = tick + _PURGE_EVERY_SECONDS
        _purge(db, now)


class _Connection(sqlite3.Connection):
    """A connection that can be weakly referenced (the C type cannot)."""


def _rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        with suppress(sqlite3.Error):
            db.execute("ROLLBACK")


def _first_cancelled(db: sqlite3.Connection, targets: Sequence[str]) -> str | None:
    if not targets:
        return None
    marks = ",".join("?" * len(targets))
    found = {
        row[0]
        for row in db.execute(f"SELECT target FROM cancels WHERE target IN ({marks})", targets)
    }
    return next((t for t in targets if t in found), None)


def _bucket_state(db: sqlite3.Connection, key: str, limit: float, now: float) -> BucketState:
    """Committed spend and live (unexpired) reservations of one bucket."""
    row = db.execute(
        "SELECT (SELECT committed FROM buckets WHERE key = ?), "
        "(SELECT TOTAL(amount) FROM holds WHERE key = ? AND lease_until > ?)",
        (key, key, now),
    ).fetchone()
    return BucketState(key, float(row[0] or 0.0), float(row[1]), limit)


def _hold(db: sqlite3.Connection, rid: str, charge: Charge, lease_until: float) -> None:
    db.execute(
        "INSERT INTO buckets (key, committed, expires_at) VALUES (?, 0.0, ?) "
        "ON CONFLICT (key) DO NOTHING",
        (charge.key, charge.expires_at),
    )
    db.execute(
        "INSERT OR REPLACE INTO holds (rid, key, amount, lease_until) VALUES (?, ?, ?, ?)",
        (rid, charge.key, charge.amount, lease_until),
    )


def _add(db: sqlite3.Connection, charge: Charge) -> None:
    db.execute(
        "INSERT INTO buckets (key, committed, expires_at) VALUES (?, ?, ?) "
        "ON CONFLICT (key) DO UPDATE SET committed = committed + excluded.committed",
        (charge.key, 0.0 + charge.amount, charge.expires_at),  # 0.0 + x, as memory adds
    )


def _purge(db: sqlite3.Connection, now: float) -> None:
    """Delete expired holds, buckets of ended windows (with no holds left) and expired marks."""
    db.execute("DELETE FROM holds WHERE lease_until <= ?", (now,))
    db.execute(
        "DELETE FROM buckets WHERE expires_at <= ? "
        "AND NOT EXISTS (SELECT 1 FROM holds WHERE holds.key = buckets.key)",
        (now,),
    )
    db.execute("DELETE FROM marks WHERE expires_at <= ?", (now,))
    db.execute("DELETE FROM commits WHERE until <= ?", (now,))
    db.execute("DELETE FROM vals WHERE expires_at <= ?", (time.time(),))  # values: real time
