"""The hooks' per-call shortcuts say what the plain conversions said.

The model input's token estimate is counted from the items' text lengths instead of
building role/content messages, and a response's text is built only when the core needs
it (usage missing, or ``record_content``).
"""

from __future__ import annotations

from typing import Any

import pytest
from agents import Agent, Runner
from oa_scripted import ScriptedModel, message, tool_call

from budgetwarden import Policy, Warden
from budgetwarden.integrations.openai_agents import BudgetRunHooks
from budgetwarden.integrations.openai_agents._translate import (
    estimate_input_tokens,
    estimate_messages,
)
from budgetwarden.usage import estimate_message_tokens, estimate_tokens

ITEMS: list[Any] = [
    {"role": "user", "content": "find the answer " * 7},
    {"role": "user", "content": [{"type": "input_text", "text": "a part"}, {"type": "x"}]},
    {"type": "function_call", "name": "search", "arguments": '{"q": "x"}', "call_id": "c1"},
    {"type": "function_call", "name": "search", "arguments": None, "call_id": "c2"},
    {"type": "function_call_output", "call_id": "c1", "output": "results " * 11},
    {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text"}]},
    {"type": "reasoning", "id": "r1", "summary": []},
    {"role": "assistant", "content": None},
    {"role": "assistant", "content": ""},
    message("an answer from a model object"),
    tool_call("lookup", {"q": "y"}),
]


@pytest.mark.parametrize("system", [None, "", "Research."])
@pytest.mark.parametrize(
    "items", [ITEMS, ITEMS[:1], [], "a plain text input"], ids=["all", "one", "none", "text"]
)
def test_the_input_estimate_equals_the_core_estimate_of_the_messages(
    system: str | None, items: Any
) -> None:
    expected = estimate_message_tokens(estimate_messages(system, items))
    assert estimate_input_tokens(system, items) == expected


@pytest.mark.parametrize("item", ITEMS)
def test_each_item_is_estimated_like_its_message(item: Any) -> None:
    expected = estimate_message_tokens(estimate_messages(None, [item]))
    assert estimate_input_tokens(None, [item]) == expected


def _answering_agent(tools: Any, model: ScriptedModel) -> Agent[Any]:
    return Agent(name="researcher", instructions="Research.", model=model, tools=[tools.search])


async def test_each_reservation_estimates_what_the_model_was_sent(
    make_warden: Any, sink: Any, tools: Any
) -> None:
    model = ScriptedModel(loop_tool=None, final_text="the answer", usage=(0, 0, 0, 0))
    model.turns = [[tool_call("search", {"q": "one"})], [tool_call("search", {"q": "two"})]]
    hooks = BudgetRunHooks(make_warden(), user="u1")
    await Runner.run(_answering_agent(tools, model), "find it", hooks=hooks)
    events = [event for event in sink.cost_events if event.kind == "llm"]
    assert len(events) == model.calls == 3
    for event, system, sent in zip(events, model.instructions, model.inputs, strict=True):
        assert event.estimated, "the model reported no usage: its input is the estimate"
        assert event.input_tokens == estimate_message_tokens(estimate_messages(system, sent))


async def test_the_output_is_estimated_from_the_text_when_usage_is_missing(
    make_warden: Any, sink: Any, tools: Any
) -> None:
    model = ScriptedModel(loop_tool=None, final_text="the answer text", usage=(0, 0, 0, 0))
    model.turns = [[tool_call("search", {"q": "one"})]]
    hooks = BudgetRunHooks(make_warden(), user="u1")
    await Runner.run(_answering_agent(tools, model), "find it", hooks=hooks)
    first, last = [event for event in sink.cost_events if event.kind == "llm"]
    assert first.estimated and last.estimated
    assert first.output_tokens == estimate_tokens('search({"q": "one"})')
    assert last.output_tokens == estimate_tokens("the answer text")
    assert first.response is None and last.response is None, "record_content is off"


async def test_record_content_still_records_each_response(sink: Any, tools: Any) -> None:
    warden = Warden(Policy(record_content=True), sinks=[sink], log_events=False)
    model = ScriptedModel(loop_tool=None, final_text="the answer text")
    model.turns = [[tool_call("search", {"q": "one"})]]
    await Runner.run(_answering_agent(tools, model), "find it", hooks=BudgetRunHooks(warden))
    first, last = [event for event in sink.cost_events if event.kind == "llm"]
    assert not first.estimated and not last.estimated
    assert (first.response, last.response) == ('search({"q": "one"})', "the answer text")
