"""Context compression for runs under budget pressure: keep the system prompt and the most
recent turns that fit a token budget, never separating a tool call from its results."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .usage import estimate_message_tokens

__all__ = ["compress_messages"]

M = TypeVar("M")


def _role(message: Any) -> str | None:
    if isinstance(message, dict):
        role = message.get("role")
        return role if isinstance(role, str) else None
    return getattr(message, "type", None) or getattr(message, "role", None)


def _is_system(message: Any) -> bool:
    return _role(message) in ("system", "developer")


def _is_tool_result(message: Any) -> bool:
    return _role(message) == "tool"


def compress_messages(
    messages: Sequence[M],
    max_tokens: int,
    *,
    count: Callable[[M], int] | None = None,
    keep_task: bool = False,
) -> list[M]:
    """Keep leading system messages and the newest turns within ``max_tokens``.

    A turn starts at a non-tool message and carries the tool results that follow it, so an
    assistant message with tool calls is kept or dropped together with its tool messages
    (an orphaned tool call or result makes providers reject the request). The newest turn
    is always kept, even if it alone is over the budget. With ``keep_task`` the first
    message after the system prompt (the task, where frameworks keep the system prompt apart)
    is kept too.
    """
    measure = count or (lambda m: estimate_message_tokens([m]))
    head = 0
    while head < len(messages) and _is_system(messages[head]):
        head += 1
    if keep_task and head < len(messages):
        head += 1
    system, rest = list(messages[:head]), list(messages[head:])
    budget = max_tokens - sum(measure(m) for m in system)
    turns = _turns(rest)
    kept: list[list[M]] = []
    for turn in reversed(turns):
        size = sum(measure(m) for m in turn)
        if kept and size > budget:
            break
        kept.append(turn)
        budget -= size
    return system + [m for turn in reversed(kept) for m in turn]


def _turns(messages: list[M]) -> list[list[M]]:
    turns: list[list[M]] = []
    for message in messages:
        if turns and _is_tool_result(message):
            turns[-1].append(message)
        else:
            turns.append([message])
    return turns
