"""Compression of an agent's context under budget pressure (the policy asks, the hook does)."""

from __future__ import annotations

from typing import Any

from budgetwarden.compress import compress_messages
from budgetwarden.usage import estimate_message_tokens

__all__ = ["compress_in_place"]


def compress_in_place(messages: list[Any], target: int) -> None:
    """Shrink the context in place to about ``target`` tokens (``Step.compress_target``).

    CrewAI's hooks edit ``messages`` in place (the agent's own history). The system prompt
    and the first user message (the task) are kept; then the newest turns that fit (a turn:
    an assistant message and what follows it, its observation or tool results).
    """
    head = 0
    while head < len(messages) and messages[head].get("role") == "system":
        head += 1
    keep = messages[: head + 1]
    turns = compress_messages(
        _turns(messages[head + 1 :]),
        target - estimate_message_tokens(keep),
        count=estimate_message_tokens,
    )
    messages[:] = [*keep, *(message for turn in turns for message in turn)]


def _turns(messages: list[Any]) -> list[list[Any]]:
    """Group messages in turns that start at each assistant message."""
    turns: list[list[Any]] = []
    for message in messages:
        if not turns or message.get("role") == "assistant":
            turns.append([message])
        else:
            turns[-1].append(message)
    return turns
