"""The hooks and the routed provider over the SDK's LitellmModel, on LiteLLM's mock_response."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from agents import Agent, ModelSettings, Runner
from agents.exceptions import UserError
from agents.extensions.models.litellm_model import LitellmModel
from agents.run_config import RunConfig

from budgetwarden import BudgetExceeded, PriceBook, Usage
from budgetwarden.integrations.openai_agents import BudgetModelProvider, BudgetRunHooks

# LiteLLM's mock_response reports these tokens for every call.
MOCK_USAGE = Usage(input_tokens=10, output_tokens=20)


class FreshToolCalls(list[dict[str, Any]]):
    """``mock_tool_calls`` that name a new call id each time LiteLLM reads them.

    The SDK runs a tool call id only once, so a constant mock would not loop on the tool.
    """

    def __init__(self, tool: str) -> None:
        super().__init__([{}])
        self.tool = tool
        self.ids = itertools.count()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        n = next(self.ids)
        yield {
            "id": f"call_{n}",
            "type": "function",
            "function": {"name": self.tool, "arguments": f'{{"q": "q{n}"}}'},
        }


def looping_settings() -> ModelSettings:
    return ModelSettings(
        extra_args={"mock_response": "", "mock_tool_calls": FreshToolCalls("search")}
    )


async def test_litellm_model_loop_is_stopped_at_the_tool_cap_and_priced(make_warden, tools) -> None:
    agent = Agent(
        name="researcher",
        model=LitellmModel("gpt-4o-mini"),
        tools=[tools.search],
        model_settings=looping_settings(),
    )
    hooks = BudgetRunHooks(make_warden(limits={"max_tool_calls": 2}))
    with pytest.raises(BudgetExceeded) as info:
        await Runner.run(agent, "find", hooks=hooks)
    assert not isinstance(info.value, UserError)
    assert len(tools.ran) == 2
    report = info.value.report
    assert report is not None and report.iterations == 3
    assert report.cost_usd == pytest.approx(3 * PriceBook().cost("gpt-4o-mini", MOCK_USAGE))


async def test_litellm_model_allows_exactly_max_iterations_calls(make_warden, tools) -> None:
    agent = Agent(
        name="researcher",
        model=LitellmModel("gpt-4o-mini"),
        tools=[tools.search],
        model_settings=looping_settings(),
    )
    hooks = BudgetRunHooks(make_warden(limits={"max_iterations": 4}))
    with pytest.raises(BudgetExceeded) as info:
        await Runner.run(agent, "find", hooks=hooks)
    assert info.value.cap == "max_iterations"
    assert len(tools.ran) == 4  # each of the four allowed calls asked for one search


async def test_routed_tiers_dispatch_through_litellm_with_the_tiers_price(
    make_warden, sink, tools
) -> None:
    routing = {
        "tiers": ["gpt-4o-mini", "gemini/gemini-2.0-flash"],
        "task_classes": {"hard": 1},
    }
    hooks = BudgetRunHooks(make_warden(routing=routing), task_class="hard")
    agent = Agent(name="analyst", model_settings=ModelSettings(extra_args={"mock_response": "ok"}))
    config = RunConfig(model_provider=BudgetModelProvider(hooks))  # LitellmModel by default
    result = await Runner.run(agent, "hi", hooks=hooks, run_config=config)
    assert result.final_output == "ok"
    [event] = [e for e in sink.cost_events if e.kind == "llm"]
    assert event.model == "gemini/gemini-2.0-flash"
    assert event.cost_usd == pytest.approx(PriceBook().cost("gemini/gemini-2.0-flash", MOCK_USAGE))


async def test_a_streamed_litellm_call_without_usage_is_estimated(make_warden, sink) -> None:
    agent = Agent(
        name="writer",
        model=LitellmModel("gpt-4o-mini"),
        model_settings=ModelSettings(extra_args={"mock_response": "hello there, friend"}),
    )
    hooks = BudgetRunHooks(make_warden())
    result = Runner.run_streamed(agent, "hi", hooks=hooks)
    async for _ in result.stream_events():
        pass
    assert result.final_output == "hello there, friend"
    [event] = [e for e in sink.cost_events if e.kind == "llm"]
    assert event.estimated and event.output_tokens > 0 and event.cost_usd > 0


async def test_a_routed_streamed_call_asks_for_its_usage(make_warden, sink) -> None:
    hooks = BudgetRunHooks(make_warden())
    agent = Agent(
        name="writer",
        model="gpt-4o-mini",
        model_settings=ModelSettings(extra_args={"mock_response": "hello there, friend"}),
    )
    config = RunConfig(model_provider=BudgetModelProvider(hooks))  # LitellmModel by default
    result = Runner.run_streamed(agent, "hi", hooks=hooks, run_config=config)
    async for _ in result.stream_events():
        pass

    assert result.final_output == "hello there, friend"
    [event] = [e for e in sink.cost_events if e.kind == "llm"]
    assert not event.estimated and event.output_tokens > 0  # the provider's usage chunk
