"""Pause: a run a budget stopped ends as a ``RunState`` that resumes from the same step.

The SDK attaches what a run did (its items and model responses) to the exception that ended
it. Turned into a ``RunState`` whose next step is "run again", ``Runner.run(agent, state)``
continues with the whole transcript and makes the refused call, not the ones before it. A
refusal during a turn's tools (the model already answered) keeps that answer: the tools that
ran keep their results, the others get a note that they did not run, so no model call is
made twice.
"""

from __future__ import annotations

from typing import Any

from agents.agent import Agent
from agents.exceptions import AgentsException
from agents.items import (
    MessageOutputItem,
    ModelResponse,
    ReasoningItem,
    RunItem,
    ToolCallItem,
    ToolCallOutputItem,
)
from agents.run_internal.run_steps import NextStepRunAgain
from agents.run_state import RunState
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseReasoningItem,
)

from budgetwarden import BudgetExceeded, Run, Warden
from budgetwarden.pause import PauseHandle

from ._state import GovernedRun

__all__ = ["FRAMEWORK", "pause_run", "paused_state"]

#: The ``PauseHandle.framework`` of a paused Agents SDK run.
FRAMEWORK = "openai_agents"


def _not_run(cap: str) -> str:
    return (
        f"Not run: budgetwarden paused this run at {cap}. Call the tool again if you still need it."
    )


def _turn_items(
    agent: Agent[Any], response: ModelResponse, results: dict[str, str], cap: str
) -> list[RunItem]:
    """The items of a turn whose tools a refusal interrupted, each call with an output."""
    items: list[RunItem] = []
    outputs: list[RunItem] = []
    for raw in response.output:
        if isinstance(raw, ResponseOutputMessage):
            items.append(MessageOutputItem(agent=agent, raw_item=raw))
        elif isinstance(raw, ResponseReasoningItem):
            items.append(ReasoningItem(agent=agent, raw_item=raw))
        elif isinstance(raw, ResponseFunctionToolCall):
            items.append(ToolCallItem(agent=agent, raw_item=raw))
            text = results.get(raw.call_id, _not_run(cap))
            output = {"type": "function_call_output", "call_id": raw.call_id, "output": text}
            outputs.append(ToolCallOutputItem(agent=agent, raw_item=output, output=text))
    return items + outputs


def paused_state(
    exc: AgentsException,
    governed: GovernedRun | None,
    starting_agent: Agent[Any],
    max_turns: int | None,
    cap: str,
) -> RunState[Any, Agent[Any]] | None:
    """A ``RunState`` that resumes a run ``exc`` ended, at the call it refused (None when the
    SDK attached no run data)."""
    data = exc.run_data
    if data is None:
        return None
    items = list(data.new_items)
    responses = list(data.raw_responses)
    last = governed.last_response if governed is not None else None
    if governed is not None and last is not None and all(r is not last for r in responses):
        agent = governed.last_agent or data.last_agent
        items += _turn_items(agent, last, governed.tool_results, cap)
        responses.append(last)
    state: RunState[Any, Agent[Any]] = RunState(
        context=data.context_wrapper,
        original_input=data.input,
        starting_agent=starting_agent,
        max_turns=max_turns,
    )
    state._current_agent = data.last_agent
    state._generated_items = items
    state._session_items = list(items)
    state._model_responses = responses
    state._current_turn = len(responses)
    state._current_step = NextStepRunAgain()
    return state


def pause_run(
    warden: Warden,
    run: Run,
    exc: BudgetExceeded,
    governed: GovernedRun | None,
    starting_agent: Agent[Any],
    max_turns: int | None,
) -> PauseHandle | None:
    """Save a resumable handle for a run ``exc`` stopped (None when it cannot resume)."""
    cap = str(exc.cap)
    if not isinstance(exc, AgentsException):
        return None
    state = paused_state(exc, governed, starting_agent, max_turns, cap)
    if state is None:
        return None
    handle = run.pause_handle(
        FRAMEWORK,
        {
            "run_state": state.to_json(),
            "starting_agent": starting_agent.name,
            "last_agent": state._current_agent.name if state._current_agent else None,
        },
    )
    warden.save_handle(handle)
    return handle
