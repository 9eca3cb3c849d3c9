"""Approval to go on: an ``on_limit`` callback may grant a one-time extension of a cap."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from .policy import Limits

if TYPE_CHECKING:
    from .report import RunReport

__all__ = ["GRANTABLE", "Grant", "LimitReached", "OnLimit", "extend_limits"]

#: Run caps a grant can extend (budgets can be extended too, by their ``budget:`` name).
GRANTABLE = (
    "max_iterations",
    "max_tool_calls",
    "max_cost_usd",
    "max_input_tokens",
    "max_output_tokens",
    "max_wall_seconds",
)


class Grant(BaseModel):
    """A one-time extension: ``extra`` more of the cap's unit (calls, tokens, dollars, s)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    extra: float = Field(gt=0, description="How much more of the cap's unit is granted.")
    by: str = Field(default="unknown", description="Who granted it (recorded in the event).")
    note: str = ""


@dataclass(frozen=True, slots=True)
class LimitReached:
    """What ``on_limit`` is asked about: the cap, its figures, the run and its report."""

    cap: str
    limit: float
    used: float
    requested: float | None
    run_id: str
    report: RunReport
    resets_at: float | None = None


OnLimit = Callable[[LimitReached], "Grant | Awaitable[Grant | None] | None"]


def grantable(cap: str) -> bool:
    """True when a grant can extend this cap."""
    return cap in GRANTABLE or cap.startswith("budget:")


def extend_limits(limits: Limits, cap: str, extra: float) -> Limits:
    """The limits with ``cap`` raised by ``extra`` (integers stay integers)."""
    current = getattr(limits, cap)
    if current is None:
        return limits
    value = current + (int(extra) if isinstance(current, int) else extra)
    return limits.model_copy(update={cap: value})
