"""Tool definitions count in a call's reserved prompt: providers bill them as input tokens.

(Framework tool objects are measured in each adapter's tests.)

An agent with a few MCP servers sends tens of thousands of tokens of tool schemas with
every call. A reservation that counted only the messages held a fraction of the call's
real cost, so a dollar cap or a shared budget could be overspent by the difference.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from budgetwarden import BudgetExceeded, Limits, Policy, Usage
from budgetwarden.usage import (
    estimate_message_tokens,
    estimate_tokens,
    estimate_tool_tokens,
    tool_tokens,
)

from .helpers import make_warden

MESSAGES = [{"role": "user", "content": "Open an issue for the crash."}]


def schema(name: str, properties: int = 3) -> dict[str, Any]:
    """An OpenAI function definition with ``properties`` documented string parameters."""
    props = {
        f"field_{i}": {"type": "string", "description": f"What field {i} of {name} holds."}
        for i in range(properties)
    }
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": f"Do {name} in the repository.",
            "parameters": {"type": "object", "properties": props, "required": list(props)},
        },
    }


def test_a_schema_dict_counts_its_json() -> None:
    definition = schema("create_issue", 7)
    assert tool_tokens(definition) == estimate_tokens(json.dumps(definition))
    assert tool_tokens(definition) > 150


def test_a_name_alone_counts_nothing() -> None:
    assert tool_tokens("search") == 0 and estimate_tool_tokens(["a", "b"]) == 0


def test_a_schema_dict_is_measured_once_per_name_and_description() -> None:
    # Frameworks rebuild the same tool's dict at every call (LangChain binds its tools
    # again for each model call): an equal name and description reuse the count.
    first = estimate_tool_tokens([schema("once")])
    rebuilt = schema("once")
    rebuilt["function"]["parameters"]["properties"]["more"] = {"type": "string"}
    assert estimate_tool_tokens([rebuilt]) == first
    changed = schema("once")
    changed["function"]["description"] = "x" * 4000
    assert estimate_tool_tokens([changed]) > first + 900


class ObjectTool:
    """A tool object, as the frameworks make them: measured once, by identity."""

    def __init__(self, description: str) -> None:
        self.name = "object_tool"
        self.description = description
        self.params_json_schema = {"type": "object", "properties": {"q": {"type": "string"}}}


def test_a_tool_object_is_measured_once() -> None:
    tool = ObjectTool("Look something up.")
    first = estimate_tool_tokens([tool])
    assert first > 10
    tool.description = "x" * 4000  # the same object: its count is kept
    assert estimate_tool_tokens([tool]) == first
    assert estimate_tool_tokens([ObjectTool("x" * 4000)]) > first + 900


def test_the_reservation_counts_the_tools_the_call_offers() -> None:
    warden, _, _ = make_warden(Policy())
    run = warden.run()
    tools = [schema(f"tool_{i}", 10) for i in range(20)]
    step = run.before_llm_call("gpt-4o", MESSAGES, max_tokens=10, tools=tools)
    messages = estimate_message_tokens(MESSAGES)
    assert step.tool_tokens == estimate_tool_tokens(tools) > 5000
    assert step.input_tokens == messages + step.tool_tokens
    assert step.compress_target(0.5) == max(messages // 2, 1), "tools cannot be compressed"


def test_an_input_count_given_is_the_whole_prompt() -> None:
    warden, _, _ = make_warden(Policy())
    step = warden.run().before_llm_call(
        "gpt-4o", MESSAGES, input_tokens=300, max_tokens=10, tools=[schema("t")]
    )
    assert (step.input_tokens, step.tool_tokens) == (300, 0)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_dollar_cap_refuses_a_call_whose_tool_schemas_it_cannot_afford(mode: str) -> None:
    # 40 tools of ~150 tokens: ~6,000 prompt tokens, $0.015 on gpt-4o; the messages alone
    # are $0.00003. Counting only the messages, the cap let the call through.
    warden, _, _ = make_warden(Policy(limits=Limits(max_cost_usd=0.01)))
    run = warden.run()
    tools = [schema(f"tool_{i}", 6) for i in range(40)]
    with pytest.raises(BudgetExceeded) as info:
        if mode == "sync":
            run.before_llm_call("gpt-4o", MESSAGES, max_tokens=10, tools=tools)
        else:
            import asyncio

            asyncio.run(run.abefore_llm_call("gpt-4o", MESSAGES, max_tokens=10, tools=tools))
    assert info.value.cap == "max_cost_usd"
    cheap = run.before_llm_call("gpt-4o", MESSAGES, max_tokens=10, tools=tools[:2])
    run.after_llm_call(cheap, Usage(input_tokens=cheap.input_tokens, output_tokens=10))


def test_the_same_tools_list_is_counted_once_per_run_until_it_changes() -> None:
    warden, _, _ = make_warden(Policy())
    run = warden.run()
    tools = [schema("a"), schema("b")]
    first = run.before_llm_call("gpt-4o", MESSAGES, max_tokens=10, tools=tools)
    run.after_llm_call(first, Usage(input_tokens=10, output_tokens=1))
    tools.append(schema("c", 8))  # the same list, grown: counted again
    second = run.before_llm_call("gpt-4o", MESSAGES, max_tokens=10, tools=tools)
    assert second.tool_tokens == estimate_tool_tokens(tools) > first.tool_tokens


def test_a_definition_json_cannot_hold_is_measured_anyway() -> None:
    looped: dict[str, Any] = {"name": "looped", "description": "A schema with a cycle."}
    looped["parameters"] = looped
    assert tool_tokens(looped) > 5

    class Broken:
        name = "broken"
        description = "Its schema property fails."

        @property
        def args_schema(self) -> Any:
            raise RuntimeError("no schema today")

    assert tool_tokens(Broken()) == estimate_tokens(
        json.dumps(
            {"name": "broken", "description": "Its schema property fails.", "parameters": None}
        )
    )
