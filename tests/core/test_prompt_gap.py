"""Reservations learn what the estimate missed of the prompt the provider billed.

Some of a prompt never reaches the estimate: a provider's tool-use system prompt (about 350
tokens on Claude), tools an SDK lists after the hooks ran (MCP servers), a tokenizer that
counts more than four characters a token. The provider bills them at every call, so a run
reserved too little at every call and crossed its input and dollar caps. From a run's second
call on, what its last estimate missed (``Run.prompt_gap``) is added to the estimate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from budgetwarden import Budget, BudgetExceeded, Limits, Policy, Routing, Usage, Warden
from budgetwarden.usage import estimate_message_tokens

from .helpers import make_warden

MODEL = "gpt-4o-mini"
HIDDEN = 2000  # what the provider bills beyond the messages: tool definitions it was never shown


def messages(turns: int) -> list[dict[str, str]]:
    """An agent's history after ``turns`` tool results (about 100 tokens each)."""
    history = [{"role": "user", "content": "Find the cheapest flight. " * 20}]
    history += [{"role": "tool", "content": f"result {n}: " + "fare " * 95} for n in range(turns)]
    return history


def billed(turns: int, hidden: int = HIDDEN) -> Usage:
    """The provider's bill for ``messages(turns)``: the messages and ``hidden`` tokens more."""
    return Usage(input_tokens=estimate_message_tokens(messages(turns)) + hidden, output_tokens=10)


POLICIES: dict[str, Any] = {
    "plain": {},
    "budget": {"budgets": [Budget(scope="user", window="day", max_cost_usd=100)]},
    "routed": {"routing": Routing(tiers=[MODEL])},
    "final answer": {"limits": Limits(max_cost_usd=100, final_answer=True)},
}


@pytest.fixture(params=[*POLICIES, "sqlite"])
def warden(request: pytest.FixtureRequest, tmp_path: Path) -> Warden:
    """Wardens whose runs take each way to a reservation: the one-pass path without budgets
    and with in-process ones, the general path (routing, final answer), SQLite pools."""
    if request.param == "sqlite":
        budgets = POLICIES["budget"]["budgets"]
        return Warden(
            Policy(budgets=budgets), ledger=f"sqlite:///{tmp_path}/l.db", log_events=False
        )
    return make_warden(Policy(**POLICIES[request.param]))[0]


def test_the_second_call_reserves_what_the_first_estimate_missed(warden: Warden) -> None:
    run = warden.run(user="u1")
    first = run.before_llm_call(MODEL, messages(0), max_tokens=10)
    assert first.input_tokens == estimate_message_tokens(messages(0))
    assert first.prompt_gap == 0 and run.prompt_gap == 0, "nothing billed yet"
    run.after_llm_call(first, billed(0))
    assert run.prompt_gap == HIDDEN
    second = run.before_llm_call(MODEL, messages(1), max_tokens=10)
    assert second.input_tokens == estimate_message_tokens(messages(1)) + HIDDEN
    assert second.prompt_gap == HIDDEN
    run.after_llm_call(second, billed(1, hidden=300))
    assert run.prompt_gap == 300, "the last bill's gap, not the largest"
    third = run.before_llm_call(MODEL, messages(2), max_tokens=10)
    assert third.input_tokens == estimate_message_tokens(messages(2)) + 300
    run.after_llm_call(third, billed(2, hidden=0))
    assert run.prompt_gap == 0


async def test_the_async_calls_learn_it_too(warden: Warden) -> None:
    run = warden.run(user="u1")
    first = await run.abefore_llm_call(MODEL, messages(0), max_tokens=10)
    await run.arecord_llm_call(first, billed(0))
    second = await run.abefore_llm_call(MODEL, messages(1), max_tokens=10)
    assert second.input_tokens == estimate_message_tokens(messages(1)) + HIDDEN


def test_the_tools_offered_count_before_the_gap() -> None:
    tool = {
        "type": "function",
        "function": {"name": "search", "description": "Search fares.", "parameters": {}},
    }
    run = make_warden()[0].run()
    first = run.before_llm_call(MODEL, messages(0), max_tokens=10, tools=[tool])
    assert first.tool_tokens > 0
    seen = first.input_tokens  # messages and the tool's definition
    run.after_llm_call(first, Usage(input_tokens=seen + 346, output_tokens=10))
    second = run.before_llm_call(MODEL, messages(0), max_tokens=10, tools=[tool])
    assert (second.input_tokens, second.prompt_gap) == (seen + 346, 346)


def test_an_estimate_above_the_bill_is_kept_as_it_is() -> None:
    # An image is estimated at IMAGE_TOKENS, often more than billed: no negative gap.
    run = make_warden()[0].run()
    first = run.before_llm_call(MODEL, messages(2), max_tokens=10)
    run.after_llm_call(first, Usage(input_tokens=10, output_tokens=10))
    assert run.prompt_gap == 0
    assert run.before_llm_call(MODEL, messages(2), max_tokens=10).input_tokens == (
        first.input_tokens
    )


def test_a_count_the_caller_gives_is_taken_as_it_is_and_teaches_nothing() -> None:
    run = make_warden()[0].run()
    counted = run.before_llm_call(MODEL, input_tokens=500, max_tokens=10)
    assert counted.prompt_gap is None
    run.after_llm_call(counted, Usage(input_tokens=5000, output_tokens=10))
    assert run.prompt_gap == 0
    estimated = run.before_llm_call(MODEL, messages(0), max_tokens=10)
    run.after_llm_call(estimated, billed(0))
    assert run.before_llm_call(MODEL, input_tokens=500, max_tokens=10).input_tokens == 500


def test_calls_not_billed_or_not_sent_whole_teach_nothing() -> None:
    warden, _, _ = make_warden(Policy(limits=Limits(max_input_tokens=100_000)))
    run = warden.run()
    step = run.before_llm_call(MODEL, messages(0), max_tokens=10)
    run.after_llm_call(step, billed(0))
    assert run.prompt_gap == HIDDEN
    # no usage reported: the core estimates one, which says nothing of the bill
    step = run.before_llm_call(MODEL, messages(1), max_tokens=10)
    run.after_llm_call(step, None, output_text="ok")
    # a failed call billed nothing
    step = run.before_llm_call(MODEL, messages(1), max_tokens=10)
    run.after_llm_call(step, Usage(), outcome="provider_error")
    assert run.prompt_gap == HIDDEN
    # a compressed call (the run is at 90 % of its input cap) was not sent whole
    step = run.before_llm_call(MODEL, input_tokens=90_000 - run.report.input_tokens)
    run.after_llm_call(step, Usage(input_tokens=step.input_tokens, output_tokens=1))
    compressed = run.before_llm_call(MODEL, messages(2), max_tokens=10)
    assert compressed.compress
    run.after_llm_call(compressed, Usage(input_tokens=100, output_tokens=10))
    assert run.prompt_gap == HIDDEN


def test_compression_aims_at_the_messages_without_the_gap() -> None:
    run = make_warden()[0].run()
    first = run.before_llm_call(MODEL, messages(3), max_tokens=10)
    run.after_llm_call(first, billed(3))
    second = run.before_llm_call(MODEL, messages(3), max_tokens=10)
    assert second.compress_target(0.5) == estimate_message_tokens(messages(3)) // 2


@pytest.mark.parametrize("cap", range(6_000, 12_000, 350))
def test_a_hidden_prompt_part_never_carries_a_run_past_its_input_cap(cap: int) -> None:
    # Reserving the messages only, the call that crossed the cap was admitted by HIDDEN
    # tokens it did not count.
    run = make_warden(Policy(limits=Limits(max_input_tokens=cap)))[0].run()
    with pytest.raises(BudgetExceeded) as info:
        for turn in range(100):
            step = run.before_llm_call(MODEL, messages(turn), max_tokens=10)
            run.after_llm_call(step, billed(turn))
    assert info.value.cap == "max_input_tokens"
    assert run.report.input_tokens <= cap


@pytest.mark.parametrize("cap", range(6_000, 12_000, 350))
def test_the_final_answer_is_the_last_call_the_cap_allows(cap: int) -> None:
    # The gap appears with the first bill; the final answer's foresight measures the
    # prompt's growth without it, or it would end the run a call early.
    limits = Limits(max_input_tokens=cap, final_answer=True)
    run = make_warden(Policy(limits=limits))[0].run()
    for turn in range(100):
        step = run.before_llm_call(MODEL, messages(turn), max_tokens=10)
        run.after_llm_call(step, billed(turn))
        if step.final:
            break
    assert step.final
    with pytest.raises(BudgetExceeded):
        run.before_llm_call(MODEL, messages(turn + 1), max_tokens=10)
    assert run.report.input_tokens <= cap
