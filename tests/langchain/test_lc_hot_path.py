"""The middleware's per-call shortcuts give what the plain conversions gave.

BudgetMiddleware remembers the offered tools' names, reads the model's limits without
``hasattr``, passes the request's own messages and builds a response's text only when the
core needs it: each must still say the same as before.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage
from lc_fakes import CountedTool, ScriptedChatModel, agent_graph, inputs, make_warden
from pydantic import BaseModel, ConfigDict

from budgetwarden import Limits, Policy
from budgetwarden.integrations.langchain import BudgetCallbackHandler, BudgetMiddleware
from budgetwarden.integrations.langchain._convert import answer_text
from budgetwarden.integrations.langchain.middleware import _model_limits
from budgetwarden.usage import estimate_tokens

MODES = ["sync", "async"]


def run_agent(agent: Any, mode: str, text: str = "answer after 2") -> Any:
    if mode == "sync":
        return agent.invoke(inputs(text))
    return asyncio.run(agent.ainvoke(inputs(text)))


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
    calls = [m for m in result["messages"] if isinstance(m, AIMessage) and m.tool_calls]
    # a tool call is output too: name(arguments), as the providers bill it
    assert [e.output_tokens for e in events[:-1]] == [
        estimate_tokens(answer_text(m)) for m in calls
    ]
    assert all(e.output_tokens >= 5 for e in events[:-1])
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
    assert [event.response for event in events] == [answer_text(m) for m in answers]
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
    calls = [m for m in result["messages"] if isinstance(m, AIMessage) and m.tool_calls]
    assert [e.output_tokens for e in events[:-1]] == [
        estimate_tokens(answer_text(m)) for m in calls
    ]
    assert calls and all(e.output_tokens >= 5 for e in events[:-1])
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
    assert [event.response for event in events] == [answer_text(m) for m in answers]
    assert events[-1].response


@pytest.mark.parametrize("adapter", ["handler", "middleware"])
def test_each_call_offers_the_core_its_own_tools(
    adapter: str, search: CountedTool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Agents with other tools through one handler (one middleware): each model call hands
    the core the tools it offers (routing counts them)."""
    from budgetwarden.run import Run

    warden, _ = make_warden()
    seen: list[int] = []
    before = Run.before_llm_call

    def spy(run: Run, *args: Any, **kwargs: Any) -> Any:
        seen.append(len(kwargs.get("tools") or ()))
        return before(run, *args, **kwargs)

    monkeypatch.setattr(Run, "before_llm_call", spy)
    handler, middleware = BudgetCallbackHandler(warden), BudgetMiddleware(warden)
    lookup = CountedTool("lookup")
    for tools in ([search.tool], [search.tool, lookup.tool], [lookup.tool]):
        model = ScriptedChatModel(tool=tools[0].name, answer_after=0)
        if adapter == "handler":
            agent_graph(model, tools).invoke(inputs(), config={"callbacks": [handler]})
        else:
            create_agent(model, tools, middleware=[middleware]).invoke(inputs())
    assert seen == [1, 2, 1]


@pytest.mark.parametrize("adapter", ["handler", "middleware"])
def test_an_answer_from_langchains_llm_cache_costs_nothing(
    adapter: str, search: CountedTool
) -> None:
    from langchain_core.caches import InMemoryCache

    model = ScriptedChatModel(cache=InMemoryCache(), answer_after=1)
    warden, sink = make_warden()
    for _ in range(2):  # the same conversation twice: the second is answered by the cache
        if adapter == "handler":
            handler = BudgetCallbackHandler(warden)
            agent_graph(model, [search.tool]).invoke(inputs(), config={"callbacks": [handler]})
        else:
            agent_graph(model, [search.tool], middleware=[BudgetMiddleware(warden)]).invoke(
                inputs()
            )

    events = [event for event in sink.cost_events if event.kind == "llm"]
    billed = [event for event in events if event.cost_usd > 0]
    # the second conversation's first call is a hit (its later prompts carry new call ids)
    assert len(events) == 4 and len(billed) == model.calls == 3
    assert all((e.input_tokens, e.output_tokens) == (0, 0) for e in events if e not in billed)
