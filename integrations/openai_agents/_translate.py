"""Translate Agents SDK objects (responses, input items, agents, tool contexts) for the core."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from agents.agent import Agent
from agents.exceptions import UserError
from agents.handoffs import Handoff
from agents.items import ModelResponse
from agents.model_settings import ModelSettings
from agents.models.default_models import get_default_model
from agents.models.interface import Model
from agents.tool_context import ToolContext
from agents.usage import Usage as AgentsUsage
from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage

from budgetwarden import Usage
from budgetwarden.compress import compress_messages
from budgetwarden.pricing import billed_tier
from budgetwarden.usage import (
    IMAGE_BLOCK_TYPES,
    IMAGE_CHARS,
    chars_message_tokens,
    estimate_tool_tokens,
    media_chars,
    text_size,
)

__all__ = [
    "InputTokens",
    "ParsedArguments",
    "estimate_input_tokens",
    "estimate_messages",
    "agent_tool_names",
    "compress_input",
    "model_name",
    "read_response",
    "response_outcome",
    "response_text",
    "tool_arguments",
    "tool_call_of",
    "tool_call_id",
    "tool_result_failed",
    "usage_of",
]

#: Openings of the messages the SDK returns to the model when a function tool failed.
_TOOL_FAILURE_OPENINGS = (
    "An error occurred while running the tool.",
    "An error occurred while parsing tool arguments.",
)

#: Function-call arguments a response carried, parsed once: call id -> (JSON text, value).
ParsedArguments = dict[str, tuple[str, Any]]

#: The C scanner ``json.loads`` runs, after its whitespace and trailing-data checks.
_Scanner = Callable[[str, int], tuple[Any, int]]
_scan_json: _Scanner = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _parse_json(text: str) -> Any:
    """``json.loads(text)``: a document with nothing around it (what models send) goes
    straight to the scanner; anything else (whitespace, trailing data, a BOM) to json.loads.
    A malformed document raises the same error either way."""
    if type(text) is str:
        try:
            value, end = _scan_json(text, 0)
        except StopIteration:  # no JSON value at its very start
            return json.loads(text)
        if end == len(text):
            return value
    return json.loads(text)


def usage_of(
    usage: AgentsUsage | None, settings: ModelSettings | None = None, searches: int = 0
) -> Usage | None:
    """One call's usage in budgetwarden's convention, or None when the provider reported none.

    The SDK's usage has no service tier: the one the agent's ``settings`` ask for
    (``extra_args`` or ``extra_body``: ``{"service_tier": "priority"}``) is taken for it.
    ``searches``: the hosted web searches the response made (``web_searches``)."""
    if usage is None or (usage.input_tokens == 0 and usage.output_tokens == 0):
        return None
    details = usage.input_tokens_details
    return Usage.from_counts(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=int(getattr(details, "cached_tokens", 0) or 0),
        cache_write_tokens=int(getattr(details, "cache_write_tokens", 0) or 0),
        reasoning_tokens=int(usage.output_tokens_details.reasoning_tokens or 0),
        service_tier=requested_tier(settings) if settings is not None else None,
        web_search_requests=searches,
    )


def web_searches(response: ModelResponse) -> int:
    """The searches a response's hosted web search tool made (``WebSearchTool``: one
    ``web_search_call`` item each), which the provider bills per search."""
    count = 0
    for item in response.output:
        if item.type == "web_search_call":
            count += 1
    return count


def requested_tier(settings: ModelSettings) -> str | None:
    """The service tier ``settings`` ask for, when it is billed apart (else None)."""
    extra_args, extra_body = settings.extra_args, settings.extra_body
    if not extra_args and not extra_body:
        return None
    for extra in (extra_args, extra_body):
        if isinstance(extra, Mapping) and (tier := billed_tier(extra.get("service_tier"))):
            return tier
    return None


def model_name(model: str | Model | None) -> str | None:
    """The model name an agent asks for, where it can be known before the call."""
    if model is None:
        return get_default_model()
    if isinstance(model, str):
        return model
    named = getattr(model, "requested_model", None) or getattr(model, "model", None)
    return named if isinstance(named, str) else None


_NO_NAME = object()


def agent_tool_names(agent: Agent[Any]) -> list[str]:
    """Names of the tools and handoffs an agent offers the model (static ones only)."""
    names: list[str] = []
    for tool in agent.tools:  # a loop, not a comprehension: one frame less per model call
        name = getattr(tool, "name", _NO_NAME)  # the type's name only when it has none
        names.append(str(name) if name is not _NO_NAME else type(tool).__name__)
    for handoff in agent.handoffs:
        if isinstance(handoff, Handoff):
            names.append(handoff.tool_name)
        else:
            names.append(Handoff.default_tool_name(handoff))
    return names


def _item_field(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, Mapping) else getattr(item, name, None)


#: What an image counts for in an item's text: ``IMAGE_TOKENS`` worth of characters (an image
#: is billed by its pixels, not by the length of its base64 data).
_IMAGE_TEXT = "[image]".ljust(IMAGE_CHARS)


def _item_text(item: Any) -> str:
    kind = _item_field(item, "type")
    if kind == "function_call":
        return f"{_item_field(item, 'name')}({_item_field(item, 'arguments')})"
    if kind in ("function_call_output", "computer_call_output"):
        output = _item_field(item, "output")
        if isinstance(output, str):
            return output
        if _is_image(output):
            return _IMAGE_TEXT
        if isinstance(output, list):
            return _content_text(output)
        return json.dumps(output, default=str)
    content = _item_field(item, "content")
    if content is None:
        return json.dumps(item, default=str) if isinstance(item, Mapping) else str(item)
    return content if isinstance(content, str) else _content_text(content)


def _content_text(content: Iterable[Any]) -> str:
    parts = []
    for part in content:
        text = _item_field(part, "text") or _item_field(part, "refusal")
        if isinstance(text, str):
            parts.append(text)
        elif _is_image(part):
            parts.append(_IMAGE_TEXT)
        elif isinstance(part, Mapping) and (chars := media_chars(part)) is not None:
            parts.append("[media]".ljust(chars))  # a file by its pages, audio by its length
        else:
            parts.append(json.dumps(part, default=str))
    return "".join(parts)


def _is_image(part: Any) -> bool:
    return _item_field(part, "type") in IMAGE_BLOCK_TYPES if part is not None else False


def estimate_messages(
    system_prompt: str | None, input_items: str | list[Any]
) -> list[dict[str, str]]:
    """The model's input as plain role/content messages, for the core's token estimate."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    if isinstance(input_items, str):
        return [*messages, {"role": "user", "content": input_items}]
    for item in input_items:
        role = _item_field(item, "role") or "tool"
        messages.append({"role": str(role), "content": _item_text(item)})
    return messages


def _item_chars(item: Any) -> int:
    """``text_size(_item_text(item))``, without building the text for the usual dict items."""
    if type(item) is dict:
        kind = item.get("type")
        if kind == "function_call":
            name, arguments = item.get("name"), item.get("arguments")
            if type(name) is str and type(arguments) is str:
                return text_size(name) + text_size(arguments) + 2  # f"{name}({arguments})"
        elif kind == "function_call_output":
            output = item.get("output")
            if type(output) is str:
                return len(output) if output.isascii() else text_size(output)
        else:
            content = item.get("content")
            if type(content) is str:
                return len(content) if content.isascii() else text_size(content)
    return text_size(_item_text(item))


def estimate_input_tokens(system_prompt: str | None, input_items: str | list[Any]) -> int:
    """The core's token estimate of ``estimate_messages(system_prompt, input_items)``,
    counted from the items' text lengths without building the messages (the SDK hands the
    model new item dicts at every turn, so there is nothing to cache per item)."""
    tokens = chars_message_tokens(text_size(system_prompt)) if system_prompt else 0
    if isinstance(input_items, str):
        return tokens + chars_message_tokens(text_size(input_items))
    for item in input_items:
        tokens += chars_message_tokens(_item_chars(item))
    return tokens


class InputTokens:
    """The input estimates of one run's model calls, counting each turn's new items only.

    The SDK hands the model fresh item dicts at every turn, but equal ones: last turn's
    input, then what that turn added. When the input starts with items equal to the last
    input's (one C-level list comparison), their count is reused and only the rest is
    counted; anything else (a handoff's filtered input, a trimmed history) is counted whole.
    Equal items have equal texts, so the figure is ``estimate_input_tokens``'s, plus the
    conversation the server keeps when it keeps one, or else the run's prompt gap (see
    ``estimate``). ``with_tools`` counts the definitions of the agent's tools, which the
    hooks add to it.
    """

    __slots__ = ("_items", "_tokens", "_tools", "added", "billed", "tool_tokens")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._tokens = 0
        #: The last call's prompt and output tokens as the provider billed them (0: unknown).
        self.billed = 0
        #: The prompt gap the last ``estimate`` added (the hooks put it on the step).
        self.added = 0
        self._tools: tuple[Any, int, Any, int] | None = None
        #: The tool definitions' share of the last ``with_tools`` figure.
        self.tool_tokens = 0

    def with_tools(self, agent: Agent[Any]) -> int:
        """The estimated tokens of the definitions of ``agent``'s tools and handoffs, which
        the provider bills as prompt (``estimate_tool_tokens``; recounted only when the
        agent's lists change). Tools of MCP servers are listed by the SDK after the hooks
        run, so they are not counted."""
        tools, handoffs = agent.tools, agent.handoffs
        seen = self._tools
        if (
            seen is None
            or seen[0] is not tools
            or seen[1] != len(tools)
            or seen[2] is not handoffs
            or seen[3] != len(handoffs)
        ):
            self._tools = (tools, len(tools), handoffs, len(handoffs))
            self.tool_tokens = estimate_tool_tokens(tools) + estimate_tool_tokens(
                [h for h in handoffs if isinstance(h, Handoff)]
            )
        return self.tool_tokens

    def estimate(
        self, system_prompt: str | None, input_items: str | list[Any], gap: int = 0
    ) -> int:
        """``estimate_input_tokens(system_prompt, input_items)``; remembers the items.

        An input that does not start with the last call's items and is under half the last
        call's billed prompt is taken for a conversation the server keeps
        (``previous_response_id``, ``conversation_id``): the SDK sends only the new items,
        and the provider bills the whole conversation again, so the last call's billed
        prompt and output are added. (An input filter that trims the history sends about as
        much as it did last time, so it is not; a run's first call on a stored conversation
        is not known.) Any other input gets ``gap``: the run's ``Run.prompt_gap``, what the
        last call's estimate missed of the prompt the provider billed.
        """
        if isinstance(input_items, str):
            self.added = gap
            return estimate_input_tokens(system_prompt, input_items) + gap
        tokens = chars_message_tokens(text_size(system_prompt)) if system_prompt else 0
        seen = self._items
        known = len(seen)
        extends = known and input_items[:known] == seen
        if extends:
            counted, new = self._tokens, input_items[known:]
        else:
            counted, new = 0, input_items
        for item in new:
            counted += chars_message_tokens(_item_chars(item))
        self._items, self._tokens = input_items[:], counted
        if extends or not known or tokens + counted >= self.billed // 2:
            self.added = gap
            return tokens + counted + gap
        self.added = 0
        return tokens + counted + self.billed


def response_text(response: ModelResponse, *, include_tool_calls: bool = False) -> str:
    """The text a model call produced (its messages, optionally its tool calls' arguments)."""
    parts: list[str] = []
    for item in response.output:
        if isinstance(item, ResponseOutputMessage):
            parts.append(_content_text(item.content))
        elif include_tool_calls and isinstance(item, ResponseFunctionToolCall):
            parts.append(f"{item.name}({item.arguments})")
    return "\n".join(part for part in parts if part)


def tool_arguments(context: Any) -> Any:
    """A function tool call's arguments, parsed from JSON where they are JSON."""
    if not isinstance(context, ToolContext):
        return None
    try:
        return json.loads(context.tool_arguments) if context.tool_arguments else {}
    except ValueError:
        return context.tool_arguments


def tool_call_id(context: Any) -> str | None:
    """The provider's id of a function tool call, when the hook context carries one."""
    return context.tool_call_id if isinstance(context, ToolContext) else None


def tool_call_of(context: Any, parsed: ParsedArguments) -> tuple[str | None, Any]:
    """``(tool_call_id(context), tool_arguments(context))``, taking the arguments from
    ``parsed`` (where :func:`read_response` left them) when they are the same JSON text."""
    if not isinstance(context, ToolContext):
        return None, None
    call_id, text = context.tool_call_id, context.tool_arguments
    known = parsed.pop(call_id, None)
    if known is not None and known[0] == text:
        return call_id, known[1]
    return call_id, tool_arguments(context)


#: how the SDK words the error of a function tool that raised with no failure function
_TOOL_RAISED = "Error running tool "


def tool_that_raised(error: BaseException | None) -> str | None:
    """The name of the function tool whose exception ended the run (a tool without a
    ``failure_error_function``: the SDK raises ``UserError`` from it), else None."""
    if not isinstance(error, UserError) or error.__cause__ is None:
        return None
    text = str(error)
    if not text.startswith(_TOOL_RAISED):
        return None
    name, colon, _ = text[len(_TOOL_RAISED) :].partition(":")
    return name if colon else None


def tool_result_failed(result: object) -> bool:
    """Whether a tool's result is the message the SDK substitutes for a failed call."""
    return isinstance(result, str) and result.startswith(_TOOL_FAILURE_OPENINGS)


def _valid_json(text: str) -> bool:
    try:
        json.loads(text or "{}")
    except ValueError:
        return False
    return True


def read_response(
    response: ModelResponse, tool_names: list[str] | None, parsed: ParsedArguments
) -> tuple[str, str]:
    """``(response_text(response), response_outcome(response, agent))`` in one pass, with
    ``tool_names`` the agent's (None when it has MCP servers). The arguments of its tool
    calls are parsed into ``parsed`` by call id, for :func:`tool_call_of` to take."""
    parts: list[str] = []
    outcome = "ok"
    for item in response.output:
        if isinstance(item, ResponseOutputMessage):
            text = _content_text(item.content)
            if text:
                parts.append(text)
        elif outcome == "ok" and isinstance(item, ResponseFunctionToolCall):
            try:
                value = _parse_json(item.arguments or "{}")
            except ValueError:
                outcome = "tool_call_error"
                continue
            parsed[item.call_id] = (item.arguments, value)
            if tool_names is not None and item.name not in tool_names:
                outcome = "tool_call_error"
    return "\n".join(parts), outcome


def response_outcome(response: ModelResponse, agent: Agent[Any]) -> str:
    """``tool_call_error`` when a call's arguments are not JSON or name no tool; else ``ok``.

    Tools the SDK adds at run time (MCP servers) are not known here, so an agent with MCP
    servers is only checked for its arguments.
    """
    known: set[str] | None = None  # read at the first tool call: most answers have none
    for item in response.output:
        if not isinstance(item, ResponseFunctionToolCall):
            continue
        if not _valid_json(item.arguments):
            return "tool_call_error"
        if agent.mcp_servers:
            continue
        if known is None:
            known = set(agent_tool_names(agent))
        if item.name not in known:
            return "tool_call_error"
    return "ok"


def _compress_role(item: Any, previous: Any) -> str:
    """A role for the core's compression, so one model response stays with its tool outputs."""
    kind = _item_field(item, "type")
    role = _item_field(item, "role")
    if role in ("system", "developer"):
        return "system"
    if isinstance(kind, str) and kind.endswith("_output"):
        return "tool"  # a tool's result stays with the call that asked for it
    previous_kind = _item_field(previous, "type") if previous is not None else None
    previous_role = _item_field(previous, "role") if previous is not None else None
    same_response = previous_kind in ("reasoning", "function_call") or previous_role == "assistant"
    if isinstance(kind, str) and kind.endswith("_call") and same_response:
        return "tool"  # parallel calls, or calls after the text of the same response
    return str(role or "assistant")


def compress_input(system_prompt: str | None, input_items: list[Any], max_tokens: int) -> list[Any]:
    """The newest input items that fit ``max_tokens`` (the core decides which), never orphaning
    a tool call from its output."""
    proxies: list[dict[str, Any]] = []
    if system_prompt:
        proxies.append({"role": "system", "content": system_prompt, "item": None})
    previous = None
    for item in input_items:
        text = _item_text(item)
        proxies.append({"role": _compress_role(item, previous), "content": text, "item": item})
        previous = item
    kept = compress_messages(proxies, max_tokens)
    return [proxy["item"] for proxy in kept if proxy["item"] is not None]
