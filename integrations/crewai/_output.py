"""What a guarded kickoff returns: CrewAI's ``CrewOutput``, plus the run report and the stop."""

from __future__ import annotations

from typing import Any

from crewai import Crew
from crewai.crews.crew_output import CrewOutput
from crewai.tasks.task_output import TaskOutput
from crewai.types.usage_metrics import UsageMetrics
from pydantic import ConfigDict, Field

from budgetwarden import BudgetExceeded, RunReport
from budgetwarden.pause import PauseHandle


class GuardedCrewOutput(CrewOutput):
    """A ``CrewOutput`` that also says what the run spent and, if a cap stopped it, which.

    When a refusal stopped the kickoff, ``raw`` starts with one line naming the cap and its
    figures, followed by the partial result (the last finished task's output and the agent's
    last message); ``tasks_output`` holds the tasks finished before the stop. When the last
    call a cap allowed gave the answer (``Limits(final_answer=True)``), ``raw`` is the
    model's own answer, ``stopped`` is True and ``cap`` names the cap. Under
    ``Policy(on_exceeded="pause")`` ``handle`` is the saved handle that resumes the kickoff.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    stopped: bool = Field(default=False, description="True when a cap or budget ended the run.")
    cap: str | None = Field(default=None, description="The cap that stopped the run, if any.")
    report: RunReport | None = Field(default=None, description="What the run did and spent.")
    budget_error: BudgetExceeded | None = Field(
        default=None, exclude=True, description="The refusal that stopped the run, if any."
    )
    partial_text: str = Field(default="", description="The partial result, without the notice.")
    handle: PauseHandle | None = Field(
        default=None, description="The saved pause handle (on_exceeded='pause'), if any."
    )

    @property
    def paused(self) -> bool:
        """True when the kickoff can be resumed (see ``resume_crewai``)."""
        return self.handle is not None


def completed_output(output: CrewOutput, report: RunReport) -> GuardedCrewOutput:
    """The crew's own output, carrying the run report."""
    fields = {name: getattr(output, name) for name in CrewOutput.model_fields}
    return GuardedCrewOutput(**fields, report=report)


def final_output(output: CrewOutput, report: RunReport, cap: str) -> GuardedCrewOutput:
    """The crew's output when its last allowed call gave the answer: partial, naming the cap."""
    fields = {name: getattr(output, name) for name in CrewOutput.model_fields}
    return GuardedCrewOutput(
        **fields, stopped=True, cap=cap, report=report, partial_text=output.raw
    )


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


def finished_by_index(crew: Crew, before: dict[int, Any]) -> dict[int, TaskOutput]:
    """The task outputs this kickoff produced (outputs left by an earlier kickoff excluded),
    by each task's index in the crew."""
    outputs: dict[int, TaskOutput] = {}
    for index, task in enumerate(crew.tasks):
        output = task.output
        if output is not None and output is not before.get(id(task)):
            outputs[index] = output
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
