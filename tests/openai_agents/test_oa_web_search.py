"""An Agents SDK agent with the hosted ``WebSearchTool`` pays for each search it makes.

The SDK's usage counts tokens only; each search is a ``web_search_call`` item of the
response, billed per search ($0.01 on GPT-5) on top of them.
"""

from __future__ import annotations

from typing import Any

import pytest
from agents import Agent, Runner, WebSearchTool
from oa_scripted import ScriptedModel, message
from openai.types.responses import ResponseFunctionWebSearch

from budgetwarden import CostEvent, ListSink, PriceBook, Usage
from budgetwarden.integrations.openai_agents import BudgetRunHooks


def search(n: int) -> ResponseFunctionWebSearch:
    return ResponseFunctionWebSearch.model_validate(
        {
            "id": f"ws_{n}",
            "type": "web_search_call",
            "status": "completed",
            "action": {"type": "search", "query": f"query {n}"},
        }
    )


@pytest.mark.parametrize("searches", [0, 3])
async def test_each_hosted_search_is_billed(
    make_warden: Any, sink: ListSink, searches: int
) -> None:
    model = ScriptedModel(usage=(1000, 100, 0, 0), loop_tool=None, model="gpt-5")
    model.turns = [[*(search(n) for n in range(searches)), message("Paris.")]]
    agent = Agent(name="researcher", model=model, tools=[WebSearchTool()])
    result = await Runner.run(agent, "Where is Paris?", hooks=BudgetRunHooks(make_warden()))
    assert result.final_output == "Paris."
    [event] = [e for e in sink.of_type(CostEvent) if e.kind == "llm"]
    tokens = PriceBook().cost("gpt-5", Usage(input_tokens=1000, output_tokens=100))
    assert event.web_search_requests == searches
    assert event.cost_usd == pytest.approx(tokens + searches * 0.01)


@pytest.mark.parametrize("tools", [[WebSearchTool()], []])
async def test_the_first_call_holds_a_search_when_the_agent_offers_the_tool(
    make_warden: Any, tools: list[Any], reserved_steps: list[Any]
) -> None:
    model = ScriptedModel(usage=(1000, 100, 0, 0), loop_tool=None, model="gpt-5")
    model.turns = [[message("Paris.")]]
    agent = Agent(name="researcher", model=model, tools=tools)
    await Runner.run(agent, "Where is Paris?", hooks=BudgetRunHooks(make_warden()))

    [first] = reserved_steps
    tokens = PriceBook().worst_case_cost("gpt-5", first.input_tokens, first.max_tokens)
    assert first.reserved_usd == pytest.approx(tokens + (0.01 if tools else 0.0))
