"""ChatOpenAI served at OpenAI's priority tier: the call is priced at the tier's prices
(twice the standard ones) and the run's next calls are reserved at them.

``langchain-openai`` reports such a call's usage with the tier's own counts and prefixed
details (``{"priority": 900, "priority_cache_read": 100}``): the cache reads were missed
too, and the call was priced at the standard prices.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langchain_openai.chat_models.base import _create_usage_metadata
from lc_fakes import make_warden

from budgetwarden import CostEvent, PriceBook, Usage
from budgetwarden.integrations.langchain import BudgetCallbackHandler, BudgetMiddleware
from budgetwarden.integrations.langchain._convert import usage_from_message

USAGE = {
    "prompt_tokens": 1000,
    "completion_tokens": 100,
    "total_tokens": 1100,
    "prompt_tokens_details": {"cached_tokens": 400},
    "completion_tokens_details": {"reasoning_tokens": 60},
}


@pytest.mark.parametrize("tier", ["priority", "flex"])
def test_langchain_openai_usage_at_a_tier_keeps_its_details_and_tier(tier: str) -> None:
    message = AIMessage("", usage_metadata=_create_usage_metadata(USAGE, tier))
    assert usage_from_message(message) == Usage(
        input_tokens=1000,
        output_tokens=100,
        cache_read_tokens=400,
        reasoning_tokens=60,
        service_tier=tier,
    )


def test_standard_usage_has_no_tier() -> None:
    message = AIMessage("", usage_metadata=_create_usage_metadata(USAGE, "default"))
    found = usage_from_message(message)
    assert found is not None and found.service_tier is None and found.cache_read_tokens == 400


def openai_at(tier: str, **options: Any) -> ChatOpenAI:
    """ChatOpenAI against a canned endpoint: a tool call, then an answer, served at ``tier``
    (``options``: the model's own, such as the ``service_tier`` it asks for)."""

    def answer(request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content)["messages"]
        message: dict[str, Any] = {"role": "assistant", "content": "Paris."}
        if not any(m.get("role") == "tool" for m in sent):
            call = {"name": "lookup", "arguments": json.dumps({"city": "Paris"})}
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "call_1", "type": "function", "function": call}],
            }
        body = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-5",
            "service_tier": tier,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": USAGE,
        }
        return httpx.Response(200, json=body)

    client = httpx.Client(transport=httpx.MockTransport(answer))
    return ChatOpenAI(
        model="gpt-5",
        api_key="sk-test",
        base_url="http://openai.invalid/v1",
        http_client=client,
        **options,
    )


@tool
def lookup(city: str) -> str:
    """Where a city is."""
    return f"{city} is in France."


def test_an_agent_served_at_priority_is_priced_and_reserved_at_priority(
    reserved_steps: list[Any],
) -> None:
    warden, sink = make_warden()
    middleware = BudgetMiddleware(warden)
    agent = create_agent(openai_at("priority"), [lookup], middleware=[middleware])
    agent.invoke({"messages": [{"role": "user", "content": "Where is Paris?"}]})
    book = PriceBook()
    billed = Usage(
        input_tokens=1000,
        output_tokens=100,
        cache_read_tokens=400,
        reasoning_tokens=60,
        service_tier="priority",
    )
    calls = [event for event in sink.of_type(CostEvent) if event.kind == "llm"]
    assert [event.service_tier for event in calls] == ["priority", "priority"]
    costs = [event.cost_usd for event in calls]
    assert costs == [pytest.approx(book.cost("gpt-5", billed))] * 2
    assert costs[0] == pytest.approx(
        2 * book.cost("gpt-5", billed.model_copy(update={"service_tier": None}))
    )
    first, second = reserved_steps
    standard, priority = book.worst_case_rates("gpt-5"), book.worst_case_rates("gpt-5", "priority")
    assert standard is not None and priority is not None
    assert first.reserved_usd == pytest.approx(
        first.input_tokens * standard[0] + first.max_tokens * standard[1]
    ), "the tier is not known before the first bill"
    assert second.reserved_usd == pytest.approx(
        second.input_tokens * priority[0] + second.max_tokens * priority[1]
    ), "reserved at the priority prices"


@pytest.mark.parametrize("adapter", ["middleware", "handler"])
def test_a_model_that_asks_for_priority_has_its_first_call_reserved_at_priority(
    adapter: str, reserved_steps: list[Any]
) -> None:
    model = openai_at("priority", service_tier="priority")
    warden, _ = make_warden()
    question = {"messages": [{"role": "user", "content": "Where is Paris?"}]}
    if adapter == "middleware":
        create_agent(model, [lookup], middleware=[BudgetMiddleware(warden)]).invoke(question)
    else:
        handler = BudgetCallbackHandler(warden)
        create_agent(model, [lookup]).invoke(question, config={"callbacks": [handler]})

    priority = PriceBook().worst_case_rates("gpt-5", "priority")
    assert priority is not None and len(reserved_steps) == 2
    for step in reserved_steps:  # the first too: the model said which tier it asks for
        assert step.reserved_usd == pytest.approx(
            step.input_tokens * priority[0] + step.max_tokens * priority[1]
        )
