"""The state of one guarded kickoff: its run, its hooks, and the calls they reserved.

Every hook translates one CrewAI callback into one ``Run`` call. A refusal is turned into
``HookAborted`` (the only exception CrewAI lets out of a hook): before a model call it stops
the kickoff; before a tool call CrewAI only skips the tool, so the run is marked stopped and
the next model call aborts. Calls are grouped in lanes (one per agent): a lane makes one
model call at a time, so its next hook is the moment its previous call can be committed.
In a hierarchical crew each worker agent spends from a child run of the kickoff's run.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar, cast

from crewai.events.types.llm_events import LLMCallCompletedEvent, LLMCallFailedEvent
from crewai.hooks.dispatch import HookAborted, InterceptionPoint, register_scoped, scoped_hooks
from crewai.hooks.llm_hooks import LLMCallHookContext
from crewai.hooks.tool_hooks import ToolCallHookContext
from crewai.utilities.i18n import I18N_DEFAULT

from budgetwarden import BudgetError, BudgetExceeded, Run, ToolDenied, ToolStep, Usage

from ._calls import (
    ModelCall,
    current_call,
    listen_to_llm_events,
    outcome_of_error,
    trackers,
)
from ._compress import compress_in_place
from ._notes import add_notes, final_response, remove_notes, uses_native_tools
from ._transcript import ResumePoint, agent_role, plain_messages

#: The guarded kickoff the current context belongs to (None outside guarded kickoffs).
active_state: ContextVar[CrewRunState | None] = ContextVar(
    "budgetwarden_crewai_state", default=None
)

#: The run of the agent calling a tool now (a guarded crew kicked off in the tool nests in it).
_tool_run: ContextVar[tuple[CrewRunState, Run] | None] = ContextVar(
    "budgetwarden_crewai_tool_run", default=None
)

#: Names the aborting hook in CrewAI's messages and telemetry.
HOOK_SOURCE = "budgetwarden"


class BudgetAbort(HookAborted):
    """The ``HookAborted`` budgetwarden raises to stop a kickoff; carries the refusal."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error), source=HOOK_SOURCE)
        self.error = error


Hook = TypeVar("Hook", bound=Callable[..., Any])


def _fail_closed(hook: Hook) -> Hook:
    """Make a failure inside budgetwarden stop the kickoff (CrewAI would swallow it and let
    the crew run on unmetered); the kickoff re-raises it."""

    @functools.wraps(hook)
    def guarded(self: CrewRunState, ctx: Any) -> Any:
        try:
            return hook(self, ctx)
        except HookAborted:
            raise
        except Exception as error:
            raise self.abort(error) from error

    return cast(Hook, guarded)


class CrewRunState:
    """One guarded kickoff: the run, the hooks registered for it, and its pending calls."""

    def __init__(
        self,
        run: Run,
        *,
        workers: Iterable[Any] = (),
        resume: ResumePoint | None = None,
    ) -> None:
        self.run = run
        self.stopped: BudgetExceeded | None = None
        self.failure: Exception | None = None
        self.last_text: str | None = None
        self.transcripts: dict[str, list[dict[str, Any]]] = {}
        self.resume = resume
        self._lock = threading.RLock()
        self._calls: dict[int, ModelCall] = {}
        self._tools: dict[int, tuple[Run, ToolStep, float]] = {}
        self._refused_tools: dict[int, str] = {}
        self._workers = {id(agent) for agent in workers}
        self._children: dict[int, Run] = {}

    # ------------------------------------------------------------------ runs
    def run_for(self, agent: Any) -> Run:
        """The run an agent spends from: a worker's child run, else the kickoff's run."""
        if agent is None or id(agent) not in self._workers:
            return self.run
        with self._lock:
            child = self._children.get(id(agent))
            if child is None:
                child = self.run.warden.run(agent=agent_role(agent), parent=self.run)
                self._children[id(agent)] = child
            return child

    @property
    def children(self) -> list[Run]:
        """The workers' child runs opened so far."""
        with self._lock:
            return list(self._children.values())

    def final_cap(self) -> str | None:
        """The cap whose last allowed call was made (``Limits.final_answer``), if any."""
        caps = [self.run.final_cap, *(child.final_cap for child in self.children)]
        return next((cap for cap in caps if cap), None)

    def finish(self, stop_reason: str | None = None, *, error: BaseException | None = None) -> None:
        """Finish the workers' child runs, then the kickoff's run."""
        own = None if isinstance(error, BudgetError) else error
        for child in self.children:
            child.finish(error=own)
        self.run.finish(stop_reason, error=error)

    # ------------------------------------------------------------------ activation
    @contextmanager
    def activated(self) -> Iterator[CrewRunState]:
        """Register this kickoff's hooks for the current context only (not globally)."""
        listen_to_llm_events()
        token = active_state.set(self)
        try:
            with scoped_hooks(_inherited_scope()):
                register_scoped(InterceptionPoint.PRE_MODEL_CALL, self.before_model_call)
                register_scoped(InterceptionPoint.POST_MODEL_CALL, self.after_model_call)
                register_scoped(InterceptionPoint.PRE_TOOL_CALL, self.before_tool_call)
                register_scoped(InterceptionPoint.POST_TOOL_CALL, self.after_tool_call)
                yield self
        finally:
            active_state.reset(token)

    # ------------------------------------------------------------------ model calls
    @_fail_closed
    def before_model_call(self, ctx: LLMCallHookContext) -> None:
        """PRE_MODEL_CALL: reserve the call, or abort the kickoff before the model runs."""
        lane = lane_of(ctx.agent)
        self._settle_answered(lane)
        if self.resume is not None:
            self.resume.restore(ctx.executor, ctx.agent, ctx.messages)
        run = self.run_for(ctx.agent)
        try:
            call = self.begin_call(
                ctx.llm, ctx.messages, lane=lane, tools=_offered_tools(ctx), run=run
            )
        except BudgetAbort:
            self._keep_transcript(ctx)
            raise
        current_call.set(call)
        if call.step.compress:
            compress_in_place(
                ctx.messages, call.step.compress_target(call.run.policy.compress_ratio)
            )
        with self._lock:
            call.notes = add_notes(ctx.messages, call.step, ctx.executor, ctx.llm)

    def begin_call(
        self,
        llm: Any,
        messages: Any,
        *,
        lane: int,
        tools: Sequence[Any] | None = None,
        run: Run | None = None,
    ) -> ModelCall:
        """Reserve one model call for ``llm`` (raises ``BudgetAbort`` when refused)."""
        run = run or self.run
        try:
            self._abort_if_stopped()
            step = run.before_llm_call(
                _requested_model(llm),
                messages,
                max_tokens=_max_tokens(llm),
                tools=tools,
                route=getattr(llm, "routes_calls", False) is True,  # only RoutedLLM switches
            )
        except BudgetAbort:
            current_call.set(None)  # the refused call's events belong to no call
            raise
        except BudgetError as error:
            current_call.set(None)
            raise self.abort(error) from None
        call = ModelCall(self, run, step, lane)
        trackers.bind(call, llm)
        with self._lock:
            self._calls[id(call)] = call
        return call

    def _keep_transcript(self, ctx: LLMCallHookContext) -> None:
        """Keep the refused call's messages (a paused task goes on from them)."""
        role = agent_role(ctx.agent)
        if ctx.executor is not None and role is not None:
            self.transcripts[role] = plain_messages(ctx.messages)

    @_fail_closed
    def after_model_call(self, ctx: LLMCallHookContext) -> str | None:
        """POST_MODEL_CALL (text answers only): commit the call that just answered; the
        answer of a final-answer call is made the task's final answer."""
        call = current_call.get()
        if call is None or call.state is not self:
            return None
        call.returned(ctx.response)
        self.settle(call)
        return final_response(call.step, ctx.executor, ctx.response)

    def record_completed(self, call: ModelCall, event: LLMCallCompletedEvent) -> None:
        """An ``LLMCallCompletedEvent`` emitted inside ``call`` (from a bus worker thread)."""
        response = event.response
        with self._lock:
            if call.settled:
                return
            if event.usage is not None:
                call.event_usages.append(event.usage)  # converted only if needed
            call.returned(response, model=event.model)
            if response and isinstance(response, str):
                self.last_text = response

    def record_failed(self, call: ModelCall, event: LLMCallFailedEvent) -> None:
        """An ``LLMCallFailedEvent`` emitted inside ``call``: the provider failed."""
        with self._lock:
            if not call.settled:
                call.outcome = outcome_of_error(event.error)
                call.returned()

    def settle(self, call: ModelCall) -> None:
        """Commit ``call`` once: its real (or estimated) usage, model, latency and outcome."""
        with self._lock:
            if call.claimed:
                return
            call.claimed = True
            self._calls.pop(id(call), None)
            remove_notes(call.notes)
        usage = call.measured_usage()  # may wait for the call's events: they still count
        if usage is None and call.outcome != "ok":
            usage = Usage(estimated=True)  # a failed call that reported nothing billed nothing
        with self._lock:
            call.settled = True
            if call.text:
                self.last_text = call.text
        trackers.release(call)
        call.run.record_llm_call(
            call.step,
            usage,
            model=call.model,
            latency_s=call.latency_s,
            outcome=call.outcome,
            output_text=call.output_text,
        )

    def settle_all(self, failed: BaseException | None = None) -> None:
        """Commit every call still pending (the kickoff is over, so all have returned). When
        the kickoff raised ``failed``, a call with no sign of an answer failed with it."""
        for call in self._pending_calls():
            if failed is not None and call.outcome == "ok" and not call.has_answered():
                call.outcome = outcome_of_error(failed)
            self.settle(call)

    def _settle_answered(self, lane: int) -> None:
        """Commit the lane's previous call, and any other call known to have answered."""
        for call in self._pending_calls():
            if call.lane == lane or call.has_answered():
                self.settle(call)

    def _pending_calls(self) -> list[ModelCall]:
        with self._lock:
            return list(self._calls.values())

    # ------------------------------------------------------------------ tool calls
    @_fail_closed
    def before_tool_call(self, ctx: ToolCallHookContext) -> None:
        """PRE_TOOL_CALL: count the tool call, or skip it (and stop the run on a cap)."""
        key = id(ctx.tool_input)
        self._settle_answered(lane_of(ctx.agent))
        run = self.run_for(ctx.agent)
        try:
            self._abort_if_stopped()
            step = run.before_tool_call(ctx.tool_name, dict(ctx.tool_input))
        except ToolDenied as denied:
            self._refused_tools[key] = f"Tool call refused: {denied}"
            raise HookAborted(str(denied), source=HOOK_SOURCE) from None
        except BudgetAbort as abort:
            self._refused_tools[key] = _stop_notice(abort.error)
            raise
        except BudgetError as error:
            self._refused_tools[key] = _stop_notice(error)
            raise self.abort(error) from None
        self._tools[key] = (run, step, time.perf_counter())
        _tool_run.set((self, run))

    @_fail_closed
    def after_tool_call(self, ctx: ToolCallHookContext) -> str | None:
        """POST_TOOL_CALL: record the tool call; say why a refused one did not run."""
        key = id(ctx.tool_input)
        refused = self._refused_tools.pop(key, None)
        if refused is not None:
            return refused
        entry = self._tools.pop(key, None)
        if entry is None:
            return None
        run, step, started = entry
        if _not_run(ctx.raw_tool_result):  # CrewAI answered a repeat itself: nothing ran
            run.release(step)
            return None
        ok = not _looks_failed(ctx.tool_result)
        run.record_tool_call(step, ok=ok, latency_s=time.perf_counter() - started)
        return None

    # ------------------------------------------------------------------ stopping
    def _abort_if_stopped(self) -> None:
        if self.stopped is not None:
            raise BudgetAbort(self.stopped)
        if self.failure is not None:
            raise BudgetAbort(self.failure)

    def abort(self, error: Exception) -> BudgetAbort:
        """Remember the first refusal (or failure) that ends the kickoff; build its abort."""
        with self._lock:
            if isinstance(error, BudgetExceeded):
                if self.stopped is None:
                    self.stopped = error
            elif self.failure is None:
                self.failure = error
        return BudgetAbort(error)


def calling_run(warden: Any) -> Run | None:
    """The run a guarded crew kicked off now nests in: the run of the agent whose tool is
    running in this context (a kickoff of ``warden``'s only), else None."""
    state = active_state.get()
    if state is None or state.run.warden is not warden:
        return None
    entry = _tool_run.get()
    if entry is not None and entry[0] is state:
        return entry[1]
    return state.run


def _inherited_scope() -> dict[InterceptionPoint, list[Any]]:
    """The enclosing context's scoped hooks (a user's, a flow's), without budgetwarden's."""
    from crewai.hooks.dispatch import get_scoped_hooks

    scope: dict[InterceptionPoint, list[Any]] = {}
    for point in InterceptionPoint:
        hooks = [h for h in get_scoped_hooks(point) if not _is_ours(h)]
        if hooks:
            scope[point] = hooks
    return scope


def _is_ours(hook: Any) -> bool:
    return isinstance(getattr(hook, "__self__", None), CrewRunState)


def lane_of(agent: Any) -> int:
    """The lane of an agent's calls (one model call at a time per agent)."""
    return id(agent) if agent is not None else 0


def _requested_model(llm: Any) -> str | None:
    """The model the caller asked for (a routed LLM may ask for none: routing decides)."""
    model = getattr(llm, "requested_model", getattr(llm, "model", llm))
    return model if isinstance(model, str) else None


def _max_tokens(llm: Any) -> int | None:
    value = getattr(llm, "max_tokens", None) or getattr(llm, "max_completion_tokens", None)
    return int(value) if isinstance(value, int | float) and value > 0 else None


def _offered_tools(ctx: LLMCallHookContext) -> list[Any] | None:
    """The tools this call offers: in native-tool mode the very schemas the executor sends
    (their tokens count in the reservation), in ReAct mode their names (the prompt's text
    already describes them)."""
    schemas = getattr(ctx.executor, "_openai_tools", None)
    if isinstance(schemas, list) and schemas and uses_native_tools(ctx.executor):
        return schemas
    tools = getattr(ctx.executor, "tools", None) or getattr(ctx.agent, "tools", None)
    if not tools:
        return None
    return [str(getattr(tool, "name", tool)) for tool in tools]


def _error_openings() -> tuple[str, ...]:
    """How CrewAI's results of a failed tool begin: "Error executing tool" (native tool
    calls), "Error:" (bad arguments), and in ReAct mode its translated "I encountered an
    error ..." texts (read from CrewAI's own translations, so another language works too)."""
    texts = (I18N_DEFAULT.errors("tool_usage_exception"), I18N_DEFAULT.errors("tool_usage_error"))
    return ("Error executing tool", "Error:", *(text.split("{", 1)[0] for text in texts))


_ERROR_OPENINGS = _error_openings()


#: what CrewAI answers, below the tool hooks and without running the tool, to the same tool
#: call made twice in a row
_REPEATED_USAGE = I18N_DEFAULT.errors("task_repeated_usage").strip()


def _not_run(raw_result: Any) -> bool:
    """Whether CrewAI answered the tool call without running the tool."""
    return type(raw_result) is str and raw_result.startswith(_REPEATED_USAGE)


def _looks_failed(result: Any) -> bool:
    return isinstance(result, str) and result.lstrip().startswith(_ERROR_OPENINGS)


def _stop_notice(error: Exception) -> str:
    return f"Tool call not run: {error}"
