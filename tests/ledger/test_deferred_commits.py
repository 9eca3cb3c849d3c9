"""Deferred commits on shared ledgers: a call's commit rides on the next ledger trip.

On SQLite and Redis a warden sends the commit of one call with the reservation of the next
(one trip per call). These tests pin what that may and may not change: the ledger holds the
worst case until the commit lands (never less than was spent), the commit lands by the
next call, the run's end, a spend query or ``settle_seconds``; a ledger fault loses none;
a cancel from elsewhere still stops the next model call.
"""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from budgetwarden import Budget, BudgetExceeded, ListSink, Usage, Warden
from budgetwarden.ledger.memory import MemoryLedger

from .conftest import RedisServer
from .helpers import MODEL, FakeClock, guarded_call, policy

BUDGET = Budget(scope="workspace", window="day", max_cost_usd=1.0)
WORST = 0.001  # 100 input + 100 max output tokens of MODEL
SHARED = ("sqlite", "redis")


def bucket(warden: Warden) -> tuple[float, float]:
    """(committed, reserved) of the workspace bucket, read straight from the ledger."""
    [ref] = warden._bucket_refs({"workspace": "acme"}, "r", warden.clock())[2]
    state = warden.ledger.state(ref.key, now=warden.clock(), limit=ref.limit)
    return round(state.committed, 9), round(state.reserved, 9)


def make(uri: str, **fields: object) -> Warden:
    return Warden(policy(BUDGET, **fields), ledger=uri, clock=FakeClock(), log_events=False)


@pytest.mark.parametrize("backend", SHARED, indirect=True)
def test_commit_rides_on_the_next_reservation_and_the_worst_case_is_held_meanwhile(
    ledger_uri: str,
) -> None:
    warden = make(ledger_uri)
    run = warden.run(workspace="acme")
    cost = guarded_call(run, output_tokens=20)  # 100 in + 20 out: $0.0006 of $0.001 held
    assert bucket(warden) == (0.0, WORST)  # not sent yet: the reservation still holds
    step = run.before_llm_call(MODEL, input_tokens=100, max_tokens=100)
    assert bucket(warden) == (pytest.approx(cost), WORST)  # one trip: commit + reservation
    run.after_llm_call(step, Usage(input_tokens=100, output_tokens=100))
    run.finish()  # the run's end sends the last one
    assert bucket(warden) == (pytest.approx(cost + WORST), 0.0)
    warden.close()


@pytest.mark.parametrize("backend", SHARED, indirect=True)
def test_spend_queries_and_close_send_waiting_commits_first(ledger_uri: str) -> None:
    warden = make(ledger_uri)
    run = warden.run(workspace="acme")
    cost = guarded_call(run)
    assert warden.spent("workspace", "acme") == pytest.approx(cost)
    second = guarded_call(run)
    warden.close()
    reader = make(ledger_uri)
    assert reader.spent("workspace", "acme") == pytest.approx(cost + second)
    reader.close()


@pytest.mark.parametrize("backend", SHARED, indirect=True)
def test_a_commit_older_than_settle_seconds_goes_at_the_next_call(ledger_uri: str) -> None:
    warden = make(ledger_uri)
    warden._settler.max_age = 0.05
    run = warden.run(workspace="acme")
    guarded_call(run)
    time.sleep(0.06)
    run.after_tool_call(run.before_tool_call("search", {"q": "x"}))  # nothing to reserve
    assert bucket(warden) == (pytest.approx(WORST), 0.0)
    warden.close()


@pytest.mark.parametrize("backend", SHARED, indirect=True)
def test_async_calls_defer_and_settle_the_same_way(ledger_uri: str) -> None:
    async def scenario() -> tuple[float, tuple[float, float], tuple[float, float]]:
        warden = make(ledger_uri)
        run = warden.run(workspace="acme")
        step = await run.abefore_llm_call(MODEL, input_tokens=100, max_tokens=100)
        event = await run.aafter_llm_call(step, Usage(input_tokens=100, output_tokens=50))
        waiting = bucket(warden)
        await run.afinish()
        landed = bucket(warden)
        warden.close()
        return event.cost_usd, waiting, landed

    cost, waiting, landed = asyncio.run(scenario())
    assert waiting == (0.0, WORST)
    assert landed == (pytest.approx(cost), 0.0)


def test_the_memory_ledger_commits_at_once() -> None:
    warden = Warden(policy(BUDGET), clock=FakeClock(), log_events=False)
    assert isinstance(warden.ledger, MemoryLedger)
    guarded_call(warden.run(workspace="acme"))
    assert bucket(warden) == (WORST, 0.0)


@pytest.mark.parametrize("backend", SHARED, indirect=True)
def test_processes_sharing_a_budget_never_overspend_with_deferred_commits(
    ledger_uri: str,
) -> None:
    """Two wardens (as two processes) on a $0.01 budget: the held worst cases keep the
    total within it although each one's commits arrive late."""
    small = Budget(scope="workspace", window="day", max_cost_usd=0.01)
    wardens = [Warden(policy(small), ledger=ledger_uri, log_events=False) for _ in range(2)]
    runs = [w.run(workspace="acme") for w in wardens]
    spent, refused = 0.0, 0
    for turn in range(40):
        try:
            spent += guarded_call(runs[turn % 2])
        except BudgetExceeded:
            refused += 1
    for run in runs:
        run.finish()
    assert refused > 0 and spent <= 0.01 + 1e-12
    assert wardens[0].spent("workspace", "acme") == pytest.approx(spent)
    for w in wardens:
        w.close()


@pytest.mark.parametrize("backend", SHARED, indirect=True)
def test_a_cancel_from_another_warden_stops_the_next_model_call(ledger_uri: str) -> None:
    warden, other = make(ledger_uri), make(ledger_uri)
    warden.cancel_poll_seconds = 3600.0  # free tool calls would not ask again for an hour
    run = warden.run(workspace="acme")
    guarded_call(run)
    run.after_tool_call(run.before_tool_call("search", {"q": "x"}))
    other.cancel(run_id=run.id)
    run.after_tool_call(run.before_tool_call("search", {"q": "y"}))  # not asked yet: allowed
    with pytest.raises(BudgetExceeded) as info:
        run.before_llm_call(MODEL, input_tokens=100, max_tokens=100)
    assert info.value.cap == "cancelled"
    run.finish()
    assert warden.spent("workspace", "acme") == pytest.approx(WORST)  # the commit landed
    warden.close()
    other.close()


@pytest.mark.parametrize("backend", SHARED, indirect=True)
def test_a_cancel_stops_runs_of_its_own_namespace_only(ledger_uri: str) -> None:
    """Two applications on one ledger: a cancel of user u1 in one leaves the other's u1 be."""
    billing = Warden(policy(BUDGET), ledger=ledger_uri, namespace="billing", log_events=False)
    support = Warden(policy(BUDGET), ledger=ledger_uri, namespace="support", log_events=False)
    assert billing.cancel(user="u1") == ["user=u1"]
    with pytest.raises(BudgetExceeded) as info:
        billing.run(user="u1").before_llm_call(MODEL, input_tokens=100, max_tokens=100)
    assert info.value.cap == "cancelled"
    guarded_call(support.run(user="u1"))  # the same user in the other namespace goes on
    support.cancel(user="u1")
    billing.uncancel(user="u1")  # lifts billing's cancel, not support's
    guarded_call(billing.run(user="u1"))
    with pytest.raises(BudgetExceeded):
        support.run(user="u1").before_llm_call(MODEL, input_tokens=100, max_tokens=100)
    billing.close()
    support.close()


@pytest.mark.parametrize("backend", SHARED, indirect=True)
def test_tool_calls_ask_about_cancels_every_cancel_poll_seconds(ledger_uri: str) -> None:
    warden, other = make(ledger_uri), make(ledger_uri)
    warden.cancel_poll_seconds = 0.0
    run = warden.run(workspace="acme")
    run.after_tool_call(run.before_tool_call("search", {"q": "x"}))
    other.cancel(workspace="acme")
    with pytest.raises(BudgetExceeded) as info:
        run.before_tool_call("search", {"q": "y"})
    assert info.value.cap == "cancelled"
    warden.close()
    other.close()


def _tool_call_refused(run: Any) -> bool:
    try:
        run.after_tool_call(run.before_tool_call("search", {"q": "x"}))
    except BudgetExceeded as exc:
        assert exc.cap == "cancelled"
        return True
    return False


def _seconds_until(refused: bool, victim: Any, bystander: Any) -> float:
    """How long until the victim's tool calls are refused (``refused``) or let through
    again, while another user's run on the same warden polls first every time."""
    started = time.monotonic()
    while time.monotonic() - started < 2.0:
        assert not _tool_call_refused(bystander)
        if _tool_call_refused(victim) == refused:
            return time.monotonic() - started
        time.sleep(0.01)
    return math.inf


@pytest.mark.parametrize("backend", SHARED, indirect=True)
def test_each_run_asks_about_its_own_cancels_every_cancel_poll_seconds(ledger_uri: str) -> None:
    """Another user's polls used to reset the warden's one poll clock while asking only
    about that user: a cancel (and its lift) went unseen for as long as they kept coming."""
    warden, other = make(ledger_uri), make(ledger_uri)
    warden.cancel_poll_seconds = 0.2
    victim, bystander = warden.run(user="victim"), warden.run(user="bystander")
    assert not _tool_call_refused(victim)
    other.cancel(user="victim")
    assert _seconds_until(True, victim, bystander) < 0.2 + 0.15
    other.uncancel(user="victim")
    assert _seconds_until(False, victim, bystander) < 0.2 + 0.15
    warden.close()
    other.close()


@pytest.mark.parametrize("backend", SHARED, indirect=True)
def test_a_cancel_a_model_call_met_stops_the_same_users_other_runs_at_once(
    ledger_uri: str,
) -> None:
    warden, other = make(ledger_uri), make(ledger_uri)
    warden.cancel_poll_seconds = 3600.0
    first, second = warden.run(user="u1", workspace="acme"), warden.run(user="u1")
    assert not _tool_call_refused(second)
    other.cancel(user="u1")
    with pytest.raises(BudgetExceeded):
        guarded_call(first)  # a model call asks the ledger, and learns of the cancel
    assert _tool_call_refused(second)  # no poll for an hour, yet it knows
    other.uncancel(user="u1")
    guarded_call(warden.run(user="u1", workspace="acme"))  # the ledger says: lifted
    assert not _tool_call_refused(second)
    warden.close()
    other.close()


def test_deferred_commits_survive_a_ledger_that_goes_down(own_redis: RedisServer) -> None:
    """Fail closed: the call after the outage is refused, and the commit it carried is
    counted locally, then handed to Redis when it is back."""
    sink = ListSink()
    uri = own_redis.url(timeout="0.2", connect_timeout="0.2")
    warden = Warden(policy(BUDGET), ledger=uri, clock=FakeClock(), sinks=[sink], log_events=False)
    warden.ledger_retry_seconds = 0.2
    run = warden.run(workspace="acme")
    kept = guarded_call(run)  # its commit waits for the next trip
    own_redis.stop()
    with pytest.raises(BudgetExceeded) as info:
        run.before_llm_call(MODEL, input_tokens=100, max_tokens=100)
    assert info.value.cap == "ledger_unavailable"
    own_redis.start()  # empty: redis-server kept nothing
    time.sleep(0.25)
    after = guarded_call(warden.run(workspace="acme"))
    assert warden.spent("workspace", "acme") == pytest.approx(kept + after)
    warden.close()


_CLOSE_RACE = """
import os, random, sys, time
from budgetwarden import Budget, Policy, Usage, Warden

class Quick(Warden):
    settle_seconds = 0.001  # the background thread sends every millisecond

policy = Policy(budgets=[Budget(scope="user", window="day", max_cost_usd=1e6)])
uri, total = sys.argv[1], 0.0
for _ in range(300):
    warden = Quick(policy, ledger=uri, log_events=False)
    for _ in range(3):
        run = warden.run(user="u1")
        step = run.before_llm_call("gpt-4o-mini", input_tokens=10, max_tokens=10)
        total += run.after_llm_call(step, Usage(input_tokens=10, output_tokens=10)).cost_usd
    time.sleep(random.random() * 0.003)
    warden.close()
spent = Warden(policy, ledger=uri, log_events=False).spent("user", "u1")
print("spent", spent, "total", total)
"""


def test_closing_a_warden_waits_for_a_background_send_on_its_connection(tmp_path: Path) -> None:
    """close() closes the SQLite connections; the thread sending old commits must not be
    sending on one then (that crashed the interpreter). Every commit still lands."""
    script = tmp_path / "close_race.py"
    script.write_text(_CLOSE_RACE)
    done = subprocess.run(
        [sys.executable, str(script), f"sqlite:///{tmp_path / 'spend.db'}"],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    spent, total = (float(x) for x in done.stdout.split()[1::2])
    assert spent == pytest.approx(total, abs=1e-12) and total > 0


def test_closed_wardens_leave_no_exit_hook_behind(tmp_path: Path) -> None:
    """Each warden on a shared ledger registered an exit hook that close() never removed:
    a process that makes wardens as it goes kept one per warden."""
    import gc
    import weakref

    uri = f"sqlite:///{tmp_path / 'spend.db'}"
    hooks = []
    for _ in range(20):
        warden = make(uri)
        guarded_call(warden.run(workspace="acme"))
        hooks.append(weakref.ref(warden._settler._exit_hook))
        warden.close()
    gc.collect()
    assert [hook() for hook in hooks] == [None] * 20  # atexit let go of every one


@pytest.mark.parametrize("backend", SHARED, indirect=True)
def test_a_new_run_asks_about_cancels_only_for_targets_not_asked_about_lately(
    ledger_uri: str,
) -> None:
    """Per-run poll clocks must not cost a trip per run: a new run of a user asked about
    within cancel_poll_seconds waits for that user's clock; a user never asked about is
    asked about at once (a cancelled user's new run is stopped at its first call)."""
    warden, other = make(ledger_uri), make(ledger_uri)
    warden.cancel_poll_seconds = 3600.0
    asked: list[Any] = []
    original = warden.ledger.cancelled
    warden.ledger.cancelled = lambda targets: asked.append(targets) or original(targets)  # type: ignore[method-assign]
    for _ in range(5):
        assert not _tool_call_refused(warden.run(user="u1"))
    assert len(asked) == 1  # the first run of u1; the other four rode on its answer
    other.cancel(user="u2")
    assert _tool_call_refused(warden.run(user="u2"))  # never asked about: asked at once
    assert len(asked) == 2
    warden.close()
    other.close()


def _calls(warden: Warden, n: int, run: Any) -> None:
    for _ in range(n):
        step = run.before_llm_call(MODEL, input_tokens=100, max_tokens=100)
        run.after_llm_call(step, Usage(input_tokens=100, output_tokens=100))


@pytest.mark.parametrize("backend", SHARED, indirect=True)
@pytest.mark.parametrize(("first", "levels"), [(4, [0.5]), (9, [0.5, 0.8, 0.9, 1.0])])
def test_a_level_crossed_only_when_deferred_commits_land_is_alerted_once(
    ledger_uri: str, first: int, levels: list[float]
) -> None:
    """Two wardens (two processes) spend on one $0.01 budget, $0.001 a call. The first's
    last commit waits while the other's call takes the total to a level: the committing
    run saw a bucket without that deferred spend, so the level shows only when the wait
    ends (at the first run's end). It was alerted by nobody; now by the warden whose
    commits landed, once."""
    budget = Budget(scope="workspace", window="day", max_cost_usd=0.01)
    clock = FakeClock()
    sinks = [ListSink(), ListSink()]
    a, b = (
        Warden(policy(budget), ledger=ledger_uri, clock=clock, sinks=[sink], log_events=False)
        for sink in sinks
    )
    run_a = a.run(workspace="acme")
    _calls(a, first, run_a)  # its last commit waits for a's next ledger trip
    with b.run(workspace="acme") as run_b:
        _calls(b, 1, run_b)
    run_a.finish()  # the waiting commit lands
    alerts = [e for sink in sinks for e in sink.events if type(e).__name__ == "BudgetAlert"]
    assert sorted(alert.level for alert in alerts) == levels
    assert a.spent("workspace", "acme") == pytest.approx((first + 1) * 0.001)
    a.close()
    b.close()
