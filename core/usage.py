"""Token usage of one model call, and a fast token estimate for reservations."""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .documents import (
    AUDIO_BLOCK_TYPES,
    AUDIO_TOKENS_PER_SECOND,
    FILE_BLOCK_TYPES,
    PAGE_TOKENS,
    audio_data,
    audio_seconds,
    decoded,
    file_payload,
    pdf_pages,
)

__all__ = [
    "answer_text",
    "searches_offered",
    "IMAGE_BLOCK_TYPES",
    "IMAGE_CHARS",
    "IMAGE_TOKENS",
    "TokenCache",
    "Usage",
    "estimate_message_tokens",
    "audio_chars",
    "estimate_tokens",
    "estimate_tool_tokens",
    "file_chars",
    "media_chars",
    "message_tokens",
    "text_size",
    "tool_tokens",
]

#: Characters per token assumed by the estimate (OpenAI's rule of thumb for English). Beyond
#: ASCII the estimate counts UTF-8 bytes instead of characters (see ``text_size``).
CHARS_PER_TOKEN = 4
#: Tokens a chat message costs beyond its text (role, separators), as OpenAI counts them.
TOKENS_PER_MESSAGE = 4


class Usage(BaseModel):
    """Tokens used by one model call, in LiteLLM's and OpenAI's convention.

    ``input_tokens`` counts every prompt token, cached or not; ``cache_read_tokens`` and
    ``cache_write_tokens`` say how many of those were cache reads and writes.
    ``reasoning_tokens`` are part of ``output_tokens``. ``estimated`` marks figures that
    budgetwarden estimated because the framework reported none. ``service_tier`` is the
    tier the provider served the call at when it bills that tier apart (OpenAI's and
    Gemini's ``priority``, twice the standard prices, and ``flex``, half): ``PriceBook``
    bills it at that tier's prices. ``web_search_requests`` are the searches a hosted web
    search tool made (OpenAI's and Anthropic's bill $10 a thousand), billed per search.

    A part larger than its total is refused (``ValueError``). For a provider's counts in
    another convention, use ``from_anthropic`` or ``from_counts``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_tokens: int = Field(default=0, ge=0, description="Every prompt token, cached or not.")
    output_tokens: int = Field(
        default=0, ge=0, description="Completion tokens, reasoning included."
    )
    cache_read_tokens: int = Field(default=0, ge=0, description="Prompt tokens read from a cache.")
    cache_write_tokens: int = Field(
        default=0, ge=0, description="Prompt tokens written to a cache."
    )
    cache_write_1h_tokens: int = Field(
        default=0, ge=0, description="Of cache_write_tokens, those written to a one-hour cache."
    )
    reasoning_tokens: int = Field(default=0, ge=0, description="Output tokens spent on reasoning.")
    estimated: bool = Field(default=False, description="True when these figures are an estimate.")
    service_tier: str | None = Field(
        default=None,
        description="The provider's service tier when not the standard one: priority, flex...",
    )
    web_search_requests: int = Field(
        default=0, ge=0, description="Searches the provider's hosted web search tool made."
    )

    @model_validator(mode="after")
    def _parts_within_totals(self) -> Usage:
        """Cache reads and writes are part of the input, reasoning part of the output.

        Usage is built for every model call: this is two comparisons, and the message is
        only composed for a usage that fails them."""
        if (
            self.cache_read_tokens + self.cache_write_tokens > self.input_tokens
            or self.reasoning_tokens > self.output_tokens
            or self.cache_write_1h_tokens > self.cache_write_tokens
        ):
            raise ValueError(_parts_error(self))
        return self

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            cache_write_1h_tokens=self.cache_write_1h_tokens + other.cache_write_1h_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
            estimated=self.estimated or other.estimated,
            service_tier=self.service_tier if self.service_tier == other.service_tier else None,
            web_search_requests=self.web_search_requests + other.web_search_requests,
        )

    @classmethod
    def from_anthropic(
        cls,
        input_tokens: int,
        output_tokens: int,
        cache_read_input_tokens: int = 0,
        cache_creation_input_tokens: int = 0,
    ) -> Usage:
        """Convert Anthropic's convention, where cached tokens are counted apart from input."""
        return cls(
            input_tokens=input_tokens + cache_read_input_tokens + cache_creation_input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cache_read_input_tokens,
            cache_write_tokens=cache_creation_input_tokens,
        )

    @classmethod
    def from_counts(
        cls,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        reasoning_tokens: int = 0,
        service_tier: str | None = None,
        web_search_requests: int = 0,
        cache_write_1h_tokens: int = 0,
    ) -> Usage:
        """A usage from a provider's counts, whichever convention they follow.

        Most providers count cache tokens within the input and reasoning tokens within the
        output, as ``Usage`` does; some count them apart (Anthropic's and Bedrock's cache
        tokens, Gemini's thoughts). Counts that can only be the latter (a part larger than
        its total) are added to their total; others are taken as they are. The adapters
        build every usage a framework reports this way, so a provider's figures never fail
        ``Usage``'s checks.
        """
        if cache_write_1h_tokens > cache_write_tokens:
            cache_write_tokens += cache_write_1h_tokens
        if cache_read_tokens + cache_write_tokens > input_tokens:
            input_tokens += cache_read_tokens + cache_write_tokens
        if reasoning_tokens > output_tokens:
            output_tokens += reasoning_tokens
        return cls(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cache_read_tokens,
            cache_write_tokens=cache_write_tokens,
            reasoning_tokens=reasoning_tokens,
            service_tier=service_tier,
            web_search_requests=web_search_requests,
            cache_write_1h_tokens=cache_write_1h_tokens,
        )


def _parts_error(usage: Usage) -> str:
    if usage.cache_write_1h_tokens > usage.cache_write_tokens:
        return (
            f"cache_write_1h_tokens ({usage.cache_write_1h_tokens}) exceed cache_write_tokens "
            f"({usage.cache_write_tokens}), which count every cache write, one-hour ones "
            "included: add them to cache_write_tokens"
        )
    if usage.reasoning_tokens > usage.output_tokens:
        return (
            f"reasoning_tokens ({usage.reasoning_tokens}) exceed output_tokens "
            f"({usage.output_tokens}), which count every completion token, reasoning included: "
            "add the reasoning tokens to output_tokens if they were counted apart "
            "(Usage.from_counts does)"
        )
    return (
        f"cache_read_tokens ({usage.cache_read_tokens}) + cache_write_tokens "
        f"({usage.cache_write_tokens}) exceed input_tokens ({usage.input_tokens}), which count "
        "every prompt token, cached or not: add the cache tokens to input_tokens if they were "
        "counted apart (Usage.from_anthropic and Usage.from_counts do)"
    )


def estimate_tokens(text: str) -> int:
    """Estimate the tokens of a text: one per four characters (``text_size``), rounded up."""
    return -(-text_size(text) // CHARS_PER_TOKEN)


def text_size(text: str) -> int:
    """The size the estimate counts of ``text``: its length when it is ASCII, else its UTF-8
    bytes. Tokenizers spend about a token per four ASCII characters, but nearer one per
    Chinese or Japanese character (three bytes): counted by characters, 1,350 characters of
    Chinese read as 337 tokens (871 with GPT-4o's tokenizer, 1,140 with Claude's); by bytes,
    1,012. Whether a text is ASCII is known without reading it."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


#: Tool-call arguments are JSON, which tokenizes about 1.5x denser than prose.
JSON_WEIGHT = 1.5


#: Prompt tokens assumed for one image, whatever its size in bytes: providers bill an image
#: by its pixels, not by its base64 text (GPT-4o at most about 1,100 tokens in high detail,
#: Claude about 1,600 for a 1.15-megapixel image, Gemini 258). Counted as text, one
#: 500 KB screenshot read as 170,000 tokens.
IMAGE_TOKENS = 1600
#: ``IMAGE_TOKENS`` in the characters the estimate counts.
IMAGE_CHARS = IMAGE_TOKENS * CHARS_PER_TOKEN
#: Content-block types that carry an image: OpenAI's chat (``image_url``) and Responses
#: (``input_image``, ``computer_screenshot``) APIs, Anthropic's and LangChain's (``image``).
IMAGE_BLOCK_TYPES = frozenset({"image", "image_url", "input_image", "computer_screenshot"})


def _content_chars(content: Any) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return text_size(content)
    if isinstance(content, Mapping):
        text = content.get("text")
        if isinstance(text, str):
            return text_size(text)
        media = media_chars(content)
        return media if media is not None else _json_chars(content)
    if isinstance(content, Iterable):
        return sum(_content_chars(part) for part in content)
    return text_size(str(content))


def _json_chars(block: Mapping[str, Any]) -> int:
    """The characters the estimate counts for a block read as its JSON text."""
    return int(text_size(str(block)) * JSON_WEIGHT)


def media_chars(block: Mapping[str, Any]) -> int | None:
    """The characters the estimate counts for a media block, by what providers bill rather
    than by the length of its base64 data: an image (``IMAGE_CHARS``), a document
    (``file_chars``) or audio (``audio_chars``); None for a block of another type."""
    kind = block.get("type")
    if kind in IMAGE_BLOCK_TYPES:
        return IMAGE_CHARS
    if kind in FILE_BLOCK_TYPES:
        return file_chars(block)
    if kind in AUDIO_BLOCK_TYPES:
        return audio_chars(block)
    return None


def file_chars(block: Mapping[str, Any]) -> int:
    """The characters the estimate counts for a document block (``FILE_BLOCK_TYPES``):
    ``PAGE_TOKENS`` a page of a PDF (``budgetwarden.documents``), the text of a text file,
    the bytes of another file; a reference (a file id, a URL) as its text."""
    payload = file_payload(block)
    if payload is None:
        return _json_chars(block)
    data, is_base64 = payload
    if not isinstance(data, str):
        return _content_chars(data)
    raw = decoded(data) if is_base64 else None
    if raw is None:
        return text_size(data)
    pages = pdf_pages(raw)
    return pages * PAGE_TOKENS * CHARS_PER_TOKEN if pages else len(raw)


def audio_chars(block: Mapping[str, Any]) -> int:
    """The characters the estimate counts for an audio block (``AUDIO_BLOCK_TYPES``): its
    length at ``AUDIO_TOKENS_PER_SECOND`` (``budgetwarden.documents.audio_seconds``); a
    reference (a URL, a file id) as its text."""
    data = audio_data(block)
    if data is None:
        return _json_chars(block)
    return math.ceil(audio_seconds(data) * AUDIO_TOKENS_PER_SECOND) * CHARS_PER_TOKEN


def _calls_chars(calls: Any) -> int:
    if not calls:
        return 0
    return int(sum(map(text_size, map(str, calls))) * JSON_WEIGHT)


def _message_chars(message: Any) -> int:
    kind = type(message)
    if kind is str:
        return text_size(message)
    if kind is dict:
        content, calls = message.get("content"), message.get("tool_calls")
    else:
        fields = getattr(message, "__dict__", None)
        if fields is not None and "content" in fields:  # a framework's message object
            content, calls = fields["content"], fields.get("tool_calls")
        elif isinstance(message, Mapping):
            content, calls = message.get("content"), message.get("tool_calls")
        else:
            content, calls = getattr(message, "content", None), None
    if type(content) is str:  # text_size, inline: most contents are ASCII text
        chars = len(content) if content.isascii() else text_size(content)
    else:
        chars = _content_chars(content)
    return chars + _calls_chars(calls) if calls else chars


def message_tokens(message: Any) -> int:
    """The estimated tokens of one chat message, its per-message overhead included."""
    return chars_message_tokens(_message_chars(message))


def chars_message_tokens(chars: int) -> int:
    """The estimated tokens of one chat message of ``chars`` characters (overhead included),
    for adapters that count a framework's message characters themselves."""
    return TOKENS_PER_MESSAGE - (-chars // CHARS_PER_TOKEN)


#: What a caller keeps between calls for ``estimate_message_tokens`` (a run keeps one): the
#: last transcript measured, its per-message counts and their sum.
TokenCache = dict[int, Any]


def estimate_message_tokens(
    messages: Iterable[Any] | str | None, cache: TokenCache | None = None
) -> int:
    """Estimate the prompt tokens of chat messages (dicts, framework objects or text).

    Fast and deliberately simple: text length / 4 plus a few tokens per message. It is
    used for reservations, where a slight overestimate is safe and speed matters. With a
    ``cache`` (a run keeps one), the messages of the last transcript measured are not
    measured again: agents re-send the same message objects at every step, most often the
    whole transcript with a few messages appended.
    """
    if messages is None:
        return 0
    if isinstance(messages, str):
        return estimate_tokens(messages)
    if cache is None:
        return sum(message_tokens(message) for message in messages)
    current = tuple(messages)
    last = cache.get(_LAST)
    if last is None:
        return _measure(cache, current, {})
    previous: tuple[Any, ...]
    counts: list[int]
    total: int
    previous, counts, total = last
    seen = len(previous)
    if len(current) < seen or sum(map(operator.is_, current, previous)) != seen:
        # not the last transcript with messages appended: reuse its counts, by object
        return _measure(
            cache, current, {id(m): (m, n) for m, n in zip(previous, counts, strict=True)}
        )
    if len(current) == seen:
        return total  # the same transcript again
    counts = counts[:]  # the last transcript, then the new messages (checked in C above)
    for message in current[seen:]:
        tokens = TOKENS_PER_MESSAGE - (-_message_chars(message) // CHARS_PER_TOKEN)
        counts.append(tokens)
        total += tokens
    cache[_LAST] = (current, counts, total)
    return total


#: The cache's one slot: the last transcript measured.
_LAST = -1


def _measure(cache: TokenCache, current: tuple[Any, ...], known: dict[int, Any]) -> int:
    """Measure ``current`` (reusing the counts in ``known``: id -> (message, tokens)), and
    remember it as the last transcript."""
    counts, total = [], 0
    for message in current:
        hit = known.get(id(message))
        if hit is not None and hit[0] is message:
            tokens = hit[1]
        else:
            tokens = TOKENS_PER_MESSAGE - (-_message_chars(message) // CHARS_PER_TOKEN)
        counts.append(tokens)
        total += tokens
    cache[_LAST] = (current, counts, total)
    return total


#: Attributes holding a tool's parameter schema, by framework: the Agents SDK's
#: ``FunctionTool`` and ``Handoff``, LangChain's ``BaseTool`` (then any ``args_schema``).
_SCHEMA_ATTRIBUTES = ("params_json_schema", "input_json_schema", "tool_call_schema", "args_schema")
_NAME_ATTRIBUTES = ("name", "tool_name")
_DESCRIPTION_ATTRIBUTES = ("description", "tool_description")
#: Tools measured so far, by object: id -> (the tool, kept so the id stays its own; tokens).
_measured_tools: dict[int, tuple[Any, int]] = {}
#: Schema dicts measured so far, by name and description (frameworks rebuild the dicts of
#: the same tools at every call: LangChain binds its tools again for each model call).
_measured_schemas: dict[tuple[str, Any], int] = {}
_MEASURED_KEPT = 4096


def answer_text(text: str | None, calls: Iterable[tuple[str, str]] = ()) -> str:
    """What a model call produced, as its output is estimated (when no usage came) and
    recorded (``Policy.record_content``): its words, then each tool call as
    ``name(arguments)``, one a line (providers bill tool calls as output)."""
    parts = [text] if text else []
    parts += [f"{name}({arguments})" for name, arguments in calls]
    return "\n".join(parts)


def searches_offered(tools: Iterable[Any] | None) -> int:
    """The hosted web searches a call offered these tools may make, as far as they say:
    an Anthropic ``web_search`` tool's ``max_uses``, else one for any hosted search tool
    (OpenAI's ``{"type": "web_search"}`` and ``web_search_preview``, Anthropic's
    ``web_search_2025...``, Gemini's ``{"google_search": {}}``, the Agents SDK's
    ``WebSearchTool``); 0 without one."""
    most = 0
    for tool in tools or ():
        if isinstance(tool, Mapping):
            kind = tool.get("type")
            if isinstance(kind, str) and kind.startswith("web_search"):
                uses = tool.get("max_uses")
                most = max(most, uses if isinstance(uses, int) and uses > 0 else 1)
            elif "google_search" in tool or "google_search_retrieval" in tool:
                most = max(most, 1)
        elif type(tool).__name__ == "WebSearchTool":
            most = max(most, 1)
    return most


def estimate_tool_tokens(tools: Iterable[Any] | None) -> int:
    """Estimate the prompt tokens of the tool definitions a call offers (see ``tool_tokens``).

    Providers bill a call's tool definitions as prompt tokens: a few hundred tokens for a
    handful of tools, tens of thousands for an agent with several MCP servers. Each tool is
    measured once and remembered, a tool object by identity and a schema dict by its name
    and description, so an agent offering the same tools at every step pays a lookup each.
    """
    if not tools:
        return 0
    total = 0
    for tool in tools:
        if type(tool) is str:
            continue  # a name: no schema to count
        if isinstance(tool, Mapping):
            total += _schema_tokens(tool)
            continue
        known = _measured_tools.get(id(tool))
        if known is None or known[0] is not tool:
            if len(_measured_tools) >= _MEASURED_KEPT:
                _measured_tools.clear()
            known = _measured_tools[id(tool)] = (tool, tool_tokens(tool))
        total += known[1]
    return total


def _schema_tokens(schema: Mapping[str, Any]) -> int:
    function = schema.get("function")
    named = function if isinstance(function, Mapping) else schema
    name = named.get("name")
    if not isinstance(name, str):
        return tool_tokens(schema)
    key = (name, named.get("description"))
    tokens = _measured_schemas.get(key)
    if tokens is None:
        if len(_measured_schemas) >= _MEASURED_KEPT:
            _measured_schemas.clear()
        tokens = _measured_schemas[key] = tool_tokens(schema)
    return tokens


def tool_tokens(tool: Any) -> int:
    """The estimated prompt tokens of one tool definition: its name, description and
    parameter schema as JSON, at ``CHARS_PER_TOKEN`` (OpenAI bills less, a compact
    rendering; Anthropic about this, plus its tool-use system prompt).

    ``tool`` is a schema dict (OpenAI's ``{"type": "function", ...}`` or any other), a
    framework's tool object (LangChain ``BaseTool``, the Agents SDK's ``FunctionTool`` and
    ``Handoff``, CrewAI ``BaseTool``) or a bare name, which counts 0: its schema is not
    known here (in CrewAI's ReAct mode the tools are described in the prompt itself).
    """
    if isinstance(tool, str):
        return 0
    if isinstance(tool, Mapping):
        return estimate_tokens(_json(tool))
    definition = {
        "name": _first_attribute(tool, _NAME_ATTRIBUTES),
        "description": _first_attribute(tool, _DESCRIPTION_ATTRIBUTES),
        "parameters": _schema_of(tool),
    }
    return estimate_tokens(_json(definition))


def _first_attribute(tool: Any, names: tuple[str, ...]) -> str:
    for name in names:
        value = getattr(tool, name, None)
        if isinstance(value, str):
            return value
    return ""


def _schema_of(tool: Any) -> Any:
    """A tool's parameter schema as JSON-able data (a pydantic model class: its JSON
    schema); None when it has none or it cannot be read."""
    for name in _SCHEMA_ATTRIBUTES:
        try:
            schema = getattr(tool, name, None)
        except Exception:  # a third-party property that fails: measure without it
            continue
        if isinstance(schema, Mapping):
            return schema
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            try:
                return schema.model_json_schema()
            except Exception:  # a model pydantic cannot render: measure without it
                return None
    return None


def _json(value: Any) -> str:
    """``value`` as JSON; a value JSON cannot hold (a cycle) as its ``repr``, which is about
    as long: a tool definition is measured, never refused."""
    try:
        return json.dumps(value, default=str, separators=(", ", ": "))
    except (ValueError, TypeError, RecursionError):
        return repr(value)
