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


@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize(("tier", "factor"), [("priority", 2.0), ("flex", 0.5), ("auto", 1.0)])
def test_the_tier_a_run_asks_for_reserves_its_first_call(
    policy: str, tier: str, factor: float
) -> None:
    run = make_warden(POLICIES[policy])[0].run(user="u1")
    standard = PriceBook().worst_case_cost(MODEL, 1000, 100)

    run.expect_service_tier(tier)
    first = run.before_llm_call(MODEL, input_tokens=1000, max_tokens=100)

    assert first.reserved_usd == pytest.approx(factor * standard)
    run.expect_service_tier(None)  # too late: from now on the bills decide
    run.after_llm_call(first, served(tier if factor != 1.0 else None))
    second = run.before_llm_call(MODEL, input_tokens=1000, max_tokens=100)
    assert second.reserved_usd == pytest.approx(factor * standard)


def test_a_priority_runs_first_call_is_refused_where_it_cannot_be_paid() -> None:
    # Reserved at the standard $0.00225 the first priority call fitted a $0.004 cap and
    # cost $0.0045.
    standard = make_warden(Policy(limits=Limits(max_cost_usd=0.004)))[0].run()
    standard.after_llm_call(
        standard.before_llm_call(MODEL, input_tokens=1000, max_tokens=100), served("priority")
    )
    assert standard.report.cost_usd == pytest.approx(0.0045)  # over its cap

    run = make_warden(Policy(limits=Limits(max_cost_usd=0.004)))[0].run()
    run.expect_service_tier("priority")
    with pytest.raises(BudgetExceeded):
        run.before_llm_call(MODEL, input_tokens=1000, max_tokens=100)
    assert run.report.cost_usd == 0.0


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


@pytest.mark.parametrize(("tier", "refused"), [("priority", True), (None, False)])
def test_complete_reserves_the_tier_it_asks_litellm_for(tier: str | None, refused: bool) -> None:
    from budgetwarden.dispatch import complete

    # 1,000 output tokens of gpt-5: about $0.010 at the standard prices, $0.020 at priority
    warden, sink, _ = make_warden(Policy(limits=Limits(max_cost_usd=0.015)))
    run = warden.run()
    messages = [{"role": "user", "content": "hi"}]
    options = {"service_tier": tier} if tier else {}

    if refused:
        with pytest.raises(BudgetExceeded):
            complete(run, messages, model=MODEL, max_tokens=1000, mock_response="ok", **options)
        assert sink.cost_events == []
    else:
        complete(run, messages, model=MODEL, max_tokens=1000, mock_response="ok", **options)
        assert len(sink.cost_events) == 1
