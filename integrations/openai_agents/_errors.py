"""Refusals the Agents SDK lets through unwrapped: BudgetExceeded and ToolDenied as AgentsException.

The SDK wraps any exception a tool hook raises in ``UserError`` unless it is an
``AgentsException``; it also attaches the run's items so far (``run_data``) to every
``AgentsException`` that ends a run. These subclasses are both, so callers catch
``BudgetExceeded`` / ``ToolDenied`` as usual and find the partial output on them.
"""

from __future__ import annotations

from typing import Any

from agents.agent import Agent
from agents.exceptions import AgentsException
from agents.items import RunItem

from budgetwarden import BudgetError, BudgetExceeded, ToolDenied

__all__ = ["AgentsBudgetExceeded", "AgentsToolDenied", "for_agents"]


class _RunDataMixin:
    """Read access to what the SDK attached when the refusal ended the run."""

    run_data: Any

    @property
    def new_items(self) -> list[RunItem]:
        """The items the run generated before it stopped (empty until the SDK attaches them)."""
        data = getattr(self, "run_data", None)
        return list(data.new_items) if data is not None else []

    @property
    def last_agent(self) -> Agent[Any] | None:
        """The agent that was running when the run stopped."""
        data = getattr(self, "run_data", None)
        return data.last_agent if data is not None else None


class AgentsBudgetExceeded(_RunDataMixin, BudgetExceeded, AgentsException):
    """``BudgetExceeded`` that the Agents SDK passes through unwrapped, with the run's items."""


class AgentsToolDenied(_RunDataMixin, ToolDenied, AgentsException):
    """``ToolDenied`` that the Agents SDK passes through unwrapped, with the run's items."""

    partial: Any = None
    """The model's last text before the denied call, as on ``BudgetExceeded``."""


def _copy_extras(source: BaseException, target: BaseException) -> None:
    for name, value in vars(source).items():
        if name not in vars(target):
            setattr(target, name, value)


def for_agents(exc: BudgetError, partial: Any = None) -> BudgetError:
    """The same refusal as a class the SDK does not wrap; ``partial`` attached if it has one."""
    new: BudgetError
    if isinstance(exc, BudgetExceeded) and not isinstance(exc, AgentsException):
        new = AgentsBudgetExceeded.__new__(AgentsBudgetExceeded)
        BudgetExceeded.__init__(
            new,
            exc.cap,
            exc.limit,
            exc.used,
            exc.report,
            resets_at=exc.resets_at,
            partial=exc.partial if exc.partial is not None else partial,
            requested=getattr(exc, "requested", None),
            run_id=getattr(exc, "run_id", None),
        )
    elif isinstance(exc, ToolDenied) and not isinstance(exc, AgentsException):
        new = AgentsToolDenied.__new__(AgentsToolDenied)
        ToolDenied.__init__(new, exc.tool, exc.reason, exc.report)
        new.partial = partial
    else:
        if isinstance(exc, BudgetExceeded) and exc.partial is None:
            exc.partial = partial
        return exc
    _copy_extras(exc, new)  # AgentsException.__init__ ran through the MRO: run_data is None
    return new
