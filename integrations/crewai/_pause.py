"""Pause and resume a guarded crew: what a pause handle keeps, and how a kickoff goes on.

What CrewAI 1.15 offers, and why it is not used as is: ``crew.replay(task_id)`` re-runs from
a task found in CrewAI's "latest kickoff" outputs (one store per machine, reset by every
kickoff), which only holds finished tasks, so it redoes at least the last finished one;
``Crew.from_checkpoint`` resumes after the last finished task but rebuilds the crew from
JSON (custom LLMs and tools become CrewAI defaults) and restarts the unfinished task from
its prompt; Flow ``@persist`` keeps a flow's state, not a crew's progress. A handle here
keeps the finished tasks' outputs, the kickoff's inputs and the stopped agent's transcript;
``resume_crewai`` puts the outputs back on a crew built the same way and kicks it off through
CrewAI's own checkpoint-resume path (``checkpoint_kickoff_event_id``: tasks that have an
output are skipped), and the transcript goes back at that agent's first call.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from crewai import Crew, Process
from crewai.tasks.task_output import TaskOutput

from ._transcript import agent_role

__all__ = ["FRAMEWORK", "paused_state", "restore_tasks", "starting_after_finished_tasks"]

#: The ``PauseHandle.framework`` of a paused crew.
FRAMEWORK = "crewai"

#: Marks a kickoff that resumes from task outputs set on the crew (CrewAI's resume path).
RESUME_MARK = "budgetwarden-resume"


def paused_state(
    crew: Crew,
    inputs: dict[str, Any] | None,
    finished: dict[int, TaskOutput],
    transcripts: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    """What resuming needs: inputs, finished tasks' outputs, the stopped agent's transcript."""
    resume_task = next((i for i in range(len(crew.tasks)) if i not in finished), len(crew.tasks))
    role = _executing_role(crew, resume_task)
    messages = transcripts.get(role) if role is not None else None
    return {
        "crew": crew.name,
        "inputs": _plain(inputs),
        "task_keys": [task.key for task in crew.tasks],
        "task_outputs": [
            finished[i].model_dump(mode="json") if i in finished else None
            for i in range(len(crew.tasks))
        ],
        "resume_task": resume_task,
        "transcript": {"role": role, "messages": messages} if messages else None,
    }


def restore_tasks(crew: Crew, state: dict[str, Any]) -> None:
    """Give the crew's tasks the outputs they had when the kickoff paused."""
    keys = [task.key for task in crew.tasks]
    if keys != state.get("task_keys"):
        raise ValueError(
            "resume_crewai needs the crew that paused, built the same way (same tasks, same "
            f"order): this crew's tasks do not match handle's crew {state.get('crew')!r}"
        )
    for task, dumped in zip(crew.tasks, state.get("task_outputs") or [], strict=False):
        if isinstance(dumped, dict):
            task.output = _task_output(task, dumped)


@contextmanager
def starting_after_finished_tasks(crew: Crew) -> Iterator[None]:
    """Make a kickoff skip the tasks that have an output, as CrewAI does when it resumes
    from a checkpoint (``checkpoint_kickoff_event_id`` set; its start event is still sent)."""
    previous = crew.checkpoint_kickoff_event_id
    crew.checkpoint_kickoff_event_id = RESUME_MARK
    crew._kickoff_event_id = None
    try:
        yield
    finally:
        crew.checkpoint_kickoff_event_id = previous


def _executing_role(crew: Crew, index: int) -> str | None:
    """The role of the agent that runs task ``index`` (the manager's in a hierarchical crew)."""
    if crew.process == Process.hierarchical:
        manager = crew.manager_agent
        return agent_role(manager) if manager is not None else "Crew Manager"
    if index >= len(crew.tasks):
        return None
    return agent_role(crew.tasks[index].agent)


def _task_output(task: Any, dumped: dict[str, Any]) -> TaskOutput:
    data = dict(dumped)
    model_data = data.pop("pydantic", None)
    output = TaskOutput.model_validate(data)
    model = getattr(task, "output_pydantic", None)
    if isinstance(model_data, dict) and model is not None:
        output.pydantic = model.model_validate(model_data)
    return output


def _plain(inputs: dict[str, Any] | None) -> dict[str, Any] | None:
    if inputs is None:
        return None
    data = json.loads(json.dumps(inputs, default=str))
    return data if isinstance(data, dict) else None
