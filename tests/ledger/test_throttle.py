"""Rate limits that wait: processes sharing a 5-requests-per-second budget in wait mode all
get through, never more than 5 in any one-second window; in refuse mode the excess is
refused at once."""

from __future__ import annotations

import math
import time
from collections import Counter
from typing import Any

import pytest

from budgetwarden import Budget, BudgetExceeded, Usage, Warden

from .helpers import MODEL, policy, run_together

PROCESSES = 3
CALLS = 6
RATE = 5
BACKENDS = ("sqlite", "redis")


def _caller(uri: str, mode: str, go: Any, results: Any) -> None:
    """A child process: CALLS model calls against the shared per-second budget."""
    budget = Budget(
        scope="key", window="1s", max_requests=RATE, when_exhausted=mode, max_wait_seconds=30
    )
    warden = Warden(policy(budget), ledger=uri, log_events=False)
    windows, refused, waits = [], 0, []
    go.wait()
    for _ in range(CALLS):
        run = warden.run(key="shared-key")
        asked = time.perf_counter()
        try:
            step = run.before_llm_call(MODEL, input_tokens=10, max_tokens=10)
        except BudgetExceeded:
            refused += 1
            waits.append(time.perf_counter() - asked)
            continue
        waits.append(time.perf_counter() - asked)
        windows.append(step.buckets[0].window.start)  # the window that counted this call
        run.after_llm_call(step, Usage(input_tokens=10, output_tokens=10))
        run.finish()
    results.put((windows, refused, waits))
    warden.close()


def _run_processes(uri: str, mode: str) -> list[tuple[list[float], int, list[float]]]:
    return run_together(_caller, [(uri, mode)] * PROCESSES, timeout=60)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_wait_mode_lets_every_call_through_at_most_five_a_second(ledger_uri: str) -> None:
    answers = _run_processes(ledger_uri, "wait")
    windows = [w for got, _, _ in answers for w in got]
    assert sum(refused for _, refused, _ in answers) == 0
    assert len(windows) == PROCESSES * CALLS  # every call went through
    per_window = Counter(windows)
    assert max(per_window.values()) <= RATE
    assert len(per_window) >= math.ceil(PROCESSES * CALLS / RATE)
    assert max(w for _, _, waits in answers for w in waits) > 0.1  # some calls really waited


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_refuse_mode_refuses_the_excess_at_once(ledger_uri: str) -> None:
    answers = _run_processes(ledger_uri, "refuse")
    refused = sum(r for _, r, _ in answers)
    windows = Counter(w for got, _, _ in answers for w in got)
    assert refused > 0
    assert max(windows.values()) <= RATE
    # No call slept until the window turned (up to 1 s). Half a window, not less: a busy
    # machine can hold a call on SQLite's lock for a tenth of a second without any wait.
    assert max(w for _, _, waits in answers for w in waits) < 0.5
