"""The LangChain adapter's small translations: context compression, usage, outcomes, plain LLMs."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, Generation, LLMResult
from lc_fakes import make_warden

from budgetwarden import BudgetExceeded, Limits, Policy, Usage
from budgetwarden.compress import compress_messages as compress_turns
from budgetwarden.integrations.langchain import BudgetCallbackHandler
from budgetwarden.integrations.langchain._convert import (
    outcome_of_error,
    usage_from_message,
    usage_from_result,
)


def conversation(turns: int) -> list[AIMessage | HumanMessage | SystemMessage | ToolMessage]:
    messages: list[AIMessage | HumanMessage | SystemMessage | ToolMessage] = [
        SystemMessage("You are a researcher."),
        HumanMessage("Find the answer."),
    ]
    for turn in range(turns):
        calls = [
            {"name": "search", "args": {"query": f"q{turn}.{i}"}, "id": f"c{turn}.{i}"}
            for i in range(2)
        ]
        messages.append(AIMessage("", tool_calls=calls))
        messages.extend(ToolMessage("x" * 200, tool_call_id=c["id"]) for c in calls)
    return messages


def compress_messages(messages: list[Any], budget_tokens: int) -> list[Any]:
    """How the middleware compresses an agent's messages: the core's, keeping the task."""
    return compress_turns(messages, budget_tokens, keep_task=True)


def test_compression_keeps_the_task_and_latest_turns_whole() -> None:
    messages = conversation(6)
    kept = compress_messages(messages, budget_tokens=300)
    assert kept[:2] == messages[:2]
    assert kept[-3:] == messages[-3:]
    assert len(kept) < len(messages)
    asked = {c["id"] for m in kept if isinstance(m, AIMessage) for c in m.tool_calls}
    answered = [m.tool_call_id for m in kept if isinstance(m, ToolMessage)]
    assert sorted(answered) == sorted(asked), "no call without its answer and vice versa"


def test_compression_within_budget_changes_nothing() -> None:
    messages = conversation(2)
    assert compress_messages(messages, budget_tokens=10_000) == messages


def test_compression_keeps_the_latest_turn_even_over_budget() -> None:
    messages = conversation(3)
    kept = compress_messages(messages, budget_tokens=1)
    assert kept == [*messages[:2], *messages[-3:]]


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (TimeoutError("slow"), "timeout"),
        (type("APITimeoutError", (Exception,), {})(), "timeout"),
        (type("RateLimitError", (Exception,), {})(), "rate_limited"),
        (type("InternalServerError", (Exception,), {"status_code": 503})(), "provider_error"),
        (RuntimeError("500 from provider"), "provider_error"),
    ],
)
def test_model_errors_are_classified_for_routing(error: Exception, outcome: str) -> None:
    assert outcome_of_error(error) == outcome


def test_legacy_token_usage_is_read_from_llm_output() -> None:
    result = LLMResult(
        generations=[[Generation(text="hi")]],
        llm_output={"token_usage": {"prompt_tokens": 12, "completion_tokens": 3}},
    )
    usage = usage_from_result(result)
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens) == (12, 3)


def test_a_plain_text_llm_chain_is_governed_through_on_llm_start() -> None:
    llm = FakeListLLM(responses=["first answer", "second answer"])
    warden, sink = make_warden(Policy(limits=Limits(max_iterations=1)))
    with pytest.raises(BudgetExceeded) as caught:
        (llm | llm).invoke("question", config={"callbacks": [BudgetCallbackHandler(warden)]})
    assert llm.i == 1, "the second LLM call never ran"
    assert caught.value.cap == "max_iterations"
    (event,) = sink.cost_events
    assert event.estimated
    assert [m.text for m in caught.value.partial] == ["first answer"]


def test_usage_counted_apart_by_an_integration_is_read_without_failing() -> None:
    # LangChain's usage_metadata counts cache tokens within input_tokens and reasoning within
    # output_tokens; an integration that counts them apart must not fail the call's record
    message = AIMessage(
        "answer",
        usage_metadata={
            "input_tokens": 20,
            "output_tokens": 10,
            "total_tokens": 30,
            "input_token_details": {"cache_read": 5000},
            "output_token_details": {"reasoning": 40},
        },
    )
    usage = usage_from_result(LLMResult(generations=[[ChatGeneration(message=message)]]))
    assert usage is not None
    assert (usage.input_tokens, usage.cache_read_tokens) == (5020, 5000)
    assert (usage.output_tokens, usage.reasoning_tokens) == (50, 40)


def test_anthropic_cache_writes_by_lifetime_are_counted() -> None:
    # langchain-anthropic reports the writes by lifetime and sets cache_creation to 0 when
    # it does: the writes were read as 0 and billed as plain input (1x, not 1.25x or 2x).
    details = {
        "cache_read": 2_000,
        "cache_creation": 0,
        "ephemeral_5m_input_tokens": 1_500,
        "ephemeral_1h_input_tokens": 500,
    }
    message = AIMessage(
        "ok",
        usage_metadata={
            "input_tokens": 10_000,
            "output_tokens": 100,
            "total_tokens": 10_100,
            "input_token_details": details,  # type: ignore[typeddict-item]
        },
    )
    assert usage_from_message(message) == Usage(
        input_tokens=10_000,
        output_tokens=100,
        cache_read_tokens=2_000,
        cache_write_tokens=2_000,
        cache_write_1h_tokens=500,
    )
