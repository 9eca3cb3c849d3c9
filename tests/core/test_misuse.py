"""A run used the wrong way gets a clear error, and its figures stay right.

Negative or NaN token counts would reserve less than nothing (letting another run overspend a
shared budget); recording a step twice, or on another run, would count it twice in the run
while the ledger (idempotent per call) counts it once; calls on a finished run would be
counted in a run whose report is already out.
"""

from __future__ import annotations

import asyncio
import math

import pytest

from budgetwarden import Budget, BudgetExceeded, Limits, Policy, Warden

from .helpers import usage

SHARED = Policy(budgets=[Budget(scope="global", window="day", max_cost_usd=0.01)])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", -100_000),
        ("input_tokens", -1_000_000),
        ("max_tokens", math.nan),
        ("input_tokens", math.nan),
        ("max_tokens", 1.5),
        ("max_tokens", "1024"),
        ("max_tokens", True),
    ],
)
def test_a_token_count_that_is_not_a_whole_number_0_or_more_is_refused(
    field: str, value: object
) -> None:
    warden = Warden(SHARED, log_events=False)
    run = warden.run(user="u1")
    with pytest.raises(ValueError, match=f"{field}=.*whole number of tokens, 0 or more"):
        run.before_llm_call("gpt-4o", **{field: value})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=field):
        asyncio.run(run.abefore_llm_call("gpt-4o", **{field: value}))  # type: ignore[arg-type]
    assert run.counters.reserved_usd == 0.0 and run.counters.iterations == 0


def test_a_negative_max_tokens_cannot_open_room_in_a_shared_budget() -> None:
    """The audit's case: a negative hold let another user's run spend 100x the budget."""
    warden = Warden(SHARED, log_events=False)
    with pytest.raises(ValueError):
        warden.run(user="u1").before_llm_call("gpt-4o", input_tokens=10, max_tokens=-100_000)
    other = warden.run(user="u2")
    made = 0
    with pytest.raises(BudgetExceeded):
        for _ in range(1_000):
            step = other.before_llm_call("gpt-4o", input_tokens=1_000, max_tokens=100)
            other.after_llm_call(step, usage(1_000, 100))
            made += 1
    assert made == 2 and warden.spent("global", "global") <= 0.01


class IntegerLike:
    """An integer of another library (numpy's): not an int, but has ``__index__``."""

    def __index__(self) -> int:
        return 7


def test_zero_and_integer_like_counts_are_taken() -> None:
    run = Warden(Policy(), log_events=False).run()
    step = run.before_llm_call("gpt-4o", input_tokens=IntegerLike(), max_tokens=0)  # type: ignore[arg-type]
    assert (step.input_tokens, step.max_tokens) == (7, 0)


def test_a_step_recorded_twice_is_refused_and_counted_once() -> None:
    warden = Warden(SHARED, log_events=False)
    run = warden.run(user="u1")
    step = run.before_llm_call("gpt-4o", input_tokens=100, max_tokens=100)
    run.after_llm_call(step, usage(100, 50))
    cost = run.report.cost_usd
    for again in (run.after_llm_call, run.record_llm_call):
        with pytest.raises(ValueError, match="recorded already"):
            again(step, usage(100, 50))
    with pytest.raises(ValueError, match="recorded already"):
        asyncio.run(run.aafter_llm_call(step, usage(100, 50)))
    assert run.report.cost_usd == cost and run.counters.iterations == 1
    tool = run.before_tool_call("search", {"q": "x"})
    run.record_tool_call(tool)
    with pytest.raises(ValueError, match=r"tool call .* recorded already"):
        run.after_tool_call(tool)
    assert run.counters.tool_calls == 1
    run.finish()
    assert warden.spent("global", "global") == pytest.approx(cost)


def test_a_step_recorded_on_another_run_is_refused() -> None:
    warden = Warden(SHARED, log_events=False)
    mine, other = warden.run(user="u1"), warden.run(user="u1")
    step = mine.before_llm_call("gpt-4o", input_tokens=100, max_tokens=100)
    for record in (other.after_llm_call, other.record_llm_call):
        with pytest.raises(ValueError, match="reserved by another run"):
            record(step, usage(100, 50))
    tool = mine.before_tool_call("search")
    with pytest.raises(ValueError, match="reserved by another run"):
        other.record_tool_call(tool)
    mine.record_llm_call(step, usage(100, 50))
    mine.record_tool_call(tool)
    assert (other.counters.iterations, mine.counters.iterations) == (0, 1)
    assert (other.counters.tool_calls, mine.counters.tool_calls) == (0, 1)


def test_a_call_still_in_flight_when_its_run_ends_is_recorded_when_it_returns() -> None:
    """The run's end frees a pending call's hold; its real cost still lands (never hidden)."""
    warden = Warden(SHARED, log_events=False)
    run = warden.run(user="u1")
    step = run.before_llm_call("gpt-4o", input_tokens=100, max_tokens=100)
    run.finish()
    run.after_llm_call(step, usage(100, 50))
    assert warden.spent("global", "global") == pytest.approx(run.report.cost_usd) != 0


def test_a_finished_run_refuses_new_calls() -> None:
    run = Warden(Policy(limits=Limits(max_iterations=5)), log_events=False).run()
    run.finish()
    with pytest.raises(RuntimeError, match=r"is finished .*warden\.run"):
        run.before_llm_call("gpt-4o")
    with pytest.raises(RuntimeError, match="is finished"):
        run.before_tool_call("search")
    with pytest.raises(RuntimeError, match="is finished"):
        asyncio.run(run.abefore_llm_call("gpt-4o"))
    assert run.counters.iterations == 0
