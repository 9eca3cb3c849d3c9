"""What one model call is sent when a cap nears: the budget hint and the final-answer call.

CrewAI hands the model the agent executor's own message list (the hook's ``ctx.messages``),
so a note added in the pre-call hook is taken out again when the call is committed: it goes
with that call only and never into the agent's history. The last call a cap allows
(``step.final``) is also made without tools: the executor passes its native tool schemas to
``llm.call`` as one list object, which is emptied for that call and refilled after it
(Anthropic and Bedrock models keep them: their APIs refuse a tool history without tools). In
ReAct (text) mode the tools are only described in the prompt; an answer of that call without
"Final Answer:" is then taken as the final answer, so the task ends with the model's text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from crewai.agents.constants import FINAL_ANSWER_ACTION

from budgetwarden import Step
from budgetwarden.final_call import final_call_tools, note_role
from budgetwarden.steps import FINAL_ANSWER_INSTRUCTION

__all__ = ["CallNotes", "add_notes", "final_response", "remove_notes", "uses_native_tools"]


@dataclass(eq=False)
class CallNotes:
    """What one call's pre-call hook added to its messages, and the tools it held back."""

    messages: list[Any]
    added: list[dict[str, str]] = field(default_factory=list)
    tools: list[Any] | None = None
    held_tools: list[Any] = field(default_factory=list)


def notes_for(step: Step) -> list[str]:
    """The notes one step asks for: its budget hint, then the final-answer instruction."""
    notes = [step.hint] if step.hint else []
    if step.final:
        notes.append(FINAL_ANSWER_INSTRUCTION)
    return notes


def add_notes(messages: Any, step: Step, executor: Any, llm: Any) -> CallNotes | None:
    """Add the step's notes to the very messages the model gets; empty its tools if final.

    The notes go last, so the prompt's cached prefix stays as it was, as system messages
    (user messages for Anthropic models: ``budgetwarden.final_call.note_role``)."""
    texts = notes_for(step)
    if not texts or not isinstance(messages, list):
        return None
    notes = CallNotes(messages)
    role = note_role(_model_name(llm), _provider(llm))
    for text in texts:
        note = {"role": role, "content": text}
        messages.append(note)
        notes.added.append(note)
    if step.final:
        _hold_tools(notes, executor, llm)
    return notes


def remove_notes(notes: CallNotes | None) -> None:
    """Take a call's notes out of the messages again, and give the executor its tools back."""
    if notes is None:
        return
    for note in notes.added:
        for index in range(len(notes.messages) - 1, -1, -1):
            if notes.messages[index] is note:
                del notes.messages[index]
                break
    notes.added.clear()
    if notes.tools is not None and not notes.tools:
        notes.tools.extend(notes.held_tools)
    notes.tools = None


def final_response(step: Step, executor: Any, text: object) -> str | None:
    """The answer of a final call in ReAct mode, made parseable as the task's final answer
    (None when it already is one, or when the executor does not parse ReAct text)."""
    if not step.final or not isinstance(text, str) or FINAL_ANSWER_ACTION in text:
        return None
    if executor is None or uses_native_tools(executor):
        return None
    return f"{FINAL_ANSWER_ACTION} {text}"


def _hold_tools(notes: CallNotes, executor: Any, llm: Any) -> None:
    """Empty the tool schemas the executor is passing to this call (refilled afterwards).

    LiteLLM-backed LLMs (``crewai.LLM(..., is_litellm=True)``) keep them: LiteLLM would send
    an empty ``tools`` array, which OpenAI-compatible APIs reject. So do Anthropic and Bedrock
    models, whose APIs refuse a history of tool calls without tools
    (``budgetwarden.final_call``); the final-answer instruction then asks for an answer.
    """
    if executor is None or not uses_native_tools(executor) or getattr(llm, "is_litellm", False):
        return
    if final_call_tools(_model_name(llm), _provider(llm)) != "drop":
        return
    tools = getattr(executor, "_openai_tools", None)
    if isinstance(tools, list) and tools:
        notes.tools, notes.held_tools = tools, list(tools)
        tools.clear()


def uses_native_tools(executor: Any) -> bool:
    """Whether the agent executor calls tools natively (schemas passed to ``llm.call``)."""
    state = getattr(executor, "state", None)
    return bool(getattr(state, "use_native_tools", False))


def _model_name(llm: Any) -> str | None:
    model = getattr(llm, "model", None)
    return model if isinstance(model, str) else None


def _provider(llm: Any) -> str | None:
    provider = getattr(llm, "provider", None)
    return provider if isinstance(provider, str) else None
