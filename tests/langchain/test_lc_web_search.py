"""Hosted web searches in LangChain messages are counted and billed per search.

``ChatOpenAI`` on the Responses API records each search as a ``web_search_call`` block (in
``additional_kwargs["tool_outputs"]`` with ``output_version="v0"``), LangChain's standard
blocks as a ``server_tool_call`` named ``web_search``, ``ChatAnthropic`` as a
``server_tool_use`` block. Each costs $0.01 to $0.025 on top of the tokens.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI
from langchain_openai.chat_models.base import _construct_lc_result_from_responses_api
from lc_fakes import make_warden
from openai.types.responses import Response

from budgetwarden import CostEvent, PriceBook, Usage
from budgetwarden.integrations.langchain import BudgetMiddleware
from budgetwarden.integrations.langchain._convert import usage_from_message

USAGE = {"input_tokens": 1000, "output_tokens": 100, "total_tokens": 1100}


def response(searches: int) -> dict[str, Any]:
    """A Responses API response whose hosted web search ran ``searches`` times."""
    calls = [
        {
            "type": "web_search_call",
            "id": f"ws_{n}",
            "status": "completed",
            "action": {"type": "search", "query": f"query {n}"},
        }
        for n in range(searches)
    ]
    text = {"type": "output_text", "text": "Paris.", "annotations": []}
    message = {
        "type": "message",
        "id": "msg_1",
        "role": "assistant",
        "status": "completed",
        "content": [text],
    }
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1,
        "model": "gpt-5",
        "status": "completed",
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "output": [*calls, message],
        "usage": {
            **USAGE,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    }


@pytest.mark.parametrize("output_version", ["v0", "responses/v1", "v1"])
def test_langchain_openai_responses_count_their_searches(output_version: str) -> None:
    result = _construct_lc_result_from_responses_api(
        Response.model_validate(response(3)), output_version=output_version
    )
    found = usage_from_message(result.generations[0].message)
    assert found is not None and found.web_search_requests == 3


def test_anthropic_server_tool_blocks_count_web_searches_only() -> None:
    content = [
        {"type": "server_tool_use", "id": "s1", "name": "web_search", "input": {"query": "a"}},
        {"type": "web_search_tool_result", "tool_use_id": "s1", "content": []},
        {"type": "server_tool_use", "id": "s2", "name": "web_fetch", "input": {"url": "x"}},
        {"type": "server_tool_use", "id": "s3", "name": "web_search", "input": {"query": "b"}},
        {"type": "text", "text": "Paris."},
    ]
    message = AIMessage(content=content, usage_metadata=USAGE)  # type: ignore[arg-type]
    found = usage_from_message(message)
    assert found is not None and found.web_search_requests == 2, "web_fetch is free"


def searching_model(searches: int) -> ChatOpenAI:
    """ChatOpenAI on the Responses API, answered by a canned endpoint that made
    ``searches`` hosted web searches."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=response(searches))

    return ChatOpenAI(
        model="gpt-5",
        api_key="sk-test",
        base_url="http://openai.invalid/v1",
        http_client=httpx.Client(transport=httpx.MockTransport(answer)),
        use_responses_api=True,
    )


def test_an_agent_that_searches_pays_for_each_search() -> None:
    model = searching_model(4)
    warden, sink = make_warden()
    agent = create_agent(model, [], middleware=[BudgetMiddleware(warden)])
    agent.invoke({"messages": [{"role": "user", "content": "Where is Paris?"}]})
    [event] = [e for e in sink.of_type(CostEvent) if e.kind == "llm"]
    book = PriceBook()
    tokens = book.cost("gpt-5", Usage(input_tokens=1000, output_tokens=100))
    assert event.cost_usd == pytest.approx(tokens + 4 * 0.01)
    assert event.web_search_requests == 4


def test_gemini_grounding_counts_its_distinct_queries() -> None:
    # langchain-google-genai puts the grounding in response_metadata["grounding_metadata"]
    grounding = {"web_search_queries": ["paris", "france capital", "paris", ""]}
    message = AIMessage(
        "Paris.", usage_metadata=USAGE, response_metadata={"grounding_metadata": grounding}
    )
    found = usage_from_message(message)
    assert found is not None and found.web_search_requests == 2


@pytest.mark.parametrize("offered", [True, False])
def test_the_first_call_holds_a_search_when_the_agent_offers_the_tool(
    offered: bool, reserved_steps: list[Any]
) -> None:
    model = searching_model(1)
    warden, _ = make_warden()
    tools: list[Any] = [{"type": "web_search"}] if offered else []
    agent = create_agent(model, tools, middleware=[BudgetMiddleware(warden)])
    agent.invoke({"messages": [{"role": "user", "content": "Where is Paris?"}]})

    [first] = reserved_steps
    tokens = PriceBook().worst_case_cost("gpt-5", first.input_tokens, first.max_tokens)
    assert first.reserved_usd == pytest.approx(tokens + (0.01 if offered else 0.0))
