"""BudgetModelProvider: each call goes to the tier the policy chose, on a real Runner."""

from __future__ import annotations

from typing import Any

import pytest
from agents import Agent, ModelSettings, Runner
from agents.run_config import RunConfig
from oa_scripted import ScriptedModel, message, tool_call

from budgetwarden import BudgetExceeded, PriceBook, Usage
from budgetwarden.integrations.openai_agents import BudgetModelProvider, BudgetRunHooks

CHEAP, STRONG, SPARE = "gpt-4o-mini", "gpt-4o", "gpt-4.1-mini"
TIERS = {"tiers": [CHEAP, STRONG], "task_classes": {"hard": 1}}


class RateLimitError(Exception):
    """What a provider raises on HTTP 429."""

    status_code = 429


def routed(hooks: BudgetRunHooks, models: dict[str, ScriptedModel]) -> RunConfig:
    return RunConfig(model_provider=BudgetModelProvider(hooks, model_factory=models.__getitem__))


def scripted(**kwargs: Any) -> dict[str, ScriptedModel]:
    return {name: ScriptedModel(model=name, **kwargs) for name in (CHEAP, STRONG, SPARE)}


async def test_task_class_starts_the_run_on_its_tier(make_warden, tools) -> None:
    models = scripted()
    warden = make_warden(limits={"max_iterations": 2}, routing=TIERS)
    hooks = BudgetRunHooks(warden, task_class="hard")
    agent = Agent(name="analyst", tools=[tools.search])
    with pytest.raises(BudgetExceeded):
        await Runner.run(agent, "analyse", hooks=hooks, run_config=routed(hooks, models))
    assert (models[CHEAP].calls, models[STRONG].calls) == (0, 2)
    report = hooks.report
    assert report is not None and report.models == [STRONG]
    assert report.cost_usd == pytest.approx(
        2 * PriceBook().cost(STRONG, Usage(input_tokens=100, output_tokens=20))
    )


async def test_a_run_without_task_class_starts_on_the_cheapest_tier(make_warden, tools) -> None:
    models = scripted(loop_tool=None)
    hooks = BudgetRunHooks(make_warden(routing=TIERS))
    agent = Agent(name="analyst", tools=[tools.search])
    result = await Runner.run(agent, "hi", hooks=hooks, run_config=routed(hooks, models))
    assert result.final_output == "done"
    assert (models[CHEAP].calls, models[STRONG].calls) == (1, 0)


async def test_a_malformed_tool_call_escalates_the_next_call_one_tier(make_warden, tools) -> None:
    models = scripted()
    bad = tool_call("search")
    bad.arguments = "{not json"
    models[CHEAP].turns = [[bad]]
    hooks = BudgetRunHooks(make_warden(limits={"max_iterations": 3}, routing=TIERS))
    agent = Agent(name="analyst", tools=[tools.search])
    with pytest.raises(BudgetExceeded):
        await Runner.run(agent, "analyse", hooks=hooks, run_config=routed(hooks, models))
    assert (models[CHEAP].calls, models[STRONG].calls) == (1, 2)
    assert tools.ran == ["query 0", "query 1"]  # the strong tier's; the malformed one never ran


async def test_an_outage_falls_back_within_the_same_turn(make_warden, sink, tools) -> None:
    models = scripted(loop_tool=None)
    models[CHEAP].turns = [RateLimitError("slow down")]
    routing = {**TIERS, "fallbacks": {CHEAP: [SPARE]}}
    hooks = BudgetRunHooks(make_warden(routing=routing))
    agent = Agent(name="analyst", tools=[tools.search])
    result = await Runner.run(agent, "hi", hooks=hooks, run_config=routed(hooks, models))
    assert result.final_output == "done"
    assert (models[CHEAP].calls, models[SPARE].calls) == (1, 1)
    report = hooks.report
    assert report is not None and (report.iterations, report.errors) == (2, 1)
    outcomes = [(e.model, e.outcome) for e in sink.cost_events if e.kind == "llm"]
    assert outcomes == [(CHEAP, "rate_limited"), (SPARE, "ok")]


class BadRequestError(Exception):
    """A provider's 400, as its SDK names it."""

    status_code = 400


async def test_a_refused_request_is_no_outage_and_gets_no_fallback(
    make_warden, sink, tools
) -> None:
    models = scripted(loop_tool=None)
    models[CHEAP].turns = [BadRequestError("context_length_exceeded")]
    hooks = BudgetRunHooks(make_warden(routing={**TIERS, "fallbacks": {CHEAP: [SPARE]}}))
    agent = Agent(name="analyst", tools=[tools.search])
    with pytest.raises(BadRequestError):
        await Runner.run(agent, "hi", hooks=hooks, run_config=routed(hooks, models))
    assert (models[CHEAP].calls, models[SPARE].calls) == (1, 0)
    outcomes = [(e.model, e.status, e.outcome) for e in sink.cost_events if e.kind == "llm"]
    assert outcomes == [(CHEAP, "error", "request_error")]


async def test_an_outage_without_fallback_surfaces_and_holds_nothing(make_warden, tools) -> None:
    models = scripted()
    models[CHEAP].turns = [TimeoutError("provider timed out")]
    hooks = BudgetRunHooks(make_warden(routing=TIERS))
    agent = Agent(name="analyst", tools=[tools.search])
    with pytest.raises(TimeoutError):
        await Runner.run(agent, "hi", hooks=hooks, run_config=routed(hooks, models))
    run = hooks.run
    assert run is not None
    assert run.report.iterations == 1 and run.report.errors == 1
    assert run.counters.reserved_usd == 0
    await hooks.aclose()
    assert run.report.stop_reason == "error"


async def test_budget_pressure_moves_one_tier_down(make_warden, sink, tools) -> None:
    models = scripted(usage=(1000, 100, 0, 0))
    first = PriceBook().cost(STRONG, Usage(input_tokens=1000, output_tokens=100))
    warden = make_warden(limits={"max_cost_usd": first / 0.92}, routing=TIERS)
    hooks = BudgetRunHooks(warden, task_class="hard")
    agent = Agent(name="analyst", tools=[tools.search], model_settings=ModelSettings(max_tokens=50))
    with pytest.raises(BudgetExceeded):
        await Runner.run(agent, "analyse", hooks=hooks, run_config=routed(hooks, models))
    assert models[STRONG].calls == 1 and models[CHEAP].calls >= 1
    second = [e for e in sink.cost_events if e.kind == "llm"][1]
    assert second.model == CHEAP and "downgrade" in (second.route_reason or "")


async def test_the_routed_call_asks_for_no_more_tokens_than_reserved(make_warden, tools) -> None:
    models = scripted(loop_tool=None)
    hooks = BudgetRunHooks(make_warden(default_max_output_tokens=256, routing=TIERS))
    agent = Agent(name="analyst", tools=[tools.search])
    await Runner.run(agent, "hi", hooks=hooks, run_config=routed(hooks, models))
    assert models[CHEAP].settings[0].max_tokens == 256


async def test_routing_works_on_streamed_runs(make_warden, tools) -> None:
    models = scripted()
    warden = make_warden(limits={"max_iterations": 2}, routing=TIERS)
    hooks = BudgetRunHooks(warden, task_class="hard")
    agent = Agent(name="analyst", tools=[tools.search])
    result = Runner.run_streamed(agent, "go", hooks=hooks, run_config=routed(hooks, models))
    with pytest.raises(BudgetExceeded):
        async for _ in result.stream_events():
            pass
    assert (models[CHEAP].calls, models[STRONG].calls) == (0, 2)


async def test_an_agent_with_a_model_instance_can_be_wrapped_to_route(make_warden, tools) -> None:
    models = scripted(loop_tool=None)
    own = ScriptedModel([[message("from my own model")]], model=CHEAP, loop_tool=None)
    hooks = BudgetRunHooks(make_warden(routing=TIERS), task_class="hard")
    provider = BudgetModelProvider(hooks, model_factory=models.__getitem__)
    agent = Agent(name="analyst", model=provider.wrap(own))
    result = await Runner.run(agent, "hi", hooks=hooks)
    assert result.final_output == "done"  # routed to the strong tier, not the wrapped model
    assert (own.calls, models[STRONG].calls) == (0, 1)


async def test_pressure_compresses_the_routed_calls_input(make_warden, tools) -> None:
    models = scripted(usage=(1000, 100, 0, 0))
    models[STRONG].turns = [[tool_call("search", {"q": "a"})], [tool_call("search", {"q": "b"})]]
    second = 2 * PriceBook().cost(STRONG, Usage(input_tokens=1000, output_tokens=100))
    warden = make_warden(limits={"max_cost_usd": second / 0.92}, routing=TIERS)
    hooks = BudgetRunHooks(warden, task_class="hard")
    agent = Agent(name="analyst", tools=[tools.search], model_settings=ModelSettings(max_tokens=50))
    with pytest.raises(BudgetExceeded):
        await Runner.run(agent, "analyse", hooks=hooks, run_config=routed(hooks, models))
    assert models[STRONG].calls == 2 and len(models[STRONG].inputs[1]) == 3
    sent = models[CHEAP].inputs[0]  # the full transcript had 5 items
    kinds = [item.get("type") or item.get("role") for item in sent]
    assert len(sent) < 5
    assert kinds[-2:] == ["function_call", "function_call_output"]


def test_compression_never_separates_a_tool_call_from_its_output() -> None:
    from budgetwarden.integrations.openai_agents._translate import compress_input

    items: list[Any] = [
        {"role": "user", "content": "question " * 50},
        {"type": "function_call", "call_id": "1", "name": "search", "arguments": "{}"},
        {"type": "function_call", "call_id": "2", "name": "search", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "1", "output": "long " * 40},
        {"type": "function_call_output", "call_id": "2", "output": "long " * 40},
    ]
    kept = compress_input("Be brief.", items, max_tokens=60)
    assert kept == items[1:]  # both calls with both outputs; the old question went first


async def test_an_sdk_retry_is_reserved_again_and_counted(make_warden, tools) -> None:
    from agents.retry import ModelRetrySettings, RetryDecision

    models = scripted(loop_tool=None)
    models[CHEAP].turns = [RateLimitError("slow down")]
    hooks = BudgetRunHooks(make_warden(routing=TIERS))
    retry = ModelRetrySettings(max_retries=2, policy=lambda _: RetryDecision(retry=True, delay=0))
    agent = Agent(name="analyst", tools=[tools.search], model_settings=ModelSettings(retry=retry))
    result = await Runner.run(agent, "hi", hooks=hooks, run_config=routed(hooks, models))
    assert result.final_output == "done" and models[CHEAP].calls == 2
    report = hooks.report
    assert report is not None
    assert (report.iterations, report.retries, report.errors) == (2, 1, 1)


async def test_without_the_provider_the_model_that_ran_is_priced(make_warden, sink, tools) -> None:
    own = ScriptedModel(model=CHEAP, loop_tool=None)
    hooks = BudgetRunHooks(make_warden(routing=TIERS), task_class="hard")  # would pick STRONG
    await Runner.run(Agent(name="analyst", model=own), "hi", hooks=hooks)
    [event] = [e for e in sink.cost_events if e.kind == "llm"]
    assert event.model == CHEAP and own.calls == 1
    assert event.cost_usd == pytest.approx(
        PriceBook().cost(CHEAP, Usage(input_tokens=100, output_tokens=20))
    )


async def test_plain_hooks_reserve_the_model_that_runs_not_the_routed_tier(
    make_warden, sink, tools
) -> None:
    """Without the provider the agent's own gpt-4o answers every call: a routing policy that
    would pick gpt-4o-mini must not make the reservation cheaper than the call (the cost cap
    was crossed by 12.5 % when each gpt-4o call was held at gpt-4o-mini's price)."""
    own = ScriptedModel(model=STRONG, usage=(1500, 300, 0, 0))
    routing = {"tiers": [CHEAP, STRONG], "task_classes": {"easy": 0}}
    warden = make_warden(limits={"max_cost_usd": 0.03}, routing=routing)
    hooks = BudgetRunHooks(warden, task_class="easy")
    agent = Agent(
        name="analyst",
        model=own,
        tools=[tools.search],
        model_settings=ModelSettings(max_tokens=300),
    )
    with pytest.raises(BudgetExceeded) as info:
        await Runner.run(agent, "analyse", hooks=hooks)
    assert info.value.cap == "max_cost_usd"
    assert info.value.report.cost_usd <= 0.03
    calls = [e for e in sink.cost_events if e.kind == "llm"]
    assert all(e.overshoot_usd == 0 for e in calls[1:])  # the first only estimated its prompt
    assert {e.model for e in calls} == {STRONG} and len(calls) == own.calls
    assert {e.route_reason for e in calls} == {"caller model (the caller cannot switch models)"}
