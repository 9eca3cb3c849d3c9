"""The honest ending of a stopped agent: final AI messages, answers to pending calls, notes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from budgetwarden import BudgetError, BudgetExceeded, RunReport
from budgetwarden.final_call import final_call_tools

from ._convert import model_name_of

__all__ = [
    "final_answer_message",
    "final_call_overrides",
    "final_message",
    "refusal_tool_message",
    "tool_limit_message",
    "unanswered_tool_messages",
    "note_message",
]

_TOOL_BLOCKS = frozenset({"tool_use", "tool_call", "function_call", "server_tool_use"})


def _stop_metadata(exc: BudgetError, report: RunReport) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    if isinstance(exc, BudgetExceeded):
        figures = {
            "cap": exc.cap,
            "limit": exc.limit,
            "used": exc.used,
            "resets_at": exc.resets_at,
        }
    return {**figures, "partial": True, "report": _dump(report)}


def _dump(report: RunReport) -> dict[str, Any]:
    dumped: dict[str, Any] = report.model_dump(mode="json")
    return dumped


def final_message(exc: BudgetError, report: RunReport) -> AIMessage:
    """A final AI message (no tool calls) naming the cap, the figures and what was done."""
    text = f"{exc} Done so far: {report.summary()}."
    return AIMessage(content=text, response_metadata={"budgetwarden": _stop_metadata(exc, report)})


def final_answer_message(message: AIMessage | None, cap: str, report: RunReport) -> AIMessage:
    """The model's own answer from the last call ``cap`` allowed: no tool calls, marked partial.

    ``response_metadata["budgetwarden"]`` names the cap; a model that gave no text (only tool
    calls) is replaced by an explanation, so the run still ends with an answer.
    """
    base = message or AIMessage(content="")
    content = _without_tool_blocks(base.content)
    if not _has_text(content):
        content = f"budgetwarden: the last call {cap} allowed gave no answer. Done so far: "
        content += f"{report.summary()}."
    stop = {"cap": cap, "partial": True, "final_answer": True}
    metadata = {**base.response_metadata, "budgetwarden": {**stop, "report": _dump(report)}}
    return base.model_copy(
        update={
            "content": content,
            "tool_calls": [],
            "invalid_tool_calls": [],
            "response_metadata": metadata,
        }
    )


def final_call_overrides(model: Any, name: str | None) -> dict[str, Any]:
    """The ``ModelRequest`` overrides for the final-answer call's tools.

    No tools where the provider allows it. Anthropic and Bedrock refuse a history of tool
    calls without tools (``budgetwarden.final_call``): there the call keeps its tools with
    their use forbidden (``ChatAnthropic`` takes ``{"type": "none"}``, LiteLLM and
    OpenAI-style models ``"none"``), or on Bedrock, which cannot forbid them, with the tool
    choice left to the model; ``final_answer_message`` drops a tool call it still makes.
    """
    provider = _ls_provider(model)
    mode = final_call_tools(name or model_name_of(model), provider)
    if mode == "drop":
        return {"tools": []}
    if mode == "forbid":
        return {"tool_choice": {"type": "none"} if provider == "anthropic" else "none"}
    return {"tool_choice": None}


def _ls_provider(model: Any) -> str | None:
    """LangChain's name for the model's provider (``ls_provider``: ``"anthropic"``,
    ``"amazon_bedrock"``, ``"openai"``...), when the model says."""
    params = getattr(model, "_get_ls_params", None)
    if not callable(params):
        return None
    try:
        provider = params().get("ls_provider")
    except Exception:  # a third-party model's tracing parameters: never fail the call on them
        return None
    return provider if isinstance(provider, str) else None


def _without_tool_blocks(content: str | list[Any]) -> str | list[Any]:
    if isinstance(content, str):
        return content
    return [b for b in content if not (isinstance(b, dict) and b.get("type") in _TOOL_BLOCKS)]


def _has_text(content: str | list[Any]) -> bool:
    if isinstance(content, str):
        return bool(content.strip())
    return any(isinstance(b, str) or (isinstance(b, dict) and b.get("text")) for b in content)


def refusal_tool_message(exc: BudgetError, call: dict[str, Any]) -> ToolMessage:
    """The answer to a tool call that was refused: an error the model (and people) can read."""
    return ToolMessage(
        content=f"Not run: {exc}",
        tool_call_id=call.get("id") or "",
        name=call.get("name"),
        status="error",
    )


def tool_limit_message(exc: BudgetExceeded, call: dict[str, Any]) -> ToolMessage:
    """The answer to a call past a tool-call cap, telling the model to stop asking for it."""
    name = call.get("name") or "tool"
    what = f"'{name}'" if exc.cap.startswith("max_tool_calls[") else f"'{name}' or any tool"
    return ToolMessage(
        content=f"tool call limit reached: do not call {what} again "
        f"({exc.cap}: {exc.used:g} of {exc.limit:g} used).",
        tool_call_id=call.get("id") or "",
        name=name,
        status="error",
    )


def unanswered_tool_messages(
    messages: Sequence[BaseMessage], exc: BudgetError
) -> list[ToolMessage]:
    """Error answers for the last AI message's tool calls that have none, so none is orphaned."""
    answered: set[str] = set()
    for message in reversed(messages):
        if isinstance(message, ToolMessage):
            answered.add(message.tool_call_id)
        elif isinstance(message, AIMessage):
            return [
                refusal_tool_message(exc, dict(call))
                for call in message.tool_calls
                if (call.get("id") or "") not in answered
            ]
    return []


def note_message(note: str) -> HumanMessage:
    """A budget note as the last message of one call's request.

    At the end it leaves the prompt's cached prefix as it was; in the system message it made
    every hinted call a full cache miss. A human message, because several providers refuse a
    system message after the first one (``ChatAnthropic`` on most models, Gemini) and Bedrock
    and Anthropic merge it with the tool results before it.
    """
    return HumanMessage(content=note)
