"""The state of one guarded kickoff: its run, its hooks, and the calls they reserved.

Every hook translates one CrewAI callback into one ``Run`` call. A refusal is turned into
``HookAborted`` (the only exception CrewAI lets out of a hook): before a model call it stops
the kickoff; before a tool call CrewAI only skips the tool, so the run is marked stopped and
the next model call aborts. Calls are grouped in lanes (one per agent): a lane makes one
model call at a time, so its next hook is the moment its previous call can be committed.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar, cast

from crewai.events.types.llm_events import LLMCallCompletedEvent, LLMCallFailedEvent
from crewai.hooks.dispatch import HookAborted, InterceptionPoint, register_scoped, scoped_hooks
from crewai.hooks.llm_hooks import LLMCallHookContext
from crewai.hooks.tool_hooks import ToolCallHookContext

from budgetwarden import BudgetError, BudgetExceeded, Run, ToolDenied, ToolStep, Usage
from budgetwarden.compress import compress_messages
from budgetwarden.usage import estimate_message_tokens

from ._calls import (
    ModelCall,
    current_call,
    listen_to_llm_events,
    outcome_of_error,
    trackers,
    usage_from_event,
)

#: The guarded kickoff the current context belongs to (None outside guarded kickoffs).
active_state: ContextVar[CrewRunState | None] = ContextVar(
    "budgetwarden_crewai_state", default=None
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

    def __init__(self, run: Run) -> None:
        self.run = run
        self.stopped: BudgetExceeded | None = None
        self.failure: Exception | None = None
        self.last_text: str | None = None
        self._lock = threading.RLock()
        self._calls: dict[int, ModelCall] = {}
        self._tools: dict[int, tuple[ToolStep, dict[str, Any], float]] = {}
        self._refused_tools: dict[int, str] = {}

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
        call = self.begin_call(ctx.llm, ctx.messages, lane=lane, tools=_tool_names(ctx))
        current_call.set(call)
        if call.step.compress:
            self._compress(ctx.messages, call.step.input_tokens)

    def begin_call(
        self, llm: Any, messages: Any, *, lane: int, tools: Sequence[str] | None = None
    ) -> ModelCall:
        """Reserve one model call for ``llm`` (raises ``BudgetAbort`` when refused)."""
        try:
            self._abort_if_stopped()
            step = self.run.before_llm_call(
                _requested_model(llm), messages, max_tokens=_max_tokens(llm), tools=tools
            )
        except BudgetAbort:
            current_call.set(None)  # the refused call's events belong to no call
            raise
        except BudgetError as error:
            current_call.set(None)
            raise self.abort(error) from None
        call = ModelCall(self, step, lane)
        trackers.bind(call, llm)
        with self._lock:
            self._calls[id(call)] = call
        return call

    @_fail_closed
    def after_model_call(self, ctx: LLMCallHookContext) -> None:
        """POST_MODEL_CALL (text answers only): commit the call that just answered."""
        call = current_call.get()
        if call is None or call.state is not self:
            return
        call.returned(text=ctx.response)
        self.settle(call)

    def record_completed(self, call: ModelCall, event: LLMCallCompletedEvent) -> None:
        """An ``LLMCallCompletedEvent`` emitted inside ``call`` (from a bus worker thread)."""
        usage = usage_from_event(event.usage)
        text = event.response if isinstance(event.response, str) else None
        with self._lock:
            if call.settled:
                return
            if usage is not None:
                call.event_usage = usage if call.event_usage is None else call.event_usage + usage
            call.returned(text=text, model=event.model)
            if text:
                self.last_text = text

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
        usage = call.measured_usage()  # may wait for the call's events: they still count
        if usage is None and call.outcome != "ok":
            usage = Usage(estimated=True)  # a failed call that reported nothing billed nothing
        with self._lock:
            call.settled = True
            if call.text:
                self.last_text = call.text
        trackers.release(call)
        self.run.after_llm_call(
            call.step,
            usage,
            model=call.model,
            latency_s=call.latency_s,
            outcome=call.outcome,
            output_text=call.text,
        )

    def settle_all(self) -> None:
        """Commit every call still pending (the kickoff is over, so all have returned)."""
        for call in self._pending_calls():
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
        try:
            self._abort_if_stopped()
            step = self.run.before_tool_call(ctx.tool_name, dict(ctx.tool_input))
        except ToolDenied as denied:
            self._refused_tools[key] = f"Tool call refused: {denied}"
            raise HookAborted(str(denied), source=HOOK_SOURCE) from None
        except BudgetAbort as abort:
            self._refused_tools[key] = _stop_notice(abort.error)
            raise
        except BudgetError as error:
            self._refused_tools[key] = _stop_notice(error)
            raise self.abort(error) from None
        self._tools[key] = (step, ctx.tool_input, time.perf_counter())

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
        step, _, started = entry
        ok = not _looks_failed(ctx.tool_result)
        self.run.after_tool_call(step, ok=ok, latency_s=time.perf_counter() - started)
        return None

    def _compress(self, messages: list[Any], input_tokens: int) -> None:
        """Shrink the context in place, as the policy asks under budget pressure.

        CrewAI's hooks edit ``messages`` in place (the agent's own history). The system
        prompt and the first user message (the task) are kept; then the newest turns that fit
        (a turn: an assistant message and what follows it, its observation or tool results).
        """
        head = 0
        while head < len(messages) and messages[head].get("role") == "system":
            head += 1
        keep = messages[: head + 1]
        target = max(int(input_tokens * self.run.policy.compress_ratio), 1)
        turns = compress_messages(
            _turns(messages[head + 1 :]),
            target - estimate_message_tokens(keep),
            count=estimate_message_tokens,
        )
        messages[:] = [*keep, *(message for turn in turns for message in turn)]

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


def _turns(messages: list[Any]) -> list[list[Any]]:
    """Group messages in turns that start at each assistant message."""
    turns: list[list[Any]] = []
    for message in messages:
        if not turns or message.get("role") == "assistant":
            turns.append([message])
        else:
            turns[-1].append(message)
    return turns


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


def _tool_names(ctx: LLMCallHookContext) -> list[str] | None:
    tools = getattr(ctx.executor, "tools", None) or getattr(ctx.agent, "tools", None)
    if not tools:
        return None
    return [str(getattr(tool, "name", tool)) for tool in tools]


def _looks_failed(result: Any) -> bool:
    return isinstance(result, str) and result.startswith(("Error executing tool", "Error:"))


def _stop_notice(error: Exception) -> str:
    return f"Tool call not run: {error}"
