"""Settling, on all three backends: commits carried by a reservation (``reserve(settle=...)``)
or several at once (``settle``), each applied exactly as ``commit`` would, in one operation."""

from __future__ import annotations

import math
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from budgetwarden.ledger import BucketState, Charge, Ledger, MemoryLedger, open_ledger
from budgetwarden.ledger.base import SettlingLedger
from budgetwarden.ledger.redis import RedisLedger
from budgetwarden.ledger.sqlite import SQLiteLedger

from .conftest import RedisServer

END = 1_000.0


def charge(key: str, amount: float, limit: float = 10.0, end: float = END) -> Charge:
    return Charge(key, amount, limit, end)


@pytest.fixture
def ledger(ledger_uri: str) -> Iterator[Any]:
    opened = open_ledger(ledger_uri)
    assert getattr(opened, "settles", False)
    yield opened
    opened.close()


def seen(ledger: Ledger, *keys: str, now: float = 5) -> list[tuple[float, float]]:
    return [(s.committed, s.reserved) for s in (ledger.state(k, now=now) for k in keys)]


def fresh(ledger_uri: str) -> Ledger:
    """Another ledger of the backend under test, empty (a new file or namespace)."""
    if ledger_uri.startswith("sqlite"):
        return open_ledger(ledger_uri.replace(".db", "-twin.db"))
    if ledger_uri.startswith("redis"):
        return open_ledger(ledger_uri.replace("namespace=", "namespace=twin"))
    return open_ledger("memory://")


def test_the_built_in_ledgers_settle(ledger: Any) -> None:
    assert isinstance(ledger, SettlingLedger)
    assert ledger.settles is True


def test_settling_in_a_reservation_equals_commit_then_reserve(ledger: Any, ledger_uri: str) -> None:
    other: Any = fresh(ledger_uri)
    try:
        for led in (ledger, other):
            led.commit("c0", [charge("a", 1.5)], now=1)
            assert led.reserve("r1", [charge("a", 4.0), charge("b", 2.0)], now=1, lease_until=99).ok
            led.reserve("r0", [charge("b", 1.0)], now=1, lease_until=99)
        real = [charge("a", 3.0), charge("b", 1.25)]
        other.commit("r1", real, now=2)
        expected = other.reserve("r2", [charge("a", 2.0), charge("c", 1.0)], now=2, lease_until=99)
        got = ledger.reserve(
            "r2", [charge("a", 2.0), charge("c", 1.0)], now=2, lease_until=99, settle=[("r1", real)]
        )
        assert got == expected
        assert [(s.key, s.committed, s.reserved) for s in got.states] == [
            ("a", 4.5, 2.0),
            ("c", 0.0, 1.0),
        ]
        for key in ("a", "b", "c"):
            assert ledger.state(key, now=3) == other.state(key, now=3)
        assert seen(ledger, "a", "b") == [(4.5, 2.0), (1.25, 1.0)]  # r1's holds are gone
    finally:
        other.close()


def test_a_settlement_is_kept_when_the_reservation_is_refused(ledger: Any) -> None:
    assert ledger.reserve("r1", [charge("a", 5.0)], now=1, lease_until=99).ok
    outcome = ledger.reserve(
        "r2", [charge("a", 2.0)], now=2, lease_until=99, settle=[("r1", [charge("a", 9.0)])]
    )
    assert not outcome.ok
    assert outcome.refused is not None
    assert (outcome.refused.committed, outcome.refused.reserved) == (9.0, 0.0)  # after settling
    assert outcome.refused_amount == 2.0
    assert seen(ledger, "a") == [(9.0, 0.0)]


def test_a_settlement_is_kept_when_a_watched_target_is_cancelled(ledger: Any) -> None:
    assert ledger.reserve("r1", [charge("a", 5.0)], now=1, lease_until=99).ok
    ledger.cancel("run=x")
    outcome = ledger.reserve(
        "r2",
        [charge("a", 1.0)],
        now=2,
        lease_until=99,
        watch=["user=u", "run=x"],
        settle=[("r1", [charge("a", 3.0)])],
    )
    assert (outcome.ok, outcome.cancelled) == (False, "run=x")
    assert seen(ledger, "a") == [(3.0, 0.0)]


def test_nothing_to_reserve_just_settles_and_checks_cancels(ledger: Any) -> None:
    ledger.reserve("r1", [charge("a", 5.0), charge("b", 1.0)], now=1, lease_until=99)
    outcome = ledger.reserve(
        "r2", [], now=2, lease_until=99, watch=["run=y"], settle=[("r1", [charge("a", 2.0)])]
    )
    assert (outcome.ok, outcome.states, outcome.cancelled) == (True, (), None)
    assert seen(ledger, "a", "b") == [(2.0, 0.0), (0.0, 0.0)]
    ledger.cancel("run=y")
    outcome = ledger.reserve("r3", [], now=2, lease_until=99, watch=["run=y"], settle=[])
    assert outcome.cancelled == "run=y"


def test_settle_applies_several_commits(ledger: Any) -> None:
    ledger.reserve("r1", [charge("a", 2.0)], now=1, lease_until=99)
    ledger.reserve("r2", [charge("a", 3.0), charge("b", 1.0)], now=1, lease_until=99)
    ledger.reserve("r3", [charge("b", 4.0)], now=1, lease_until=99)
    ledger.settle(
        [("r1", [charge("a", 1.0)]), ("r2", [charge("a", 0.5), charge("b", 0.25)])], now=2
    )
    assert seen(ledger, "a", "b") == [(1.5, 0.0), (0.25, 4.0)]  # r3 still holds b
    ledger.settle([], now=2)
    assert seen(ledger, "a", "b") == [(1.5, 0.0), (0.25, 4.0)]


def test_one_key_twice_in_a_settlement_adds_both(ledger: Any) -> None:
    ledger.settle([("r1", [charge("a", 1.0), charge("a", 2.0)])], now=1)
    ledger.reserve("r9", [], now=1, lease_until=9, settle=[("r2", [charge("a", 4.0)] * 2)])
    assert seen(ledger, "a") == [(11.0, 0.0)]


def test_a_settled_reservation_counts_once(ledger: Any) -> None:
    real = [charge("a", 1.0)]
    ledger.reserve("r1", real, now=1, lease_until=99)
    ledger.settle([("r1", real)], now=2)
    ledger.settle([("r1", real)], now=2)  # a retry after a timeout
    ledger.reserve("r2", real, now=2, lease_until=99, settle=[("r1", real)])
    ledger.settle([("r1", real), ("r1", real)], now=2)  # even twice in one list
    ledger.settle([("r3", real), ("r3", real)], now=2)
    assert seen(ledger, "a") == [(2.0, 1.0)]  # r1 and r3 once each; r2 holds 1
    assert ledger.commit("r1", real, now=3)[0].committed == 2.0  # then committed: still once
    assert ledger.commit("r2", real, now=3)[0].committed == 3.0


def test_a_committed_reservation_settled_again_counts_once(ledger: Any) -> None:
    real = [charge("a", 1.0)]
    ledger.commit("r1", real, now=1)
    ledger.reserve("r2", real, now=2, lease_until=99, settle=[("r1", real)])
    ledger.settle([("r1", real), ("r2", real)], now=3)
    assert seen(ledger, "a") == [(2.0, 0.0)]


def test_settling_past_the_limit_is_kept(ledger: Any) -> None:
    ledger.reserve("r1", [charge("a", 1.0, limit=2.0)], now=1, lease_until=99)
    outcome = ledger.reserve(
        "r2",
        [charge("a", 0.0, limit=2.0)],
        now=2,
        lease_until=99,
        settle=[("r1", [charge("a", 7.5, limit=2.0)])],
    )
    assert outcome.ok  # a zero charge passes a full bucket
    assert [(s.committed, s.reserved) for s in outcome.states] == [(7.5, 0.0)]


def test_a_settlement_of_a_window_that_never_ends(ledger: Any) -> None:
    ledger.settle([("r1", [charge("total", 2.0, end=math.inf)])], now=1)
    assert ledger.state("total", now=1e12).committed == 2.0


async def test_async_twins_settle_the_same_way(ledger: Any) -> None:
    assert (await ledger.areserve("r1", [charge("a", 6.0)], now=1, lease_until=99)).ok
    outcome = await ledger.areserve(
        "r2", [charge("a", 6.0)], now=2, lease_until=99, settle=[("r1", [charge("a", 3.0)])]
    )
    assert outcome.ok
    assert [(s.committed, s.reserved) for s in outcome.states] == [(3.0, 6.0)]
    await ledger.asettle([("r2", [charge("a", 1.0)]), ("r3", [charge("b", 2.0)])], now=3)
    await ledger.asettle([("r2", [charge("a", 1.0)])], now=3)
    assert seen(ledger, "a", "b") == [(4.0, 0.0), (2.0, 0.0)]
    assert (await ledger.areserve("r4", [charge("a", 1.0)], now=3, lease_until=99)).ok


# ---------------------------------------------------------------------- per backend


class _Recording(MemoryLedger):
    """Like the warden's fallback ledger: overrides ``commit`` to remember every commit."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def commit(
        self, reservation_id: str, charges: Sequence[Charge], *, now: float
    ) -> tuple[BucketState, ...]:
        self.seen.append(reservation_id)
        return super().commit(reservation_id, charges, now=now)


class _Hooked(MemoryLedger):
    """Hooks ``_commit_locked`` instead: every commit, settled or not, under the lock."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def _commit_locked(
        self, reservation_id: str, charges: Sequence[Charge], now: float, states: bool = True
    ) -> tuple[BucketState, ...]:
        self.seen.append(reservation_id)
        return super()._commit_locked(reservation_id, charges, now, states)


@pytest.mark.parametrize("kind", [_Recording, _Hooked])
def test_a_memory_subclass_sees_every_settled_commit(kind: type[Any]) -> None:
    ledger = kind()
    ledger.reserve("r1", [charge("a", 1.0)], now=1, lease_until=99)
    ledger.reserve(
        "r2", [charge("a", 1.0)], now=1, lease_until=99, settle=[("r1", [charge("a", 2.0)])]
    )
    ledger.settle([("r2", [charge("a", 3.0)]), ("r3", [charge("a", 4.0)])], now=2)
    ledger.commit("r4", [charge("a", 5.0)], now=2)
    assert ledger.seen == ["r1", "r2", "r3", "r4"]
    assert seen(ledger, "a") == [(14.0, 0.0)]


def test_memory_live_holds_follow_leases_drops_and_repeats() -> None:
    ledger = MemoryLedger()
    ledger.reserve("r1", [charge("a", 0.1)], now=1, lease_until=10)
    ledger.reserve("r2", [charge("a", 0.2)], now=1, lease_until=20)
    ledger.reserve("r3", [charge("a", 0.3)], now=1, lease_until=30)
    assert ledger.state("a", now=2).reserved == pytest.approx(0.6)
    ledger.reserve("r2", [charge("a", 1.0)], now=2, lease_until=20)  # the same id again
    assert ledger.state("a", now=2).reserved == pytest.approx(1.4)
    assert ledger.state("a", now=10).reserved == pytest.approx(1.3)  # r1's lease ended
    ledger.release("r3", now=11)
    assert ledger.state("a", now=11).reserved == 1.0  # exact once one hold is left
    ledger.settle([("r2", [charge("a", 0.5)])], now=12)
    assert (ledger.state("a", now=12).committed, ledger.state("a", now=12).reserved) == (0.5, 0)
    outcome = ledger.reserve("r4", [charge("a", 9.5)], now=12, lease_until=40)
    assert outcome.ok and outcome.states[0].reserved == 9.5
    assert not ledger.reserve("r5", [charge("a", 0.25)], now=39, lease_until=50).ok
    assert ledger.reserve("r5", [charge("a", 9.5)], now=40, lease_until=50).ok  # r4 ended


def _statements(ledger: SQLiteLedger, call: Callable[[], object]) -> list[str]:
    seen: list[str] = []
    db = ledger._connection()
    db.set_trace_callback(seen.append)
    try:
        call()
    finally:
        db.set_trace_callback(None)
    return seen


def test_sqlite_settles_and_reserves_in_one_short_transaction(tmp_path: Path) -> None:
    ledger = SQLiteLedger(f"sqlite:///{tmp_path / 'spend.db'}")
    ledger._next_purge = math.inf  # count the operation's own statements only
    two = [charge("a", 1.0), charge("b", 2.0)]
    ledger.reserve("r0", two, now=1, lease_until=99)  # the buckets exist from here on
    ran = _statements(
        ledger,
        lambda: ledger.reserve("r1", two, now=1, lease_until=99, watch=["run=x", "user=u"]),
    )
    assert len(ran) == 5  # BEGIN, cancels, both buckets' states, both holds, COMMIT
    ran = _statements(
        ledger,
        lambda: ledger.reserve(
            "r2", two, now=2, lease_until=99, watch=["run=x"], settle=[("r1", two), ("r0", two)]
        ),
    )
    assert [s.split()[0] for s in ran].count("BEGIN") == 1
    assert len(ran) <= 9
    assert len(_statements(ledger, lambda: ledger.commit("r2", two, now=3))) == 6
    # BEGIN, holds, commit id, buckets, the buckets after it (for alerts), COMMIT
    assert len(_statements(ledger, lambda: ledger.settle([("r3", two)], now=3))) == 6
    assert seen(ledger, "a", "b") == [(4.0, 0.0), (8.0, 0.0)]
    ledger.close()


_OLD_SCHEMA = """
CREATE TABLE buckets (key TEXT PRIMARY KEY, committed REAL NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE holds (
    rid TEXT NOT NULL, key TEXT NOT NULL, amount REAL NOT NULL, lease_until REAL NOT NULL,
    PRIMARY KEY (rid, key)
);
CREATE INDEX holds_by_key ON holds (key, lease_until);
CREATE INDEX holds_by_lease ON holds (lease_until);
CREATE TABLE commits (rid TEXT PRIMARY KEY, until REAL NOT NULL);
"""


def test_sqlite_files_of_the_earlier_layout_keep_working(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(_OLD_SCHEMA)
    old.execute("INSERT INTO buckets VALUES ('a', 1.0, ?)", (END,))
    old.execute("INSERT INTO holds VALUES ('r0', 'a', 2.0, 99.0)")
    old.commit()
    old.close()
    ledger = SQLiteLedger(f"sqlite:///{path}")
    assert seen(ledger, "a") == [(1.0, 2.0)]
    ledger.reserve(
        "r1", [charge("a", 3.0)], now=2, lease_until=99, settle=[("r0", [charge("a", 1.5)])]
    )
    ledger.settle([("r1", [charge("a", 0.5)]), ("r2", [charge("b", 1.0)])], now=3)
    assert seen(ledger, "a", "b") == [(3.0, 0.0), (1.0, 0.0)]
    ledger._next_purge = 0.0
    ledger.commit("r3", [charge("c", 1.0, end=math.inf)], now=END + 1)  # and purges: a, b ended
    rows = sqlite3.connect(path).execute("SELECT key FROM buckets ORDER BY key").fetchall()
    assert rows == [("c",)]
    ledger.close()


def test_redis_settles_and_reserves_in_one_script_call(redis_server: RedisServer) -> None:
    namespace = uuid.uuid4().hex[:12]
    ledger = RedisLedger(redis_server.url(namespace=namespace))
    calls: list[str] = []
    for name in ("reserve", "commit", "settle", "release"):
        script = getattr(ledger._scripts, name)

        def counted(*args: Any, _script: Any = script, _name: str = name, **kwargs: Any) -> Any:
            calls.append(_name)
            return _script(*args, **kwargs)

        setattr(ledger._scripts, name, counted)
    two = [charge("a|user=u1|0", 1.0, end=math.inf), charge("{x}", 2.0)]
    ledger.reserve("r1", two, now=1, lease_until=99)
    ledger.reserve("r2", two, now=2, lease_until=99, watch=["run=x"], settle=[("r1", two)])
    ledger.settle([("r2", two), ("r3", two)], now=3)
    assert calls == ["reserve", "reserve", "settle"]
    assert seen(ledger, "a|user=u1|0", "{x}") == [(3.0, 0.0), (6.0, 0.0)]  # r1, r2, r3
    keys = set(redis_server.client().scan_iter(f"*{namespace}*"))
    assert all(key.startswith(f"{{bw:{namespace}}}:") for key in keys)
    tag = f"{{bw:{namespace}}}:"
    assert {tag + "r:r1", tag + "r:r2", tag + "h:{x}"}.isdisjoint(keys)  # nothing left held
    assert {tag + "d:r1", tag + "d:r2", tag + "d:r3"} <= keys  # each remembered as committed
    ledger.close()


def test_redis_settle_reloads_its_script_after_a_flush(redis_server: RedisServer) -> None:
    ledger = RedisLedger(redis_server.url())
    ledger.settle([("r1", [charge("a", 1.0)])], now=1)
    redis_server.client().script_flush()  # as after a restart or a failover
    ledger.settle([("r2", [charge("a", 1.0)])], now=1)
    ledger.reserve(
        "r3", [charge("a", 1.0)], now=1, lease_until=9, settle=[("r4", [charge("a", 1.0)])]
    )
    assert seen(ledger, "a", now=2) == [(3.0, 1.0)]
    ledger.close()


def test_the_memory_ledger_remembers_a_bounded_number_of_committed_ids() -> None:
    from budgetwarden.ledger import memory

    ledger = memory.MemoryLedger()
    charge = [Charge("k", 1.0, 1e12, math.inf)]
    for i in range(memory._DONE_LIMIT + 10):
        ledger.commit(f"r{i}", charge, now=1.0)
    assert len(ledger._done) <= memory._DONE_LIMIT
    ledger.commit(f"r{memory._DONE_LIMIT + 9}", charge, now=1.0)  # a recent repeat: once
    assert ledger.state("k", now=1.0).committed == memory._DONE_LIMIT + 10


def test_new_charge_builds_the_same_charge() -> None:
    from budgetwarden.ledger.base import new_charge

    built = new_charge("k", 0.5, 2.0, 9.0)
    assert built == Charge("k", 0.5, 2.0, 9.0) and hash(built) == hash(Charge("k", 0.5, 2.0, 9.0))


def test_plain_amounts_on_the_memory_ledger_do_what_charges_do() -> None:
    """reserve_amounts / commit_amounts (the in-process hot path) against reserve / commit
    on a twin ledger: the same grants, refusals, cancels, spend and idempotent commits."""
    from budgetwarden.ledger.base import ReserveOutcome

    by_charges, by_amounts = MemoryLedger(), MemoryLedger()
    keys, limits, ends = ("a", "b"), (1.0, 10.0), (math.inf, 100.0)
    steps = [(0.4, 3.0), (0.5, 3.0), (0.3, 3.0), (0.05, 2.0), (0.0, 9.0)]
    for i, amounts in enumerate(steps):
        charges = [
            Charge(k, a, lim, end)
            for k, a, lim, end in zip(keys, amounts, limits, ends, strict=True)
        ]
        expected = by_charges.reserve(f"r{i}", charges, now=1.0, lease_until=50.0)
        got = by_amounts.reserve_amounts(
            f"r{i}", keys, amounts, limits, ends, now=1.0, lease_until=50.0
        )
        if expected.ok:
            assert got == [s.committed for s in expected.states]
            real = [a / 2 for a in amounts]
            states = by_charges.commit(
                f"r{i}",
                [
                    Charge(k, a, lim, end)
                    for k, a, lim, end in zip(keys, real, limits, ends, strict=True)
                ],
                now=1.0,
            )
            assert by_amounts.commit_amounts(f"r{i}", keys, real, ends, now=1.0) == [
                s.committed for s in states
            ]
            assert by_amounts.commit_amounts(f"r{i}", keys, real, ends, now=1.0) == [
                s.committed for s in states
            ]  # once per reservation id
        else:
            assert isinstance(got, ReserveOutcome) and got == expected
    for ledger in (by_charges, by_amounts):
        ledger.cancel("user=u1")
    cancelled = by_amounts.reserve_amounts(
        "c", keys, (0.0, 0.0), limits, ends, now=1.0, lease_until=2.0, watch=("user=u1",)
    )
    assert cancelled == ReserveOutcome(ok=False, cancelled="user=u1")
    for key, limit in zip(keys, limits, strict=True):
        assert by_amounts.state(key, now=1.0, limit=limit) == by_charges.state(
            key, now=1.0, limit=limit
        )


def test_plain_amounts_keep_overlapping_holds_and_leases_like_charges() -> None:
    """Several calls held at once, committed out of order, and a lease that runs out: the
    plain-amount path holds, drops and expires exactly as reserve / commit do."""
    by_charges, by_amounts = MemoryLedger(), MemoryLedger()
    keys, limits, ends = ("a", "b"), (5.0, 50.0), (math.inf, 100.0)

    def charges(amounts: tuple[float, float]) -> list[Charge]:
        return [
            Charge(k, a, lim, e) for k, a, lim, e in zip(keys, amounts, limits, ends, strict=True)
        ]

    def same(now: float) -> None:
        for key, limit in zip(keys, limits, strict=True):
            assert by_amounts.state(key, now=now, limit=limit) == by_charges.state(
                key, now=now, limit=limit
            )

    for rid, amounts, lease in (
        ("r1", (1.0, 4.0), 50.0),
        ("r2", (2.0, 8.0), 10.0),
        ("r3", (0.5, 1.0), 60.0),
    ):
        by_charges.reserve(rid, charges(amounts), now=1.0, lease_until=lease)
        by_amounts.reserve_amounts(rid, keys, amounts, limits, ends, now=1.0, lease_until=lease)
        same(1.0)
    for rid in ("r3", "r1"):  # out of order, while other holds remain
        by_charges.commit(rid, charges((0.25, 1.0)), now=2.0)
        by_amounts.commit_amounts(rid, keys, (0.25, 1.0), ends, now=2.0)
        same(2.0)
    same(20.0)  # r2's lease has ended: its hold no longer counts
    by_charges.reserve("r4", charges((4.0, 1.0)), now=20.0, lease_until=80.0)
    got = by_amounts.reserve_amounts(
        "r4", keys, (4.0, 1.0), limits, ends, now=20.0, lease_until=80.0
    )
    assert isinstance(got, list)  # granted: the expired hold made room
    same(20.0)
    by_charges.commit("r2", charges((2.0, 8.0)), now=21.0)  # late, after its lease: counted
    by_amounts.commit_amounts("r2", keys, (2.0, 8.0), ends, now=21.0)
    same(21.0)


async def test_settle_returns_each_charged_bucket_after_all_the_settlements(ledger: Any) -> None:
    """What a flush learns of the buckets it charged: everyone's committed spend after it
    (the warden alerts levels it shows), one state per bucket, in first-charged order."""
    ledger.commit("elsewhere", [charge("a", 2.0)], now=1)  # another process's spend
    ledger.reserve("r1", [charge("a", 1.0)], now=1, lease_until=100)
    settled = ledger.settle(
        [("r1", [charge("a", 1.0), charge("b", 0.5)]), ("r2", [charge("a", 0.25)])], now=2
    )
    assert [(s.key, s.committed, s.limit) for s in settled] == [("a", 3.25, 10.0), ("b", 0.5, 10.0)]
    again = ledger.settle([("r1", [charge("a", 1.0)])], now=3)  # committed already: adds nothing
    assert [(s.key, s.committed) for s in again] == [("a", 3.25)]
    assert await ledger.asettle([("r3", [charge("b", 0.5)])], now=4) == (
        BucketState("b", 1.0, 0.0, 10.0),
    )
    assert ledger.settle([], now=5) == ()
