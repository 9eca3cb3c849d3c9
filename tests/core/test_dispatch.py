"""The LiteLLM dispatch helper on LiteLLM's own mock_response: routing, fallback, escalation."""

from __future__ import annotations

import re

import pytest

from budgetwarden import Budget, BudgetExceeded, Limits, Policy, PriceBook, Routing, Usage
from budgetwarden.dispatch import acomplete, classify_error, complete, usage_from_litellm

from .helpers import make_warden

litellm = pytest.importorskip("litellm")
ROUTING = Routing(
    tiers=["gpt-4o-mini", "gpt-4o"],
    task_classes={"extraction": 0},
    fallbacks={"gpt-4o-mini": ["claude-haiku-4-5"]},
)
MESSAGES = [{"role": "user", "content": "Extract the date from: 'due 2026-12-01'"}]


def reply(text: str, model: str = "gpt-4o-mini", prompt: int = 30, completion: int = 8) -> dict:
    return {
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


class Scripted:
    """A stand-in for litellm.completion that hands each call to litellm with the next
    scripted mock_response, remembering which model each call asked for."""

    def __init__(self, *responses: object) -> None:
        self.responses = list(responses)
        self.models: list[str] = []

    def completion(self, **kwargs: object) -> object:
        self.models.append(str(kwargs["model"]))
        return litellm.completion(**kwargs, mock_response=self.responses.pop(0))

    async def acompletion(self, **kwargs: object) -> object:
        self.models.append(str(kwargs["model"]))
        return await litellm.acompletion(**kwargs, mock_response=self.responses.pop(0))


def test_rate_limit_moves_the_next_attempt_to_the_fallback_model() -> None:
    warden, sink, _ = make_warden(Policy(routing=ROUTING))
    script = Scripted("litellm.RateLimitError", reply('{"date": "2026-12-01"}'))
    with warden.run(task_class="extraction") as run:
        response = complete(run, MESSAGES, router=script)
    assert response.choices[0].message.content == '{"date": "2026-12-01"}'
    assert script.models == ["gpt-4o-mini", "claude-haiku-4-5"]
    first, second = sink.cost_events
    assert (first.outcome, first.route_reason) == ("rate_limited", "task_class=extraction")
    assert second.route_reason == "fallback: rate_limited from gpt-4o-mini"
    assert run.report.iterations == 2


def test_invalid_json_escalates_one_tier_and_records_the_real_cost() -> None:
    warden, sink, _ = make_warden(Policy(routing=ROUTING))
    script = Scripted(reply("not json"), reply('{"ok": 1}', model="gpt-4o"))
    with warden.run(task_class="extraction") as run:
        complete(run, MESSAGES, router=script, expect_json=True)
    assert script.models == ["gpt-4o-mini", "gpt-4o"]
    first, second = sink.cost_events
    assert (first.outcome, first.validation) == ("invalid_json", "failed")
    assert second.route_reason == "escalate: invalid_json"
    expected = PriceBook().cost("gpt-4o", Usage(input_tokens=30, output_tokens=8))
    assert second.cost_usd == pytest.approx(expected)


def test_validator_failure_escalates_and_exhausted_attempts_raise() -> None:
    warden, _, _ = make_warden(Policy(routing=ROUTING))
    script = Scripted(reply("a"), reply("b"))
    with pytest.raises(ValueError, match="validation_failed"):
        with warden.run(task_class="extraction") as run:
            complete(run, MESSAGES, router=script, validate=lambda r: False, attempts=2)
    assert script.models == ["gpt-4o-mini", "gpt-4o"]


def test_direct_litellm_call_with_mock_response_is_priced_like_litellm() -> None:
    warden, sink, _ = make_warden(Policy())
    with warden.run() as run:
        response = complete(run, MESSAGES, model="gpt-4o-mini", mock_response=reply("hi"))
    event = sink.cost_events[0]
    assert event.input_tokens == response.usage.prompt_tokens == 30
    prompt, completion = litellm.cost_per_token(
        model="gpt-4o-mini", prompt_tokens=30, completion_tokens=8
    )
    assert event.cost_usd == pytest.approx(prompt + completion)


def test_cap_refuses_the_call_before_litellm_is_reached() -> None:
    warden, _, _ = make_warden(Policy(limits=Limits(max_iterations=1), on_exceeded="raise"))
    script = Scripted(reply("a"), reply("b"))
    with pytest.raises(BudgetExceeded), warden.run() as run:
        complete(run, MESSAGES, model="gpt-4o-mini", router=script)
        complete(run, MESSAGES, model="gpt-4o-mini", router=script)
    assert len(script.models) == 1


def test_budget_pressure_compresses_the_context_sent() -> None:
    policy = Policy(
        budgets=[Budget(scope="user", window="day", max_requests=10)],
        thresholds={"alerts": [0.5], "warn": 0.5, "degrade": 0.5},
    )
    warden, _, _ = make_warden(policy)
    sent: list[int] = []

    class Counting(Scripted):
        def completion(self, **kwargs: object) -> object:
            sent.append(len(kwargs["messages"]))  # type: ignore[arg-type]
            return super().completion(**kwargs)

    history = [{"role": "system", "content": "sys"}] + [
        {"role": "user" if i % 2 else "assistant", "content": "x" * 400} for i in range(10)
    ]
    script = Counting(*[reply("ok") for _ in range(8)])
    with warden.run(user="u1") as run:
        for _ in range(7):
            complete(run, history, model="gpt-4o-mini", router=script)
    assert sent[0] == 11
    assert sent[-1] < 11 and sent[-1] >= 2  # system prompt + newest turns


async def test_async_dispatch_follows_the_same_rules() -> None:
    warden, sink, _ = make_warden(Policy(routing=ROUTING))
    script = Scripted("litellm.RateLimitError", reply("fine"))
    async with warden.run(task_class="extraction") as run:
        await acomplete(run, MESSAGES, router=script)
    assert script.models == ["gpt-4o-mini", "claude-haiku-4-5"]
    assert [e.outcome for e in sink.cost_events] == ["rate_limited", "ok"]


def test_usage_conversion_reads_cache_and_reasoning_details() -> None:
    usage = usage_from_litellm(
        {
            "prompt_tokens": 100,
            "completion_tokens": 50,
            "prompt_tokens_details": {"cached_tokens": 60},
            "completion_tokens_details": {"reasoning_tokens": 20},
            "cache_creation_input_tokens": 10,
        }
    )
    assert usage == Usage(
        input_tokens=100,
        output_tokens=50,
        cache_read_tokens=60,
        cache_write_tokens=10,
        reasoning_tokens=20,
    )
    assert classify_error(litellm.RateLimitError("x", "openai", "m")) == "rate_limited"
    assert classify_error(litellm.Timeout("x", "m", "openai")) == "timeout"
    assert classify_error(ValueError("x")) is None


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (lambda: litellm.BadRequestError("bad", "m", "openai"), "request_error"),
        (lambda: litellm.AuthenticationError("key", "openai", "m"), "request_error"),
        (lambda: litellm.ContextWindowExceededError("long", "m", "openai"), "request_error"),
        (lambda: litellm.InternalServerError("down", "openai", "m"), "provider_error"),
        (lambda: litellm.ServiceUnavailableError("down", "openai", "m"), "provider_error"),
        (lambda: litellm.APIConnectionError("reset", "openai", "m"), "provider_error"),
    ],
)
def test_refused_requests_and_outages_are_told_apart(error: object, outcome: str) -> None:
    assert classify_error(error()) == outcome  # type: ignore[operator]


def test_a_refused_request_is_recorded_and_raised_without_a_fallback() -> None:
    """A 4xx is no outage: no fallback or retry fixes it, but the call happened."""
    warden, sink, _ = make_warden(Policy(routing=ROUTING, limits=Limits(max_iterations=5)))
    script = Scripted(litellm.BadRequestError("bad", "gpt-4o-mini", "openai"), reply("{}"))
    with pytest.raises(litellm.BadRequestError), warden.run(task_class="extraction") as run:
        complete(run, MESSAGES, router=script)
    assert script.models == ["gpt-4o-mini"]
    [event] = sink.cost_events
    assert (event.status, event.outcome, event.cost_usd) == ("error", "request_error", 0)
    assert run.report.iterations == 1 and run.report.errors == 1


def test_no_model_to_call_is_a_clear_error_that_releases_the_reservation() -> None:
    warden, _, _ = make_warden(Policy(limits=Limits(max_iterations=3)))
    with pytest.raises(ValueError, match="pass model="), warden.run() as run:
        complete(run, MESSAGES)
    assert run.report.iterations == 0 and run.counters.reserved_usd == 0


@pytest.mark.parametrize(
    ("figures", "named"),
    [
        ({"attempts": 0}, "attempts must be a whole number >= 1 (got 0)"),
        ({"attempts": -2}, "attempts must be a whole number >= 1 (got -2)"),
        ({"attempts": 1.5}, "attempts must be a whole number"),
        ({"max_tokens": -5}, "max_tokens must be a whole number >= 1 (got -5)"),
        ({"max_tokens": 0}, "max_tokens must be a whole number >= 1 (got 0)"),
    ],
)
async def test_attempts_and_max_tokens_are_checked_before_any_call(
    figures: dict[str, object], named: str
) -> None:
    warden, sink, _ = make_warden(Policy(routing=ROUTING))
    script = Scripted(reply("{}"))
    with warden.run(task_class="extraction") as run:
        with pytest.raises(ValueError, match=re.escape(named)):
            complete(run, MESSAGES, router=script, **figures)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=re.escape(named)):
            await acomplete(run, MESSAGES, router=script, **figures)  # type: ignore[arg-type]
    assert script.models == [] and run.report.iterations == 0 and not sink.cost_events


@pytest.mark.parametrize(
    ("fields", "hint"),
    [
        ({"input_tokens": 100, "cache_read_tokens": 101}, "exceed input_tokens (100)"),
        ({"input_tokens": 100, "cache_read_tokens": 60, "cache_write_tokens": 50}, "cached or"),
        ({"output_tokens": 30, "reasoning_tokens": 31}, "exceed output_tokens (30)"),
    ],
)
def test_a_usage_whose_parts_exceed_their_totals_is_refused(fields, hint) -> None:
    # the docstring: cache tokens are "how many of those" input tokens, reasoning part of output
    with pytest.raises(ValueError, match=r"Usage\.from_counts") as info:
        Usage(**fields)
    assert hint in str(info.value)


def test_provider_counts_in_either_convention_make_a_valid_usage() -> None:
    # Anthropic and Bedrock count cache tokens apart from input, Gemini thoughts apart from
    # output: where the counts can only mean that, from_counts adds them to their total
    assert Usage.from_anthropic(20, 5, cache_read_input_tokens=5000).input_tokens == 5020
    apart = Usage.from_counts(20, 5, cache_read_tokens=5000, cache_write_tokens=100)
    assert (apart.input_tokens, apart.cache_read_tokens, apart.cache_write_tokens) == (
        5120,
        5000,
        100,
    )
    assert Usage.from_counts(10, 4, reasoning_tokens=6).output_tokens == 10
    within = Usage.from_counts(100, 50, cache_read_tokens=60, reasoning_tokens=20)
    assert (within.input_tokens, within.output_tokens) == (100, 50)
    # a LiteLLM usage with the cache apart from the prompt (as older versions gave Anthropic's)
    usage = usage_from_litellm({"prompt_tokens": 20, "cache_creation_input_tokens": 900})
    assert usage is not None and (usage.input_tokens, usage.cache_write_tokens) == (920, 900)


class Recording(Scripted):
    """``Scripted``, remembering every call's keyword arguments."""

    def __init__(self, *responses: object) -> None:
        super().__init__(*responses)
        self.calls: list[dict[str, object]] = []

    def completion(self, **kwargs: object) -> object:
        self.calls.append(kwargs)
        return super().completion(**kwargs)


TOOLS = [{"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize(
    ("model", "tools_sent", "choice"),
    [
        ("gpt-4o-mini", False, None),
        ("claude-sonnet-4-20250514", True, "none"),
        ("bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0", True, None),
    ],
)
def test_the_last_call_a_cap_allows_asks_for_the_answer(
    model: str, tools_sent: bool, choice: str | None
) -> None:
    from budgetwarden.steps import FINAL_ANSWER_INSTRUCTION

    warden, _, _ = make_warden(Policy(limits=Limits(max_iterations=2, final_answer=True)))
    script = Recording(reply("calling", model), reply("my answer", model))
    with warden.run() as run:
        for _ in range(2):
            complete(run, MESSAGES, model=model, router=script, tools=TOOLS, tool_choice="auto")
    first, last = script.calls
    assert first["tools"] == TOOLS and first["tool_choice"] == "auto"
    assert first["messages"] == MESSAGES
    assert last["messages"][-1]["content"] == FINAL_ANSWER_INSTRUCTION
    assert ("tools" in last) is tools_sent and last.get("tool_choice") == choice


def test_litellm_usage_keeps_one_hour_cache_writes() -> None:
    from litellm.types.utils import CacheCreationTokenDetails, PromptTokensDetailsWrapper
    from litellm.types.utils import Usage as LiteLLMUsage

    from budgetwarden.dispatch import usage_from_litellm

    details = CacheCreationTokenDetails(
        ephemeral_5m_input_tokens=300, ephemeral_1h_input_tokens=700
    )
    usage = LiteLLMUsage(
        prompt_tokens=5_000,
        completion_tokens=50,
        total_tokens=5_050,
        cache_creation_input_tokens=1_000,
        prompt_tokens_details=PromptTokensDetailsWrapper(
            cache_creation_tokens=1_000, cache_creation_token_details=details
        ),
    )
    found = usage_from_litellm(usage)
    assert found is not None
    assert (found.cache_write_tokens, found.cache_write_1h_tokens) == (1_000, 700)
