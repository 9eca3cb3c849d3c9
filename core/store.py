"""The event store: every event in one SQLite file, and one reader for it and for JSONL.

``SQLiteEventStore("events.db")`` is a sink (``Warden(policy, sinks=[store])``) that writes
every ``CostEvent``, ``BudgetAlert`` and ``Notice`` to a table with the columns reports
filter and group on (time, type, run, agent, workflow, task class, user, workspace, model,
cost) plus the whole event as JSON (null fields left out), indexed by time, by type and time,
and by run (add your own for other ad-hoc queries). The file runs in WAL mode: any number
of processes on one host may write to it at once (each insert is its own ``BEGIN IMMEDIATE``
transaction; a busy writer waits up to ``timeout`` seconds) while readers never wait.
``batch_size > 1`` buffers events and writes them in one transaction: when ``batch_size``
events are waiting, when an event arrives ``flush_seconds`` after the oldest waiting one, on
``flush()``/``close()``, and at interpreter exit.

``load_events(path)`` reads a store or a ``JSONLSink`` file into the same ``Event`` objects;
every report, the dashboard and the alert evaluator read through it.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .events import BudgetAlert, CostEvent, Event, Notice, event_from_dict

__all__ = ["LoadedEvents", "SQLiteEventStore", "is_sqlite_file", "load_events", "write_jsonl"]

_log = logging.getLogger("budgetwarden")
_SQLITE_MAGIC = b"SQLite format 3\x00"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    type TEXT NOT NULL,
    run_id TEXT,
    agent TEXT,
    workflow TEXT,
    task_class TEXT,
    "user" TEXT,
    workspace TEXT,
    model TEXT,
    cost_usd REAL NOT NULL DEFAULT 0,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_ts ON events (ts);
CREATE INDEX IF NOT EXISTS events_by_type_ts ON events (type, ts);
CREATE INDEX IF NOT EXISTS events_by_run ON events (run_id);
CREATE TABLE IF NOT EXISTS alert_marks (key TEXT PRIMARY KEY, ts REAL NOT NULL);
"""
_INSERT = (
    'INSERT INTO events (ts, type, run_id, agent, workflow, task_class, "user", workspace, '
    "model, cost_usd, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
Progress = Callable[[int, int], None]


def _row(event: Event) -> tuple[Any, ...]:
    """The column values of one event, its JSON last (null fields left out)."""
    data = event.model_dump(mode="json", exclude_none=True)
    data["type"] = event.type
    cost = event.cost_usd if isinstance(event, CostEvent) else 0.0
    model = event.model if isinstance(event, CostEvent) else None
    return (
        event.ts,
        event.type,
        event.run_id,
        event.agent,
        event.workflow,
        event.task_class,
        event.user,
        event.workspace,
        model,
        cost,
        json.dumps(data, default=str, separators=(",", ":")),
    )


class SQLiteEventStore:
    """A sink that keeps every event in one SQLite file, safe across threads and processes.

    ``path``: the database file (created with its tables on first use). ``batch_size``: events
    written per transaction (1, the default, writes each event at once). ``flush_seconds``:
    the longest a buffered event waits when ``batch_size > 1``. ``timeout``: seconds a writer
    waits for another process's lock before the batch is dropped with a logged error.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        batch_size: int = 1,
        flush_seconds: float = 1.0,
        timeout: float = 30.0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
        self.path = Path(path)
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.timeout = timeout
        self._pid = os.getpid()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._buffer: list[tuple[Any, ...]] = []
        self._oldest = 0.0
        self._connections: list[sqlite3.Connection] = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connection()  # creates the schema now, so a bad path fails here
        if batch_size > 1:
            atexit.register(_flush_at_exit, weakref.ref(self))

    # ------------------------------------------------------------------ the sink
    def emit(self, event: Event) -> None:
        """Store one event (or buffer it when batching); I/O errors are logged, never raised."""
        row = _row(event)
        with self._lock:
            if not self._buffer:
                self._oldest = time.monotonic()
            self._buffer.append(row)
            due = (
                len(self._buffer) >= self.batch_size
                or time.monotonic() - self._oldest >= self.flush_seconds
            )
            rows = self._take() if due else []
        if rows:
            self._write(rows)

    def flush(self) -> None:
        """Write every buffered event now."""
        with self._lock:
            rows = self._take()
        if rows:
            self._write(rows)

    def close(self) -> None:
        """Flush, then close this process's connections."""
        self.flush()
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()
        self._local = threading.local()

    def __enter__(self) -> SQLiteEventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ alert marks
    def mark_once(self, key: str, ts: float | None = None) -> bool:
        """Record ``key``; True the first time any process records it, False after that."""
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO alert_marks (key, ts) VALUES (?, ?)",
                (key, time.time() if ts is None else ts),
            )
            return cursor.rowcount == 1

    def forget(self, key: str) -> None:
        """Drop an alert key so that alert can fire again."""
        with self._transaction() as db:
            db.execute("DELETE FROM alert_marks WHERE key = ?", (key,))

    def marks(self) -> dict[str, float]:
        """Every recorded alert key and when it was recorded."""
        rows = self._connection().execute("SELECT key, ts FROM alert_marks").fetchall()
        return {str(key): float(ts) for key, ts in rows}

    # ------------------------------------------------------------------ reading
    def read(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        progress: Progress | None = None,
    ) -> LoadedEvents:
        """Events with ``since <= ts < until``, in time order (flushes this store's buffer)."""
        self.flush()
        return _read_sqlite(self._connection(), str(self.path), since, until, progress)

    def count(self) -> int:
        """How many events the file holds."""
        self.flush()
        return int(self._connection().execute("SELECT COUNT(*) FROM events").fetchone()[0])

    # ------------------------------------------------------------------ internals
    def _take(self) -> list[tuple[Any, ...]]:
        rows, self._buffer = self._buffer, []
        return rows

    def _write(self, rows: Sequence[tuple[Any, ...]]) -> None:
        try:
            with self._transaction() as db:
                db.executemany(_INSERT, rows)
        except sqlite3.Error as exc:
            _log.error(
                "budgetwarden event store %s: %d event(s) lost: %s", self.path, len(rows), exc
            )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _connection(self) -> sqlite3.Connection:
        if os.getpid() != self._pid:  # a forked child: never touch the parent's connections
            self._pid = os.getpid()
            self._local = threading.local()
            self._connections = []
            self._buffer = []
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = _open(self.path, self.timeout)
            self._local.db = db
            with self._lock:
                self._connections.append(db)
        return db


def _open(path: Path, timeout: float) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    db.executescript(_SCHEMA)
    return db


def _flush_at_exit(ref: weakref.ReferenceType[SQLiteEventStore]) -> None:
    store = ref()
    if store is not None:
        store.flush()


# ====================================================================== reading


@dataclass(slots=True)
class LoadedEvents:
    """Events read from a store or a JSONL file, and how many records could not be read."""

    events: list[Event] = field(default_factory=list)
    skipped: int = 0
    source: str = ""


def is_sqlite_file(path: str | os.PathLike[str]) -> bool:
    """True when the file starts with SQLite's header (an event store), else JSONL."""
    try:
        with Path(path).open("rb") as handle:
            return handle.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC
    except OSError:
        return False


def load_events(
    path: str | os.PathLike[str],
    *,
    since: float | None = None,
    until: float | None = None,
    progress: Progress | None = None,
) -> LoadedEvents:
    """Read events with ``since <= ts < until`` from an event store or a JSONL file.

    The format is recognised by content (SQLite's header), not by the file name. Lines or rows
    that are not events (a line cut short by a writer, an unknown event type) are skipped and
    counted in ``skipped``; a JSONL file none of whose lines is an event (a YAML file, a CSV)
    is a ``ValueError``. ``progress(done, total)`` is called as reading advances.
    """
    source = Path(path)
    if not source.exists():
        raise FileNotFoundError(f"no event file at {source}: point --events at a .db or .jsonl")
    if is_sqlite_file(source):
        db = sqlite3.connect(source, timeout=30.0)
        try:
            return _read_sqlite(db, str(source), since, until, progress)
        except sqlite3.OperationalError as exc:
            raise ValueError(
                f"{source} is a SQLite file but not a budgetwarden event store ({exc}); "
                "write one with SQLiteEventStore(path) as a Warden sink"
            ) from exc
        except sqlite3.DatabaseError as exc:  # a damaged file: not a database, malformed
            raise ValueError(
                f"{source} is a damaged SQLite file ({exc}): restore it from a backup, or "
                "read the JSONL copy if you keep one"
            ) from exc
        finally:
            db.close()
    return _read_jsonl(source, since, until, progress)


def _parse(data: Any) -> Event | None:
    if not isinstance(data, dict):
        return None
    try:
        return event_from_dict(data)
    except (KeyError, ValidationError, ValueError, TypeError):
        return None


def _within(ts: float, since: float | None, until: float | None) -> bool:
    return (since is None or ts >= since) and (until is None or ts < until)


def _read_sqlite(
    db: sqlite3.Connection,
    name: str,
    since: float | None,
    until: float | None,
    progress: Progress | None,
) -> LoadedEvents:
    clauses, args = [], []
    if since is not None:
        clauses.append("ts >= ?")
        args.append(since)
    if until is not None:
        clauses.append("ts < ?")
        args.append(until)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    total = int(db.execute(f"SELECT COUNT(*) FROM events{where}", args).fetchone()[0])
    loaded = LoadedEvents(source=name)
    cursor = db.execute(f"SELECT data FROM events{where} ORDER BY ts, id", args)
    for done, (text,) in enumerate(cursor, start=1):
        _keep(loaded, _decode(text))
        if progress is not None and (done % 5000 == 0 or done == total):
            progress(done, total)
    return loaded


_FAST = {f'"type":"{cls.__name__}"}}': cls for cls in (CostEvent, BudgetAlert, Notice)}


def _decode(text: str) -> Event | None:
    """One event from its JSON; lines ending with their type (as written) skip ``json.loads``."""
    for ending, cls in _FAST.items():
        if text.endswith(ending):
            try:
                return cls.model_validate_json(text)  # type: ignore[return-value]
            except ValidationError:
                return None
    try:
        return _parse(json.loads(text))
    except json.JSONDecodeError:
        return None


def _keep(loaded: LoadedEvents, event: Event | None) -> None:
    if event is None:
        loaded.skipped += 1
    else:
        loaded.events.append(event)


def _read_jsonl(
    path: Path, since: float | None, until: float | None, progress: Progress | None
) -> LoadedEvents:
    total = path.stat().st_size
    loaded = LoadedEvents(source=str(path))
    done = readable = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            done += len(raw)
            line = raw.strip()
            if line:
                event = _decode(line.decode("utf-8", errors="replace"))
                readable += event is not None
                if event is None or _within(event.ts, since, until):
                    _keep(loaded, event)
            if progress is not None and (number % 5000 == 0 or done == total):
                progress(done, total)
    _refuse_if_no_event(path, readable, loaded.skipped)
    loaded.events.sort(key=lambda e: e.ts)
    return loaded


def _refuse_if_no_event(path: Path, readable: int, skipped: int) -> None:
    """A file with lines and not one event in them is not an event file at all."""
    if skipped and not readable:
        raise ValueError(
            f"{path} is not an event file: none of its {skipped} lines is a budgetwarden "
            "event; point --events at an event store (.db) or a JSONL file written by JSONLSink"
        )


def write_jsonl(events: Iterable[Event], path: str | os.PathLike[str]) -> None:
    """Write events as JSONL (the ``JSONLSink`` format), replacing the file."""
    with Path(path).open("w", encoding="utf-8") as handle:
        for event in events:
            handle.write(json.dumps(event.to_dict(), default=str, separators=(",", ":")) + "\n")
