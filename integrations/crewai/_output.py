"""What a guarded kickoff returns: CrewAI's ``CrewOutput``, plus the run report and the stop."""

from __future__ import annotations

from typing import Any

from crewai import Crew
from crewai.crews.crew_output import CrewOutput
from crewai.tasks.task_output import TaskOutput
from crewai.types.usage_metrics import UsageMetrics
from pydantic import ConfigDict, Field

from budgetwarden import BudgetExceeded, RunReport


class GuardedCrewOutput(CrewOutput):
    """A ``CrewOutput`` that also says what the run spent and, if a cap stopped it, which.

    When ``stopped`` is True, ``raw`` starts with one line naming the cap and its figures,
    followed by the partial result (the last finished task's output and the agent's last
    message); ``tasks_output`` holds the tasks finished before the stop.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    stopped: bool = Field(default=False, description="True when a cap or budget ended the run.")
    cap: str | None = Field(default=None, description="The cap that stopped the run, if any.")
    report: RunReport | None = Field(default=None, description="What the run did and spent.")
    budget_error: BudgetExceeded | None = Field(
        default=None, exclude=True, description="The refusal that stopped the run, if any."
    )
    partial_text: str = Field(default="", description="The partial result, without the notice.")


def completed_output(output: CrewOutput, report: RunReport) -> GuardedCrewOutput:
    """The crew's own output, carrying the run report."""
    fields = {name: getattr(output, name) for name in CrewOutput.model_fields}
    return GuardedCrewOutput(**fields, report=report)


def stopped_output(
    crew: Crew,
    error: BudgetExceeded,
    report: RunReport,
    *,
    finished: list[TaskOutput],
    last_text: str | None,
    output: CrewOutput | None = None,
) -> GuardedCrewOutput:
    """A partial output for a kickoff a cap stopped: what was done, and which cap ended it."""
    partial = _partial_text(finished, last_text)
    notice = f"[budgetwarden] {error}"
    fields: dict[str, Any] = {}
    if output is not None:
        fields = {name: getattr(output, name) for name in CrewOutput.model_fields}
    fields["raw"] = f"{notice}\n\n{partial}" if partial else notice
    fields["tasks_output"] = finished
    fields.setdefault("token_usage", _usage_of(report))
    return GuardedCrewOutput(
        **fields,
        stopped=True,
        cap=error.cap,
        report=report,
        budget_error=error,
        partial_text=partial,
    )


def finished_tasks(crew: Crew, before: dict[int, Any]) -> list[TaskOutput]:
    """The task outputs this kickoff produced (outputs left by an earlier kickoff excluded)."""
    outputs: list[TaskOutput] = []
    for task in crew.tasks:
        output = task.output
        if output is not None and output is not before.get(id(task)):
            outputs.append(output)
    return outputs


def task_outputs_now(crew: Crew) -> dict[int, Any]:
    """Each task's output object before a kickoff, to tell new outputs from old ones."""
    return {id(task): task.output for task in crew.tasks}


def _partial_text(finished: list[TaskOutput], last_text: str | None) -> str:
    parts: list[str] = []
    if finished and finished[-1].raw:
        parts.append(finished[-1].raw)
    if last_text and last_text not in parts:
        parts.append(last_text)
    return "\n\n".join(parts)


def _usage_of(report: RunReport) -> UsageMetrics:
    return UsageMetrics(
        prompt_tokens=report.input_tokens,
        completion_tokens=report.output_tokens,
        total_tokens=report.input_tokens + report.output_tokens,
        cached_prompt_tokens=report.cache_read_tokens,
        cache_creation_tokens=report.cache_write_tokens,
        successful_requests=report.iterations,
    )
