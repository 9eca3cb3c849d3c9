"""The spend report: every figure ``budgetwarden report`` and the dashboard show, in one model.

``build_report(events, rules=..., now=..., tz=...)`` is pure: the same events give the same
report. ``SpendReport.model_dump(mode="json")`` is what ``budgetwarden report --json`` prints.
See ``budgetwarden.analytics`` and ``budgetwarden.anomalies`` for the definitions.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from .alerts import AlertRules
from .analytics import (
    DIMENSIONS,
    CacheRow,
    SpendRow,
    SuccessRow,
    TaskClassStats,
    cache_hit_rates,
    cost_events,
    daily_spend,
    runs_of,
    spend_by,
    success_by_task_class,
    task_class_stats,
    total_spend,
)
from .anomalies import Anomaly, BudgetStatus, budget_status, find_anomalies
from .events import BudgetAlert, Event, Notice

__all__ = ["SpendReport", "build_report"]


class SpendReport(BaseModel):
    """Where the money went, what is odd, and what the month will cost."""

    model_config = ConfigDict(frozen=True)

    timezone: str
    now: float
    first_ts: float | None
    last_ts: float | None
    events: int
    calls: int
    runs: int
    alerts: int
    notices: int
    total_usd: float
    by: dict[str, list[SpendRow]]
    daily: dict[str, float]
    task_classes: list[TaskClassStats]
    success: list[SuccessRow]
    cache: list[CacheRow]
    anomalies: list[Anomaly]
    budget: BudgetStatus
    rules: AlertRules
    skipped: int = 0


def build_report(
    events: Sequence[Event],
    *,
    rules: AlertRules | None = None,
    now: float,
    tz: str = "UTC",
    dimensions: Sequence[str] = DIMENSIONS,
    skipped: int = 0,
    month_events: Sequence[Event] | None = None,
) -> SpendReport:
    """Every figure over ``events``; ``now`` is the instant the month projection is made at,
    over ``month_events`` when given (a report that starts mid-month still projects the
    whole month's spend), else over ``events``."""
    rules = rules or AlertRules()
    costs = cost_events(events)
    runs = runs_of(events)
    daily = daily_spend(costs, tz=tz)
    stamps = [e.ts for e in events]
    return SpendReport(
        timezone=tz,
        now=now,
        first_ts=min(stamps, default=None),
        last_ts=max(stamps, default=None),
        events=len(events),
        calls=len(costs),
        runs=len(runs),
        alerts=sum(1 for e in events if isinstance(e, BudgetAlert)),
        notices=sum(1 for e in events if isinstance(e, Notice)),
        total_usd=total_spend(costs),
        by={dimension: spend_by(costs, dimension, tz=tz) for dimension in dimensions},
        daily=daily,
        task_classes=task_class_stats(runs),
        success=success_by_task_class(runs),
        cache=cache_hit_rates(costs),
        anomalies=find_anomalies(costs, daily, rules, runs=runs),
        budget=budget_status(
            costs if month_events is None else month_events, rules.monthly_envelope_usd, now, tz
        ),
        rules=rules,
        skipped=skipped,
    )
