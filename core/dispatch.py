"""Make a guarded model call through LiteLLM: route, compress, call, record, retry.

For people (and adapters) who let budgetwarden make the call itself::

    with warden.run(user="u1", task_class="extraction") as run:
        response = complete(run, messages, expect_json=True)

Each attempt is one ``before_llm_call`` / ``after_llm_call`` pair: the run's routing picks
the model (a fallback after an outage, one tier up after invalid JSON or a failed validator,
one tier down under budget pressure), the real usage and cost are recorded, and outages or
failed validations are retried up to ``attempts`` times. LiteLLM is imported on first use.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from .compress import compress_messages
from .dispatch_stream import (
    Answer,
    RecordedStream,
    Recorders,
    check_streamable,
    with_usage_chunk,
)
from .final_call import FinalTools, final_call_tools, note_role
from .pricing import billed_tier
from .run import Run, Step
from .steps import FINAL_ANSWER_INSTRUCTION
from .usage import Usage, answer_text, searches_offered

__all__ = ["RecordedStream", "acomplete", "classify_error", "complete", "usage_from_litellm"]

Validator = Callable[[Any], bool]


class _Invalid(Exception):
    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


def usage_from_litellm(usage: Any, service_tier: Any = None) -> Usage | None:
    """A ``Usage`` from a LiteLLM/OpenAI usage object (or dict); None when there is none.

    ``service_tier`` is the response's (OpenAI's ``priority``, Gemini's traffic type as
    LiteLLM names it), else the usage's own: kept when it is billed apart
    (``SERVICE_TIER_PRICES``)."""
    if usage is None:
        return None
    get = usage.get if isinstance(usage, dict) else lambda k, d=None: getattr(usage, k, d)
    tier = service_tier if isinstance(service_tier, str) else get("service_tier")
    prompt_details = get("prompt_tokens_details") or {}
    output_details = get("completion_tokens_details") or {}

    def detail_of(obj: Any, key: str) -> Any:
        return (obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)) or {}

    def detail(obj: Any, key: str) -> int:
        value = obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)
        return int(value or 0)

    return Usage.from_counts(
        input_tokens=int(get("prompt_tokens") or 0),
        output_tokens=int(get("completion_tokens") or 0),
        cache_read_tokens=detail(prompt_details, "cached_tokens"),
        cache_write_tokens=int(get("cache_creation_input_tokens") or 0),
        reasoning_tokens=detail(output_details, "reasoning_tokens"),
        service_tier=billed_tier(tier),
        # Anthropic's searches, else Gemini's grounding queries (as LiteLLM counts them)
        web_search_requests=detail(get("server_tool_use") or {}, "web_search_requests")
        or detail(prompt_details, "web_search_requests"),
        cache_write_1h_tokens=detail(
            detail_of(prompt_details, "cache_creation_token_details"), "ephemeral_1h_input_tokens"
        ),
    )


def classify_error(exc: BaseException) -> str | None:
    """The outcome of a provider error, or None for an error it does not know.

    ``timeout`` and ``rate_limited``; ``provider_error`` for an outage (5xx, a dropped
    connection), which the fallback chain answers; ``request_error`` for a request the
    provider refused (4xx: bad request, key, permission, context window, content policy),
    which no other attempt fixes.
    """
    name = type(exc).__name__
    if "RateLimit" in name:
        return "rate_limited"
    if "Timeout" in name:
        return "timeout"
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and status >= 400:
        return _BY_STATUS.get(status) or ("request_error" if status < 500 else "provider_error")
    if name in _OUTAGES:
        return "provider_error"
    if name in _REFUSALS:
        return "request_error"
    return None


_BY_STATUS = {408: "timeout", 429: "rate_limited"}
_OUTAGES = frozenset(
    {
        "APIConnectionError",
        "ServiceUnavailableError",
        "InternalServerError",
        "BadGatewayError",
        "APIError",
        "MockException",
    }
)
_REFUSALS = frozenset(
    {
        "BadRequestError",
        "AuthenticationError",
        "PermissionDeniedError",
        "NotFoundError",
        "UnprocessableEntityError",
        "ContextWindowExceededError",
        "ContentPolicyViolationError",
        "UnsupportedParamsError",
    }
)


def _prepare(run: Run, step: Step, messages: Sequence[Any]) -> list[Any]:
    out = list(messages)
    if step.compress:
        target = step.compress_target(run.policy.compress_ratio)
        out = compress_messages(out, target)
    notes = [step.hint] if step.hint else []
    if step.final:
        notes.append(FINAL_ANSWER_INSTRUCTION)
    for note in notes:  # last, so the prompt's cached prefix stays as it was
        out.append({"role": note_role(step.model), "content": note})
    return out


def _check(response: Any, expect_json: bool, validate: Validator | None) -> None:
    text = _text_of(response)
    if expect_json:
        try:
            json.loads(text or "")
        except ValueError:
            raise _Invalid("invalid_json") from None
    if validate is not None and not validate(response):
        raise _Invalid("validation_failed")


def _text_of(response: Any) -> str | None:
    try:
        content = response.choices[0].message.content
    except (AttributeError, IndexError, KeyError):
        return None
    return content if isinstance(content, str) else None


def _answer_text(response: Any) -> str | None:
    """The answer's text and its tool calls (``name(arguments)``, billed as output): what a
    missing usage's output is estimated from, and what ``record_content`` records."""
    text = _text_of(response)
    try:
        calls = response.choices[0].message.tool_calls or []
    except (AttributeError, IndexError, KeyError):
        return text
    functions = [getattr(call, "function", None) for call in calls]
    pairs = [(getattr(f, "name", ""), getattr(f, "arguments", "")) for f in functions]
    return answer_text(text, pairs) or text


def _call_kwargs(step: Step, messages: list[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    if step.model is None:
        raise ValueError(
            "complete() has no model to call: pass model=..., or give the policy a Routing "
            "with tiers"
        )
    call = {**kwargs, "model": step.model, "messages": messages, "max_tokens": step.max_tokens}
    if step.final and call.get("tools"):
        _final_tools(call, final_call_tools(step.model))
    return call


def _final_tools(call: dict[str, Any], mode: FinalTools) -> None:
    """The last call a cap allows goes without tools, or where the provider refuses a tool
    history without tools (Anthropic, Bedrock) keeps them: with ``tool_choice="none"``
    (LiteLLM's word for Anthropic's), or on Bedrock, which has none, as they were."""
    call.pop("tool_choice", None)
    if mode == "drop":
        call.pop("tools", None)
        call.pop("parallel_tool_calls", None)
    elif mode == "forbid":
        call["tool_choice"] = "none"


def _is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_call_figures(attempts: int, max_tokens: int | None) -> None:
    """Refuse ``attempts`` that would make no call and a ``max_tokens`` below one token."""
    if not _is_whole(attempts) or attempts < 1:
        raise ValueError(
            f"attempts must be a whole number >= 1 (got {attempts!r}): it is how many calls "
            "complete() may make, the first one and its retries"
        )
    if max_tokens is not None and (not _is_whole(max_tokens) or max_tokens < 1):
        raise ValueError(
            f"max_tokens must be a whole number >= 1 (got {max_tokens!r}), or None for the "
            "policy's default_max_output_tokens"
        )


def complete(
    run: Run,
    messages: Sequence[Any],
    *,
    model: str | None = None,
    max_tokens: int | None = None,
    attempts: int = 3,
    expect_json: bool = False,
    validate: Validator | None = None,
    router: Any = None,
    **litellm_kwargs: Any,
) -> Any:
    """Call a model through LiteLLM (or a ``litellm.Router``) under the run's caps and routing.

    Returns the LiteLLM response of the first attempt that succeeds (and validates). Raises
    ``BudgetExceeded`` when a cap refuses an attempt, or the last provider error / the last
    invalid response's ``ValueError`` when ``attempts`` are used up. ``attempts`` must be at
    least 1 and ``max_tokens`` (when given) at least 1, else ``ValueError`` before any call.
    """
    _check_call_figures(attempts, max_tokens)
    streamed, litellm_kwargs = _streaming(litellm_kwargs, expect_json, validate)
    import litellm

    call = router.completion if router is not None else litellm.completion
    _expect_first_call(run, litellm_kwargs)
    last: BaseException | None = None
    for _ in range(attempts):
        step = run.before_llm_call(
            model, messages, max_tokens=max_tokens, tools=litellm_kwargs.get("tools")
        )
        started = time.perf_counter()
        sent = _prepare(run, step, messages)
        try:
            response = call(**_call_kwargs(step, sent, litellm_kwargs))
        except Exception as exc:
            last = _record_failure(run, step, exc, time.perf_counter() - started)
            continue
        if streamed:
            return RecordedStream(response, run, step, _RECORDERS)
        latency = time.perf_counter() - started
        try:
            _check(response, expect_json, validate)
        except _Invalid as bad:
            _record(run, step, response, latency, bad.outcome)
            last = ValueError(f"model response failed: {bad.outcome}")
            continue
        _record(run, step, response, latency, "ok")
        return response
    assert last is not None
    raise last


async def acomplete(
    run: Run,
    messages: Sequence[Any],
    *,
    model: str | None = None,
    max_tokens: int | None = None,
    attempts: int = 3,
    expect_json: bool = False,
    validate: Validator | None = None,
    router: Any = None,
    **litellm_kwargs: Any,
) -> Any:
    """Async twin of ``complete`` (``litellm.acompletion`` / ``Router.acompletion``)."""
    _check_call_figures(attempts, max_tokens)
    streamed, litellm_kwargs = _streaming(litellm_kwargs, expect_json, validate)
    import litellm

    call = router.acompletion if router is not None else litellm.acompletion
    _expect_first_call(run, litellm_kwargs)
    last: BaseException | None = None
    for _ in range(attempts):
        step = await run.abefore_llm_call(
            model, messages, max_tokens=max_tokens, tools=litellm_kwargs.get("tools")
        )
        started = time.perf_counter()
        sent = _prepare(run, step, messages)
        try:
            response = await call(**_call_kwargs(step, sent, litellm_kwargs))
        except Exception as exc:
            last = await _arecord_failure(run, step, exc, time.perf_counter() - started)
            continue
        if streamed:
            return RecordedStream(response, run, step, _RECORDERS)
        latency = time.perf_counter() - started
        try:
            _check(response, expect_json, validate)
        except _Invalid as bad:
            await _arecord(run, step, response, latency, bad.outcome)
            last = ValueError(f"model response failed: {bad.outcome}")
            continue
        await _arecord(run, step, response, latency, "ok")
        return response
    assert last is not None
    raise last


def _result(step: Step, response: Any) -> Answer:
    """What a response says of its call: usage (None: to be estimated from the answer),
    the model to price, and the answer's text."""
    usage = usage_from_litellm(
        getattr(response, "usage", None), getattr(response, "service_tier", None)
    )
    return Answer(
        usage, priced_model(step, getattr(response, "model", None)), _answer_text(response)
    )


def priced_model(step: Step, model: str | None) -> str | None:
    """The model a response names, as the run prices it: LiteLLM strips the provider prefix
    (``anthropic/...``), so the routed name stands for it."""
    model = model or step.model
    if model and step.model and step.model.endswith(model) and "/" in step.model:
        return step.model
    return model


def _record(run: Run, step: Step, response: Any, latency: float, outcome: str) -> None:
    _record_answer(run, step, _result(step, response), latency, outcome)


async def _arecord(run: Run, step: Step, response: Any, latency: float, outcome: str) -> None:
    await _arecord_answer(run, step, _result(step, response), latency, outcome)


def _record_answer(run: Run, step: Step, answer: Answer, latency: float, outcome: str) -> None:
    run.after_llm_call(
        step,
        answer.usage,
        model=answer.model,
        latency_s=latency,
        outcome=outcome,
        output_text=answer.text,
    )


async def _arecord_answer(
    run: Run, step: Step, answer: Answer, latency: float, outcome: str
) -> None:
    await run.aafter_llm_call(
        step,
        answer.usage,
        model=answer.model,
        latency_s=latency,
        outcome=outcome,
        output_text=answer.text,
    )


def _expect_first_call(run: Run, kwargs: dict[str, Any]) -> None:
    """What the call asks LiteLLM for that only its bill would say, for a run's first
    reservation: its service tier, and the hosted web searches its tools (or LiteLLM's
    ``web_search_options``) may make."""
    run.expect_service_tier(kwargs.get("service_tier"))
    searches = searches_offered(kwargs.get("tools"))
    run.expect_web_searches(max(searches, 1) if kwargs.get("web_search_options") else searches)


def _failed_outcome(error: BaseException) -> str:
    """A stream that failed after its first chunk: a provider's error, whatever it was."""
    return classify_error(error) or "provider_error"


#: How a ``RecordedStream`` records its call: sync, async, and a failure's outcome.
_RECORDERS = Recorders(
    _record_answer, _arecord_answer, _failed_outcome, priced_model, usage_from_litellm
)


def _streaming(
    kwargs: dict[str, Any], expect_json: bool, validate: Validator | None
) -> tuple[bool, dict[str, Any]]:
    """Whether the call streams, and its LiteLLM keywords (asking for the usage chunk)."""
    if not kwargs.get("stream"):
        return False, kwargs
    check_streamable(expect_json, validate)
    return True, with_usage_chunk(kwargs)


def _record_failure(run: Run, step: Step, exc: Exception, latency: float) -> Exception:
    """Record a provider error as a failed call and return it to retry; raise it when no
    attempt can help (a refused request, after recording it) or it is not a provider's
    (then the call did not happen: its reservation is released)."""
    outcome = classify_error(exc)
    if outcome is None:
        run.release(step)
        raise exc
    run.after_llm_call(step, Usage(), latency_s=latency, outcome=outcome)
    if outcome == "request_error":
        raise exc
    return exc


async def _arecord_failure(run: Run, step: Step, exc: Exception, latency: float) -> Exception:
    """Async twin of ``_record_failure``."""
    outcome = classify_error(exc)
    if outcome is None:
        await run.arelease(step)
        raise exc
    await run.aafter_llm_call(step, Usage(), latency_s=latency, outcome=outcome)
    if outcome == "request_error":
        raise exc
    return exc
