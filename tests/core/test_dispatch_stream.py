"""complete(..., stream=True) on LiteLLM's own streamed mock_response: the chunks pass
through, and the call is recorded once, when its stream ends, fails or is closed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from budgetwarden import Budget, Limits, Policy, PriceBook, Usage
from budgetwarden.dispatch import _RECORDERS, acomplete, complete
from budgetwarden.dispatch_stream import RecordedStream
from budgetwarden.usage import estimate_tokens

from .helpers import make_warden

litellm = pytest.importorskip("litellm")
MESSAGES = [{"role": "user", "content": "Say where the costs come from."}]
ANSWER = "Loops and re-sent context are where agent costs come from."


def text_of(chunks: list[Any]) -> str:
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)


def provider_usage() -> Any:
    """The usage chunk LiteLLM's mock stream ends with, asked for the same way."""
    chunks = list(
        litellm.completion(
            model="gpt-4o-mini",
            messages=MESSAGES,
            mock_response=ANSWER,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    return next(chunk.usage for chunk in reversed(chunks) if getattr(chunk, "usage", None))


def budget_policy(**limits: Any) -> Policy:
    budget = Budget(scope="user", window="day", max_cost_usd=1.0)
    return Policy(limits=Limits(**limits), budgets=[budget])


def test_a_stream_read_to_its_end_is_recorded_once_with_the_providers_usage() -> None:
    warden, sink, _ = make_warden(budget_policy())
    with warden.run(user="u1") as run:
        stream = complete(run, MESSAGES, model="gpt-4o-mini", mock_response=ANSWER, stream=True)
        assert sink.cost_events == []  # nothing is known of the call before its end
        held = warden.remaining("user", "u1")
        chunks = list(stream)

    assert text_of(chunks) == ANSWER and len(chunks) > 2
    [event] = sink.cost_events
    usage = provider_usage()
    assert (event.input_tokens, event.output_tokens, event.estimated) == (
        usage.prompt_tokens,
        usage.completion_tokens,
        False,
    )
    expected = PriceBook().cost(
        "gpt-4o-mini",
        Usage(input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens),
    )
    assert event.cost_usd == pytest.approx(expected)
    assert held is not None and held < 1.0  # the worst case was held while it streamed
    assert warden.remaining("user", "u1") == pytest.approx(1.0 - expected)
    assert run.report.iterations == 1


def test_a_stream_closed_early_is_recorded_with_what_came_and_marked_estimated() -> None:
    warden, sink, _ = make_warden(budget_policy())
    run = warden.run(user="u1")
    stream = complete(run, MESSAGES, model="gpt-4o-mini", mock_response=ANSWER, stream=True)

    with stream:
        first = [next(stream), next(stream)]
    list(stream)  # read on after the close: nothing more is recorded

    [event] = sink.cost_events
    assert event.estimated and 0 < event.output_tokens < provider_usage().completion_tokens
    assert text_of(first) and ANSWER.startswith(text_of(first))
    assert warden.remaining("user", "u1") == pytest.approx(1.0 - event.cost_usd)


def test_without_the_usage_chunk_litellms_count_is_used_and_marked() -> None:
    warden, sink, _ = make_warden(Policy())
    with warden.run() as run:
        stream = complete(
            run,
            MESSAGES,
            model="gpt-4o-mini",
            mock_response=ANSWER,
            stream=True,
            stream_options={"include_usage": False},  # the caller's choice is kept
        )
        list(stream)

    [event] = sink.cost_events
    assert event.estimated and event.output_tokens > 5 and event.input_tokens > 5


def test_a_stream_that_fails_midway_is_recorded_as_failed_with_what_came() -> None:
    warden, sink, _ = make_warden(Policy())
    run = warden.run()
    step = run.before_llm_call("gpt-4o-mini", MESSAGES, max_tokens=100)
    source = litellm.completion(
        model="gpt-4o-mini", messages=MESSAGES, mock_response=ANSWER, stream=True
    )

    def breaking() -> Iterator[Any]:
        yield next(source)
        yield next(source)
        raise litellm.APIConnectionError("dropped", llm_provider="openai", model="gpt-4o-mini")

    stream = RecordedStream(breaking(), run, step, _RECORDERS)
    with pytest.raises(litellm.APIConnectionError):
        list(stream)

    [event] = sink.cost_events
    assert (event.outcome, event.status, event.estimated) == ("provider_error", "error", True)
    assert event.output_tokens > 0


@pytest.mark.parametrize("check", [{"expect_json": True}, {"validate": lambda r: True}])
def test_a_stream_cannot_be_checked_before_it_is_read(check: dict[str, Any]) -> None:
    warden, sink, _ = make_warden(budget_policy())
    run = warden.run(user="u1")

    with pytest.raises(ValueError, match=r"stream=True\) cannot check"):
        complete(run, MESSAGES, model="gpt-4o-mini", mock_response=ANSWER, stream=True, **check)

    assert sink.cost_events == [] and run.report.iterations == 0
    assert warden.remaining("user", "u1") == pytest.approx(1.0)


async def test_an_async_stream_is_recorded_at_its_end() -> None:
    warden, sink, _ = make_warden(Policy(limits=Limits(max_output_tokens=5000)))
    run = warden.run()
    stream = await acomplete(run, MESSAGES, model="gpt-4o-mini", mock_response=ANSWER, stream=True)

    chunks = [chunk async for chunk in stream]

    assert text_of(chunks) == ANSWER
    [event] = sink.cost_events
    assert not event.estimated and event.output_tokens == provider_usage().completion_tokens
    assert run.report.output_tokens == event.output_tokens


def test_a_refused_stream_never_reaches_the_model() -> None:
    warden, sink, _ = make_warden(Policy(limits=Limits(max_iterations=1)))
    run = warden.run()
    list(complete(run, MESSAGES, model="gpt-4o-mini", mock_response=ANSWER, stream=True))

    with pytest.raises(Exception, match="max_iterations"):
        complete(run, MESSAGES, model="gpt-4o-mini", mock_response=ANSWER, stream=True)

    assert len(sink.cost_events) == 1


def test_a_streamed_tool_call_counts_as_output_when_no_usage_came() -> None:
    from litellm.types.utils import (
        ChatCompletionDeltaToolCall,
        Delta,
        Function,
        ModelResponseStream,
        StreamingChoices,
    )

    def chunk(name: str | None, arguments: str) -> Any:
        call = ChatCompletionDeltaToolCall(
            index=0, function=Function(name=name, arguments=arguments)
        )
        choice = StreamingChoices(index=0, delta=Delta(content=None, tool_calls=[call]))
        return ModelResponseStream(model="gpt-4o-mini", choices=[choice])

    warden, sink, _ = make_warden(Policy(record_content=True))
    run = warden.run()
    step = run.before_llm_call("gpt-4o-mini", MESSAGES, max_tokens=100)
    pieces = [chunk("search", ""), chunk(None, '{"query": '), chunk(None, '"what agents cost"}')]

    assert len(list(RecordedStream(iter(pieces), run, step, _RECORDERS))) == 3

    [event] = sink.cost_events
    assert event.response == 'search({"query": "what agents cost"})'
    assert event.estimated and event.output_tokens == estimate_tokens(event.response) > 5
