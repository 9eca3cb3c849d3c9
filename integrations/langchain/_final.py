"""The honest ending of a stopped agent: a final AI message and answers to pending calls."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage

from budgetwarden import BudgetError, BudgetExceeded, RunReport

__all__ = ["final_message", "refusal_tool_message", "unanswered_tool_messages"]


def _stop_metadata(exc: BudgetError, report: RunReport) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    if isinstance(exc, BudgetExceeded):
        figures = {
            "cap": exc.cap,
            "limit": exc.limit,
            "used": exc.used,
            "resets_at": exc.resets_at,
        }
    return {**figures, "partial": True, "report": report.model_dump(mode="json")}


def final_message(exc: BudgetError, report: RunReport) -> AIMessage:
    """A final AI message (no tool calls) naming the cap, the figures and what was done."""
    text = f"{exc} Done so far: {report.summary()}."
    return AIMessage(content=text, response_metadata={"budgetwarden": _stop_metadata(exc, report)})


def refusal_tool_message(exc: BudgetError, call: dict[str, Any]) -> ToolMessage:
    """The answer to a tool call that was refused: an error the model (and people) can read."""
    return ToolMessage(
        content=f"Not run: {exc}",
        tool_call_id=call.get("id") or "",
        name=call.get("name"),
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
