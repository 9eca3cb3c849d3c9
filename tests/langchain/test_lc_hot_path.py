"""The middleware's per-call shortcuts give what the plain conversions gave.

BudgetMiddleware remembers the offered tools' names, reads the model's limits without
``hasattr``, passes the request's own messages and builds a response's text only when the
core needs it: each must still say the same as before.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from lc_fakes import CountedTool, ScriptedChatModel, agent_graph, inputs, make_warden
from pydantic import BaseModel, ConfigDict

from budgetwarden import Limits, Policy
from budgetwarden.integrations.langchain import BudgetCallbackHandler, BudgetMiddleware
from budgetwarden.integrations.langchain._convert import ToolNames, tool_names
from budgetwarden.integrations.langchain.middleware import _model_limits
from budgetwarden.usage import estimate_tokens

MODES = ["sync", "async"]


def run_agent(agent: Any, mode: str, text: str = "answer after 2") -> Any:
    if mode == "sync":
        return agent.invoke(inputs(text))
    return asyncio.run(agent.ainvoke(inputs(text)))


# ---------------------------------------------------------------------------- tool names


class Named:
    def __init__(self, name: str) -> None:
        self.name = name


def test_remembered_tool_names_follow_the_tools_offered() -> None:
    names = ToolNames()
    search, calc = Named("search"), Named("calc")
    tools = [search]
    assert names.names(tools) == ["search"]
    assert names.names([search]) == ["search"], "another list of the same tools"
    tools.append(calc)  # the same list, changed in place
    assert names.names(tools) == ["search", "calc"]
    assert names.names([calc]) == ["calc"]
    assert names.names([{"type": "function", "function": {"name": "lookup"}}]) == ["lookup"]
    assert names.names([]) is None
    assert names.names(None) is None
    assert names.names([Named("other")]) == ["other"], "a new tool object, a new name"


def test_fresh_copies_of_the_same_tool_dicts_give_the_same_names_list() -> None:
    """LangChain passes a chat model's callbacks new copies of its tool dicts at each call."""
    names = ToolNames()
    offered = [{"type": "function", "function": {"name": n, "parameters": {}}} for n in "ab"]
    first = names.names(offered)
    again = names.names([dict(tool) for tool in offered])
    assert first == ["a", "b"]
    assert again is first, "the same names: the same list"
    renamed = [{"type": "function", "function": {"name": "c"}}, offered[1]]
    assert names.names(renamed) == ["c", "b"]


def test_remembered_tool_names_equal_the_plain_conversion() -> None:
    names = ToolNames()
    offers = [
        [Named("a"), {"name": "b"}],
        [{"type": "function", "function": {"name": "c"}}],
        [Named("a"), {"name": "b"}],
        [len],
    ]
    for tools in offers:
        assert names.names(tools) == tool_names(tools)


# ---------------------------------------------------------------------------- model limits


def _plain_limits(model: Any) -> dict[str, Any]:
    keys = ("max_tokens", "max_completion_tokens")
    return {k: getattr(model, k) for k in keys if hasattr(model, k)}


class _Extra(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Property(BaseModel):
    @property
    def max_completion_tokens(self) -> int:
        return 77


class _Dynamic:
    def __getattr__(self, name: str) -> Any:
        if name == "max_completion_tokens":
            return 12
        raise AttributeError(name)


@pytest.mark.parametrize(
    "model",
    [
        ScriptedChatModel(),
        ScriptedChatModel(max_tokens=50),
        _Extra(max_completion_tokens=300),
        _Extra(),
        _Property(),
        _Dynamic(),
        object(),
    ],
    ids=["no-limit", "field", "extra", "no-extra", "property", "getattr", "object"],
)
def test_model_limits_read_like_getattr(model: Any) -> None:
    assert _model_limits(model) == _plain_limits(model)


def test_a_model_limit_set_after_a_call_is_seen_at_the_next() -> None:
    model = ScriptedChatModel()
    assert _model_limits(model) == {"max_tokens": None}
    model.max_tokens = 64
    assert _model_limits(model) == {"max_tokens": 64}


# ---------------------------------------------------------------------------- the answer text


@pytest.mark.parametrize("mode", MODES)
def test_the_output_is_estimated_from_the_text_when_usage_is_missing(
    mode: str, search: CountedTool
) -> None:
    model = ScriptedChatModel(report_usage=False)
    warden, sink = make_warden(Policy(limits=Limits(max_iterations=10)))
    agent = agent_graph(model, [search.tool], middleware=[BudgetMiddleware(warden)])
    result = run_agent(agent, mode)
    answer = result["messages"][-1]
    assert isinstance(answer, AIMessage) and answer.text
    events = [event for event in sink.cost_events if event.kind == "llm"]
    assert all(event.estimated for event in events)
    assert events[-1].output_tokens == estimate_tokens(answer.text) > 0
    assert all(event.response is None for event in events), "record_content is off"


@pytest.mark.parametrize("mode", MODES)
def test_record_content_still_records_each_response(mode: str, search: CountedTool) -> None:
    model = ScriptedChatModel()
    warden, sink = make_warden(Policy(record_content=True))
    agent = agent_graph(model, [search.tool], middleware=[BudgetMiddleware(warden)])
    result = run_agent(agent, mode)
    answers = [m for m in result["messages"] if isinstance(m, AIMessage)]
    events = [event for event in sink.cost_events if event.kind == "llm"]
    assert not any(event.estimated for event in events), "the model reported usage"
    assert [event.response for event in events] == [m.text for m in answers]
    assert events[-1].response


@pytest.mark.parametrize("mode", MODES)
def test_with_usage_and_no_recording_the_text_is_not_needed(mode: str, search: CountedTool) -> None:
    model = ScriptedChatModel(output_tokens=33)
    warden, sink = make_warden(Policy())
    agent = agent_graph(model, [search.tool], middleware=[BudgetMiddleware(warden)])
    run_agent(agent, mode)
    events = [event for event in sink.cost_events if event.kind == "llm"]
    assert [(e.output_tokens, e.estimated, e.response) for e in events] == [(33, False, None)] * 3


# ---------------------------------------------------------------------------- the callback handler


def test_the_handler_estimates_a_missing_usage_from_the_text(search: CountedTool) -> None:
    model = ScriptedChatModel(report_usage=False)
    warden, sink = make_warden()
    result = agent_graph(model, [search.tool]).invoke(
        inputs("answer after 1"), config={"callbacks": [BudgetCallbackHandler(warden)]}
    )
    events = [event for event in sink.cost_events if event.kind == "llm"]
    assert all(event.estimated for event in events)
    assert events[-1].output_tokens == estimate_tokens(result["messages"][-1].text) > 0
    assert all(event.response is None for event in events), "record_content is off"


def test_the_handler_records_each_response_under_record_content(search: CountedTool) -> None:
    model = ScriptedChatModel()
    warden, sink = make_warden(Policy(record_content=True))
    result = agent_graph(model, [search.tool]).invoke(
        inputs("answer after 2"), config={"callbacks": [BudgetCallbackHandler(warden)]}
    )
    answers = [m for m in result["messages"] if isinstance(m, AIMessage)]
    events = [event for event in sink.cost_events if event.kind == "llm"]
    assert not any(event.estimated for event in events)
    assert [event.response for event in events] == [m.text for m in answers]
    assert events[-1].response


def test_the_handler_sees_the_tools_of_each_call(search: CountedTool) -> None:
    """Two agents with other tools through one handler: each call counts its own tools."""
    warden, _ = make_warden()
    handler = BudgetCallbackHandler(warden)
    seen: list[list[str] | None] = []
    names = handler._tools.names

    def spy(tools: Any) -> list[str] | None:
        seen.append(names(tools))
        return seen[-1]

    handler._tools.names = spy  # type: ignore[method-assign]
    lookup = CountedTool("lookup")
    for tools in ([search.tool], [search.tool, lookup.tool], [lookup.tool]):
        model = ScriptedChatModel(tool=tools[0].name, answer_after=0)
        agent_graph(model, tools).invoke(inputs(), config={"callbacks": [handler]})
    assert seen == [["search"], ["search", "lookup"], ["lookup"]]
