"""BudgetRunHooks: the Agents SDK's run hooks, translated into budgetwarden Run calls."""

from __future__ import annotations

import asyncio
import functools
import time
import weakref
from collections.abc import Coroutine
from typing import Any, NoReturn

from agents.agent import Agent
from agents.items import ModelResponse, TResponseInputItem
from agents.lifecycle import RunHooks
from agents.models.interface import Model
from agents.run import DEFAULT_MAX_TURNS
from agents.run_context import AgentHookContext, RunContextWrapper
from agents.tool import Tool

from budgetwarden import (
    BudgetError,
    BudgetExceeded,
    Run,
    RunReport,
    Step,
    ToolStep,
    Usage,
    Warden,
)
from budgetwarden.finalizing import finish_abandoned
from budgetwarden.pause import PauseHandle
from budgetwarden.usage import searches_offered
from budgetwarden.warden import check_attribution, require_warden

from ._errors import for_agents
from ._final import add_notes
from ._pause import pause_run
from ._routing import RoutedModel, outcome_of
from ._state import GovernedRun, LlmCall, scope_anchor, scope_key
from ._translate import (
    agent_tool_names,
    model_name,
    read_response,
    requested_tier,
    response_text,
    tool_call_id,
    tool_call_of,
    tool_result_failed,
    tool_that_raised,
    usage_of,
    web_searches,
)

__all__ = ["BudgetRunHooks", "LlmCall"]

#: how many runs ended by a refusal are kept for the rest of their turn's tool calls
_REFUSED_KEPT = 64


class BudgetRunHooks(RunHooks[Any]):
    """Run hooks that keep one ``Runner.run`` (and its handoffs) inside the warden's policy.

    ``Runner.run(agent, input, hooks=BudgetRunHooks(warden, user="u1"))``; ``run_sync`` and
    ``run_streamed`` take them the same way. Every model call is reserved before it happens and
    committed from the response's own usage; every tool call passes the policy's tool caps and
    rules first. A refused call raises :class:`AgentsBudgetExceeded` / :class:`AgentsToolDenied`
    (a ``BudgetExceeded`` / ``ToolDenied``) out of ``Runner.run``, and the call never happens.
    Past the warn level a budget hint (``Policy(budget_hints=True)``) and, on the last call a
    cap allows (``Limits(final_answer=True)``), the final-answer instruction are added to that
    call's input.

    One instance may serve several runs, even at once. An agent used as a tool
    (``agent.as_tool(..., hooks=these_hooks)``) runs as a child run of its caller's
    (``warden.run(parent=...)``): it never spends past what its caller has left, and its
    spend shows in the caller's report. ``hooks`` are your own run hooks; each event is
    forwarded to them after budgetwarden's checks.
    """

    def __init__(
        self,
        warden: Warden,
        *,
        agent: str | None = None,
        user: str | None = None,
        workspace: str | None = None,
        workflow: str | None = None,
        task_class: str | None = None,
        key: str | None = None,
        thread: str | None = None,
        feature: str | None = None,
        hooks: RunHooks[Any] | None = None,
        model: str | Model | None = None,
    ) -> None:
        """``model``: the model a ``RunConfig(model=...)`` gives every agent of the runs, when
        you give one (hooks cannot see the run config): calls are reserved and priced as
        that model's, not the agent's own. ``run_guarded`` passes its ``run_config``'s."""
        self.warden = require_warden(warden, "BudgetRunHooks")
        self._run_model = model_name(model) if model is not None else None
        self._config_model = model
        self._routing_provider = False  # a BudgetModelProvider serves these hooks' runs
        self.attribution: dict[str, str | None] = {
            "agent": agent,
            "user": user,
            "workspace": workspace,
            "workflow": workflow,
            "task_class": task_class,
            "key": key,
            "thread": thread,
            "feature": feature,
        }
        check_attribution("BudgetRunHooks", self.attribution)
        self._inner = hooks
        self._states: dict[int, GovernedRun] = {}  # by scope_key(context)
        self._calls_by_input: dict[int, LlmCall] = {}
        self._last: GovernedRun | None = None
        self._outermost: dict[int, GovernedRun] = {}  # by id(usage), until the usage is gone
        # runs a refusal ended, by scope, the latest few: the SDK runs a turn's parallel tool
        # calls as tasks that go on after one of them was refused
        self._refused: dict[int, GovernedRun] = {}  # oldest first
        # outermost runs (by id(usage)) whose end waits for close(): their output guardrails
        # run after on_agent_end, and may still trip (run_guarded's runs)
        self._closed_by_caller: set[int] = set()
        self._run_id: str | None = None  # the id the next outermost run takes (a resume)

    # ----------------------------------------------------------------- public

    @property
    def run(self) -> Run | None:
        """The budgetwarden ``Run`` of the latest ``Runner.run`` these hooks saw (or None).

        An agent used as a tool runs as a child of it: see ``run.report.children``.
        """
        return self._last.run if self._last is not None else None

    @property
    def report(self) -> RunReport | None:
        """The latest run's report so far (None before any run)."""
        return self._last.run.report if self._last is not None else None

    @property
    def active_runs(self) -> int:
        """How many runs these hooks govern that have not finished yet."""
        return len(self._states)

    def governed(self, usage: object) -> GovernedRun | None:
        """The outermost run of the run context whose ``usage`` this is (finished or not)."""
        return self._outermost.get(id(usage))

    def pause(
        self,
        exc: BudgetExceeded,
        starting_agent: Agent[Any],
        *,
        max_turns: int | None = DEFAULT_MAX_TURNS,
    ) -> PauseHandle | None:
        """Save a resumable handle for the run ``exc`` stopped, and set it as ``exc.handle``.

        For ``Runner.run`` / ``run_streamed`` callers (``run_guarded`` does it by itself under
        ``Policy(on_exceeded="pause")``): ``starting_agent`` and ``max_turns`` are the run's.
        ``resume_openai_agents(warden, handle, starting_agent)`` continues it. None when the
        run cannot be resumed (the SDK attached no run data to ``exc``).
        """
        state = next(
            (s for s in self._outermost.values() if s.run.id == getattr(exc, "run_id", None)),
            self._last,
        )
        if state is None:
            return None
        handle = pause_run(self.warden, state.run, exc, state, starting_agent, max_turns)
        exc.handle = handle
        return handle

    def resume_as(self, run_id: str) -> None:
        """Give the next run these hooks open the id of a paused run it continues."""
        self._run_id = run_id

    def close(self, error: BaseException | None = None, *, usage: object = None) -> None:
        """Finish every run still open (one an exception ended before its final output), or
        only those of the run context whose ``usage`` is given."""
        self._closed_by_caller.discard(id(usage))
        for state in self._innermost_first(usage):
            self._record_unanswered(state, error)
            if (entry := _raised_tool_step(state, error)) is not None:
                state.run.record_tool_call(entry[0], ok=False, latency_s=entry[1], error=error)
            self._end(state)
            state.run.finish(_closing_reason(state, error), error=error)

    async def aclose(self, error: BaseException | None = None, *, usage: object = None) -> None:
        """Async twin of :meth:`close`."""
        self._closed_by_caller.discard(id(usage))
        for state in self._innermost_first(usage):
            for call, outcome, latency_s in _unanswered(state, error):
                await state.run.arecord_llm_call(
                    call.step, Usage(), model=_priced(call), latency_s=latency_s, outcome=outcome
                )
            if (entry := _raised_tool_step(state, error)) is not None:
                await state.run.arecord_tool_call(
                    entry[0], ok=False, latency_s=entry[1], error=error
                )
            self._end(state)
            await state.run.afinish(_closing_reason(state, error), error=error)

    def finish_on_close(self, usage: object) -> None:
        """Leave the run of the context whose ``usage`` this is open at its final output,
        until ``close(error, usage=usage)``: its output guardrails (which run after the last
        hook) may still trip, and the run then ends in error, not completed. ``run_guarded``
        and ``run_guarded_streamed`` do this; a plain ``Runner.run`` cannot (nothing would
        close it)."""
        self._closed_by_caller.add(id(usage))

    # ------------------------------------------------------------- SDK hooks

    async def on_agent_start(self, context: AgentHookContext[Any], agent: Agent[Any]) -> None:
        """Open the run on its first agent; note which agent runs now."""
        state = self._state_for(context, agent, opening=True)
        if state is not None:
            state.agent_name = agent.name
        if self._inner is not None:
            await self._inner.on_agent_start(context, agent)

    async def on_llm_start(
        self,
        context: RunContextWrapper[Any],
        agent: Agent[Any],
        system_prompt: str | None,
        input_items: list[TResponseInputItem],
    ) -> None:
        """Reserve the model call, or refuse it before the model runs; add the step's notes."""
        state = self._states.get(scope_key(context)) or self._governed(context, agent)
        model = self._run_model or model_name(agent.model)
        tool_names = agent_tool_names(agent)
        try:
            step = await self._reservation(
                state, agent, model, tool_names, system_prompt, input_items
            )
        except BudgetError as exc:
            await self._refuse(state, exc)
        estimate = state.input_tokens
        step.tool_tokens, step.prompt_gap = estimate.tool_tokens, estimate.added
        call = LlmCall(state, step, input_items, system_prompt, agent, model, tool_names)
        state.llm_calls[id(context)] = call
        state.tool_results.clear()  # a new turn: the last one's tools are done
        state.parsed_arguments.clear()
        self._calls_by_input[id(input_items)] = call
        if step.hint or step.final:
            add_notes(input_items, step, step.model or model)
        if self._inner is not None:
            await self._inner.on_llm_start(context, agent, system_prompt, input_items)

    async def on_llm_end(
        self, context: RunContextWrapper[Any], agent: Agent[Any], response: ModelResponse
    ) -> None:
        """Commit the call's own usage (``response.usage``, not the run's running total)."""
        state = self._states.get(scope_key(context))
        call = state.llm_calls.pop(id(context), None) if state is not None else None
        if state is not None and call is not None:
            self._calls_by_input.pop(id(call.input_items), None)
            tool_names = None if agent.mcp_servers else call.tool_names
            text, outcome = read_response(response, tool_names, state.parsed_arguments)
            state.last_text = text or state.last_text
            state.last_response, state.last_agent = response, agent
            if not call.settled:
                call.settled = True
                latency_s = time.monotonic() - call.started
                usage = usage_of(response.usage, agent.model_settings, web_searches(response))
                if usage is not None:
                    state.input_tokens.billed = usage.input_tokens + usage.output_tokens
                # The core reads the text only to estimate a missing usage, or to record it.
                output_text = None
                if usage is None or state.run.policy.record_content:
                    output_text = response_text(response, include_tool_calls=True)
                await state.run.arecord_llm_call(
                    call.step,
                    usage,
                    # Without the routed provider the agent's own model answered, whatever
                    # the step chose: price the model that ran.
                    model=_priced(call),
                    latency_s=latency_s,
                    outcome=outcome,
                    output_text=output_text,
                )
        if self._inner is not None:
            await self._inner.on_llm_end(context, agent, response)

    async def on_tool_start(
        self, context: RunContextWrapper[Any], agent: Agent[Any], tool: Tool
    ) -> None:
        """Pass the tool call through the policy's tool caps and rules, or refuse it."""
        scope = scope_key(context)
        state = (
            self._states.get(scope) or self._refused_run(scope) or self._governed(context, agent)
        )
        if state.refusal is not None:  # a call of the turn whose other call was refused
            raise state.refusal
        call_id, arguments = tool_call_of(context, state.parsed_arguments)
        try:
            tool_step = await state.run.abefore_tool_call(tool.name, arguments, call_id=call_id)
        except BudgetError as exc:
            await self._refuse(state, exc)
        state.tool_steps[call_id or f"{tool.name}#{id(context)}"] = (tool_step, time.monotonic())
        if self._inner is not None:
            await self._inner.on_tool_start(context, agent, tool)

    async def on_tool_end(
        self, context: RunContextWrapper[Any], agent: Agent[Any], tool: Tool, result: object
    ) -> None:
        """Record the tool call's outcome (a failure is the SDK's error message as result)."""
        scope = scope_key(context)
        state = self._states.get(scope) or self._refused_run(scope)
        call_id = tool_call_id(context) or f"{tool.name}#{id(context)}"
        entry = state.tool_steps.pop(call_id, None) if state is not None else None
        if state is not None and entry is not None:
            tool_step, started = entry
            failed = tool_result_failed(result)
            state.tool_results[call_id] = str(result)
            await state.run.arecord_tool_call(
                tool_step,
                ok=not failed,
                latency_s=time.monotonic() - started,
                error=str(result) if failed else None,
            )
        if self._inner is not None:
            await self._inner.on_tool_end(context, agent, tool, result)

    async def on_handoff(
        self, context: RunContextWrapper[Any], from_agent: Agent[Any], to_agent: Agent[Any]
    ) -> None:
        """A handoff keeps the same run: the next agent spends from the same counters."""
        state = self._states.get(scope_key(context))
        if state is not None:
            state.agent_name = to_agent.name
        if self._inner is not None:
            await self._inner.on_handoff(context, from_agent, to_agent)

    async def on_agent_end(
        self, context: AgentHookContext[Any], agent: Agent[Any], output: Any
    ) -> None:
        """Finish the run when its last agent produced the final output."""
        state = self._states.get(scope_key(context))
        if state is not None:
            state.final_output, state.answered = output, True
            if state.parent is None and state.usage_key in self._closed_by_caller:
                if self._inner is not None:  # its caller finishes it (finish_on_close)
                    await self._inner.on_agent_end(context, agent, output)
                return
            self._end(state)
            await state.run.afinish(error=None)
        if self._inner is not None:
            await self._inner.on_agent_end(context, agent, output)

    # ------------------------------------------------- for the routed model

    def call_for_input(self, input_items: object) -> LlmCall | None:
        """The reserved call whose model input is this very object."""
        return self._calls_by_input.get(id(input_items))

    async def begin_dispatch(self, input_items: object) -> LlmCall | None:
        """The reserved call a routed model is about to make (reserved again on an SDK retry)."""
        call = self.call_for_input(input_items)
        if call is not None and call.settled:
            await self._reserve_again(call)
        return call

    async def fail_dispatch(self, call: LlmCall, exc: BaseException, *, retry: bool) -> bool:
        """Record a failed model call; True when routing offers another model to try at once."""
        failed_model = call.dispatched_model
        call.settled = True
        if failed_model is not None:
            call.failed_models.add(failed_model)
        await call.state.run.arecord_llm_call(
            call.step,
            Usage(),
            model=failed_model,
            latency_s=time.monotonic() - call.started,
            outcome=outcome_of(exc),
        )
        if not retry:
            return False
        await self._reserve_again(call)
        if call.step.model is None or call.step.model in call.failed_models:
            call.settled = True  # no other model to go to: give the reservation back
            await call.state.run.arelease(call.step)
            return False
        return True

    # -------------------------------------------------------------- internals

    def _governed(self, context: RunContextWrapper[Any], agent: Agent[Any]) -> GovernedRun:
        state = self._state_for(context, agent, opening=False)
        assert state is not None
        return state

    def _state_for(
        self, context: RunContextWrapper[Any], agent: Agent[Any], *, opening: bool
    ) -> GovernedRun | None:
        """The run a context belongs to, opened on first sight.

        A run nested in another (an agent used as a tool: same usage, new scope) opens at its
        first model or tool call, whose context names the caller's tool call; at its
        ``on_agent_start`` it is not known yet whose call it serves.
        """
        scope = scope_key(context)
        state = self._states.get(scope)
        if state is not None:
            return state
        usage_key = id(context.usage)
        callers = [s for s in self._states.values() if s.usage_key == usage_key]
        if callers and opening:
            return None
        parent = _caller_of(callers, tool_call_id(context)) if callers else None
        state = GovernedRun(
            run=self._open_run(agent, parent),
            scope=scope,
            usage_key=usage_key,
            parent=parent,
            anchor=scope_anchor(context),
        )
        state.agent_name = agent.name
        state.routed = self._routing_provider and state.run.policy.routing is not None
        self._states[scope] = state
        if parent is None:
            weakref.finalize(context.usage, self._abandon, usage_key)
            self._last = self._outermost[usage_key] = state
        return state

    def _open_run(self, agent: Agent[Any], parent: GovernedRun | None) -> Run:
        a = self.attribution
        run_id = None
        if parent is None:
            run_id, self._run_id = self._run_id, None
        return self.warden.run(
            agent=agent.name if parent is not None else (a["agent"] or agent.name),
            user=a["user"],
            workspace=a["workspace"],
            workflow=a["workflow"],
            task_class=a["task_class"],
            key=a["key"],
            thread=a["thread"],
            feature=a["feature"],
            parent=parent.run if parent is not None else None,
            run_id=run_id,
        )

    def _reservation(
        self,
        state: GovernedRun,
        agent: Agent[Any],
        model: str | None,
        tool_names: list[str],
        system_prompt: str | None,
        input_items: str | list[Any],
    ) -> Coroutine[Any, Any, Step]:
        """The run's reservation of a model call of ``agent`` (``model``:
        ``model_name(agent.model)``), to await; a plain call, not a coroutine of its own."""
        estimate, run = state.input_tokens, state.run
        if not run.counters.iterations:  # before any bill: the tier and searches it asks for
            run.expect_service_tier(requested_tier(agent.model_settings))
            run.expect_web_searches(searches_offered(agent.tools))
        routed = state.routed and self._asks_provider(agent)
        return run.abefore_llm_call(
            None if routed and agent.model is None else model,
            input_tokens=estimate.estimate(system_prompt, input_items, run.prompt_gap)
            + estimate.with_tools(agent),
            max_tokens=agent.model_settings.max_tokens,
            tools=tool_names,
            route=routed,
        )

    def _asks_provider(self, agent: Agent[Any]) -> bool:
        """Whether the SDK asks the run's model provider (a ``BudgetModelProvider``) for
        ``agent``'s model: the run config's model, else the agent's, is a name or none. A
        ``Model`` object given there is called as it is, whatever routing would choose."""
        given = self._config_model if self._config_model is not None else agent.model
        return not isinstance(given, Model) or isinstance(given, RoutedModel)

    def use_routing(self) -> None:
        """Called by ``BudgetModelProvider``: it serves these hooks' runs, so their calls
        follow the policy's routing (plain hooks reserve and price the model that runs)."""
        self._routing_provider = True

    async def _reserve_again(self, call: LlmCall) -> None:
        state = call.state
        try:
            call.step = await self._reservation(
                state,
                call.agent,
                call.model,
                call.tool_names,
                call.system_prompt,
                call.input_items,
            )
        except BudgetError as exc:
            await self._refuse(state, exc)
        estimate = state.input_tokens
        call.step.tool_tokens, call.step.prompt_gap = estimate.tool_tokens, estimate.added
        call.settled = False
        call.started = time.monotonic()
        call.dispatched_model = None

    async def _refuse(self, state: GovernedRun, exc: BudgetError) -> NoReturn:
        refusal = for_agents(exc, partial=state.last_text)
        self._end(state)
        state.refusal = refusal
        self._refused[state.scope] = state
        while len(self._refused) > _REFUSED_KEPT:
            del self._refused[next(iter(self._refused))]
        await state.run.afinish(error=refusal)
        refusal.report = state.run.report
        raise refusal from None

    def _refused_run(self, scope: int) -> GovernedRun | None:
        """The run a refusal ended in this scope: its turn's other tool calls are refused
        too (not run under a new run), and those already running are recorded on it."""
        return self._refused.get(scope) if self._refused else None

    def _end(self, state: GovernedRun) -> None:
        self._states.pop(state.scope, None)
        for call in state.llm_calls.values():
            self._calls_by_input.pop(id(call.input_items), None)
        state.finished = True

    @staticmethod
    def _record_unanswered(state: GovernedRun, error: BaseException | None) -> None:
        """Record as failed the model calls the run ended without (see ``_unanswered``)."""
        for call, outcome, latency_s in _unanswered(state, error):
            state.run.record_llm_call(
                call.step, Usage(), model=_priced(call), latency_s=latency_s, outcome=outcome
            )

    def _innermost_first(self, usage: object = None) -> list[GovernedRun]:
        states = [s for s in self._states.values() if usage is None or s.usage_key == id(usage)]
        return sorted(states, key=_depth, reverse=True)

    def _abandon(self, usage_key: int) -> None:
        """The SDK dropped a run's context: free what a run it left open still holds (from
        the context's finalizer: see ``finish_abandoned``). A finished run's leaves nothing."""
        if not any(state.usage_key == usage_key for state in self._states.values()):
            self._outermost.pop(usage_key, None)
            return
        finish_abandoned(functools.partial(self._finish_abandoned, usage_key))

    def _finish_abandoned(self, usage_key: int) -> None:
        self._outermost.pop(usage_key, None)
        for state in self._innermost_first():
            if state.usage_key == usage_key:
                self._record_unanswered(state, None)
                self._end(state)
                state.run.finish("error")


def _caller_of(callers: list[GovernedRun], call_id: str | None) -> GovernedRun:
    """The run whose pending tool call started a nested run (the outermost when unknown)."""
    for state in callers:
        if call_id is not None and call_id in state.tool_steps:
            return state
    return min(callers, key=_depth)


def _depth(state: GovernedRun) -> int:
    depth, node = 0, state
    while node.parent is not None:
        depth, node = depth + 1, node.parent
    return depth


def _unanswered(
    state: GovernedRun, error: BaseException | None
) -> list[tuple[LlmCall, str, float]]:
    """The model calls of a run ended without their answer (the model raised, or the run was
    cancelled meanwhile), taken off it: each with its outcome (from ``error`` when known) and
    latency. They are recorded as failed (providers bill no failed call), like the other
    adapters record a model call that raised."""
    outcome = outcome_of(error) if error is not None else "provider_error"
    now, calls = time.monotonic(), []
    for call in state.llm_calls.values():
        if not call.settled:
            call.settled = True
            calls.append((call, outcome, now - call.started))
    return calls


def _priced(call: LlmCall) -> str | None:
    """The model a call is priced as: the routed one it was sent to, else the agent's own."""
    return call.dispatched_model or call.model


def _raised_tool_step(
    state: GovernedRun, error: BaseException | None
) -> tuple[ToolStep, float] | None:
    """The pending call of the tool whose exception ended the run, taken off it, with its
    latency: it ran (and is priced) though the SDK called no ``on_tool_end``."""
    name = tool_that_raised(error)
    if name is None:
        return None
    for call_id, (step, started) in list(state.tool_steps.items()):
        if step.name == name:
            del state.tool_steps[call_id]
            return step, time.monotonic() - started
    return None


def _closing_reason(state: GovernedRun, error: BaseException | None) -> str | None:
    """Why ``close`` ends a run: completed when it has its final output and nothing failed
    after it (see ``finish_on_close``), else as ``_unfinished_reason`` says."""
    if error is None and state.answered:
        return None
    return _unfinished_reason(error)


def _unfinished_reason(error: BaseException | None) -> str | None:
    """A run closed without its final output ended in error, unless a refusal says more or
    it was cancelled (a streamed run's ``cancel()``)."""
    if isinstance(error, BudgetError):
        return None
    return "cancelled" if isinstance(error, asyncio.CancelledError) else "error"
