"""Runs finished by a garbage-collection finalizer, wherever the collector runs."""

from __future__ import annotations

import gc
import threading
import weakref
from typing import Any

from budgetwarden import Budget, Policy, RunFinished
from budgetwarden.finalizing import finish_abandoned, join_abandoned

from .helpers import make_warden


class CollectingLock:
    """The ledger's lock, but the collector runs as soon as it is taken (as it may at any
    allocation). Taking it again on the same thread fails after a second instead of hanging."""

    def __init__(self) -> None:
        self.real = threading.Lock()
        self.collect = False

    def __enter__(self) -> None:
        if not self.real.acquire(timeout=1.0):
            raise AssertionError("the ledger's lock was taken twice on one thread: a deadlock")
        if self.collect:
            self.collect = False
            gc.collect()

    def __exit__(self, *exc: Any) -> None:
        self.real.release()


def abandoned_run_with_a_hold() -> tuple[Any, Any, Any]:
    """A run holding a model call, whose only owner is cyclic garbage with a finalizer."""
    warden, sink, _ = make_warden(
        Policy(budgets=[Budget(scope="user", window="day", max_cost_usd=10.0)])
    )
    run = warden.run(user="u1")
    run.before_llm_call("gpt-4o-mini", input_tokens=1_000, max_tokens=100)

    class Owner:
        pass

    owner = Owner()
    owner.cycle = owner  # type: ignore[attr-defined]  # freed by the collector, not refcounts
    weakref.finalize(owner, finish_abandoned, lambda: run.finish("error"))
    del owner
    return warden, sink, run


def test_a_run_collected_inside_the_ledgers_lock_is_finished_on_its_own_thread() -> None:
    warden, sink, run = abandoned_run_with_a_hold()
    lock = CollectingLock()
    warden.ledger._lock = lock
    lock.collect = True
    other = warden.run(user="u1")  # its reservation takes the lock: the collector runs there
    other.before_llm_call("gpt-4o-mini", input_tokens=10, max_tokens=10)
    assert join_abandoned()
    assert [e.run_id for e in sink.of_type(RunFinished)] == [run.id]
    assert run.counters.reserved_usd == 0.0
    other.finish()
    assert warden.remaining("user", "u1", window="day") == 10.0  # nothing held any more


def test_a_run_collected_outside_budgetwarden_is_finished_at_once() -> None:
    _, sink, run = abandoned_run_with_a_hold()
    gc.collect()
    assert run.finished_at is not None
    assert [e.stop_reason for e in sink.of_type(RunFinished)] == ["error"]
