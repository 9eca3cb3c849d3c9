"""``guard_crew``: a crew whose every kickoff is one budgetwarden run; ``resume_crewai``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from crewai import Crew, Process
from crewai.crews.crew_output import CrewOutput
from crewai.flow.flow_context import current_flow_id, current_flow_name
from crewai.hooks.dispatch import HookAborted

from budgetwarden import BudgetExceeded, Run, Warden
from budgetwarden.pause import PauseHandle
from budgetwarden.run_core import new_run_id
from budgetwarden.warden import check_attribution, require_warden

from ._output import (
    GuardedCrewOutput,
    completed_output,
    final_output,
    finished_by_index,
    stopped_output,
    task_outputs_now,
)
from ._pause import FRAMEWORK, paused_state, restore_tasks, starting_after_finished_tasks
from ._state import BudgetAbort, CrewRunState, calling_run
from ._streaming import GuardedCrewStreamingOutput, astream, not_streaming, stream
from ._transcript import ResumePoint

#: The attribution keywords of ``guard_crew`` (and of a paused kickoff's handle).
ATTRIBUTES = ("agent", "user", "workspace", "workflow", "task_class", "key", "thread")


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

    ``agent`` defaults to the crew's name. ``thread`` (a conversation, for
    ``Budget(scope="thread")``) defaults to the CrewAI Flow's state id when the crew is
    kicked off inside a Flow. A guarded crew kicked off inside a tool of another guarded
    crew (same warden) runs as a child run of it. The hooks are scoped to the wrapper's own
    kickoffs: other crews, guarded or not, are untouched.
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
    check_attribution("guard_crew", attribution)
    return GuardedCrew(crew, require_warden(warden, "guard_crew"), attribution)


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

    def stream_kickoff(
        self, inputs: dict[str, Any] | None = None, **options: Any
    ) -> GuardedCrewStreamingOutput:
        """Run the crew as one budgetwarden run, streaming its LLM chunks as they come.

        Like a ``stream=True`` crew's ``kickoff``: the crew runs in a worker thread while
        the returned output is iterated, and ``result`` is then this kickoff's
        ``GuardedCrewOutput``. Closing the stream before its end cancels the run.
        """
        run_id = new_run_id()
        crew = self.crew
        return stream(
            crew, self.warden, run_id, lambda: self._kickoff(crew, inputs, options, run_id=run_id)
        )

    async def astream_kickoff(
        self, inputs: dict[str, Any] | None = None, **options: Any
    ) -> GuardedCrewStreamingOutput:
        """``stream_kickoff`` over CrewAI's native async kickoff, like a ``stream=True``
        crew's ``akickoff``: ``streaming = await guarded.astream_kickoff()``, then
        ``async for chunk in streaming``."""
        run_id = new_run_id()
        crew = self.crew
        return astream(
            crew, self.warden, run_id, lambda: self._akickoff(crew, inputs, options, run_id=run_id)
        )

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
        self,
        crew: Crew,
        inputs: dict[str, Any] | None,
        options: dict[str, Any],
        handle: PauseHandle | None = None,
        run_id: str | None = None,
    ) -> GuardedCrewOutput:
        _refuse_streaming(crew)
        guard = self._start(crew, inputs, handle, run_id)
        with guard.state.activated(), guard.resuming():
            try:
                output = crew.kickoff(inputs=inputs, **options)
            except BaseException as error:
                return guard.end_with_error(error)
        return guard.end(output)

    async def _akickoff(
        self,
        crew: Crew,
        inputs: dict[str, Any] | None,
        options: dict[str, Any],
        handle: PauseHandle | None = None,
        run_id: str | None = None,
    ) -> GuardedCrewOutput:
        _refuse_streaming(crew)
        guard = self._start(crew, inputs, handle, run_id)
        with guard.state.activated(), guard.resuming():
            try:
                output = await crew.akickoff(inputs=inputs, **options)
            except BaseException as error:
                return guard.end_with_error(error)
        return guard.end(output)

    def _start(
        self,
        crew: Crew,
        inputs: dict[str, Any] | None,
        handle: PauseHandle | None,
        run_id: str | None,
    ) -> _Kickoff:
        before = task_outputs_now(crew)
        if handle is not None:
            restore_tasks(crew, handle.state)  # a crew that does not match fails before its run
            run_id = handle.run_id
        run = self._open_run(run_id=run_id)
        return _Kickoff(crew, run, self.warden, inputs, handle, before)

    def _open_run(self, run_id: str | None = None) -> Run:
        a = self.attribution
        parent = calling_run(self.warden)
        thread = a["thread"]
        if thread is None and parent is None:
            thread = _flow_thread()
        return self.warden.run(
            agent=a["agent"],
            user=a["user"],
            workspace=a["workspace"],
            workflow=a["workflow"],
            task_class=a["task_class"],
            key=a["key"],
            thread=thread,
            parent=parent,
            run_id=run_id,
        )

    @staticmethod
    async def _gather(
        start: Callable[[dict[str, Any]], Awaitable[GuardedCrewOutput]],
        inputs: list[dict[str, Any]],
    ) -> list[GuardedCrewOutput]:
        return list(await asyncio.gather(*(start(data) for data in inputs)))


class _Kickoff:
    """One kickoff of a guarded crew: its state, and how it ends (or pauses)."""

    def __init__(
        self,
        crew: Crew,
        run: Run,
        warden: Warden,
        inputs: dict[str, Any] | None,
        handle: PauseHandle | None,
        before: dict[int, Any],
    ) -> None:
        self.crew = crew
        self.warden = warden
        self.inputs = inputs
        self.handle = handle
        workers = crew.agents if crew.process == Process.hierarchical else ()
        resume = ResumePoint.from_state(handle.state) if handle is not None else None
        self.state = CrewRunState(run, workers=workers, resume=resume)
        self.before = before

    def resuming(self) -> contextlib.AbstractContextManager[None]:
        """Skip the tasks a paused kickoff had finished (nothing to skip otherwise)."""
        if self.handle is None:
            return contextlib.nullcontext()
        return starting_after_finished_tasks(self.crew)

    def end(self, output: Any) -> GuardedCrewOutput:
        """The kickoff returned: finish the run and return the output with its report."""
        state = self.state
        state.settle_all()
        if state.failure is not None:
            state.finish(error=state.failure)
            raise state.failure from None
        if state.stopped is not None:
            state.finish(error=state.stopped)
            crew_output = output if isinstance(output, CrewOutput) else None
            return self._stopped(state.stopped, crew_output)
        final_cap = state.final_cap()
        state.finish(final_cap)
        if not isinstance(output, CrewOutput):
            raise TypeError(f"guard_crew expected a CrewOutput from kickoff, got {output!r}")
        if final_cap is not None:
            return final_output(output, state.run.report, final_cap)
        return completed_output(output, state.run.report)

    def end_with_error(self, error: BaseException) -> GuardedCrewOutput:
        """The kickoff raised: a budget stop becomes a partial output, anything else re-raises."""
        state = self.state
        ours = isinstance(error, BudgetAbort) or (
            isinstance(error, HookAborted) and state.stopped is not None
        )
        state.settle_all(failed=None if ours else error)
        if state.failure is not None:
            state.finish(error=state.failure)
            raise state.failure from None
        if not ours or state.stopped is None:
            state.finish(error=error)
            raise error
        state.finish(error=state.stopped)
        return self._stopped(state.stopped, None)

    def _stopped(self, error: BudgetExceeded, output: CrewOutput | None) -> GuardedCrewOutput:
        report = self.state.run.report
        error.report = report
        finished = finished_by_index(self.crew, self.before)
        result = stopped_output(
            self.crew,
            error,
            report,
            finished=list(finished.values()),
            last_text=self.state.last_text,
            output=output,
        )
        error.partial = result
        policy = self.warden.policy.on_exceeded
        if policy == "pause":
            result.handle = self._pause(finished)
            error.handle = result.handle
        if policy == "raise":
            raise error.with_traceback(None) from None
        return result

    def _pause(self, finished: dict[int, Any]) -> PauseHandle:
        """Save a handle that resumes this kickoff after its finished tasks."""
        state = paused_state(self.crew, self.inputs, finished, self.state.transcripts)
        handle = self.state.run.pause_handle(FRAMEWORK, state)
        self.warden.save_handle(handle)
        return handle


def resume_crewai(
    warden: Warden,
    handle: PauseHandle | str,
    crew: Crew,
    *,
    inputs: dict[str, Any] | None = None,
) -> GuardedCrewOutput:
    """Go on with a kickoff ``Policy(on_exceeded="pause")`` paused, where it stopped.

    ``crew`` is the crew that paused, or one built the same way (e.g. in a new process). The
    tasks it had finished keep their outputs and are not run again; the stopped task goes on
    from its agent's transcript with the refused call. ``inputs`` default to the paused
    kickoff's. With ``warden.nap_and_resume(handle_id, lambda h: resume_crewai(warden, h,
    crew))`` it first waits until the budget's window resets or the budget is raised. A
    paused stream (``stream_kickoff``) goes on here without streaming. A handle is resumed
    once: a second resume is a ``KeyError`` (``Warden.resuming``).
    """
    with warden.resuming(_handle(warden, handle)) as found:
        guarded = _resumed(crew, warden, found)
        with not_streaming(crew):
            return guarded._kickoff(crew, _inputs(found, inputs), {}, found)


async def aresume_crewai(
    warden: Warden,
    handle: PauseHandle | str,
    crew: Crew,
    *,
    inputs: dict[str, Any] | None = None,
) -> GuardedCrewOutput:
    """Async twin of :func:`resume_crewai` (CrewAI's native ``akickoff``)."""
    with warden.resuming(_handle(warden, handle)) as found:
        guarded = _resumed(crew, warden, found)
        with not_streaming(crew):
            return await guarded._akickoff(crew, _inputs(found, inputs), {}, found)


def _handle(warden: Warden, handle: PauseHandle | str) -> PauseHandle:
    found = warden.load_handle(handle) if isinstance(handle, str) else handle
    if found is None:
        raise KeyError(f"no pause handle {handle!r} in ledger {warden.ledger.uri}")
    if found.framework != FRAMEWORK:
        raise ValueError(f"handle {found.id} paused a {found.framework} run, not a CrewAI crew")
    return found


def _resumed(crew: Crew, warden: Warden, handle: PauseHandle) -> GuardedCrew:
    return GuardedCrew(crew, warden, {name: handle.attribution.get(name) for name in ATTRIBUTES})


def _inputs(handle: PauseHandle, inputs: dict[str, Any] | None) -> dict[str, Any] | None:
    if inputs is not None:
        return inputs
    saved = handle.state.get("inputs")
    return dict(saved) if isinstance(saved, dict) else None


def _flow_thread() -> str | None:
    """The state id of the CrewAI Flow this kickoff runs in (kept by ``@persist`` across
    runs), or None outside a Flow (an agent executor is a Flow too: not that one)."""
    flow_id = current_flow_id.get()
    if not flow_id or current_flow_name.get() == "AgentExecutor":
        return None
    return flow_id


def _refuse_streaming(crew: Crew) -> None:
    """A ``stream=True`` crew's own kickoff would return before running (its stream runs
    the crew later, in a thread): its guarded stream is ``stream_kickoff``."""
    if getattr(crew, "stream", False):
        raise TypeError(
            "this crew has stream=True: call stream_kickoff() (or astream_kickoff()) on the "
            "guarded crew to stream a governed kickoff, or set crew.stream = False"
        )
