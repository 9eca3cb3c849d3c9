"""How a run's calls are routed when the caller cannot switch models, when a fallback is
too dear, and when a run's first call meets budgets already under pressure."""

from __future__ import annotations

import pytest

from budgetwarden import Budget, BudgetExceeded, Limits, Policy, PriceBook, Routing, Usage

from .helpers import make_warden, usage

TIERS = ["gpt-4o-mini", "gpt-4o", "o1"]


def test_a_caller_that_cannot_switch_models_is_reserved_and_priced_as_its_own_model() -> None:
    """Hooks that only watch a framework call its own model (``route=False``): the routing a
    policy would choose must not make the reservation cheaper than the call that runs."""
    policy = Policy(
        limits=Limits(max_cost_usd=0.03),
        routing=Routing(tiers=TIERS, task_classes={"mid": 1}),
    )
    warden, sink, _ = make_warden(policy)
    run = warden.run(task_class="mid")
    worst = PriceBook().worst_case_cost("gpt-4o", 1500, 300)
    spent = 0.0
    with pytest.raises(BudgetExceeded) as info:
        while True:
            step = run.before_llm_call("gpt-4o", input_tokens=1500, max_tokens=300, route=False)
            assert step.model == "gpt-4o"
            assert step.route_reason == "caller model (the caller cannot switch models)"
            event = run.after_llm_call(step, Usage(input_tokens=1500, output_tokens=300))
            assert event.overshoot_usd == 0.0
            spent += event.cost_usd
    assert info.value.cap == "max_cost_usd"
    assert run.counters.cost_usd == pytest.approx(spent)
    assert spent <= 0.03 and spent + worst > 0.03  # refused only when gpt-4o no longer fits
    assert {e.model for e in sink.cost_events} == {"gpt-4o"}


def test_the_same_calls_routed_go_to_the_task_class_tier() -> None:
    policy = Policy(routing=Routing(tiers=TIERS, task_classes={"cheap": 0}))
    warden, _, _ = make_warden(policy)
    run = warden.run(task_class="cheap")
    assert run.before_llm_call("gpt-4o", input_tokens=10, max_tokens=10).model == "gpt-4o-mini"
    fixed = run.before_llm_call("gpt-4o", input_tokens=10, max_tokens=10, route=False)
    assert (fixed.model, fixed.tier) == ("gpt-4o", None)


async def test_the_async_twin_takes_route_too() -> None:
    policy = Policy(routing=Routing(tiers=TIERS, task_classes={"cheap": 0}))
    warden, _, _ = make_warden(policy)
    run = warden.run(task_class="cheap")
    step = await run.abefore_llm_call("o1", input_tokens=10, max_tokens=10, route=False)
    assert step.model == "o1"


def test_a_fallback_too_dear_for_the_budget_gives_way_to_the_model_that_failed() -> None:
    """An outage moves to the fallback; when that fallback's worst case no longer fits, the
    call retries the run's own model, which still fits, rather than stopping the run."""
    policy = Policy(
        limits=Limits(max_cost_usd=0.02),
        routing=Routing(tiers=TIERS, fallbacks={"gpt-4o-mini": ["gpt-4o"]}),
    )
    warden, _, _ = make_warden(policy)
    run = warden.run()
    step = run.before_llm_call("gpt-4o-mini", input_tokens=120_000, max_tokens=1)
    run.after_llm_call(step, Usage(input_tokens=120_000, output_tokens=0))  # $0.018
    step = run.before_llm_call("gpt-4o-mini", input_tokens=1000, max_tokens=100)
    run.after_llm_call(step, Usage(), outcome="rate_limited")
    retry = run.before_llm_call("gpt-4o-mini", input_tokens=1000, max_tokens=100)
    assert retry.model == "gpt-4o-mini"
    assert retry.route_reason.startswith("fallback gpt-4o did not fit; ")


def test_a_fallback_that_fits_is_taken() -> None:
    policy = Policy(routing=Routing(tiers=TIERS, fallbacks={"gpt-4o-mini": ["gpt-4o"]}))
    warden, _, _ = make_warden(policy)
    run = warden.run()
    step = run.before_llm_call("gpt-4o-mini", input_tokens=1000, max_tokens=100)
    run.after_llm_call(step, Usage(), outcome="rate_limited")
    fallback = run.before_llm_call("gpt-4o-mini", input_tokens=1000, max_tokens=100)
    assert (fallback.model, fallback.route_reason) == (
        "gpt-4o",
        "fallback: rate_limited from gpt-4o-mini",
    )


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_a_new_run_on_a_budget_past_the_degrade_level_starts_one_tier_down(
    asynchronous: bool,
) -> None:
    """The first call of a run knows no spend until its reservation shows it: a budget
    already at 92% must move that call one tier down too, not only the second."""
    policy = Policy(
        budgets=[Budget(scope="user", window="day", max_requests=100)],
        routing=Routing(tiers=TIERS, task_classes={"mid": 1}),
    )
    warden, _, _ = make_warden(policy)
    earlier = warden.run(user="u1")
    for _ in range(92):
        earlier.after_llm_call(earlier.before_llm_call("gpt-4o-mini", max_tokens=1), usage())
    earlier.finish()
    run = warden.run(user="u1", task_class="mid")
    if asynchronous:
        first = await run.abefore_llm_call(None, input_tokens=100, max_tokens=10)
    else:
        first = run.before_llm_call(None, input_tokens=100, max_tokens=10)
    assert first.model == "gpt-4o-mini"
    assert first.route_reason == "downgrade: budget:user=u1/day/requests at 92%"
    assert first.compress
    assert run.counters.iterations == 1 and run.counters.reserved_usd == first.reserved_usd
    run.after_llm_call(first, usage())
    assert run.counters.reserved_usd == 0.0
    assert warden.spent("user", "u1") == 93  # the released reservation counted no request


def test_a_new_run_below_the_degrade_level_keeps_its_tier() -> None:
    policy = Policy(
        budgets=[Budget(scope="user", window="day", max_requests=100)],
        routing=Routing(tiers=TIERS, task_classes={"mid": 1}),
    )
    warden, _, _ = make_warden(policy)
    run = warden.run(user="u1", task_class="mid")
    first = run.before_llm_call(None, input_tokens=100, max_tokens=10)
    assert (first.model, first.route_reason) == ("gpt-4o", "task_class=mid")
