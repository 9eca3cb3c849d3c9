"""Shrink a conversation to a token budget: keep the task and the most recent turns whole."""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from budgetwarden.usage import estimate_message_tokens

__all__ = ["compress_messages"]


def _turns(messages: Sequence[BaseMessage]) -> list[list[BaseMessage]]:
    """Group messages so an AI message and the ToolMessages answering it stay together."""
    turns: list[list[BaseMessage]] = []
    for message in messages:
        if isinstance(message, ToolMessage) and turns:
            turns[-1].append(message)
        else:
            turns.append([message])
    return turns


def _anchors(turns: list[list[BaseMessage]]) -> set[int]:
    """System messages and the opening human message (the task) are always kept."""
    anchors = {i for i, turn in enumerate(turns) if isinstance(turn[0], SystemMessage)}
    task = next((i for i, turn in enumerate(turns) if isinstance(turn[0], HumanMessage)), None)
    return anchors if task is None else {*anchors, task}


def compress_messages(messages: Sequence[BaseMessage], budget_tokens: int) -> list[BaseMessage]:
    """Keep system messages, the opening human message and the latest turns within budget.

    An AI message that called tools is never separated from its ToolMessages, and the
    latest turn is always kept, even when it alone is over the budget.
    """
    turns = _turns(messages)
    kept = _anchors(turns)
    left = budget_tokens - sum(estimate_message_tokens(turns[i]) for i in kept)
    for index in range(len(turns) - 1, -1, -1):
        if index in kept:
            continue
        cost = estimate_message_tokens(turns[index])
        if cost > left and index != len(turns) - 1:
            break
        kept.add(index)
        left -= cost
    if len(kept) == len(turns):
        return list(messages)
    result = [message for i, turn in enumerate(turns) if i in kept for message in turn]
    return _drop_leading_tool_answers(result)


def _drop_leading_tool_answers(messages: list[BaseMessage]) -> list[BaseMessage]:
    """A ToolMessage whose AI call was dropped would be an orphan answer: drop it too."""
    answered: set[str] = set()
    result: list[BaseMessage] = []
    for message in messages:
        if isinstance(message, AIMessage):
            answered.update(call["id"] or "" for call in message.tool_calls)
        if isinstance(message, ToolMessage) and message.tool_call_id not in answered:
            continue
        result.append(message)
    return result
