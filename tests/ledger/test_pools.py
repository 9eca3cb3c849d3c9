"""Pools on shared ledgers: with plenty of budget left, many calls' worst case is reserved in
one trip and the calls are served in memory; the real total lands when the pool closes.

What must hold: the ledger always counts the pool's whole hold (never overspent), the spend
that lands equals the calls' real costs, near a limit every call goes to the ledger again,
a fault loses nothing, and a cancel still stops pooled calls.
"""

from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import sys
import time
from typing import Any

import pytest

from budgetwarden import Budget, BudgetExceeded, Usage, Warden

from .conftest import RedisServer
from .helpers import MODEL, FakeClock, guarded_call, policy

SHARED = ("sqlite", "redis")
WORST = 0.001  # 100 input + 100 max output tokens of MODEL
BIG = Budget(scope="workspace", window="day", max_cost_usd=100.0)


def counting(warden: Warden) -> collections.Counter[str]:
    """Count the ledger operations the warden makes (each one a round trip)."""
    seen: collections.Counter[str] = collections.Counter()
    for name in ("reserve", "commit", "settle", "cancelled", "release"):
        original = getattr(warden.ledger, name)

        def counted(*args: Any, _name: str = name, _original: Any = original, **kw: Any) -> Any:
            seen[_name] += 1
            return _original(*args, **kw)

        setattr(warden.ledger, name, counted)
    return seen


def state(warden: Warden) -> tuple[float, float]:
    [ref] = warden._bucket_refs({"workspace": "acme"}, "r", warden.clock())[2]
    got = warden.ledger.state(ref.key, now=warden.clock(), limit=ref.limit)
    return round(got.committed, 9), round(got.reserved, 9)


@pytest.mark.parametrize("backend", SHARED, indirect=True)
def test_a_pool_serves_many_calls_in_one_trip_and_lands_their_real_total(
    ledger_uri: str,
) -> None:
    warden = Warden(policy(BIG), ledger=ledger_uri, clock=FakeClock(), log_events=False)
    trips = counting(warden)
    run = warden.run(workspace="acme")
    costs = [guarded_call(run, output_tokens=10 * (i % 9)) for i in range(40)]
    # the first call goes alone (and shows the bucket), the second opens a pool of 32 calls'
    # worst case; each call takes only its real cost from it, so the pool serves all 39
    assert trips["reserve"] == 2 and trips["commit"] == 0
    assert sum(trips.values()) <= 3  # at most one cancel poll (every 0.25 s) besides
    assert warden._pools.open_count == 1
    committed, reserved = state(warden)
    assert reserved >= 32 * WORST - 1e-9  # the ledger counts the whole pool meanwhile
    assert committed + reserved >= sum(costs) - 1e-9  # never less than was spent
    run.finish()  # the pool outlives the run (next runs use it) ...
    assert state(warden)[1] >= 32 * WORST - 1e-9
    assert warden.spent("workspace", "acme") == pytest.approx(sum(costs))  # ... until read
    assert state(warden) == (pytest.approx(sum(costs)), 0.0)  # its real total, hold gone
    warden.close()


@pytest.mark.parametrize("backend", SHARED, indirect=True)
def test_near_the_limit_calls_go_to_the_ledger_one_by_one_and_never_overspend(
    ledger_uri: str,
) -> None:
    """Two wardens (two processes) drain a budget that starts with room for 1,100 calls:
    pools while there is room, single calls near the end, never past the limit."""
    budget = Budget(scope="workspace", window="day", max_cost_usd=1.1)
    wardens = [Warden(policy(budget), ledger=ledger_uri, log_events=False) for _ in range(2)]
    runs = [w.run(workspace="acme") for w in wardens]
    spent, refused, turn = 0.0, 0, 0
    while refused < 4 and turn < 3000:
        try:
            spent += guarded_call(runs[turn % 2])
        except BudgetExceeded:
            refused += 1
        turn += 1
    for run in runs:
        run.finish()
    assert refused == 4 and 1.0 < spent <= 1.1 + 1e-9
    reader = Warden(policy(budget), ledger=ledger_uri, log_events=False)
    assert reader.spent("workspace", "acme") == pytest.approx(spent)
    for w in (*wardens, reader):
        w.close()


@pytest.mark.parametrize("backend", SHARED, indirect=True)
def test_a_cancel_from_elsewhere_stops_pooled_calls(ledger_uri: str) -> None:
    warden = Warden(policy(BIG), ledger=ledger_uri, clock=FakeClock(), log_events=False)
    other = Warden(policy(BIG), ledger=ledger_uri, clock=FakeClock(), log_events=False)
    warden.cancel_poll_seconds = 0.0  # ask at every call (default: every 0.25 s)
    run = warden.run(workspace="acme")
    for _ in range(3):
        guarded_call(run)
    assert warden._pools.open_count == 1
    other.cancel(workspace="acme")
    with pytest.raises(BudgetExceeded) as info:
        guarded_call(run)
    assert info.value.cap == "cancelled"
    run.finish()
    assert warden.spent("workspace", "acme") == pytest.approx(3 * WORST)
    assert state(warden) == (pytest.approx(3 * WORST), 0.0)
    warden.close()
    other.close()


@pytest.mark.parametrize("backend", SHARED, indirect=True)
def test_pooled_async_calls_land_the_same_spend(ledger_uri: str) -> None:
    async def scenario() -> tuple[float, float, int]:
        warden = Warden(policy(BIG), ledger=ledger_uri, clock=FakeClock(), log_events=False)
        run = warden.run(workspace="acme")
        total = 0.0
        for _ in range(10):
            step = await run.abefore_llm_call(MODEL, input_tokens=100, max_tokens=100)
            usage = Usage(input_tokens=100, output_tokens=50)
            total += (await run.aafter_llm_call(step, usage)).cost_usd
        pools = warden._pools.open_count
        await run.afinish()
        spent = warden.spent("workspace", "acme")
        warden.close()
        return total, spent, pools

    total, spent, pools = asyncio.run(scenario())
    assert pools == 1 and spent == pytest.approx(total)


def test_pooled_spend_survives_a_ledger_that_goes_down(own_redis: RedisServer) -> None:
    uri = own_redis.url(timeout="0.2", connect_timeout="0.2")
    warden = Warden(policy(BIG), ledger=uri, clock=FakeClock(), log_events=False)
    warden.ledger_retry_seconds = 0.2
    run = warden.run(workspace="acme")
    costs = [guarded_call(run) for _ in range(5)]
    own_redis.stop()
    costs += [guarded_call(run) for _ in range(5)]  # served by the pool: no trip needed
    run.finish()
    warden._flush()  # the pool's total cannot land: it is counted locally
    own_redis.start()  # empty: redis-server kept nothing
    time.sleep(0.25)
    with warden.run(workspace="acme") as later:
        costs.append(guarded_call(later))
    # the first call's commit rode on the pool's reservation and was lost with the server's
    # memory; the pool's total, counted locally meanwhile, was replayed into it on recovery
    assert warden.spent("workspace", "acme") == pytest.approx(sum(costs) - costs[0])
    warden.close()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_pooled_spend_lands_within_settle_seconds_by_itself(ledger_uri: str) -> None:
    warden = Warden(policy(BIG), ledger=ledger_uri, clock=FakeClock(), log_events=False)
    warden.settle_seconds = 0.1
    warden._settler.max_age = 0.1
    run = warden.run(workspace="acme")
    costs = [guarded_call(run) for _ in range(5)]
    deadline = time.monotonic() + 5
    while state(warden) != (pytest.approx(sum(costs)), 0.0) and time.monotonic() < deadline:
        time.sleep(0.05)  # no call, no read: the background thread sends it
    assert state(warden) == (pytest.approx(sum(costs)), 0.0)
    warden.close()


def test_pools_are_off_on_the_memory_ledger_and_when_asked() -> None:
    warden = Warden(policy(BIG), clock=FakeClock(), log_events=False)
    run = warden.run(workspace="acme")
    for _ in range(5):
        guarded_call(run)
    assert warden._pools.open_count == 0
    assert not warden._pools.enabled


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_pool_calls_zero_sends_every_call_to_the_ledger(ledger_uri: str) -> None:
    class Unpooled(Warden):
        pool_calls = 0

    warden = Unpooled(policy(BIG), ledger=ledger_uri, clock=FakeClock(), log_events=False)
    trips = counting(warden)
    run = warden.run(workspace="acme")
    for _ in range(5):
        guarded_call(run)
    assert warden._pools.open_count == 0 and trips["reserve"] == 5
    warden.close()


def test_a_pool_serves_only_calls_held_to_the_same_limits() -> None:
    """A run granted more of a budget reserves against a higher limit: the pool it opens
    must not serve runs held to the budget's own limit."""
    import math

    from budgetwarden.ledger import Charge
    from budgetwarden.pools import Pools

    closed: list[Any] = []
    pools = Pools(enabled=True, calls=4, headroom=1000, max_age=60, closed=closed.append)
    granted = [Charge("k", 0.01, 150.0, math.inf)]
    plain = [Charge("k", 0.01, 100.0, math.inf)]
    plan = pools.plan(granted, {"k": (99.0, 0.0)})
    assert plan is not None
    pools.open(plan[0], plan[1], "call-1", granted)
    assert pools.serve("call-2", granted)
    assert not pools.serve("call-3", plain)  # another limit: not from this pool
    assert pools.plan(plain, {"k": (99.0, 0.04)}) is None  # and no room for its own


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_forked_child_does_not_spend_from_its_parents_pool(ledger_uri: str) -> None:
    import multiprocessing

    warden = Warden(policy(BIG), ledger=ledger_uri, log_events=False)
    run = warden.run(workspace="acme")
    for _ in range(3):
        guarded_call(run)
    assert warden._pools.open_count == 1
    queue = multiprocessing.get_context("fork").SimpleQueue()

    def child() -> None:
        queue.put(warden._pools.open_count)

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(30)
    assert queue.get() == 0 and warden._pools.open_count == 1
    warden.close()


_EXIT_WITHOUT_CLOSE = """
import sys
from budgetwarden import Budget, Policy, Usage, Warden

policy = Policy(budgets=[Budget(scope="workspace", window="day", max_cost_usd=100.0)])
warden = Warden(policy, ledger=sys.argv[1], log_events=False)
total = 0.0
for i in range(10):  # the second call opens a pool; the rest are served from it
    run = warden.run(workspace="acme")
    step = run.before_llm_call("gpt-4o-mini", input_tokens=100, max_tokens=100)
    total += run.after_llm_call(step, Usage(input_tokens=100, output_tokens=10 * i)).cost_usd
    run.finish()
print(total)  # and exit without warden.close()
"""


@pytest.mark.parametrize("backend", SHARED, indirect=True)
def test_a_clean_exit_without_close_lands_the_pools_spend(ledger_uri: str, tmp_path: Any) -> None:
    """The interpreter's exit sends what close() would: pools opened less than
    settle_seconds ago too (their spend was lost, and their hold expired uncounted)."""
    script = tmp_path / "exit_without_close.py"
    script.write_text(_EXIT_WITHOUT_CLOSE)
    done = subprocess.run(
        [sys.executable, str(script), ledger_uri],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    total = float(done.stdout)
    reader = Warden(policy(BIG), ledger=ledger_uri, log_events=False)
    assert state(reader) == (pytest.approx(total, abs=1e-9), 0.0)
    reader.close()


@pytest.mark.parametrize("backend", SHARED, indirect=True)
def test_a_call_that_never_returns_does_not_lose_the_spend_of_its_pools_other_calls(
    ledger_uri: str,
) -> None:
    """A pool waited for its last call before it settled: one call whose run was dropped
    mid-call (a handler that died) kept the pool's real spend from the ledger for good, and
    its hold expired uncounted. The pool now settles when it closes, that call at its worst
    case."""
    warden = Warden(policy(BIG), ledger=ledger_uri, log_events=False)
    costs = [guarded_call(warden.run(workspace="acme")) for _ in range(3)]
    dropped = warden.run(workspace="acme")
    dropped.before_llm_call(MODEL, input_tokens=100, max_tokens=100)  # never comes back
    del dropped
    costs += [guarded_call(warden.run(workspace="acme")) for _ in range(5)]
    warden.close()
    reader = Warden(policy(BIG), ledger=ledger_uri, log_events=False)
    assert state(reader) == (pytest.approx(sum(costs) + WORST, abs=1e-9), 0.0)
    reader.close()


@pytest.mark.parametrize("backend", SHARED, indirect=True)
def test_a_call_in_flight_when_its_pool_settles_is_counted_at_worst_then_corrected(
    ledger_uri: str,
) -> None:
    warden = Warden(policy(BIG), ledger=ledger_uri, clock=FakeClock(), log_events=False)
    costs = [guarded_call(warden.run(workspace="acme")) for _ in range(3)]
    run = warden.run(workspace="acme")
    slow = run.before_llm_call(MODEL, input_tokens=100, max_tokens=100)
    warden._pools.close_older_than(0.0)  # the background thread closes the pool meanwhile
    warden._flush(pools=False)
    assert state(warden)[0] == pytest.approx(sum(costs[1:]) + costs[0] + WORST, abs=1e-9)
    costs.append(run.after_llm_call(slow, Usage(input_tokens=100, output_tokens=10)).cost_usd)
    run.finish()
    warden._flush()
    assert state(warden) == (pytest.approx(sum(costs), abs=1e-9), 0.0)
    warden.close()
