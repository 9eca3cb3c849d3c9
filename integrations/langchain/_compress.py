"""Shrink an agent's conversation under budget pressure, keeping the task it was given."""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.messages import BaseMessage, HumanMessage

from budgetwarden.compress import compress_messages as compress_turns
from budgetwarden.usage import estimate_message_tokens

__all__ = ["compress_messages"]


def compress_messages(messages: Sequence[BaseMessage], budget_tokens: int) -> list[BaseMessage]:
    """The opening human message (the task) and the newest turns that fit ``budget_tokens``.

    The core keeps system messages and whole turns (a tool call with its results, the newest
    always); an agent's history starts with its task, which must survive too.
    """
    task = next((i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), None)
    if task is None:
        kept: list[BaseMessage] = compress_turns(messages, budget_tokens)
        return kept
    head = list(messages[: task + 1])
    left = budget_tokens - estimate_message_tokens(head)
    tail: list[BaseMessage] = compress_turns(messages[task + 1 :], left)
    return head + tail
