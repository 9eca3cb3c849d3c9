"""Several processes, one budget: SQLite and Redis ledgers never let them overspend it, leak
nothing, and free what a killed process held once its lease runs out."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import statistics
import time
from multiprocessing.connection import Connection
from typing import Any

import pytest

from budgetwarden import Budget, BudgetExceeded, Warden
from budgetwarden.ledger import Charge, Ledger, open_ledger

from .helpers import MODEL, ShiftedClock, guarded_call, policy, run_together, try_call

CTX = multiprocessing.get_context("fork")
PROCESSES = 8
CALLS = 200
BUDGET = Budget(scope="workspace", window="day", max_cost_usd=1.0)
LEASE = 1.5
BACKENDS = ("sqlite", "redis")


def _spender(
    uri: str, index: int, go: Any, results: Any, budget: Budget = BUDGET, calls: int = CALLS
) -> None:
    """A child process: ``calls`` guarded calls ($0.0008-0.001 each) against the budget."""
    warden = Warden(policy(budget), ledger=uri, clock=ShiftedClock(), log_events=False)
    rng = random.Random(index)
    spent, refusals, latencies = 0.0, set(), []
    go.wait()
    began = time.perf_counter()
    for _ in range(calls):
        start = time.perf_counter()
        run = warden.run(workspace="acme", user=f"u{index}")
        try:
            spent += guarded_call(run, output_tokens=rng.randint(60, 100))
        except BudgetExceeded as exc:
            refusals.add(exc.cap)
        finally:
            run.finish()
        latencies.append(time.perf_counter() - start)
    elapsed = time.perf_counter() - began
    results.put((spent, sorted(refusals), latencies, elapsed))
    warden.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_eight_processes_with_pools_never_overspend_and_use_the_budget_up(
    ledger_uri: str,
) -> None:
    """A $2.50 budget starts with room for 2,500 worst-case calls: pools of 32 while more
    than 1,000 are left, single calls after; 8 x 400 calls use it up, never past it."""
    budget = Budget(scope="workspace", window="day", max_cost_usd=2.5)
    heads = [(ledger_uri, i) for i in range(PROCESSES)]
    reports = run_together(_spender, heads, (budget, 400), timeout=180)
    warden = Warden(policy(budget), ledger=ledger_uri, clock=ShiftedClock(), log_events=False)
    total = warden.spent("workspace", "acme")
    assert total == pytest.approx(sum(r[0] for r in reports), abs=1e-9)  # every pool landed
    assert total <= 2.5 + 1e-9  # never overspent
    assert total >= 2.3  # nothing leaked
    assert {cap for r in reports for cap in r[1]} == {"budget:workspace=acme/day"}
    warden.close()


def _fresh_call(uri: str, results: Any) -> None:
    warden = Warden(policy(BUDGET), ledger=uri, clock=ShiftedClock(), log_events=False)
    outcome = try_call(warden, workspace="acme", user="newcomer")
    results.put(outcome.cap if isinstance(outcome, BudgetExceeded) else outcome)


def _in_child(target: Any, *args: Any) -> Any:
    results = CTX.Queue()
    process = CTX.Process(target=target, args=(*args, results))
    process.start()
    answer = results.get(timeout=60)
    process.join(10)
    return answer


@pytest.mark.parametrize("backend", BACKENDS)
def test_eight_processes_never_overspend_one_budget_and_use_it_up(ledger_uri: str) -> None:
    reports = run_together(_spender, [(ledger_uri, i) for i in range(PROCESSES)])

    warden = Warden(policy(BUDGET), ledger=ledger_uri, clock=ShiftedClock(), log_events=False)
    total = warden.spent("workspace", "acme")
    assert total == pytest.approx(sum(r[0] for r in reports), abs=1e-9)  # nothing lost
    assert total <= 1.0 + 1e-9  # never overspent
    assert total >= 0.9  # nothing leaked: the budget was used up
    assert {cap for r in reports for cap in r[1]} == {"budget:workspace=acme/day"}
    assert _in_child(_fresh_call, ledger_uri) == "budget:workspace=acme/day"
    warden.close()

    latencies = sorted(x for r in reports for x in r[2])
    rate = PROCESSES * CALLS / max(r[3] for r in reports)
    print(
        f"\n{ledger_uri.split(':')[0]}: {rate:.0f} guarded calls/s over {PROCESSES} processes, "
        f"p50 {statistics.median(latencies) * 1000:.2f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.2f} ms per call; "
        f"committed ${total:.6f} of $1.00"
    )


def _holder(uri: str, pipe: Connection) -> None:
    """Commit three calls, reserve a big one, say so, and wait to be killed."""
    warden = Warden(
        policy(BUDGET, lease_seconds=LEASE), ledger=uri, clock=ShiftedClock(), log_events=False
    )
    run = warden.run(workspace="acme")
    committed = sum(guarded_call(run) for _ in range(3))
    step = run.before_llm_call(MODEL, input_tokens=100, max_tokens=120_000)  # ~ $0.60
    pipe.send((committed, step.reserved_usd))
    time.sleep(60)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_killed_process_reservation_is_freed_after_its_lease(ledger_uri: str) -> None:
    ours, theirs = CTX.Pipe()
    holder = CTX.Process(target=_holder, args=(ledger_uri, theirs))
    holder.start()
    committed, reserved = ours.recv()
    assert holder.pid is not None
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(10)
    killed_at = time.monotonic()

    warden = Warden(policy(BUDGET), ledger=ledger_uri, clock=ShiftedClock(), log_events=False)
    assert warden.remaining("workspace", "acme") == pytest.approx(1.0 - committed - reserved)
    big = warden.run(workspace="acme")
    with pytest.raises(BudgetExceeded):
        big.before_llm_call(MODEL, input_tokens=100, max_tokens=100_000)  # ~ $0.50 > what's left

    while warden.remaining("workspace", "acme") != pytest.approx(1.0 - committed):
        assert time.monotonic() - killed_at < LEASE + 5, "the dead process's hold never expired"
        time.sleep(0.1)
    assert warden.spent("workspace", "acme") == pytest.approx(committed)  # nothing lost
    step = big.before_llm_call(MODEL, input_tokens=100, max_tokens=100_000)
    assert step.reserved_usd == pytest.approx(0.5005)
    big.finish()
    warden.close()


def _commit_from_child(ledger: Ledger, results: Any) -> None:
    ledger.commit("child", [Charge("k", 2.0, 10.0, float("inf"))], now=1)
    results.put(ledger.state("k", now=2).committed)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_ledger_opened_before_fork_works_in_both_processes(ledger_uri: str) -> None:
    ledger = open_ledger(ledger_uri)
    ledger.commit("parent", [Charge("k", 1.0, 10.0, float("inf"))], now=1)
    assert _in_child(_commit_from_child, ledger) == 3.0
    ledger.commit("parent-again", [Charge("k", 1.0, 10.0, float("inf"))], now=3)
    assert ledger.state("k", now=4).committed == 4.0
    ledger.close()


_SAME_RUN_AGAIN = """
import sys
from budgetwarden import Budget, Policy, Usage, Warden
policy = Policy(budgets=[Budget(scope="workspace", window="day", max_requests=100)])
warden = Warden(policy, ledger=sys.argv[1], log_events=False)
with warden.run(run_id="run-paused-then-resumed", workspace="acme") as run:
    for _ in range(3):
        step = run.before_llm_call("gpt-4o-mini", input_tokens=100, max_tokens=100)
        run.after_llm_call(step, Usage(input_tokens=100, output_tokens=100))
warden.close()
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_run_resumed_in_a_fresh_process_keeps_every_call_it_spends(ledger_uri: str) -> None:
    """A resumed run keeps its id, and every fresh process counts its calls from 1: the
    resumed run's reservation ids repeated the paused one's, and the ledger (whose commits
    are idempotent per id) dropped its spend (5 of 8 calls counted). Each process tags its
    ids, so both halves count."""
    import subprocess
    import sys

    for _ in range(2):  # the paused part, then the resumed part, each in a new interpreter
        subprocess.run([sys.executable, "-c", _SAME_RUN_AGAIN, ledger_uri], check=True)
    warden = Warden(
        policy(Budget(scope="workspace", window="day", max_requests=100)),
        ledger=ledger_uri,
        log_events=False,
    )
    assert warden.spent("workspace", "acme") == 6
    warden.close()
