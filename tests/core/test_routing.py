"""Routing transitions, table-driven: start, escalate, fallback, downgrade, exhaustion."""

from __future__ import annotations

import pytest

from budgetwarden import Routing
from budgetwarden.routing import (
    PromptSizeComplexity,
    RouteState,
    after_outcome,
    choose,
    fallback_exhausted,
    start_state,
)

ROUTING = Routing(
    tiers=["gpt-4o-mini", "gpt-4o", "o1"],
    task_classes={"extraction": 0, "analysis": "gpt-4o", "planning": 2},
    fallbacks={"gpt-4o": ["azure/gpt-4o", "claude-sonnet-4-5"]},
    max_escalations=1,
)


@pytest.mark.parametrize(
    ("task_class", "requested", "model", "reason"),
    [
        ("extraction", None, "gpt-4o-mini", "task_class=extraction"),
        ("analysis", "o1", "gpt-4o", "task_class=analysis"),  # the policy overrides the caller
        ("planning", None, "o1", "task_class=planning"),
        (None, "gpt-4o", "gpt-4o", "caller model gpt-4o"),
        (None, None, "gpt-4o-mini", "default: cheapest tier"),
        (None, "my-model", "my-model", "caller model (unrouted)"),  # honoured
        ("unknown-class", "my-model", "my-model", "caller model (unrouted)"),
        ("extraction", "my-model", "gpt-4o-mini", "task_class=extraction"),  # the class decides
    ],
)
def test_start_tier(task_class, requested, model, reason) -> None:
    state = start_state(ROUTING, task_class=task_class, requested_model=requested)
    choice = choose(ROUTING, state, requested_model=requested)
    assert (choice.model, choice.reason) == (model, reason)


def test_caller_model_outside_tiers_is_routed_when_the_policy_overrides() -> None:
    routing = ROUTING.model_copy(update={"override_caller_model": True})
    state = start_state(routing, task_class=None, requested_model="my-model")
    assert choose(routing, state, requested_model="my-model").model == "gpt-4o-mini"


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        (["invalid_json"], ("gpt-4o", "escalate: invalid_json")),
        (["validation_failed"], ("gpt-4o", "escalate: validation_failed")),
        (["tool_call_error"], ("gpt-4o", "escalate: tool_call_error")),
        (["invalid_json", "invalid_json"], ("gpt-4o", "escalate: invalid_json")),  # bounded
        (["ok"], ("gpt-4o-mini", "task_class=extraction")),
    ],
)
def test_failure_signals_escalate_one_tier_at_most_max_escalations(outcomes, expected) -> None:
    state = start_state(ROUTING, task_class="extraction", requested_model=None)
    for outcome in outcomes:
        model = choose(ROUTING, state, requested_model=None).model
        state = after_outcome(ROUTING, state, outcome=outcome, model=model)
    choice = choose(ROUTING, state, requested_model=None)
    assert (choice.model, choice.reason) == expected


def test_escalation_stops_at_the_top_tier() -> None:
    routing = ROUTING.model_copy(update={"max_escalations": 5})
    state = start_state(routing, task_class="planning", requested_model=None)
    state = after_outcome(routing, state, outcome="invalid_json", model="o1")
    assert choose(routing, state, requested_model=None).model == "o1"


@pytest.mark.parametrize("outage", ["timeout", "rate_limited", "provider_error"])
def test_outages_walk_the_fallback_chain_then_return_to_the_tier(outage) -> None:
    state = start_state(ROUTING, task_class="analysis", requested_model=None)
    state = after_outcome(ROUTING, state, outcome=outage, model="gpt-4o")
    first = choose(ROUTING, state, requested_model=None)
    assert (first.model, first.reason) == ("azure/gpt-4o", f"fallback: {outage} from gpt-4o")
    state = after_outcome(ROUTING, state, outcome=outage, model=first.model)
    assert choose(ROUTING, state, requested_model=None).model == "claude-sonnet-4-5"
    state = after_outcome(ROUTING, state, outcome=outage, model="claude-sonnet-4-5")
    assert fallback_exhausted(ROUTING, state)
    assert choose(ROUTING, state, requested_model=None).model == "gpt-4o"
    state = after_outcome(ROUTING, state, outcome="ok", model="gpt-4o")
    assert state.fallback_from is None


@pytest.mark.parametrize(
    ("start", "escalations", "pressure", "model", "downgraded"),
    [
        (2, 0, "cost 91% of user=u1/day", "gpt-4o", True),
        (1, 0, "cost 91% of user=u1/day", "gpt-4o-mini", True),
        (0, 0, "cost 91% of user=u1/day", "gpt-4o-mini", False),  # nothing below the cheapest
        (1, 1, "cost 95%", "gpt-4o", True),  # escalated to o1, pressure takes one tier back
        (2, 0, None, "o1", False),
    ],
)
def test_pressure_moves_exactly_one_tier_down(
    start, escalations, pressure, model, downgraded
) -> None:
    state = RouteState(start_tier=start, escalations=escalations)
    choice = choose(ROUTING, state, requested_model=None, pressure=pressure)
    assert (choice.model, choice.downgraded) == (model, downgraded)
    if downgraded:
        assert choice.reason == f"downgrade: {pressure}"


def test_never_more_than_one_tier_below_the_starting_tier() -> None:
    state = RouteState(start_tier=2)
    once = choose(ROUTING, state, requested_model=None, pressure="p", step_down=1)
    assert once.model == "gpt-4o"  # pressure and an unaffordable tier still move one tier


def test_downgrade_can_be_switched_off() -> None:
    routing = ROUTING.model_copy(update={"downgrade_on_pressure": False})
    choice = choose(routing, RouteState(start_tier=2), requested_model=None, pressure="p")
    assert choice.model == "o1"


def test_complexity_heuristic_picks_a_tier_for_runs_without_a_class() -> None:
    heuristic = PromptSizeComplexity(long_prompt_tokens=1000, many_tools=3)
    short = start_state(
        ROUTING, task_class=None, requested_model=None, prompt_tokens=10, complexity=heuristic
    )
    long_ = start_state(
        ROUTING,
        task_class=None,
        requested_model=None,
        prompt_tokens=5000,
        tool_count=4,
        complexity=heuristic,
    )
    assert choose(ROUTING, short, requested_model=None).model == "gpt-4o-mini"
    assert choose(ROUTING, long_, requested_model=None).model == "o1"


@pytest.mark.parametrize(
    "tiers", [["gpt-4o-mini", "gpt-4o"], []], ids=["outside tiers", "no tiers"]
)
def test_a_caller_model_outside_the_tiers_walks_its_own_fallback_chain(tiers: list[str]) -> None:
    routing = Routing(tiers=tiers, fallbacks={"my-model": ["azure/my-model", "backup"]})
    state = start_state(routing, task_class=None, requested_model="my-model")
    walked = []
    for outcome in ("timeout", "rate_limited", "ok", "ok"):
        choice = choose(routing, state, requested_model="my-model")
        walked.append((choice.model, choice.reason))
        state = after_outcome(routing, state, outcome=outcome, model=choice.model)
    assert walked == [
        ("my-model", "caller model (unrouted)"),
        ("azure/my-model", "fallback: timeout from my-model"),
        ("backup", "fallback: rate_limited from my-model"),
        ("my-model", "caller model (unrouted)"),  # a success ends the fallback
    ]
    for _ in range(3):
        state = after_outcome(routing, state, outcome="timeout", model="my-model")
    assert fallback_exhausted(routing, state)


def test_an_unrouted_model_without_a_chain_stays_on_an_outage() -> None:
    routing = Routing(tiers=["gpt-4o-mini"], fallbacks={"other": ["backup"]})
    state = start_state(routing, task_class=None, requested_model="my-model")
    state = after_outcome(routing, state, outcome="timeout", model="my-model")
    assert choose(routing, state, requested_model="my-model").model == "my-model"
    assert not fallback_exhausted(routing, state)
