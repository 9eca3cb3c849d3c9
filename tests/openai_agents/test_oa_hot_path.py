"""The hooks' per-call shortcuts say what the plain conversions said.

The model input's token estimate is counted from the items' text lengths instead of
building role/content messages (and, turn after turn, from the new items only), a response's
text and outcome are read in one pass (its tool calls' arguments parsed once, for the tool
hooks), and the text with the tool calls is built only when the core needs it (usage
missing, or ``record_content``).
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from agents import Agent, Runner
from agents.items import ModelResponse
from agents.tool_context import ToolContext
from agents.usage import Usage as AgentsUsage
from oa_scripted import ScriptedModel, message, tool_call

from budgetwarden import Policy, Warden
from budgetwarden.integrations.openai_agents import BudgetRunHooks
from budgetwarden.integrations.openai_agents._translate import (
    InputTokens,
    ParsedArguments,
    _parse_json,
    agent_tool_names,
    estimate_input_tokens,
    estimate_messages,
    read_response,
    response_outcome,
    response_text,
    tool_arguments,
    tool_call_id,
    tool_call_of,
)
from budgetwarden.usage import estimate_message_tokens, estimate_tokens, estimate_tool_tokens

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


def test_successive_inputs_are_estimated_like_each_whole_input() -> None:
    estimates = InputTokens()
    turns: list[Any] = [
        ITEMS[:1],
        ITEMS[:3],  # the last turn's items (fresh copies below), then new ones
        ITEMS[:5],
        ITEMS[:5],  # nothing new
        ITEMS[1:6],  # a trimmed history: counted whole
        "a plain text input",
        ITEMS[:2],
        [{"role": "user", "content": "edited"}, *ITEMS[1:4]],  # an edited first item
        [],
        ITEMS,
    ]
    for system in ("Research.", None, "Research more."):
        for items in turns:
            fresh = copy.deepcopy(items)
            assert estimates.estimate(system, fresh) == estimate_input_tokens(system, items)


def test_the_remembered_input_is_a_copy_of_the_list() -> None:
    estimates = InputTokens()
    items = copy.deepcopy(ITEMS[:3])
    estimates.estimate(None, items)
    items.append({"role": "system", "content": "a budget hint " * 9})  # the step's notes
    again = copy.deepcopy(ITEMS[:3])
    assert estimates.estimate(None, again) == estimate_input_tokens(None, again)


JSON_TEXTS = [
    '{"q": "x"}',
    ' {"q": 1}',
    '{"q": 1} ',
    '{"q": 1}x',
    "\ufeff{}",
    "",
    "  ",
    "{",
    '{"a": }',
    "[1, 2]",
    "NaN",
    "nan",
    '"s"',
    "null",
]


@pytest.mark.parametrize("text", JSON_TEXTS)
def test_parsing_arguments_is_json_loads(text: str) -> None:
    try:
        expected: Any = json.loads(text)
    except ValueError as exc:
        with pytest.raises(type(exc), match=f"^{re.escape(str(exc))}$"):
            _parse_json(text)
    else:  # compared as JSON: NaN is not equal to itself
        assert json.dumps(_parse_json(text)) == json.dumps(expected)


def _agent_named_tools(tools: Any) -> Agent[Any]:
    return Agent(name="a", tools=[tools.search])


RESPONSES: list[list[Any]] = [
    [message("the answer")],
    [message("first"), message(""), message("second")],
    [tool_call("search", {"q": "x"})],
    [message("let me look"), tool_call("search", {"q": "x"}), tool_call("search", {})],
    [tool_call("nope", {"q": "x"}), message("after an unknown tool")],
    [tool_call("search", {"q": "x"}).model_copy(update={"arguments": "{not json"})],
    [tool_call("search").model_copy(update={"arguments": ""}), message("text")],
    [],
]


@pytest.mark.parametrize("output", RESPONSES)
@pytest.mark.parametrize("mcp", [False, True])
def test_reading_a_response_says_what_its_text_and_outcome_say(
    output: list[Any], mcp: bool, tools: Any
) -> None:
    agent = _agent_named_tools(tools)
    if mcp:
        agent.mcp_servers = [object()]  # type: ignore[list-item]
    response = ModelResponse(output=output, usage=AgentsUsage(), response_id=None)
    parsed: ParsedArguments = {}
    names = None if mcp else agent_tool_names(agent)
    text, outcome = read_response(response, names, parsed)
    assert (text, outcome) == (response_text(response), response_outcome(response, agent))
    for call_id, (arguments, value) in parsed.items():
        item = next(i for i in output if getattr(i, "call_id", None) == call_id)
        assert arguments == item.arguments
        context = ToolContext(
            None, tool_name=item.name, tool_call_id=call_id, tool_arguments=arguments
        )
        assert value == tool_arguments(context)


@pytest.mark.parametrize("arguments", ['{"q": "x"}', "", "{not json", "[1, 2]"])
@pytest.mark.parametrize("known", [None, "same", "other"])
def test_a_tool_call_reads_like_its_id_and_arguments(arguments: str, known: str | None) -> None:
    context = ToolContext(None, tool_name="search", tool_call_id="c1", tool_arguments=arguments)
    parsed: ParsedArguments = {"c2": ('{"q": "y"}', {"q": "y"})}
    if known == "same":
        parsed["c1"] = (arguments, {"parsed": "earlier"})
    elif known == "other":
        parsed["c1"] = ('{"q": "changed"}', {"q": "changed"})
    call_id, value = tool_call_of(context, parsed)
    assert call_id == tool_call_id(context) == "c1"
    assert value == ({"parsed": "earlier"} if known == "same" else tool_arguments(context))
    assert "c1" not in parsed and "c2" in parsed
    assert (
        tool_call_of(object(), parsed)
        == (None, None)
        == (
            tool_call_id(object()),
            tool_arguments(object()),
        )
    )


def _answering_agent(tools: Any, model: ScriptedModel) -> Agent[Any]:
    return Agent(name="researcher", instructions="Research.", model=model, tools=[tools.search])


async def test_each_reservation_estimates_what_the_model_was_sent(
    make_warden: Any, sink: Any, tools: Any
) -> None:
    model = ScriptedModel(loop_tool=None, final_text="the answer", usage=(0, 0, 0, 0))
    model.turns = [[tool_call("search", {"q": "one"})], [tool_call("search", {"q": "two"})]]
    hooks = BudgetRunHooks(make_warden(), user="u1")
    agent = _answering_agent(tools, model)
    await Runner.run(agent, "find it", hooks=hooks)
    events = [event for event in sink.cost_events if event.kind == "llm"]
    assert len(events) == model.calls == 3
    definitions = estimate_tool_tokens(agent.tools)  # billed as prompt, as the messages are
    assert definitions > 20
    for event, system, sent in zip(events, model.instructions, model.inputs, strict=True):
        assert event.estimated, "the model reported no usage: its input is the estimate"
        messages = estimate_message_tokens(estimate_messages(system, sent))
        assert event.input_tokens == messages + definitions


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
