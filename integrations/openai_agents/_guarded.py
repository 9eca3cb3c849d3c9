"""run_guarded: run an agent under the warden and get the partial result instead of an exception."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from agents.agent import Agent
from agents.items import MessageOutputItem, RunItem, TResponseInputItem
from agents.lifecycle import RunHooks
from agents.result import RunResult
from agents.run import Runner
from agents.run_config import RunConfig

from budgetwarden import BudgetError, BudgetExceeded, RunReport, Warden

from ._hooks import BudgetRunHooks
from ._routing import BudgetModelProvider, ModelFactory

__all__ = ["GuardedResult", "run_guarded", "run_guarded_sync"]


@dataclass
class GuardedResult:
    """A guarded run's outcome: the final output, or what was done before a cap stopped it."""

    output: Any
    """The final output; when stopped, the partial output (the model's last text, or None)."""
    report: RunReport | None
    """The run's report: calls, tokens, cost, stop reason."""
    stopped: BudgetError | None = None
    """The refusal that ended the run (a ``BudgetExceeded`` or ``ToolDenied``), else None."""
    result: RunResult | None = None
    """The SDK's own result when the run completed."""
    new_items: list[RunItem] = field(default_factory=list)
    """The items the run generated (until it stopped)."""

    @property
    def partial(self) -> bool:
        """True when a cap or a tool rule ended the run before its final output."""
        return self.stopped is not None

    @property
    def cap(self) -> str | None:
        """The cap that stopped the run (``"max_tool_calls"``, ``"budget:user=u1/8h"``...)."""
        if isinstance(self.stopped, BudgetExceeded):
            return str(self.stopped.cap)
        return "tool_denied" if self.stopped is not None else None


def _last_message_text(items: list[RunItem]) -> str | None:
    for item in reversed(items):
        if isinstance(item, MessageOutputItem):
            text = "".join(str(getattr(part, "text", "")) for part in item.raw_item.content)
            if text:
                return text
    return None


def _completed(result: RunResult, hooks: BudgetRunHooks) -> GuardedResult:
    return GuardedResult(
        output=result.final_output, report=hooks.report, result=result, new_items=result.new_items
    )


def _stopped(exc: BudgetError, hooks: BudgetRunHooks, warden: Warden) -> GuardedResult:
    if warden.policy.on_exceeded == "raise":
        raise exc
    items: list[RunItem] = list(getattr(exc, "new_items", []))
    partial = getattr(exc, "partial", None) or _last_message_text(items)
    report = getattr(exc, "report", None) or hooks.report
    return GuardedResult(output=partial, report=report, stopped=exc, new_items=items)


def _prepare(
    warden: Warden,
    attribution: dict[str, Any],
    runner_kwargs: dict[str, Any],
    route: bool,
    model_factory: ModelFactory | None,
    hooks: RunHooks[Any] | None,
) -> tuple[BudgetRunHooks, dict[str, Any]]:
    if attribution.get("thread") is None:
        session = runner_kwargs.get("session")
        attribution["thread"] = (
            getattr(session, "session_id", None) or runner_kwargs.get("conversation_id") or None
        )
    budget_hooks = BudgetRunHooks(warden, hooks=hooks, **attribution)
    if route:
        config = runner_kwargs.get("run_config") or RunConfig()
        provider = BudgetModelProvider(budget_hooks, model_factory=model_factory)
        runner_kwargs["run_config"] = dataclasses.replace(config, model_provider=provider)
    return budget_hooks, runner_kwargs


async def run_guarded(
    starting_agent: Agent[Any],
    input: str | list[TResponseInputItem],
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
    own run hooks, still called; every other keyword goes to ``Runner.run``. With
    ``Policy(on_exceeded="raise")`` the refusal is raised instead.
    """
    attribution = {
        "agent": agent, "user": user, "workspace": workspace, "workflow": workflow,
        "task_class": task_class, "key": key, "thread": thread, "feature": feature,
    }  # fmt: skip
    budget_hooks, kwargs = _prepare(warden, attribution, runner_kwargs, route, model_factory, hooks)
    try:
        result = await Runner.run(starting_agent, input, hooks=budget_hooks, **kwargs)
    except BudgetError as exc:
        return _stopped(exc, budget_hooks, warden)
    finally:
        await budget_hooks.aclose()
    return _completed(result, budget_hooks)


def run_guarded_sync(
    starting_agent: Agent[Any],
    input: str | list[TResponseInputItem],
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
    budget_hooks, kwargs = _prepare(warden, attribution, runner_kwargs, route, model_factory, hooks)
    try:
        result = Runner.run_sync(starting_agent, input, hooks=budget_hooks, **kwargs)
    except BudgetError as exc:
        return _stopped(exc, budget_hooks, warden)
    finally:
        budget_hooks.close()
    return _completed(result, budget_hooks)
