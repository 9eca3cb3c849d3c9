"""What is particular to the SQLite ledger: the file, WAL, purging, threads, URIs."""

from __future__ import annotations

import gc
import math
import sqlite3
import threading
from pathlib import Path

import pytest

from budgetwarden.ledger import Charge
from budgetwarden.ledger.sqlite import SQLiteLedger


def test_the_file_is_created_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "spend.db"
    SQLiteLedger(f"sqlite:///{path}").commit("r", [Charge("k", 1.0, 2.0, math.inf)], now=1)
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_relative_paths_follow_the_three_slash_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    SQLiteLedger("sqlite:///spend.db").close()
    assert (tmp_path / "spend.db").exists()


@pytest.mark.parametrize(
    "uri",
    ["sqlite:///:memory:", "sqlite://", "sqlite://host/x.db", "sqlite:///x.db?busy=1"],
)
def test_unusable_uris_are_refused_with_advice(uri: str) -> None:
    with pytest.raises(ValueError, match=r"sqlite:///path/to/file\.db|timeout, synchronous"):
        SQLiteLedger(uri)


@pytest.mark.parametrize("value", ["abc", "-1", "inf", "nan"])
def test_a_timeout_that_is_not_seconds_is_refused_naming_the_option(
    value: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=f"SQLite ledger option timeout='{value}'"):
        SQLiteLedger(f"sqlite:///{tmp_path / 'spend.db'}?timeout={value}")


def test_threads_share_one_file_safely(tmp_path: Path) -> None:
    ledger = SQLiteLedger(f"sqlite:///{tmp_path / 'spend.db'}")
    granted = []

    def spend(worker: int) -> None:
        for n in range(50):
            rid = f"{worker}-{n}"
            charge = Charge("k", 1.0, 100.0, math.inf)
            if ledger.reserve(rid, [charge], now=1, lease_until=99).ok:
                ledger.commit(rid, [charge], now=1)
                granted.append(rid)

    threads = [threading.Thread(target=spend, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(granted) == 100
    assert ledger.state("k", now=2).committed == 100.0
    ledger.close()


def test_purge_forgets_ended_windows_expired_holds_and_marks(tmp_path: Path) -> None:
    path = tmp_path / "spend.db"
    ledger = SQLiteLedger(f"sqlite:///{path}")
    ledger.commit("c", [Charge("ended", 1.0, 5.0, 100.0)], now=50)
    ledger.reserve("r", [Charge("live", 1.0, 5.0, math.inf)], now=50, lease_until=150)
    ledger.mark_once("alert|ended|0.5", expires_at=100.0)
    ledger._next_purge = 0.0  # purge at the next write
    ledger.commit("c2", [Charge("live", 1.0, 5.0, math.inf)], now=200)
    db = sqlite3.connect(path)
    assert [r[0] for r in db.execute("SELECT key FROM buckets")] == ["live"]
    assert db.execute("SELECT COUNT(*) FROM holds").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM marks").fetchone()[0] == 0
    assert ledger.mark_once("alert|ended|0.5", expires_at=100.0)


async def test_async_twins_run_in_a_worker_thread(tmp_path: Path) -> None:
    ledger = SQLiteLedger(f"sqlite:///{tmp_path / 'spend.db'}")
    seen: list[str] = []
    original = ledger.reserve

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(threading.current_thread().name)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    ledger.reserve = spy  # type: ignore[method-assign]
    await ledger.areserve("r", [Charge("k", 1.0, 2.0, math.inf)], now=1, lease_until=9)
    assert seen and seen[0] != threading.main_thread().name


def test_a_finished_thread_takes_its_connection_with_it(tmp_path: Path) -> None:
    ledger = SQLiteLedger(f"sqlite:///{tmp_path / 'spend.db'}")
    threads = [
        threading.Thread(target=ledger.state, args=("k",), kwargs={"now": 1}) for _ in range(5)
    ]
    for thread in threads:
        thread.start()
        thread.join()
    gc.collect()
    assert len(ledger._connections) == 1  # only the main thread's is still open
    ledger.close()
    assert len(ledger._connections) == 0


def test_a_file_that_is_not_a_database_is_named_with_what_to_do(tmp_path: Path) -> None:
    """It raised sqlite3.DatabaseError ("file is not a database"), with no path and no fix."""
    from budgetwarden.errors import LedgerUnavailable
    from budgetwarden.ledger import open_ledger

    junk = tmp_path / "spend.db"
    junk.write_bytes(b"not a database, just some bytes " * 64)
    with pytest.raises(LedgerUnavailable, match=rf"{junk} is not a sound SQLite file; move it"):
        open_ledger(f"sqlite:///{junk}")


def test_an_integrity_error_is_a_bug_and_not_a_ledger_fault(tmp_path: Path) -> None:
    ledger = SQLiteLedger(f"sqlite:///{tmp_path / 'spend.db'}")
    with pytest.raises(sqlite3.IntegrityError), ledger._write() as db:
        db.execute("INSERT INTO buckets (key, committed, expires_at) VALUES ('k', NULL, 1)")


def test_a_directory_that_cannot_be_made_is_a_ledger_fault_that_says_so(tmp_path) -> None:
    from budgetwarden.errors import LedgerUnavailable
    from budgetwarden.ledger import open_ledger

    made = open_ledger(f"sqlite:///{tmp_path / 'new' / 'dir' / 'spend.db'}")  # made for you
    made.close()
    assert (tmp_path / "new" / "dir" / "spend.db").exists()
    (tmp_path / "a-file").write_text("not a directory")
    with pytest.raises(LedgerUnavailable, match="cannot create the directory"):
        open_ledger(f"sqlite:///{tmp_path / 'a-file' / 'sub' / 'spend.db'}")
