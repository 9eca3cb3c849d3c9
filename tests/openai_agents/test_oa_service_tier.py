"""An Agents SDK agent that asks for OpenAI's priority tier (``ModelSettings(extra_args=
{"service_tier": "priority"})``) is priced at that tier's prices, twice the standard ones.
The SDK's usage does not say the tier; the request does."""

from __future__ import annotations

from typing import Any

import pytest
from agents import Agent, ModelSettings, Runner
from oa_scripted import ScriptedModel

from budgetwarden import CostEvent, ListSink, PriceBook, Usage
from budgetwarden.integrations.openai_agents import BudgetRunHooks


@pytest.mark.parametrize(
    ("settings", "tier"),
    [
        (ModelSettings(extra_args={"service_tier": "priority"}), "priority"),
        (ModelSettings(extra_body={"service_tier": "flex"}), "flex"),
        (ModelSettings(extra_args={"service_tier": "default"}), None),
        (ModelSettings(), None),
    ],
)
async def test_the_tier_an_agent_asks_for_prices_its_calls(
    make_warden: Any, sink: ListSink, settings: ModelSettings, tier: str | None
) -> None:
    model = ScriptedModel(usage=(1000, 100, 0, 0), loop_tool=None, model="gpt-5")
    agent = Agent(name="a", model=model, model_settings=settings)
    await Runner.run(agent, "hi", hooks=BudgetRunHooks(make_warden()))
    [event] = [e for e in sink.of_type(CostEvent) if e.kind == "llm"]
    billed = Usage(input_tokens=1000, output_tokens=100, service_tier=tier)
    assert event.service_tier == tier
    assert event.cost_usd == pytest.approx(PriceBook().cost("gpt-5", billed))


@pytest.mark.parametrize(
    ("settings", "factor"),
    [
        (ModelSettings(extra_args={"service_tier": "priority"}), 2.0),
        (ModelSettings(extra_body={"service_tier": "flex"}), 0.5),
        (ModelSettings(), 1.0),
    ],
)
async def test_the_first_call_is_reserved_at_the_tier_the_agent_asks_for(
    make_warden: Any, settings: ModelSettings, factor: float, reserved_steps: list[Any]
) -> None:
    model = ScriptedModel(usage=(1000, 100, 0, 0), loop_tool=None, model="gpt-5")
    agent = Agent(name="a", model=model, model_settings=settings)
    await Runner.run(agent, "hi", hooks=BudgetRunHooks(make_warden()))

    [first] = reserved_steps
    standard = PriceBook().worst_case_cost("gpt-5", first.input_tokens, first.max_tokens)
    assert first.reserved_usd == pytest.approx(factor * standard)
