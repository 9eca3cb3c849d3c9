"""Ledger faults: Redis stopped or frozen mid-run, SQLite locked. Fail closed refuses new
calls; fail open counts locally; either way an event says so, finished calls are kept, and
the local spend goes into the ledger when it is back."""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path

import pytest

from budgetwarden import Budget, BudgetExceeded, ListSink, Notice, Usage, Warden
from budgetwarden.errors import LedgerUnavailable
from budgetwarden.ledger import Charge, open_ledger

from .conftest import RedisServer
from .helpers import MODEL, FakeClock, guarded_call, policy, try_call

BUDGET = Budget(scope="workspace", window="day", max_cost_usd=1.0)
RETRY = 0.2


def notices(sink: ListSink, code: str) -> list[Notice]:
    return [e for e in sink.of_type(Notice) if e.code == code]


def make_warden(uri: str, **fields: object) -> tuple[Warden, ListSink]:
    sink = ListSink()
    warden = Warden(
        policy(BUDGET, **fields), ledger=uri, clock=FakeClock(), sinks=[sink], log_events=False
    )
    warden.ledger_retry_seconds = RETRY
    return warden, sink


def finished_call(warden: Warden) -> float:
    """One model call in a run that then ends (so its commit is sent, as runs do)."""
    with warden.run(workspace="acme") as run:
        return guarded_call(run)


def wait_for_retry() -> None:
    time.sleep(RETRY + 0.05)


def test_fail_closed_refuses_while_redis_is_stopped_and_keeps_finished_calls(
    own_redis: RedisServer,
) -> None:
    warden, sink = make_warden(own_redis.url(timeout="0.2", connect_timeout="0.2"))
    finished_call(warden)
    run = warden.run(workspace="acme")
    in_flight = run.before_llm_call(MODEL, input_tokens=100, max_tokens=100)

    own_redis.stop()
    kept = run.after_llm_call(in_flight, Usage(input_tokens=100, output_tokens=80)).cost_usd
    refused = try_call(warden, workspace="acme")
    assert isinstance(refused, BudgetExceeded) and refused.cap == "ledger_unavailable"
    assert "bring the ledger back" in str(refused) and "0 of 0" not in str(refused)
    began = time.monotonic()
    assert isinstance(try_call(warden, workspace="acme"), BudgetExceeded)
    assert time.monotonic() - began < 0.1  # refused at once, without waiting on the ledger
    [down] = notices(sink, "ledger_unavailable")
    assert down.data["mode"] == "closed" and down.level == "error"

    own_redis.start()  # the same port, empty: redis-server kept nothing
    wait_for_retry()
    after = finished_call(warden)
    [back] = notices(sink, "ledger_recovered")
    assert sum(back.data["reconciled"].values()) == pytest.approx(kept)
    assert warden.spent("workspace", "acme") == pytest.approx(kept + after)
    warden.close()


def test_fail_open_counts_locally_while_redis_is_frozen_and_reconciles_once(
    own_redis: RedisServer,
) -> None:
    uri = own_redis.url(timeout="0.2", connect_timeout="0.2")
    warden, sink = make_warden(uri, ledger_failure="open")
    before = sum(finished_call(warden) for _ in range(2))

    own_redis.freeze()  # calls time out: nothing answers
    local = [finished_call(warden) for _ in range(3)]
    [down] = notices(sink, "ledger_unavailable")
    assert down.data["mode"] == "open"
    assert warden.spent("workspace", "acme") == pytest.approx(sum(local))  # local figures

    own_redis.thaw()
    wait_for_retry()
    after = finished_call(warden)
    [back] = notices(sink, "ledger_recovered")
    assert sum(back.data["reconciled"].values()) == pytest.approx(sum(local))
    total = before + sum(local) + after
    assert warden.spent("workspace", "acme") == pytest.approx(total)
    wait_for_retry()
    finished_call(warden)
    assert len(notices(sink, "ledger_recovered")) == 1  # reconciled once, not again
    other, _ = make_warden(uri)
    assert other.spent("workspace", "acme") == pytest.approx(total + after)
    assert other.remaining("workspace", "acme") == pytest.approx(1.0 - total - after)
    warden.close()


def test_fail_open_counts_locally_while_redis_is_stopped_and_reconciles_on_restart(
    own_redis: RedisServer,
) -> None:
    warden, sink = make_warden(own_redis.url(timeout="0.2"), ledger_failure="open")
    finished_call(warden)
    own_redis.stop()
    local = [finished_call(warden) for _ in range(3)]
    assert notices(sink, "ledger_unavailable")[0].data["mode"] == "open"
    own_redis.start()  # empty: redis-server kept nothing of before the stop
    wait_for_retry()
    after = finished_call(warden)
    assert warden.spent("workspace", "acme") == pytest.approx(sum(local) + after)
    assert len(notices(sink, "ledger_recovered")) == 1
    warden.close()


async def test_async_calls_fail_closed_and_keep_finished_calls(own_redis: RedisServer) -> None:
    warden, sink = make_warden(own_redis.url(timeout="0.2", connect_timeout="0.2"))
    run = warden.run(workspace="acme")
    step = await run.abefore_llm_call(MODEL, input_tokens=100, max_tokens=100)
    own_redis.stop()
    event = await run.aafter_llm_call(step, Usage(input_tokens=100, output_tokens=100))
    with pytest.raises(BudgetExceeded) as info:
        await warden.run(workspace="acme").abefore_llm_call(MODEL, input_tokens=100)
    assert info.value.cap == "ledger_unavailable"
    own_redis.start()
    wait_for_retry()
    await warden.run(workspace="acme").abefore_llm_call(MODEL, input_tokens=100)
    assert warden.spent("workspace", "acme") == pytest.approx(event.cost_usd)
    assert len(notices(sink, "ledger_recovered")) == 1


@pytest.mark.parametrize("ledger_failure", [None, "closed"])
def test_soft_budgets_fail_open_even_when_the_policy_says_closed(
    own_redis: RedisServer, ledger_failure: str | None
) -> None:
    """``ledger_failure="closed"`` (given or by default) protects hard budgets only."""
    soft = Budget(scope="workspace", window="day", max_cost_usd=1.0, hard=False)
    given = policy(soft) if ledger_failure is None else policy(soft, ledger_failure="closed")
    sink = ListSink()
    warden = Warden(given, ledger=own_redis.url(timeout="0.2"), clock=FakeClock(), sinks=[sink])
    own_redis.stop()
    finished_call(warden)
    assert notices(sink, "ledger_unavailable")[0].data["mode"] == "open"
    warden.run(workspace="acme").before_llm_call(MODEL, input_tokens=100)  # not refused


def test_close_says_when_local_spend_could_not_be_handed_over(own_redis: RedisServer) -> None:
    warden, sink = make_warden(own_redis.url(timeout="0.2"), ledger_failure="open")
    own_redis.stop()
    cost = finished_call(warden)
    warden.close()
    [lost] = notices(sink, "ledger_unreconciled")
    assert sum(lost.data["unreconciled"].values()) == pytest.approx(cost)


def test_a_redis_server_error_is_a_ledger_fault(redis_server: RedisServer) -> None:
    namespace = uuid.uuid4().hex
    uri = redis_server.url(namespace=namespace)
    redis_server.client().set(f"{{bw:{namespace}}}:b:k", "not a bucket")  # answers WRONGTYPE
    with pytest.raises(LedgerUnavailable, match="WRONGTYPE"):
        open_ledger(uri).commit("r", [Charge("k", 1.0, 2.0, float("inf"))], now=1)


def test_an_unreachable_redis_fails_fast_and_hides_its_password() -> None:
    ledger = open_ledger("redis://:s3cret@127.0.0.1:1/0?connect_timeout=0.2")
    began = time.monotonic()
    with pytest.raises(LedgerUnavailable) as info:
        ledger.reserve("r", [Charge("k", 1.0, 2.0, float("inf"))], now=1, lease_until=2)
    assert time.monotonic() - began < 2
    assert "s3cret" not in str(info.value) and ":***@127.0.0.1:1" in str(info.value)


def test_a_locked_sqlite_file_fails_closed_then_reconciles(tmp_path: Path) -> None:
    path = tmp_path / "spend.db"
    uri = f"sqlite:///{path}?timeout=0.05"
    warden, sink = make_warden(uri)
    run = warden.run(workspace="acme")
    step = run.before_llm_call(MODEL, input_tokens=100, max_tokens=100)

    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holding the write lock too long
    kept = run.after_llm_call(step, Usage(input_tokens=100, output_tokens=100)).cost_usd
    refused = try_call(warden, workspace="acme")
    assert isinstance(refused, BudgetExceeded) and refused.cap == "ledger_unavailable"
    assert "database is locked" in notices(sink, "ledger_unavailable")[0].message
    blocker.execute("ROLLBACK")

    wait_for_retry()
    after = finished_call(warden)
    assert warden.spent("workspace", "acme") == pytest.approx(kept + after)
    blocker.close()
    warden.close()


@pytest.mark.parametrize("schema", [True, False], ids=["existing file", "new file"])
@pytest.mark.parametrize("mode", ["open", "closed"])
def test_a_lock_held_while_the_warden_is_made_is_a_fault_the_policy_decides(
    tmp_path: Path, mode: str, schema: bool
) -> None:
    """Making the warden raised LedgerUnavailable ("database is locked") whatever the
    policy said: a process that started while another held the file's lock did not start."""
    path = tmp_path / "spend.db"
    uri = f"sqlite:///{path}?timeout=0.05"
    if schema:
        open_ledger(uri).close()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holding the lock too long
    warden, sink = make_warden(uri, ledger_failure=mode)
    held = try_call(warden, workspace="acme")
    [down] = notices(sink, "ledger_unavailable")
    assert down.data["mode"] == mode and "database is locked" in down.message
    if mode == "closed":
        assert isinstance(held, BudgetExceeded) and held.cap == "ledger_unavailable"
        local = 0.0
    else:
        assert isinstance(held, float) and held > 0, "counted locally"
        local = held
    blocker.execute("ROLLBACK")

    wait_for_retry()
    after = finished_call(warden)  # the schema is made now, the local spend replayed
    assert warden.spent("workspace", "acme") == pytest.approx(local + after)
    other, _ = make_warden(uri)
    assert other.spent("workspace", "acme") == pytest.approx(local + after)
    blocker.close()
    warden.close()


def test_a_commit_that_timed_out_but_ran_is_not_counted_twice(own_redis: RedisServer) -> None:
    uri = own_redis.url(timeout="0.2", connect_timeout="0.2")
    warden, sink = make_warden(uri, ledger_failure="open")
    first = finished_call(warden)  # scripts loaded on the server
    run = warden.run(workspace="acme")
    in_flight = run.before_llm_call(MODEL, input_tokens=100, max_tokens=100)
    own_redis.freeze()  # the commit below times out, but Redis runs it once thawed
    cost = run.after_llm_call(in_flight, Usage(input_tokens=100, output_tokens=80)).cost_usd
    run.finish()  # sends the commit (it had waited for the next ledger trip)
    assert notices(sink, "ledger_unavailable")
    own_redis.thaw()
    wait_for_retry()
    after = finished_call(warden)  # recovers: replays the local commit
    assert len(notices(sink, "ledger_recovered")) == 1
    other, _ = make_warden(uri)
    assert other.spent("workspace", "acme") == pytest.approx(first + cost + after)
    warden.close()


def held(uri: str) -> float:
    """What the workspace bucket holds in reservations, seen by another warden."""
    reader, _ = make_warden(uri)
    [ref] = reader._bucket_refs({"workspace": "acme"}, "r", reader.clock())[2]
    reserved = reader.ledger.state(ref.key, now=reader.clock(), limit=ref.limit).reserved
    reader.close()
    return float(reserved)


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_a_reservation_that_timed_out_but_ran_is_released_when_the_ledger_is_back(
    own_redis: RedisServer, mode: str
) -> None:
    """The reply never came, so the call was refused (closed) or counted locally and then
    released (open); Redis ran the script once thawed. Its hold was kept until its lease
    (300 s), shrinking the budget for everyone."""
    uri = own_redis.url(timeout="0.2", connect_timeout="0.2")
    warden, sink = make_warden(uri, ledger_failure=mode)
    finished_call(warden)  # scripts loaded on the server
    run = warden.run(workspace="acme")
    own_redis.freeze()  # the reservation below times out, but Redis runs it once thawed
    if mode == "closed":
        with pytest.raises(BudgetExceeded, match="ledger is unreachable"):
            run.before_llm_call(MODEL, input_tokens=100, max_tokens=100)
    else:
        run.release(run.before_llm_call(MODEL, input_tokens=100, max_tokens=100))
    run.finish()
    own_redis.thaw()
    deadline = time.monotonic() + 5
    while held(uri) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)  # the thawed server runs the reservation it was sent
    assert held(uri) > 0
    wait_for_retry()
    finished_call(warden)  # recovers: the doubtful hold is released
    assert len(notices(sink, "ledger_recovered")) == 1
    assert held(uri) == 0
    warden.close()
