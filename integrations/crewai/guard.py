"""``guard_crew``: a crew whose every kickoff is one budgetwarden run."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from crewai import Crew
from crewai.crews.crew_output import CrewOutput
from crewai.hooks.dispatch import HookAborted

from budgetwarden import BudgetExceeded, Run, Warden

from ._output import (
    GuardedCrewOutput,
    completed_output,
    finished_tasks,
    stopped_output,
    task_outputs_now,
)
from ._state import BudgetAbort, CrewRunState


def guard_crew(
    crew: Crew,
    warden: Warden,
    *,
    agent: str | None = None,
    user: str | None = None,
    workspace: str | None = None,
    workflow: str | None = None,
    task_class: str | None = None,
    key: str | None = None,
    thread: str | None = None,
) -> GuardedCrew:
    """Wrap ``crew`` so that each kickoff is a budgetwarden run with this attribution.

    ``agent`` defaults to the crew's name. The hooks are scoped to the wrapper's own kickoffs:
    other crews, guarded or not, are untouched.
    """
    attribution = {
        "agent": agent if agent is not None else (crew.name or None),
        "user": user,
        "workspace": workspace,
        "workflow": workflow,
        "task_class": task_class,
        "key": key,
        "thread": thread,
    }
    return GuardedCrew(crew, warden, attribution)


class GuardedCrew:
    """A crew whose kickoffs are governed by budgetwarden; everything else is the crew's."""

    def __init__(self, crew: Crew, warden: Warden, attribution: dict[str, str | None]) -> None:
        self.crew = crew
        self.warden = warden
        self.attribution = dict(attribution)

    def __getattr__(self, name: str) -> Any:
        if name == "crew":  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.crew, name)

    def __repr__(self) -> str:
        return f"GuardedCrew({self.crew!r})"

    # ------------------------------------------------------------------ kickoffs
    def kickoff(self, inputs: dict[str, Any] | None = None, **options: Any) -> GuardedCrewOutput:
        """Run the crew as one budgetwarden run; a stopped run returns a partial output."""
        return self._kickoff(self.crew, inputs, options)

    async def kickoff_async(
        self, inputs: dict[str, Any] | None = None, **options: Any
    ) -> GuardedCrewOutput:
        """``kickoff`` in a worker thread, like ``Crew.kickoff_async``."""
        return await asyncio.to_thread(self._kickoff, self.crew, inputs, options)

    async def akickoff(
        self, inputs: dict[str, Any] | None = None, **options: Any
    ) -> GuardedCrewOutput:
        """CrewAI's native async kickoff, governed."""
        return await self._akickoff(self.crew, inputs, options)

    def kickoff_for_each(
        self, inputs: list[dict[str, Any]], **options: Any
    ) -> list[GuardedCrewOutput]:
        """One governed run per input, each on a copy of the crew, like ``kickoff_for_each``."""
        return [self._kickoff(self.crew.copy(), data, options) for data in inputs]

    async def kickoff_for_each_async(
        self, inputs: list[dict[str, Any]], **options: Any
    ) -> list[GuardedCrewOutput]:
        """``kickoff_for_each`` with the runs side by side, each in a worker thread."""
        return await self._gather(
            lambda data: asyncio.to_thread(self._kickoff, self.crew.copy(), data, options),
            inputs,
        )

    async def akickoff_for_each(
        self, inputs: list[dict[str, Any]], **options: Any
    ) -> list[GuardedCrewOutput]:
        """``kickoff_for_each`` with CrewAI's native async kickoff, runs side by side."""
        return await self._gather(
            lambda data: self._akickoff(self.crew.copy(), data, options), inputs
        )

    # ------------------------------------------------------------------ internals
    def _kickoff(
        self, crew: Crew, inputs: dict[str, Any] | None, options: dict[str, Any]
    ) -> GuardedCrewOutput:
        _refuse_streaming(crew)
        guard = _Kickoff(crew, self._open_run(), self.warden)
        with guard.state.activated():
            try:
                output = crew.kickoff(inputs=inputs, **options)
            except BaseException as error:
                return guard.end_with_error(error)
        return guard.end(output)

    async def _akickoff(
        self, crew: Crew, inputs: dict[str, Any] | None, options: dict[str, Any]
    ) -> GuardedCrewOutput:
        _refuse_streaming(crew)
        guard = _Kickoff(crew, self._open_run(), self.warden)
        with guard.state.activated():
            try:
                output = await crew.akickoff(inputs=inputs, **options)
            except BaseException as error:
                return guard.end_with_error(error)
        return guard.end(output)

    def _open_run(self) -> Run:
        a = self.attribution
        return self.warden.run(
            agent=a["agent"],
            user=a["user"],
            workspace=a["workspace"],
            workflow=a["workflow"],
            task_class=a["task_class"],
            key=a["key"],
            thread=a["thread"],
        )

    @staticmethod
    async def _gather(
        start: Callable[[dict[str, Any]], Awaitable[GuardedCrewOutput]],
        inputs: list[dict[str, Any]],
    ) -> list[GuardedCrewOutput]:
        return list(await asyncio.gather(*(start(data) for data in inputs)))


class _Kickoff:
    """One kickoff of a guarded crew: its state, and how it ends."""

    def __init__(self, crew: Crew, run: Run, warden: Warden) -> None:
        self.crew = crew
        self.warden = warden
        self.state = CrewRunState(run)
        self.before = task_outputs_now(crew)

    def end(self, output: Any) -> GuardedCrewOutput:
        """The kickoff returned: finish the run and return the output with its report."""
        state = self.state
        state.settle_all()
        if state.failure is not None:
            state.run.finish(error=state.failure)
            raise state.failure from None
        if state.stopped is not None:
            state.run.finish(error=state.stopped)
            crew_output = output if isinstance(output, CrewOutput) else None
            return self._stopped(state.stopped, crew_output)
        state.run.finish()
        if not isinstance(output, CrewOutput):
            raise TypeError(f"guard_crew expected a CrewOutput from kickoff, got {output!r}")
        return completed_output(output, state.run.report)

    def end_with_error(self, error: BaseException) -> GuardedCrewOutput:
        """The kickoff raised: a budget stop becomes a partial output, anything else re-raises."""
        state = self.state
        state.settle_all()
        ours = isinstance(error, BudgetAbort) or (
            isinstance(error, HookAborted) and state.stopped is not None
        )
        if state.failure is not None:
            state.run.finish(error=state.failure)
            raise state.failure from None
        if not ours or state.stopped is None:
            state.run.finish(error=error)
            raise error
        state.run.finish(error=state.stopped)
        return self._stopped(state.stopped, None)

    def _stopped(self, error: BudgetExceeded, output: CrewOutput | None) -> GuardedCrewOutput:
        report = self.state.run.report
        error.report = report
        result = stopped_output(
            self.crew,
            error,
            report,
            finished=finished_tasks(self.crew, self.before),
            last_text=self.state.last_text,
            output=output,
        )
        error.partial = result
        if self.warden.policy.on_exceeded == "raise":
            raise error.with_traceback(None) from None
        return result


def _refuse_streaming(crew: Crew) -> None:
    if getattr(crew, "stream", False):
        raise NotImplementedError(
            "guard_crew does not govern streaming crews yet (stream=True runs the crew in a "
            "thread after kickoff returns); kick off the crew with stream=False."
        )
