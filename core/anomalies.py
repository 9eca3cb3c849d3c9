"""Is anything running away, and what will this month cost? Pure functions over events.

Rules (their figures come from ``AlertRules``):

- **day spike**: a day whose spend is above ``mean + day_sigma * sigma`` of the daily series
  (every calendar day from the first to the last event, $0 days included; ``sigma`` is the
  population standard deviation). Needs at least 3 days.
- **heavy user**: a user whose spend is above ``user_share`` of the total spend of the events
  considered (spend without a user counts in the total).
- **expensive run**: a run (a root run with its nested runs) that cost more than ``run_usd``.
- **daily surge**: a day whose spend is above ``surge_factor`` times the mean spend of the
  ``surge_days`` calendar days before it; only days with that many days of history are
  checked, and never against a trailing mean of $0.

**Budget status** of a month: spend from the first instant of the month (in the time zone)
up to ``now``; the month-end projection is the linear run-rate
``spent * days_in_month / days_elapsed``, where ``days_elapsed`` is the time since the
month began in days (fractional, at least 1, so the first hours do not project wildly).
Status: ``over`` when spent >= envelope, ``at_risk`` when the projection is above the
envelope, else ``ok`` (``no_envelope`` without one).
"""

from __future__ import annotations

import calendar
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict

from .alerts import AlertRules, usd
from .analytics import RunSummary, cost_events, runs_of, total_spend
from .events import Event

__all__ = [
    "Anomaly",
    "BudgetStatus",
    "budget_status",
    "daily_surges",
    "day_spikes",
    "expensive_runs",
    "find_anomalies",
    "heavy_users",
    "month_bounds",
]


AnomalyKind = Literal["day_spike", "heavy_user", "expensive_run", "daily_surge"]


class Anomaly(BaseModel):
    """One finding: what, about whom or which day, the figure and the threshold it crossed."""

    model_config = ConfigDict(frozen=True)

    kind: AnomalyKind
    subject: str
    value_usd: float
    threshold_usd: float
    message: str
    key: str


class BudgetStatus(BaseModel):
    """Spend of a month against its envelope, with the month-end projection."""

    model_config = ConfigDict(frozen=True)

    month: str
    envelope_usd: float | None
    spent_usd: float
    days_elapsed: float
    days_in_month: int
    projected_usd: float
    spent_ratio: float | None
    projected_ratio: float | None
    status: Literal["ok", "at_risk", "over", "no_envelope"]

    @property
    def status_text(self) -> str:
        """The status in words."""
        return _STATUS_TEXT[self.status]


_STATUS_TEXT = {
    "ok": "on track",
    "at_risk": "projected over the envelope",
    "over": "over the envelope",
    "no_envelope": "no envelope set",
}


#: A daily series whose spread is below this share of its mean is flat.
_FLAT = 1e-9


def day_spikes(daily: Mapping[str, float], sigma: float = 2.0) -> list[Anomaly]:
    """Days above ``mean + sigma * pstdev`` of the daily series (at least 3 days)."""
    if len(daily) < 3:
        return []
    values = list(daily.values())
    mean, spread = statistics.fmean(values), statistics.pstdev(values)
    if spread <= _FLAT * abs(mean):
        return []  # a flat series: what spread there is, is rounding
    threshold = mean + sigma * spread
    return [
        Anomaly(
            kind="day_spike",
            subject=day,
            value_usd=spend,
            threshold_usd=threshold,
            message=f"{day} spent {usd(spend)}, above mean + {sigma:g} sigma ({usd(threshold)})",
            key=f"day_spike|{day}",
        )
        for day, spend in daily.items()
        if spread > 0 and spend > threshold
    ]


def heavy_users(events: Iterable[Event], share: float = 0.10, period: str = "") -> list[Anomaly]:
    """Users whose spend is above ``share`` of the total (``period`` goes in the alert key)."""
    costs = cost_events(events)
    total = total_spend(costs)
    spend: dict[str, float] = defaultdict(float)
    for event in costs:
        if event.user is not None:
            spend[event.user] += event.cost_usd
    threshold = share * total
    found = [
        Anomaly(
            kind="heavy_user",
            subject=user,
            value_usd=cost,
            threshold_usd=threshold,
            message=f"user {user} spent {usd(cost)}, {cost / total:.0%} of {usd(total)} "
            f"(above {share:.0%})",
            key=f"heavy_user|{period}|{user}",
        )
        for user, cost in spend.items()
        if total > 0 and cost > threshold
    ]
    return sorted(found, key=lambda a: -a.value_usd)


def expensive_runs(runs: Sequence[RunSummary], max_usd: float) -> list[Anomaly]:
    """Runs that cost more than ``max_usd``, dearest first."""
    found = [
        Anomaly(
            kind="expensive_run",
            subject=run.run_id,
            value_usd=run.cost_usd,
            threshold_usd=max_usd,
            message=f"run {run.run_id} ({run.attribution.get('agent') or 'no agent'}) cost "
            f"{usd(run.cost_usd)}, above {usd(max_usd)}",
            key=f"expensive_run|{run.run_id}",
        )
        for run in runs
        if run.cost_usd > max_usd
    ]
    return sorted(found, key=lambda a: -a.value_usd)


def daily_surges(daily: Mapping[str, float], factor: float = 2.0, days: int = 7) -> list[Anomaly]:
    """Days above ``factor`` times the mean of the ``days`` days before them."""
    items = list(daily.items())
    found = []
    for i in range(days, len(items)):
        day, spend = items[i]
        trailing = math.fsum(v for _, v in items[i - days : i]) / days
        if trailing > 0 and spend > factor * trailing:
            found.append(
                Anomaly(
                    kind="daily_surge",
                    subject=day,
                    value_usd=spend,
                    threshold_usd=factor * trailing,
                    message=f"{day} spent {usd(spend)}, {spend / trailing:.1f}x its trailing "
                    f"{days}-day average ({usd(trailing)})",
                    key=f"daily_surge|{day}",
                )
            )
    return found


def find_anomalies(
    events: Sequence[Event],
    daily: Mapping[str, float],
    rules: AlertRules,
    *,
    period: str = "",
    runs: Sequence[RunSummary] | None = None,
) -> list[Anomaly]:
    """Every anomaly the rules ask for, over these events and their daily series."""
    found: list[Anomaly] = []
    if rules.day_sigma is not None:
        found += day_spikes(daily, rules.day_sigma)
    if rules.surge_factor is not None:
        found += daily_surges(daily, rules.surge_factor, rules.surge_days)
    if rules.user_share is not None:
        found += heavy_users(events, rules.user_share, period)
    if rules.run_usd is not None:
        found += expensive_runs(runs if runs is not None else runs_of(events), rules.run_usd)
    return found


def month_bounds(now: float, tz: str = "UTC") -> tuple[datetime, datetime]:
    """The first instant of the month containing ``now`` and of the next month, in ``tz``."""
    moment = datetime.fromtimestamp(now, ZoneInfo(tz))
    start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if start.month == 12:
        following = start.replace(year=start.year + 1, month=1)
    else:
        following = start.replace(month=start.month + 1)
    return start, following


def budget_status(
    events: Iterable[Event], envelope_usd: float | None, now: float, tz: str = "UTC"
) -> BudgetStatus:
    """Month-to-date spend at ``now`` against a monthly envelope, and the run-rate projection."""
    start, following = month_bounds(now, tz)
    begin, end = start.timestamp(), following.timestamp()
    spent = math.fsum(e.cost_usd for e in cost_events(events) if begin <= e.ts <= now)
    days_in_month = calendar.monthrange(start.year, start.month)[1]
    # the share of the month gone, in calendar days (a month with a clock change is an
    # hour shorter or longer than its days)
    elapsed = max(days_in_month * (now - begin) / (end - begin), 1.0)
    projected = spent * days_in_month / elapsed
    return BudgetStatus(
        month=start.strftime("%Y-%m"),
        envelope_usd=envelope_usd,
        spent_usd=spent,
        days_elapsed=elapsed,
        days_in_month=days_in_month,
        projected_usd=projected,
        spent_ratio=spent / envelope_usd if envelope_usd else None,
        projected_ratio=projected / envelope_usd if envelope_usd else None,
        status=_status(spent, projected, envelope_usd),
    )


def _status(
    spent: float, projected: float, envelope: float | None
) -> Literal["ok", "at_risk", "over", "no_envelope"]:
    if not envelope:
        return "no_envelope"
    if spent >= envelope:
        return "over"
    return "at_risk" if projected > envelope else "ok"
