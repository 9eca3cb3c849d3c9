"""Helpers for ledger tests: clocks, a policy with a test-priced model, guarded calls."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Sequence
from typing import Any

from budgetwarden import Budget, BudgetExceeded, Policy, Usage, Warden
from budgetwarden.run import Run

#: A made-up model with round prices: 100 input + 100 output tokens cost at most $0.001.
MODEL = "bw-test-model"
PRICES = {MODEL: {"input_cost_per_token": 5e-6, "output_cost_per_token": 5e-6}}
START = 1_781_524_800.0  # 2026-06-15T12:00:00Z


class FakeClock:
    """Epoch seconds that only move when a test says so."""

    def __init__(self, start: float = START) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ShiftedClock:
    """Real time moved to ``start`` (so leases run out in real time, away from midnight)."""

    def __init__(self, start: float = START) -> None:
        self.offset = start - time.time()

    def __call__(self) -> float:
        return time.time() + self.offset


def policy(*budgets: Budget, **fields: Any) -> Policy:
    """A policy with these budgets that can price ``MODEL``."""
    return Policy(budgets=list(budgets), prices=PRICES, **fields)


def guarded_call(run: Run, output_tokens: int = 100, max_tokens: int = 100) -> float:
    """One model call through the run: reserve, then commit; returns what it cost."""
    step = run.before_llm_call(MODEL, input_tokens=100, max_tokens=max_tokens)
    usage = Usage(input_tokens=100, output_tokens=output_tokens)
    return float(run.after_llm_call(step, usage).cost_usd)


def try_call(warden: Warden, **attribution: str) -> float | BudgetExceeded:
    """One call in a new run: its cost, or the refusal."""
    run = warden.run(**attribution)
    try:
        return guarded_call(run)
    except BudgetExceeded as exc:
        return exc
    finally:
        run.finish()


def run_together(
    target: Callable[..., None],
    heads: Sequence[tuple[Any, ...]],
    tail: tuple[Any, ...] = (),
    timeout: float = 120.0,
) -> list[Any]:
    """One forked process per ``heads`` entry, calling ``target(*head, go, results, *tail)``;
    all released at once by ``go``, each putting one answer on ``results``: the answers."""
    ctx = multiprocessing.get_context("fork")
    go, results = ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=target, args=(*head, go, results, *tail)) for head in heads]
    for worker in workers:
        worker.start()
    go.set()
    answers = [results.get(timeout=timeout) for _ in workers]
    for worker in workers:
        worker.join(10)
    return answers
