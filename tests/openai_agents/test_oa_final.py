"""Final-answer reserve and budget hints on real Runner runs with a scripted model."""

from __future__ import annotations

from typing import Any

import pytest
from agents import Agent, ModelSettings, Runner
from agents.run_config import RunConfig
from oa_scripted import ScriptedModel, message, tool_call

from budgetwarden import BudgetExceeded
from budgetwarden.integrations.openai_agents import (
    BudgetModelProvider,
    BudgetRunHooks,
    run_guarded,
    run_guarded_sync,
)
from budgetwarden.steps import FINAL_ANSWER_INSTRUCTION


def researcher(tools: Any, model: ScriptedModel) -> Agent[Any]:
    return Agent(name="researcher", instructions="Research.", model=model, tools=[tools.search])


def notes(model: ScriptedModel, call: int) -> list[str]:
    """The system notes the adapter added to one call's input."""
    return [
        str(item["content"])
        for item in model.inputs[call]
        if isinstance(item, dict) and item.get("role") == "system"
    ]


async def test_the_last_allowed_call_has_no_tools_and_its_text_is_the_partial_answer(
    make_warden, tools
) -> None:
    model = ScriptedModel(final_text="Best so far: two leads, the third is unchecked.")
    warden = make_warden(limits={"max_iterations": 3, "final_answer": True})
    result = await run_guarded(researcher(tools, model), "find", warden, user="u1")
    assert model.calls == 3
    assert model.tools == [["search"], ["search"], []]
    assert notes(model, 2) == [FINAL_ANSWER_INSTRUCTION] and notes(model, 1) == []
    assert result.output == "Best so far: two leads, the third is unchecked."
    assert result.partial and result.cap == "max_iterations" and result.stopped is None
    assert result.report is not None and result.report.stop_reason == "max_iterations"
    assert result.report.partial and result.report.iterations == 3
    assert tools.ran == ["query 0", "query 1"]


async def test_a_tool_call_the_final_call_still_makes_is_dropped(make_warden, tools) -> None:
    stubborn: list[Any] = [
        [tool_call("search", {"q": "a"})],
        [message("Here is what I have."), tool_call("search", {"q": "b"})],
    ]
    model = ScriptedModel(stubborn)
    warden = make_warden(limits={"max_iterations": 2, "final_answer": True})
    result = await run_guarded(researcher(tools, model), "find", warden)
    assert result.output == "Here is what I have." and result.cap == "max_iterations"
    assert tools.ran == ["a"]  # the final call's tool call never ran


async def test_a_dollar_cap_keeps_money_for_the_final_answer(make_warden, tools) -> None:
    model = ScriptedModel(usage=(10, 100, 0, 0), model="gpt-4o")
    agent = researcher(tools, model)
    agent.model_settings = ModelSettings(max_tokens=100)
    warden = make_warden(limits={"max_cost_usd": 0.005, "final_answer": True})
    result = await run_guarded(agent, "find", warden)
    assert result.cap == "max_cost_usd" and result.output == "done"
    assert model.calls >= 3 and model.tools[-1] == [] and all(model.tools[:-1])
    assert result.report is not None and result.report.cost_usd <= 0.005


def test_the_sync_twin_gives_the_final_answer_too(make_warden, tools) -> None:
    model = ScriptedModel(final_text="sync answer")
    warden = make_warden(limits={"max_iterations": 2, "final_answer": True})
    result = run_guarded_sync(researcher(tools, model), "find", warden)
    assert (result.output, result.cap, model.tools[-1]) == ("sync answer", "max_iterations", [])


async def test_routed_calls_drop_the_tools_on_the_final_call(make_warden, tools) -> None:
    models = {name: ScriptedModel(model=name) for name in ("gpt-4o-mini", "gpt-4o")}
    warden = make_warden(
        limits={"max_iterations": 2, "final_answer": True},
        routing={"tiers": ["gpt-4o-mini", "gpt-4o"]},
    )
    hooks = BudgetRunHooks(warden)
    config = RunConfig(model_provider=BudgetModelProvider(hooks, model_factory=models.get))
    agent = Agent(name="analyst", tools=[tools.search])
    result = await Runner.run(agent, "go", hooks=hooks, run_config=config)
    assert result.final_output == "done"
    assert models["gpt-4o-mini"].tools == [["search"], []]
    assert hooks.report is not None and hooks.report.stop_reason == "max_iterations"


async def test_plain_hooks_still_send_the_instruction_on_the_final_call(make_warden, tools) -> None:
    model = ScriptedModel([[tool_call("search", {"q": "a"})], [message("my answer")]])
    hooks = BudgetRunHooks(make_warden(limits={"max_iterations": 2, "final_answer": True}))
    result = await Runner.run(researcher(tools, model), "find", hooks=hooks)
    assert result.final_output == "my answer"
    assert notes(model, 1) == [FINAL_ANSWER_INSTRUCTION]
    assert hooks.report is not None and hooks.report.partial


async def test_without_the_reserve_the_cap_refuses_the_next_call(make_warden, tools) -> None:
    model = ScriptedModel()
    hooks = BudgetRunHooks(make_warden(limits={"max_iterations": 2}))
    with pytest.raises(BudgetExceeded):
        await Runner.run(researcher(tools, model), "find", hooks=hooks)
    assert model.tools == [["search"], ["search"]] and notes(model, 1) == []


async def test_the_budget_hint_appears_past_the_warn_level_and_not_before(
    make_warden, tools
) -> None:
    model = ScriptedModel()
    warden = make_warden(limits={"max_iterations": 10}, budget_hints=True)
    result = await run_guarded(researcher(tools, model), "find", warden, max_turns=20)
    assert result.cap == "max_iterations" and model.calls == 10
    hinted = [n for n in range(10) if notes(model, n)]
    assert hinted == [7, 8, 9]  # past 80% of ten calls
    assert notes(model, 7) == ["Budget note: 2 model calls left for this task: finish now."]
    assert notes(model, 9) == ["Budget note: 0 model calls left for this task: finish now."]


async def test_hints_are_off_unless_the_policy_asks(make_warden, tools) -> None:
    model = ScriptedModel()
    await run_guarded(
        researcher(tools, model), "find", make_warden(limits={"max_iterations": 5}), max_turns=9
    )
    assert model.calls == 5 and not any(notes(model, n) for n in range(5))
