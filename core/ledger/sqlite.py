"""SQLiteLedger: durable budgets shared by every process on one host. ``sqlite:///path.db``.

Every reserve (with the commits it settles), commit, settle and release is one
``BEGIN IMMEDIATE`` transaction, so it is atomic across all of its charges and serialised with every
other process using the file. The database runs in WAL mode (readers never wait for the
writer); a writer waits up to the busy timeout for the lock, then the call fails with
``LedgerUnavailable`` and the warden applies its fault policy. Each thread has its own
connection; a forked child opens new ones.

URI: ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (three slashes then the
path, as SQLAlchemy spells it), with optional ``?timeout=<seconds>`` (busy timeout, default 5)
and ``?synchronous=normal|full`` (``normal``, the default, survives a crashed or killed
process; ``full`` also survives a power cut, at one fsync per operation).
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..errors import LedgerUnavailable
from .base import (
    COMMIT_MEMORY_SECONDS,
    LIMIT_SLACK,
    BucketState,
    Charge,
    ReserveOutcome,
    Settlement,
    SyncLedger,
    granted_outcome,
    latest_charges,
    new_state,
)

__all__ = ["SQLiteLedger"]

# WITHOUT ROWID tables and no index on holds' leases (the purge, once a minute, scans the few
# holds): each write touches fewer B-tree pages, and a write costs about what it adds to the
# WAL. Files made by earlier versions keep their layout; the statements work on both.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets (
    key TEXT PRIMARY KEY,
    committed REAL NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS holds (
    rid TEXT NOT NULL,
    key TEXT NOT NULL,
    amount REAL NOT NULL,
    lease_until REAL NOT NULL,
    PRIMARY KEY (rid, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS holds_by_key ON holds (key, lease_until);
CREATE TABLE IF NOT EXISTS marks (key TEXT PRIMARY KEY, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS cancels (target TEXT PRIMARY KEY, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS commits (rid TEXT PRIMARY KEY, until REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS vals (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL);
"""
#: Page size of a new file: small pages make smaller WAL frames (an operation writes one frame
#: per page it changes), about a fifth less time per operation than 4096 here.
_PAGE_SIZE = 1024
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
    return _Options(path, _busy_timeout(query.get("timeout", "5")), synchronous)


def _busy_timeout(text: str) -> float:
    """``?timeout=`` as seconds >= 0 (how long a writer waits for the lock)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(
            f"SQLite ledger option timeout={text!r} is not a number of seconds: use, for "
            "example, timeout=5 (how long a writer waits for the lock)"
        )
    return value


class SQLiteLedger(SyncLedger):
    """A ledger in one SQLite file, safe across threads and processes on one host.

    ``SQLiteLedger("sqlite:///spend.db")``; the file and its tables are created on first use.
    Async twins run in a worker thread, so a waiting writer never blocks an event loop.
    """

    offload = True
    settles = True

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
        self._make_directory()
        try:
            self._connection()  # creates the schema now, so a bad path fails here
        except LedgerUnavailable as exc:
            if not _busy(exc.__cause__):
                raise
            # A lock another process holds passes: the schema is made at the first call,
            # which meets the lock, if it is still held, as a fault the policy decides on.

    def _make_directory(self) -> None:
        """Create the file's directory when it is missing (``sqlite:///data/spend.db``); one
        that cannot be made is a ``LedgerUnavailable`` that says which."""
        directory = Path(self._options.path).parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            reason = f"cannot create the directory {directory} ({exc.strerror or exc})"
            raise LedgerUnavailable(
                self.uri, f"{reason}: point the URI at a directory this user can write"
            ) from exc

    # ------------------------------------------------------------------ Ledger protocol
    def reserve(
        self,
        reservation_id: str,
        charges: Sequence[Charge],
        *,
        now: float,
        lease_until: float,
        watch: Sequence[str] = (),
        settle: Sequence[Settlement] = (),
    ) -> ReserveOutcome:
        """Apply the settlements, then reserve all charges or none, within each bucket's
        limit: one transaction."""
        with self._write(now) as db:
            if settle:
                _settle(db, settle, now)
            if watch:
                target = _first_cancelled(db, watch)
                if target is not None:
                    return ReserveOutcome(ok=False, cancelled=target)
            if not charges:
                return granted_outcome(())
            found = _read_buckets(db, charges, now)
            states = []
            missing = []
            for charge in charges:
                committed, reserved = found[charge.key]
                if committed is None:
                    committed = 0.0
                    missing.append(charge)
                amount = charge.amount
                if amount > 0 and committed + reserved + amount > charge.limit + LIMIT_SLACK:
                    state = BucketState(charge.key, committed, reserved, charge.limit)
                    return ReserveOutcome.refusal(state, amount)
                states.append(new_state(charge.key, committed, reserved + amount, charge.limit))
            if missing:  # a hold's bucket row exists (purge keeps a bucket while it has holds)
                _many(
                    db,
                    "INSERT INTO buckets (key, committed, expires_at) VALUES {} "
                    "ON CONFLICT (key) DO NOTHING",
                    "(?, 0.0, ?)",
                    [(c.key, c.expires_at) for c in missing],
                )
            _many(
                db,
                "INSERT OR REPLACE INTO holds (rid, key, amount, lease_until) VALUES {}",
                "(?, ?, ?, ?)",
                [(reservation_id, c.key, c.amount, lease_until) for c in charges],
            )
            return granted_outcome(tuple(states))

    def commit(
        self, reservation_id: str, charges: Sequence[Charge], *, now: float
    ) -> tuple[BucketState, ...]:
        """Drop the reservation and add the real amounts, once per reservation id, in one
        transaction."""
        with self._write(now) as db:
            db.execute("DELETE FROM holds WHERE rid = ?", (reservation_id,))
            first = _first_commit(db, reservation_id, now)
            if not charges:
                return ()
            found = _read_buckets(db, charges, now)  # before the adds; states computed here
            committed = {key: c or 0.0 for key, (c, _) in found.items()}
            states = []
            for charge in charges:
                if first:  # the same sum SQLite makes below: committed + (0.0 + amount)
                    committed[charge.key] += 0.0 + charge.amount
                states.append(
                    new_state(charge.key, committed[charge.key], found[charge.key][1], charge.limit)
                )
            if first:
                _add(db, charges)
            return tuple(states)

    def settle(self, settlements: Sequence[Settlement], *, now: float) -> tuple[BucketState, ...]:
        """Apply several commits, each as ``commit`` would, in one transaction; the buckets
        they charged, after them."""
        if not settlements:
            return ()
        charges = latest_charges(settlements)
        with self._write(now) as db:
            _settle(db, settlements, now)
            found = _read_buckets(db, charges, now)
        return tuple(
            new_state(c.key, found[c.key][0] or 0.0, found[c.key][1], c.limit) for c in charges
        )

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
        except sqlite3.DatabaseError as exc:
            raise self._unavailable(exc) from exc
        try:
            yield db
            if now is not None:
                self._maybe_purge(db, now)
            db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            _rollback(db)
            raise self._unavailable(exc) from exc
        except BaseException:
            _rollback(db)
            raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A connection for one autocommit statement or a consistent read."""
        try:
            yield self._connection()
        except sqlite3.DatabaseError as exc:
            raise self._unavailable(exc) from exc

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
        """A new connection with the ledger's settings and schema (closed if they fail)."""
        try:
            db = sqlite3.connect(
                self._options.path,
                timeout=self._options.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
                factory=_Connection,
            )
        except sqlite3.DatabaseError as exc:
            raise self._unavailable(exc) from exc
        try:
            db.execute(f"PRAGMA page_size={_PAGE_SIZE}")  # no effect on an existing file
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self._options.synchronous.upper()}")
            db.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}COMMIT;")
        except sqlite3.DatabaseError as exc:
            db.close()
            raise self._unavailable(exc) from exc
        return db

    def _unavailable(self, error: sqlite3.DatabaseError) -> LedgerUnavailable:
        """A lock held too long, a file that cannot be written or is not a database: a fault
        (the policy decides), with what to do when it is not a passing lock. Any other error
        (an IntegrityError: a bug) is raised as it is."""
        if (
            not isinstance(error, sqlite3.OperationalError)
            and type(error) is not sqlite3.DatabaseError
        ):
            raise error
        text = str(error)
        path = self._options.path
        if "not a database" in text or "malformed" in text:
            text += f": {path} is not a sound SQLite file; move it away or point the URI elsewhere"
        elif "readonly" in text or "unable to open" in text:
            text += f": check that this user can write {path} and its directory"
        return LedgerUnavailable(self.uri, text)

    def _maybe_purge(self, db: sqlite3.Connection, now: float) -> None:
        """Now and then, forget expired holds, ended windows and expired marks."""
        tick = time.monotonic()
        if tick < self._next_purge:
            return
        self._next_purge = tick + _PURGE_EVERY_SECONDS
        _purge(db, now)


def _busy(error: BaseException | None) -> bool:
    """Whether ``error`` is SQLite's "database is locked": another connection held the lock
    longer than the busy timeout (it passes; a file that cannot be used does not)."""
    return isinstance(error, sqlite3.OperationalError) and getattr(
        error, "sqlite_errorcode", None
    ) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


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


#: Rows per multi-row statement: 4 parameters each stay under SQLite's oldest limit (999).
_ROWS = 200


@lru_cache(maxsize=256)
def _sql(template: str, row: str, count: int) -> str:
    """``template`` with ``count`` copies of ``row`` (a VALUES list or IN list)."""
    return template.format(", ".join([row] * count))


def _many(db: sqlite3.Connection, template: str, row: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """One statement for many rows (in order, so upserts apply one after another)."""
    for at in range(0, len(rows), _ROWS):
        chunk = rows[at : at + _ROWS]
        db.execute(_sql(template, row, len(chunk)), [v for r in chunk for v in r])


def _read_buckets(
    db: sqlite3.Connection, charges: Sequence[Charge], now: float
) -> dict[str, tuple[float | None, float]]:
    """Each charged bucket's committed spend (None without a row) and live reservations:
    one statement."""
    keys = list(dict.fromkeys(c.key for c in charges))
    found: dict[str, tuple[float | None, float]] = {}
    for at in range(0, len(keys), _ROWS):
        chunk = keys[at : at + _ROWS]
        sql = _sql(
            "WITH k(key) AS (VALUES {}) SELECT k.key, b.committed, "
            "(SELECT TOTAL(amount) FROM holds h WHERE h.key = k.key AND h.lease_until > ?) "
            "FROM k LEFT JOIN buckets b ON b.key = k.key",
            "(?)",
            len(chunk),
        )
        for key, committed, reserved in db.execute(sql, [*chunk, now]):
            found[key] = (None if committed is None else float(committed), float(reserved))
    return found


def _first_commit(db: sqlite3.Connection, rid: str, now: float) -> bool:
    """Remember ``rid`` as committed; True if it was not already."""
    cursor = db.execute(
        "INSERT INTO commits (rid, until) VALUES (?, ?) ON CONFLICT (rid) DO NOTHING",
        (rid, now + COMMIT_MEMORY_SECONDS),
    )
    return cursor.rowcount == 1


def _add(db: sqlite3.Connection, charges: Sequence[Charge]) -> None:
    """Add the amounts to their buckets (created if missing), one after another."""
    _many(
        db,
        "INSERT INTO buckets (key, committed, expires_at) VALUES {} "
        "ON CONFLICT (key) DO UPDATE SET committed = committed + excluded.committed",
        "(?, ?, ?)",
        [(c.key, 0.0 + c.amount, c.expires_at) for c in charges],  # 0.0 + x, as memory adds
    )


def _settle(db: sqlite3.Connection, settlements: Sequence[Settlement], now: float) -> None:
    """Each settlement as ``commit`` applies it (states aside): drop its holds, then add its
    amounts if its reservation id is not committed yet. Three statements for any number."""
    if len(settlements) == 1:
        rid, charges = settlements[0]
        db.execute("DELETE FROM holds WHERE rid = ?", (rid,))
        if _first_commit(db, rid, now) and charges:
            _add(db, charges)
        return
    rids = list(dict.fromkeys(rid for rid, _ in settlements))
    done: set[str] = set()
    for at in range(0, len(rids), _ROWS):
        chunk = rids[at : at + _ROWS]
        db.execute(_sql("DELETE FROM holds WHERE rid IN ({})", "?", len(chunk)), chunk)
        done.update(
            row[0]
            for row in db.execute(
                _sql("SELECT rid FROM commits WHERE rid IN ({})", "?", len(chunk)), chunk
            )
        )
    fresh = [rid for rid in rids if rid not in done]
    if fresh:
        until = now + COMMIT_MEMORY_SECONDS
        _many(
            db,
            "INSERT INTO commits (rid, until) VALUES {} ON CONFLICT (rid) DO NOTHING",
            "(?, ?)",
            [(rid, until) for rid in fresh],
        )
    first = set(fresh)
    charges = []
    for rid, settled in settlements:
        if rid in first:
            first.discard(rid)  # a reservation id repeated in the list commits once
            charges.extend(settled)
    if charges:
        _add(db, charges)


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
