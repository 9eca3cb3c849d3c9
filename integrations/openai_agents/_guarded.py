"""run_guarded: run an agent under the warden and get the partial result instead of an exception.

A cap ends the run with what was done (the model's last text, the items, the report); with
``Limits(final_answer=True)`` the last call a cap allows is made without tools, so the run
ends with the model's own answer; with ``Policy(on_exceeded="pause")`` a refused run ends
with a resumable handle that :func:`resume_openai_agents` continues from the same step.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from agents.agent import Agent
from agents.items import MessageOutputItem, RunItem, TResponseInputItem
from agents.lifecycle import RunHooks
from agents.models.interface import Model
from agents.result import RunResult, RunResultStreaming
from agents.run import DEFAULT_MAX_TURNS, Runner
from agents.run_config import RunConfig
from agents.run_context import RunContextWrapper
from agents.run_state import RunState

from budgetwarden import BudgetError, BudgetExceeded, RunReport, Warden
from budgetwarden.pause import PauseHandle

from ._final import GuardedModel, noting_agent
from ._hooks import BudgetRunHooks
from ._pause import FRAMEWORK
from ._routing import BudgetModelProvider, ModelFactory
from ._state import GovernedRun

__all__ = [
    "GuardedResult",
    "resume_openai_agents",
    "resume_openai_agents_sync",
    "run_guarded",
    "run_guarded_sync",
]

RunInput = str | list[TResponseInputItem] | RunState[Any, Any]


@dataclass
class GuardedResult:
    """A guarded run's outcome: the final output, or what was done before a cap stopped it."""

    output: Any
    """The final output; when stopped, the partial output (the model's last text, or None)."""
    report: RunReport | None
    """The run's report: calls, tokens, cost, stop reason, child runs."""
    stopped: BudgetError | None = None
    """The refusal that ended the run (a ``BudgetExceeded`` or ``ToolDenied``), else None."""
    result: RunResult | RunResultStreaming | None = None
    """The SDK's own result when the run completed (also after a final-answer call)."""
    new_items: list[RunItem] = field(default_factory=list)
    """The items the run generated (until it stopped)."""
    final_cap: str | None = None
    """The cap whose last allowed call gave the final answer (``Limits.final_answer``)."""
    handle: PauseHandle | None = None
    """With ``on_exceeded="pause"``: the saved handle that resumes the run."""
    cancelled: bool = False
    """True when a streamed run was cancelled (``GuardedStream.cancel``, or left unread)."""

    @property
    def partial(self) -> bool:
        """True when a cap, a tool rule or a cancel ended the run before the task was done."""
        return self.stopped is not None or self.final_cap is not None or self.cancelled

    @property
    def paused(self) -> bool:
        """True when the run can be resumed (see :func:`resume_openai_agents`)."""
        return self.handle is not None

    @property
    def cap(self) -> str | None:
        """The cap that ended the run (``"max_tool_calls"``, ``"budget:user=u1/8h"``...)."""
        if isinstance(self.stopped, BudgetExceeded):
            return str(self.stopped.cap)
        if self.stopped is not None:
            return "tool_denied"
        if self.cancelled:
            return "cancelled"
        return self.final_cap


@dataclass
class _Options:
    """How one guarded run is set up (the keywords of ``run_guarded``)."""

    attribution: dict[str, str | None]
    route: bool
    model_factory: ModelFactory | None
    hooks: RunHooks[Any] | None
    runner_kwargs: dict[str, Any]
    run_id: str | None = None


def _last_message_text(items: list[RunItem]) -> str | None:
    for item in reversed(items):
        if isinstance(item, MessageOutputItem):
            text = "".join(str(getattr(part, "text", "")) for part in item.raw_item.content)
            if text:
                return text
    return None


def _completed(
    result: RunResult | RunResultStreaming, governed: GovernedRun | None
) -> GuardedResult:
    run = governed.run if governed is not None else None
    return GuardedResult(
        output=result.final_output,
        report=run.report if run is not None else None,
        result=result,
        new_items=result.new_items,
        final_cap=run.final_cap if run is not None else None,
    )


def _stopped(
    exc: BudgetError,
    hooks: BudgetRunHooks,
    governed: GovernedRun | None,
    agent: Agent[Any],
    max_turns: int | None,
) -> GuardedResult:
    on_exceeded = hooks.warden.policy.on_exceeded
    if on_exceeded == "raise":
        raise exc
    items: list[RunItem] = list(getattr(exc, "new_items", []))
    partial = getattr(exc, "partial", None) or _last_message_text(items)
    report = getattr(exc, "report", None)
    if governed is not None:
        report = governed.run.report
    handle = None
    if on_exceeded == "pause" and isinstance(exc, BudgetExceeded):
        handle = hooks.pause(exc, agent, max_turns=max_turns)
    return GuardedResult(output=partial, report=report, stopped=exc, new_items=items, handle=handle)


def _thread_of(runner_kwargs: dict[str, Any], input: RunInput) -> str | None:
    session = runner_kwargs.get("session")
    thread = getattr(session, "session_id", None) or runner_kwargs.get("conversation_id")
    if thread is None and isinstance(input, RunState):
        thread = input._conversation_id
    return str(thread) if thread else None


def _budget_hooks(warden: Warden, options: _Options, model: str | Model | None) -> BudgetRunHooks:
    """The run's hooks (yours, if they are budgetwarden's), pricing calls as ``model`` when
    the run config gives every agent one."""
    if isinstance(options.hooks, BudgetRunHooks):
        return options.hooks
    return BudgetRunHooks(warden, hooks=options.hooks, model=model, **options.attribution)


def _context_of(input: RunInput, kwargs: dict[str, Any]) -> RunContextWrapper[Any]:
    """The run context the SDK will use (made here, so this run's state can be found)."""
    if isinstance(input, RunState) and input._context is not None:
        return input._context
    given = kwargs.get("context")
    wrapper = given if isinstance(given, RunContextWrapper) else RunContextWrapper(context=given)
    kwargs["context"] = wrapper
    return wrapper


def _max_turns(input: RunInput, kwargs: dict[str, Any]) -> int | None:
    if isinstance(input, RunState):
        return input._max_turns
    turns: int | None = kwargs.get("max_turns", DEFAULT_MAX_TURNS)
    return turns


def _prepare(
    warden: Warden, input: RunInput, options: _Options
) -> tuple[BudgetRunHooks, dict[str, Any]]:
    """The hooks and ``Runner.run`` keywords of one guarded run."""
    kwargs = dict(options.runner_kwargs)
    if options.attribution.get("thread") is None:
        options.attribution["thread"] = _thread_of(kwargs, input)
    config = kwargs.get("run_config") or RunConfig()
    hooks = _budget_hooks(warden, options, config.model)
    if options.run_id is not None:
        hooks.resume_as(options.run_id)
    if options.route:
        provider = BudgetModelProvider(hooks, model_factory=options.model_factory)
        config = dataclasses.replace(config, model_provider=provider)
    if warden.policy.limits.final_answer:
        config = dataclasses.replace(
            config,
            model=GuardedModel(hooks, config.model, config.model_provider),
            call_model_input_filter=noting_agent(config.call_model_input_filter),
        )
    kwargs["run_config"] = config
    return hooks, kwargs


async def _run_guarded(
    starting_agent: Agent[Any], input: RunInput, warden: Warden, options: _Options
) -> GuardedResult:
    hooks, kwargs = _prepare(warden, input, options)
    usage = _context_of(input, kwargs).usage
    hooks.finish_on_close(usage)
    error: BaseException | None = None
    try:
        result = await Runner.run(starting_agent, input, hooks=hooks, **kwargs)
    except BudgetError as exc:
        turns = _max_turns(input, kwargs)
        return _stopped(exc, hooks, hooks.governed(usage), starting_agent, turns)
    except BaseException as exc:
        error = exc
        raise
    finally:
        await hooks.aclose(error, usage=usage)
    return _completed(result, hooks.governed(usage))


def _run_guarded_sync(
    starting_agent: Agent[Any], input: RunInput, warden: Warden, options: _Options
) -> GuardedResult:
    hooks, kwargs = _prepare(warden, input, options)
    usage = _context_of(input, kwargs).usage
    hooks.finish_on_close(usage)
    error: BaseException | None = None
    try:
        result = Runner.run_sync(starting_agent, input, hooks=hooks, **kwargs)
    except BudgetError as exc:
        turns = _max_turns(input, kwargs)
        return _stopped(exc, hooks, hooks.governed(usage), starting_agent, turns)
    except BaseException as exc:
        error = exc
        raise
    finally:
        hooks.close(error, usage=usage)
    return _completed(result, hooks.governed(usage))


async def run_guarded(
    starting_agent: Agent[Any],
    input: RunInput,
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
    route: bool = False,
    model_factory: ModelFactory | None = None,
    hooks: RunHooks[Any] | None = None,
    **runner_kwargs: Any,
) -> GuardedResult:
    """Run ``starting_agent`` under the warden; a cap returns the partial result, not an error.

    Attribution keywords name the run (``thread`` defaults to the session's id or the
    ``conversation_id``); ``route=True`` routes each call through the policy's tiers
    (``model_factory`` builds a tier's Model, default ``LitellmModel``); ``hooks`` are your
    own run hooks, still called, or the ``BudgetRunHooks`` to use (the one you gave
    ``agent.as_tool``, so that agent runs as a child run); every other keyword goes to
    ``Runner.run``. With ``Limits(final_answer=True)`` the last allowed call is made without
    tools; with ``Policy(on_exceeded="pause")`` a refusal saves a resumable ``handle``; with
    ``"raise"`` the refusal is raised instead.
    """
    attribution = {
        "agent": agent, "user": user, "workspace": workspace, "workflow": workflow,
        "task_class": task_class, "key": key, "thread": thread, "feature": feature,
    }  # fmt: skip
    options = _Options(attribution, route, model_factory, hooks, runner_kwargs)
    return await _run_guarded(starting_agent, input, warden, options)


def run_guarded_sync(
    starting_agent: Agent[Any],
    input: RunInput,
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
    route: bool = False,
    model_factory: ModelFactory | None = None,
    hooks: RunHooks[Any] | None = None,
    **runner_kwargs: Any,
) -> GuardedResult:
    """Synchronous twin of :func:`run_guarded` (through ``Runner.run_sync``)."""
    attribution = {
        "agent": agent, "user": user, "workspace": workspace, "workflow": workflow,
        "task_class": task_class, "key": key, "thread": thread, "feature": feature,
    }  # fmt: skip
    options = _Options(attribution, route, model_factory, hooks, runner_kwargs)
    return _run_guarded_sync(starting_agent, input, warden, options)


async def _paused_input(
    handle: PauseHandle, agent: Agent[Any], max_turns: int | None
) -> RunState[Any, Agent[Any]]:
    if handle.framework != FRAMEWORK or "run_state" not in handle.state:
        raise ValueError(f"pause handle {handle.id} is not a paused Agents SDK run")
    state = await RunState.from_json(agent, handle.state["run_state"])
    if max_turns is not None:
        state._max_turns = max_turns
    return state


def _resume_options(handle: PauseHandle, kwargs: dict[str, Any]) -> _Options:
    attribution = {k: v for k, v in handle.attribution.items() if not k.startswith("tag:")}
    route = bool(kwargs.pop("route", False))
    factory = kwargs.pop("model_factory", None)
    hooks = kwargs.pop("hooks", None)
    return _Options(attribution, route, factory, hooks, kwargs, run_id=handle.run_id)


async def resume_openai_agents(
    warden: Warden,
    handle: PauseHandle,
    agent: Agent[Any],
    *,
    max_turns: int | None = None,
    **kwargs: Any,
) -> GuardedResult:
    """Continue a paused run from the step it stopped at, with its whole transcript.

    ``agent`` is the run's starting agent; ``kwargs`` are ``run_guarded``'s (``route``,
    ``hooks``, ``run_config``...); ``max_turns`` gives the resumed run more turns. With
    ``warden.anap_and_resume(handle_id, lambda h: resume_openai_agents(warden, h, agent))``
    it first waits until the budget's window resets or the budget is raised. A handle is
    resumed once: a second resume is a ``KeyError`` (``Warden.resuming``).
    """
    with warden.resuming(handle) as found:
        state = await _paused_input(found, agent, max_turns)
        return await _run_guarded(agent, state, warden, _resume_options(found, dict(kwargs)))


def resume_openai_agents_sync(
    warden: Warden,
    handle: PauseHandle,
    agent: Agent[Any],
    *,
    max_turns: int | None = None,
    **kwargs: Any,
) -> GuardedResult:
    """Synchronous twin of :func:`resume_openai_agents` (for ``warden.nap_and_resume``)."""
    with warden.resuming(handle) as found:
        state = asyncio.run(_paused_input(found, agent, max_turns))
        return _run_guarded_sync(agent, state, warden, _resume_options(found, dict(kwargs)))
