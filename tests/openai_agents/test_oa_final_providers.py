"""The final-answer call on Anthropic and Bedrock models, which refuse a history of tool
calls without tools ("Requests which include tool_use or tool_result blocks must define
tools"): the scripted model below refuses such a request as those APIs do."""

from __future__ import annotations

from typing import Any

import pytest
from agents import Agent, Runner
from agents.run_config import RunConfig
from oa_scripted import ScriptedModel, ScriptedProvider, message, tool_call

from budgetwarden.integrations.openai_agents import (
    BudgetModelProvider,
    BudgetRunHooks,
    GuardedModel,
    noting_agent,
    run_guarded,
)
from budgetwarden.steps import FINAL_ANSWER_INSTRUCTION

CLAUDE = "claude-sonnet-4-20250514"
BEDROCK_CLAUDE = "bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0"


class ToolHistoryRefused(Exception):
    """What Anthropic and Bedrock answer (HTTP 400) to a tool history sent without tools."""


class ProviderModel(ScriptedModel):
    """A scripted model with its provider's rules: a tool history without tools is refused,
    ``forbid`` is the one tool choice it takes (``None``: it has none) and makes it answer;
    ``obey``: told it is the last call, it answers instead of calling a tool."""

    def __init__(self, model: str, *, forbid: str | None = "none", obey: bool = True) -> None:
        super().__init__(model=model, final_text="Best so far: two leads.")
        self.forbid = forbid
        self.obey = obey

    def _record(self, system: Any, input: Any, settings: Any, tools: Any, handoffs: Any) -> None:
        if not tools and not handoffs and _has_tool_items(input):
            raise ToolHistoryRefused("Requests which include tool_use blocks must define tools.")
        if settings.tool_choice is not None and settings.tool_choice != self.forbid:
            raise ToolHistoryRefused(f"tool_choice {settings.tool_choice!r} is not supported")
        super()._record(system, input, settings, tools, handoffs)

    def _next_output(self) -> list[Any]:
        choice = self.settings[-1].tool_choice
        told = any(
            isinstance(item, dict) and item.get("content") == FINAL_ANSWER_INSTRUCTION
            for item in self.inputs[-1]
        )
        if choice is not None or (told and self.obey):
            self.calls += 1
            return [message(self.final_text)]
        return super()._next_output()


def _has_tool_items(input: Any) -> bool:
    items = input if isinstance(input, list) else []
    return any(
        isinstance(item, dict) and item.get("type") in ("function_call", "function_call_output")
        for item in items
    )


def researcher(tools: Any, model: Any) -> Agent[Any]:
    return Agent(name="researcher", instructions="Research.", model=model, tools=[tools.search])


async def test_a_claude_model_keeps_its_tools_with_tool_choice_none(make_warden, tools) -> None:
    model = ProviderModel(CLAUDE)
    warden = make_warden(limits={"max_iterations": 3, "final_answer": True})
    result = await run_guarded(researcher(tools, model), "find", warden)
    assert result.output == "Best so far: two leads." and result.cap == "max_iterations"
    assert model.tools == [["search"]] * 3, "the history's tools are still declared"
    assert [s.tool_choice for s in model.settings] == [None, None, "none"]
    assert tools.ran == ["query 0", "query 1"]
    # The instruction goes last, as a user turn: a system one would join Claude's system
    # prompt, at the start of the prompt, and lose the prompt's cache.
    assert model.inputs[2][-1] == {"role": "user", "content": FINAL_ANSWER_INSTRUCTION}
    assert model.inputs[2][: len(model.inputs[1])] == model.inputs[1]


async def test_bedrock_keeps_its_tools_and_no_tool_choice(make_warden, tools) -> None:
    model = ProviderModel(BEDROCK_CLAUDE, forbid=None)
    warden = make_warden(limits={"max_iterations": 3, "final_answer": True})
    result = await run_guarded(researcher(tools, model), "find", warden)
    assert result.output == "Best so far: two leads."
    assert model.tools == [["search"]] * 3
    assert [s.tool_choice for s in model.settings] == [None, None, None]
    assert model.inputs[2][-1] == {"role": "system", "content": FINAL_ANSWER_INSTRUCTION}


async def test_a_tool_call_the_kept_tools_still_get_is_dropped(make_warden, tools) -> None:
    model = ProviderModel(BEDROCK_CLAUDE, forbid=None, obey=False)
    model.turns = [[tool_call("search", {"q": "a"})], [message("Partial."), tool_call("search")]]
    warden = make_warden(limits={"max_iterations": 2, "final_answer": True})
    result = await run_guarded(researcher(tools, model), "find", warden)
    assert result.output == "Partial." and tools.ran == ["a"]


async def test_a_streamed_final_call_keeps_the_tools_too(make_warden, tools) -> None:
    model = ProviderModel(CLAUDE)
    hooks = BudgetRunHooks(make_warden(limits={"max_iterations": 2, "final_answer": True}))
    config = RunConfig(
        model=GuardedModel(hooks, None, ScriptedProvider({})),
        call_model_input_filter=noting_agent(None),
    )
    streamed = Runner.run_streamed(researcher(tools, model), "find", hooks=hooks, run_config=config)
    async for _ in streamed.stream_events():
        pass
    assert streamed.final_output == "Best so far: two leads."
    assert model.tools == [["search"]] * 2 and model.settings[-1].tool_choice == "none"


@pytest.mark.parametrize(("tiers", "choice"), [([CLAUDE], "none"), (["gpt-4o-mini"], None)])
async def test_a_routed_final_call_follows_the_chosen_model(
    make_warden, tools, tiers: list[str], choice: str | None
) -> None:
    name = tiers[0]
    model = ProviderModel(name) if name == CLAUDE else ScriptedModel(model=name)
    warden = make_warden(
        limits={"max_iterations": 2, "final_answer": True}, routing={"tiers": tiers}
    )
    hooks = BudgetRunHooks(warden)
    provider = BudgetModelProvider(hooks, model_factory={name: model}.get)
    agent = Agent(name="analyst", tools=[tools.search])
    result = await Runner.run(
        agent, "go", hooks=hooks, run_config=RunConfig(model_provider=provider)
    )
    assert result.final_output in ("done", "Best so far: two leads.")
    assert model.tools[-1] == (["search"] if choice else [])
    assert model.settings[-1].tool_choice == choice
