"""Calls that name no max_tokens reserve at least what the run's largest answer used.

A reasoning model given no output limit answers in thousands of tokens, reasoning included;
reserving the policy's default 1,024 every time held a fraction of each call, and a dollar
cap let through a call it could not afford.
"""

from __future__ import annotations

import pytest

from budgetwarden import BudgetExceeded, Limits, Policy, Routing, Usage

from .helpers import make_warden

MESSAGES = [{"role": "user", "content": "Plan the migration."}]


@pytest.mark.parametrize("routed", [False, True], ids=["plain", "routed"])
def test_the_next_call_reserves_the_largest_answer_so_far(routed: bool) -> None:
    routing = Routing(tiers=["gpt-4o"]) if routed else None
    warden, _, _ = make_warden(Policy(routing=routing))
    run = warden.run()
    first = run.before_llm_call("gpt-4o", MESSAGES)
    assert first.max_tokens == 1024, "the policy's default to start with"
    run.after_llm_call(first, Usage(input_tokens=10, output_tokens=5000, reasoning_tokens=4200))
    second = run.before_llm_call("gpt-4o", MESSAGES)
    assert second.max_tokens == 5000
    run.after_llm_call(second, Usage(input_tokens=10, output_tokens=300))
    assert run.before_llm_call("gpt-4o", MESSAGES).max_tokens == 5000, "the largest, kept"
    named = run.before_llm_call("gpt-4o", MESSAGES, max_tokens=100)
    assert named.max_tokens == 100, "a limit the caller names is the limit"


def test_a_dollar_cap_refuses_the_call_a_reasoning_model_would_overspend() -> None:
    # gpt-4o output is $10 per million: 5,000 tokens cost $0.05. With the default 1,024
    # reserved ($0.01), the second call fitted under $0.06 and spent $0.10 in all.
    warden, _, _ = make_warden(Policy(limits=Limits(max_cost_usd=0.06)))
    run = warden.run()
    first = run.before_llm_call("gpt-4o", MESSAGES)
    run.after_llm_call(first, Usage(input_tokens=10, output_tokens=5000))
    with pytest.raises(BudgetExceeded) as info:
        run.before_llm_call("gpt-4o", MESSAGES)
    assert info.value.cap == "max_cost_usd"


def test_each_run_starts_from_the_policy_default() -> None:
    warden, _, _ = make_warden(Policy())
    run = warden.run()
    step = run.before_llm_call("gpt-4o", MESSAGES)
    run.after_llm_call(step, Usage(input_tokens=10, output_tokens=8000))
    assert warden.run().before_llm_call("gpt-4o", MESSAGES).max_tokens == 1024
