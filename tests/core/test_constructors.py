"""Parts of the wrong kind are refused when they are given, naming the part and the fix: they
used to be accepted and fail at the first call with an AttributeError from deep inside."""

from __future__ import annotations

from typing import Any

import pytest

from budgetwarden import Budget, Limits, Policy, PriceBook, Warden

POLICY = Policy(budgets=[Budget(scope="user", window="day", max_cost_usd=1.0)])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ledger": None}, r"Warden\(ledger=None\): pass a URI"),
        ({"ledger": 123}, r"Warden\(ledger=123\)"),
        ({"prices": {"x": 1}}, r"takes a PriceBook, not dict.*Policy\(prices="),
        ({"namespace": None}, r"namespace=None"),
        ({"namespace": ""}, r"namespace=''"),
        ({"approve": True}, r"Warden\(approve=True\): pass a function"),
        ({"on_limit": "x"}, r"on_limit='x'"),
        ({"clock": 123}, r"clock=123"),
        ({"sinks": [object()]}, r"has no emit\(event\) method"),
    ],
)
def test_a_warden_part_of_the_wrong_kind_is_a_type_error(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        Warden(POLICY, **kwargs)


def test_sinks_may_be_any_iterable() -> None:
    from budgetwarden import ListSink

    sink = ListSink()
    warden = Warden(POLICY, sinks=(s for s in [sink]), log_events=False)
    warden.cancel(user="u1")
    assert warden.sinks == [sink] and sink.events


def test_a_fallback_model_without_a_price_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match=r"Policy.fallback_model='gpt-4oo' has no price"):
        Warden(Policy(fallback_model="gpt-4oo"))
    priced = Policy(
        fallback_model="my-llama",
        prices={"my-llama": {"input_cost_per_token": 1e-7, "output_cost_per_token": 2e-7}},
    )
    assert Warden(priced, log_events=False).run().before_llm_call(None).model is None
    assert Warden(Policy(), prices=PriceBook(), log_events=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"user": 5}, r"warden.run: user=5 must be a string or None \(pass str\(5\)\)"),
        ({"workspace": ["a"]}, r"workspace=\['a'\]"),
        ({"tags": {"team": 7}}, r"tag 'team'=7"),
        ({"parent": "run-1"}, r"parent= must be the parent's Run"),
        ({"run_id": 9}, r"run_id=9"),
        ({"limits": {"max_iterations": 3}}, r"Limits\(\*\*limits\)"),
    ],
)
def test_a_run_part_of_the_wrong_kind_is_a_type_error(kwargs: dict[str, Any], message: str) -> None:
    warden = Warden(POLICY, log_events=False)
    with pytest.raises(TypeError, match=message):
        warden.run(**kwargs)


def test_a_run_takes_limits_and_string_scopes() -> None:
    run = Warden(POLICY, log_events=False).run(user="u1", limits=Limits(max_iterations=1))
    run.after_llm_call(run.before_llm_call("gpt-4o", input_tokens=10, max_tokens=10))


def test_a_cancel_needs_string_values() -> None:
    warden = Warden(POLICY, log_events=False)
    with pytest.raises(TypeError, match="user=5"):
        warden.cancel(user=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not None"):
        warden.cancel(user=None)  # type: ignore[arg-type]


def test_the_adapters_need_a_warden_and_string_scopes() -> None:
    from budgetwarden.integrations.langchain import BudgetCallbackHandler, BudgetMiddleware
    from budgetwarden.integrations.openai_agents import BudgetRunHooks

    for adapter in (BudgetCallbackHandler, BudgetMiddleware, BudgetRunHooks):
        with pytest.raises(
            TypeError,
            match=rf"{adapter.__name__} needs a budgetwarden.Warden, not Policy: pass Warden\(",
        ):
            adapter(POLICY)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=rf"{adapter.__name__}: user=5 must be a string"):
            adapter(Warden(POLICY, log_events=False), user=5)  # type: ignore[arg-type]


def test_guard_crew_needs_a_warden() -> None:
    from crewai import Agent, Crew, Task

    from budgetwarden.integrations.crewai import guard_crew

    agent = Agent(role="r", goal="g", backstory="b", llm="gpt-4o-mini")
    crew = Crew(agents=[agent], tasks=[Task(description="d", expected_output="o", agent=agent)])
    with pytest.raises(TypeError, match=r"guard_crew needs a budgetwarden\.Warden, not NoneType"):
        guard_crew(crew, None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="guard_crew: user=5"):
        guard_crew(crew, Warden(POLICY, log_events=False), user=5)  # type: ignore[arg-type]
