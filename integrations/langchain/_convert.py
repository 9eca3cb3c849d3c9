"""Read what budgetwarden needs from LangChain objects: model names, usage, tools, outcomes."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import LLMResult

from budgetwarden.dispatch import classify_error, usage_from_litellm
from budgetwarden.pricing import SERVICE_TIER_PRICES
from budgetwarden.usage import Usage
from budgetwarden.usage import answer_text as core_answer_text

__all__ = [
    "answer_text",
    "requested_tier",
    "max_tokens_of",
    "model_and_max_tokens",
    "model_from_message",
    "model_from_output",
    "model_from_result",
    "model_from_start",
    "model_name_of",
    "outcome_of_error",
    "outcome_of_message",
    "tool_failed",
    "usage_from_message",
    "usage_from_output",
    "usage_from_result",
]

_MODEL_KEYS = ("model_name", "model", "model_id", "deployment_name")
_MAX_TOKEN_KEYS = ("max_tokens", "max_completion_tokens", "max_output_tokens", "num_predict")


def _first_str(source: Mapping[str, Any] | None, keys: Sequence[str]) -> str | None:
    if not source:
        return None
    for key in keys:
        value = source.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def model_name_of(model: Any) -> str | None:
    """The model name a LangChain chat model will call, when it says (None for fakes)."""
    for key in _MODEL_KEYS:
        value = getattr(model, key, None)
        if isinstance(value, str) and value:
            return value
    if isinstance(model, BaseChatModel):
        return _first_str(model._identifying_params, _MODEL_KEYS)
    return None


def model_from_start(
    serialized: Mapping[str, Any] | None,
    metadata: Mapping[str, Any] | None,
    invocation_params: Mapping[str, Any] | None,
) -> str | None:
    """The model name known before a call: invocation params, tracing metadata, or kwargs."""
    kwargs = (serialized or {}).get("kwargs")
    return (
        _first_str(invocation_params, _MODEL_KEYS)
        or _first_str(metadata, ("ls_model_name",))
        or _first_str(kwargs if isinstance(kwargs, Mapping) else None, _MODEL_KEYS)
    )


def max_tokens_of(
    invocation_params: Mapping[str, Any] | None, metadata: Mapping[str, Any] | None = None
) -> int | None:
    """The output-token limit the call names, if any."""
    if invocation_params:
        for key in _MAX_TOKEN_KEYS:
            value = invocation_params.get(key)
            if value is not None and _is_token_limit(value):
                return value  # type: ignore[no-any-return]
    value = metadata.get("ls_max_tokens") if metadata else None
    return value if value is not None and _is_token_limit(value) else None


def _is_token_limit(value: object) -> bool:
    """A positive int (a bool is not a limit)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


#: The invocation params ``model_from_start`` and ``max_tokens_of`` read.
_PARAM_KEYS = frozenset(_MODEL_KEYS + _MAX_TOKEN_KEYS)


def model_and_max_tokens(
    serialized: Mapping[str, Any] | None,
    metadata: Mapping[str, Any] | None,
    invocation_params: Mapping[str, Any] | None,
) -> tuple[str | None, int | None]:
    """``model_from_start`` and ``max_tokens_of`` in one read: invocation params that name
    neither (a model that reports its name in the tracing metadata) are passed over at once."""
    if invocation_params and not _PARAM_KEYS.isdisjoint(invocation_params):
        return (
            model_from_start(serialized, metadata, invocation_params),
            max_tokens_of(invocation_params, metadata),
        )
    model = metadata.get("ls_model_name") if metadata else None
    if not (isinstance(model, str) and model):
        model = model_from_start(serialized, None, None)
    limit = metadata.get("ls_max_tokens") if metadata else None
    return model, limit if limit is not None and _is_token_limit(limit) else None


def _detail(details: Any, key: str) -> int:
    value = details.get(key) if isinstance(details, Mapping) else None
    return value if isinstance(value, int) else 0


def _served_tier(details: Any) -> str | None:
    """The service tier token details are counted at: ``langchain-openai`` adds the tier's
    own count (``{"priority": 900, "priority_cache_read": 100}``) and prefixes the others."""
    if isinstance(details, Mapping):
        for tier in SERVICE_TIER_PRICES:
            if tier in details:
                return tier
    return None


#: The usage of an answer LangChain's LLM cache gave (``set_llm_cache``): it marks a hit's
#: copied usage with ``total_cost: 0``, and no provider was called.
CACHE_HIT = Usage()


def usage_from_message(message: BaseMessage | None) -> Usage | None:
    """Usage from an AI message's ``usage_metadata`` (LangChain counts cache in input; an
    integration that does not is read as ``Usage.from_counts`` reads it), with the service
    tier the provider served it at when that tier is billed apart (OpenAI's priority)."""
    metadata = getattr(message, "usage_metadata", None)
    if message is None or not metadata:
        return None
    if "total_cost" in metadata and metadata["total_cost"] == 0:
        return CACHE_HIT  # LangChain's own cache answered: the provider billed nothing
    counts = (metadata.get("input_tokens") or 0, metadata.get("output_tokens") or 0)
    # The details are often absent: a missing one is Usage's default, 0. At a tier billed
    # apart, langchain-openai prefixes them with the tier (see _served_tier).
    inputs, outputs = metadata.get("input_token_details"), metadata.get("output_token_details")
    content = message.content
    if inputs and "cache_read" not in inputs and (tier := _served_tier(inputs)):
        return _tier_usage(counts, tier, inputs, outputs, message)
    if outputs and "reasoning" not in outputs and (tier := _served_tier(outputs)):
        return _tier_usage(counts, tier, inputs, outputs, message)
    read = _detail(inputs, "cache_read") if inputs else 0
    write = _detail(inputs, "cache_creation") if inputs else 0
    reasoning = _detail(outputs, "reasoning") if outputs else 0
    by_lifetime = inputs and (_FIVE_MINUTES in inputs or _ONE_HOUR in inputs)
    grounded = "grounding_metadata" in message.response_metadata
    if by_lifetime or grounded or type(content) is list:
        return _usage_in_parts(counts, read, write, reasoning, inputs, message)
    return Usage.from_counts(*counts, read, write, reasoning)


#: langchain-anthropic's cache writes by lifetime (``cache_creation`` is then 0).
_FIVE_MINUTES, _ONE_HOUR = "ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"


def _usage_in_parts(
    counts: tuple[int, int], read: int, write: int, reasoning: int, inputs: Any, message: Any
) -> Usage:
    """``usage_from_message``'s usage with the parts fewer messages carry: cache writes by
    lifetime (langchain-anthropic reports them as ``ephemeral_5m_input_tokens`` and
    ``ephemeral_1h_input_tokens``, with ``cache_creation`` then 0) and hosted web searches."""
    hour = _detail(inputs, _ONE_HOUR)
    write += _detail(inputs, _FIVE_MINUTES) + hour
    searches = web_searches(message)
    return Usage.from_counts(
        *counts,
        read,
        write,
        reasoning,
        web_search_requests=searches,
        cache_write_1h_tokens=hour,
    )


#: Content-block types of a hosted web search: OpenAI's Responses output, LangChain's
#: standard blocks and Anthropic's (the last two name the tool).
_SEARCH_BLOCKS = frozenset({"web_search_call", "server_tool_call", "server_tool_use"})


def web_searches(message: Any) -> int:
    """The hosted web searches an AI message records, which the provider bills per search:
    ``web_search_call`` blocks (OpenAI's Responses API; in ``additional_kwargs
    ["tool_outputs"]`` with ``output_version="v0"``), ``server_tool_call`` /
    ``server_tool_use`` blocks named ``web_search`` (LangChain's standard blocks,
    Anthropic's), and the distinct queries of Gemini's search grounding
    (``response_metadata["grounding_metadata"]["web_search_queries"]``)."""
    blocks = message.content if isinstance(message.content, list) else []
    extra = getattr(message, "additional_kwargs", None)
    outputs = extra.get("tool_outputs") if isinstance(extra, Mapping) else None
    if isinstance(outputs, list):
        blocks = [*blocks, *outputs]
    count = sum(
        1
        for block in blocks
        if isinstance(block, Mapping)
        and block.get("type") in _SEARCH_BLOCKS
        and (block["type"] == "web_search_call" or block.get("name") == "web_search")
    )
    grounding = getattr(message, "response_metadata", {}).get("grounding_metadata")
    queries = grounding.get("web_search_queries") if isinstance(grounding, Mapping) else None
    if isinstance(queries, list):
        count += len({query for query in queries if isinstance(query, str) and query})
    return count


def _tier_usage(
    counts: tuple[int, int], tier: str, inputs: Any, outputs: Any, message: Any
) -> Usage:
    """``usage_from_message``'s usage of a call served at ``tier``, from prefixed details."""
    return Usage.from_counts(
        *counts,
        cache_read_tokens=_detail(inputs, f"{tier}_cache_read"),
        cache_write_tokens=_detail(inputs, f"{tier}_cache_creation"),
        reasoning_tokens=_detail(outputs, f"{tier}_reasoning"),
        service_tier=tier,
        web_search_requests=web_searches(message),
    )


def _legacy_usage(llm_output: Mapping[str, Any] | None) -> Usage | None:
    """OpenAI-shaped ``token_usage`` that older LLM integrations put in ``llm_output``."""
    token_usage = (llm_output or {}).get("token_usage")
    return usage_from_litellm(dict(token_usage)) if isinstance(token_usage, Mapping) else None


def usage_from_output(llm_output: Mapping[str, Any] | None) -> Usage | None:
    """Usage from a result's ``llm_output`` alone (older LLM integrations report it there)."""
    return _legacy_usage(llm_output)


def _messages(result: LLMResult) -> list[BaseMessage]:
    return [
        message
        for generations in result.generations
        for generation in generations
        if isinstance(message := getattr(generation, "message", None), BaseMessage)
    ]


def usage_from_result(result: LLMResult) -> Usage | None:
    """Usage of a whole model call: every generation's message, else the legacy llm_output."""
    found = [usage for m in _messages(result) if (usage := usage_from_message(m)) is not None]
    if found:
        total = found[0]
        for usage in found[1:]:
            total = total + usage
        return total
    return _legacy_usage(result.llm_output)


def requested_tier(model: Any, settings: Mapping[str, Any] | None) -> str | None:
    """The service tier a LangChain call asks for: in its settings (or invocation
    params), else on the chat model (``ChatOpenAI(service_tier="priority")``)."""
    tier = settings.get("service_tier") if settings else None
    if tier is None and model is not None:
        tier = getattr(model, "service_tier", None)
    return tier if isinstance(tier, str) else None


def answer_text(message: BaseMessage | None) -> str:
    """What a model call produced as text: its words, then each tool call as
    ``name(arguments)`` (providers bill tool calls as output). A missing usage's output is
    estimated from it, and ``Policy.record_content`` records it (as the Agents SDK's does)."""
    if message is None:
        return ""
    text = str(message.text)
    calls = getattr(message, "tool_calls", None)
    invalid = getattr(message, "invalid_tool_calls", None)
    if not (calls or invalid):
        return text
    pairs = [(call["name"], json.dumps(call["args"])) for call in calls or ()]
    pairs += [(call.get("name") or "", call.get("args") or "") for call in invalid or ()]
    return core_answer_text(text, pairs)


def model_from_message(message: BaseMessage | None) -> str | None:
    """The model that answered, from an AI message's ``response_metadata``."""
    return _first_str(getattr(message, "response_metadata", None), _MODEL_KEYS)


def model_from_result(result: LLMResult) -> str | None:
    """The model that answered, as the provider reported it after the call."""
    for message in _messages(result):
        if name := model_from_message(message):
            return name
    return _first_str(result.llm_output, _MODEL_KEYS)


def model_from_output(llm_output: Mapping[str, Any] | None) -> str | None:
    """The model that answered, from a result's ``llm_output`` alone."""
    return _first_str(llm_output, _MODEL_KEYS)


def outcome_of_message(message: BaseMessage | None) -> str:
    """``"tool_call_error"`` when the model asked for a tool in a form that cannot be parsed."""
    if isinstance(message, AIMessage) and message.invalid_tool_calls:
        return "tool_call_error"
    return "ok"


def outcome_of_error(error: BaseException) -> str:
    """The outcome of a model call that raised: timeout, rate_limited, else provider_error."""
    return classify_error(error) or "provider_error"


def tool_failed(output: Any) -> bool:
    """True when a tool's output is an error ``ToolMessage`` (a handled tool error)."""
    return isinstance(output, ToolMessage) and output.status == "error"
