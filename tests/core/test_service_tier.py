"""Calls served at a service tier billed apart are priced, and then reserved, at its prices.

OpenAI's priority tier bills twice the standard prices (flex half), Gemini's priority tier
too. A run served at priority was counted at half its cost, so its caps and budgets let it
spend twice what they said.
"""

from __future__ import annotations

import pytest

from budgetwarden import Budget, BudgetExceeded, Limits, Policy, PriceBook, Routing, Usage
from budgetwarden.dispatch import usage_from_litellm
from budgetwarden.pricing import billed_tier

from .helpers import make_warden

MODEL = "gpt-5"
POLICIES = {
    "plain": Policy(),
    "budget": Policy(budgets=[Budget(scope="user", window="day", max_cost_usd=100)]),
    "routed": Policy(routing=Routing(tiers=[MODEL])),
}


def served(tier: str | None) -> Usage:
    return Usage(input_tokens=1000, output_tokens=100, service_tier=tier)


@pytest.mark.parametrize("policy", list(POLICIES))
def test_a_run_reserves_at_the_tier_its_last_call_was_billed_at(policy: str) -> None:
    run = make_warden(POLICIES[policy])[0].run(user="u1")
    book = PriceBook()
    first = run.before_llm_call(MODEL, input_tokens=1000, max_tokens=100)
    assert first.reserved_usd == pytest.approx(book.worst_case_cost(MODEL, 1000, 100))
    event = run.after_llm_call(first, served("priority"))
    assert event.cost_usd == pytest.approx(2 * book.cost(MODEL, served(None)))
    second = run.before_llm_call(MODEL, input_tokens=1000, max_tokens=100)
    assert second.reserved_usd == pytest.approx(2 * first.reserved_usd)
    run.after_llm_call(second, served(None))  # back to the standard tier
    third = run.before_llm_call(MODEL, input_tokens=1000, max_tokens=100)
    assert third.reserved_usd == pytest.approx(first.reserved_usd)
    run.after_llm_call(third, Usage(input_tokens=1000, estimated=True, service_tier=None))
    fourth = run.before_llm_call(MODEL, input_tokens=1000, max_tokens=100)
    assert fourth.reserved_usd == pytest.approx(first.reserved_usd)


def test_a_dollar_cap_holds_at_the_priority_tier() -> None:
    # Each priority call costs 2 x $0.00225 = $0.0045: two fit in $0.01. Counted at the
    # standard prices, four calls were made ($0.018 billed) and the run reported $0.009.
    run = make_warden(Policy(limits=Limits(max_cost_usd=0.01)))[0].run()
    calls = 0
    with pytest.raises(BudgetExceeded):
        for _ in range(10):
            step = run.before_llm_call(MODEL, input_tokens=1000, max_tokens=100)
            calls += 1
            run.after_llm_call(step, served("priority"))
    assert calls == 2
    assert run.report.cost_usd == pytest.approx(0.009)


@pytest.mark.parametrize(
    ("tier", "kept"),
    [("priority", "priority"), ("flex", "flex"), ("default", None), ("auto", None), (None, None)],
)
def test_litellm_usage_keeps_a_tier_billed_apart(tier: str | None, kept: str | None) -> None:
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "service_tier": tier}
    assert billed_tier(tier) == kept
    found = usage_from_litellm(usage)
    assert found is not None and found.service_tier == kept
    from_response = usage_from_litellm({"prompt_tokens": 10, "completion_tokens": 5}, tier)
    assert from_response is not None and from_response.service_tier == kept


def test_usages_added_keep_a_tier_they_share() -> None:
    assert (served("priority") + served("priority")).service_tier == "priority"
    assert (served("priority") + served(None)).service_tier is None
