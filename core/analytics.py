"""Where the money went: pure functions over events (no I/O, no clock).

Definitions every report, the dashboard and the alert rules share:

- **Spend** is the sum of ``CostEvent.cost_usd`` (model and tool calls). Alerts and notices
  carry no spend.
- **Day** is the calendar date of an event's ``ts`` in the report's time zone (UTC unless
  told). A daily series runs over every calendar day from the first to the last event, days
  without spend included as $0.
- **A run** (a task) is a root run together with every run nested under it (its
  ``parent_run_id`` chain), as its caps count them: a sub-agent's calls count for the task
  that started it. Events without a ``run_id`` count in spend but belong to no run. A run's
  attribution (agent, task class, user, ...) is that of its first event.
- **Tokens of a run**: its input plus output tokens. **Steps**: its model calls.
- **Percentiles** (P50, P95) interpolate linearly between the two nearest ranks of the sorted
  values (Hyndman & Fan type 7, numpy's default): with ``n`` values sorted ``x[0..n-1]`` the
  ``p``-th percentile is ``x[i] + f * (x[i+1] - x[i])`` where ``i + f = p * (n - 1)``.
- **Success**: the last non-null ``success`` on an event of the root run itself. A run with
  none has an unknown outcome and is left out of the success rate. **Success rate** =
  successful runs / runs with a known outcome. **Cost per successful task** = the spend of
  every run with a known outcome (failures included: they are what success cost) / the number
  of successful runs.
- **Cache hit rate** of a model = cache-read tokens / input tokens over its model calls
  (``input_tokens`` counts cached tokens too, so the rate lies in [0, 1]).
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict

from .events import CostEvent, Event

__all__ = [
    "DIMENSIONS",
    "CacheRow",
    "RunSummary",
    "SpendRow",
    "SuccessRow",
    "TaskClassStats",
    "cache_hit_rates",
    "cost_events",
    "daily_spend",
    "day_of",
    "percentile",
    "run_roots",
    "run_stats",
    "runs_of",
    "spend_by",
    "success_by_task_class",
    "task_class_stats",
    "total_spend",
]

#: What spend can be grouped by.
DIMENSIONS = (
    "agent",
    "workflow",
    "user",
    "workspace",
    "model",
    "task_class",
    "day",
    "provider",
    "feature",
    "key",
    "tool",
)


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True)


class SpendRow(_Row):
    """Spend of one value of a dimension (``key`` None: events without that attribute)."""

    key: str | None
    cost_usd: float
    share: float
    calls: int
    runs: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int


class TaskClassStats(_Row):
    """Per-run distribution of one task class: cost, tokens and steps at P50 and P95."""

    task_class: str | None
    runs: int
    cost_usd: float
    cost_p50: float
    cost_p95: float
    tokens_p50: float
    tokens_p95: float
    steps_p50: float
    steps_p95: float


class SuccessRow(_Row):
    """Success rate and cost per successful run of one task class (None: all of them)."""

    task_class: str | None
    runs: int
    known: int
    succeeded: int
    success_rate: float | None
    cost_usd_known: float
    cost_per_success: float | None


class CacheRow(_Row):
    """Prompt-cache use of one model."""

    model: str
    input_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    hit_rate: float | None


@dataclass(slots=True)
class RunSummary:
    """One root run with its nested runs folded in: attribution, totals and outcome."""

    run_id: str
    started: float
    ended: float
    attribution: dict[str, str | None] = field(default_factory=dict)
    steps: int = 0
    tool_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    success: bool | None = None
    models: list[str] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        """Input plus output tokens of the run."""
        return self.input_tokens + self.output_tokens

    @property
    def task_class(self) -> str | None:
        """The run's task class."""
        return self.attribution.get("task_class")


# ====================================================================== spend


def cost_events(events: Iterable[Event]) -> list[CostEvent]:
    """The events that carry spend."""
    return [e for e in events if isinstance(e, CostEvent)]


def total_spend(events: Iterable[Event]) -> float:
    """Dollars spent by these events."""
    return math.fsum(e.cost_usd for e in cost_events(events))


def day_of(ts: float, tz: str | ZoneInfo = "UTC") -> str:
    """The ISO calendar date of epoch seconds ``ts`` in time zone ``tz``."""
    return _day_of_block(int(ts // _BLOCK), str(tz))


#: UTC offsets are whole multiples of 15 minutes, so no local midnight falls strictly inside
#: a 15-minute block of epoch time: one date per block, computed once.
_BLOCK = 900


@functools.lru_cache(maxsize=65536)
def _day_of_block(block: int, tz: str) -> str:
    return datetime.fromtimestamp(block * _BLOCK, ZoneInfo(tz)).date().isoformat()


@dataclass(slots=True)
class _Acc:
    costs: list[float] = field(default_factory=list)
    runs: set[str] = field(default_factory=set)
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0

    def add(self, event: CostEvent, roots: Mapping[str, str]) -> None:
        self.costs.append(event.cost_usd)
        if event.run_id is not None:
            self.runs.add(roots.get(event.run_id, event.run_id))
        self.input_tokens += event.input_tokens
        self.output_tokens += event.output_tokens
        self.cache_read_tokens += event.cache_read_tokens


def _value(event: CostEvent, dimension: str, tz: str) -> str | None:
    if dimension == "day":
        return day_of(event.ts, tz)
    if dimension == "model" and event.kind == "tool":
        return f"tool:{event.tool}"
    value = getattr(event, dimension)
    return None if value is None else str(value)


def spend_by(events: Iterable[Event], dimension: str, *, tz: str = "UTC") -> list[SpendRow]:
    """Spend per value of ``dimension`` (one of ``DIMENSIONS``), dearest first (days in order).

    Tool calls appear under the model dimension as ``tool:<name>``; events without the
    attribute are grouped under ``None``.
    """
    if dimension not in DIMENSIONS:
        raise ValueError(f"cannot group by {dimension!r}: use one of {', '.join(DIMENSIONS)}")
    ZoneInfo(tz)  # an unknown zone fails here, with its name
    costs = cost_events(events)
    roots = run_roots(costs)  # a run is a task: a root run with every run nested under it
    groups: dict[str | None, _Acc] = defaultdict(_Acc)
    for event in costs:
        groups[_value(event, dimension, tz)].add(event, roots)
    total = math.fsum(c for acc in groups.values() for c in acc.costs)
    rows = [_spend_row(key, acc, total) for key, acc in groups.items()]
    if dimension == "day":
        return sorted(rows, key=lambda r: r.key or "")
    return sorted(rows, key=lambda r: (-r.cost_usd, r.key is None, r.key or ""))


def _spend_row(key: str | None, acc: _Acc, total: float) -> SpendRow:
    cost = math.fsum(acc.costs)
    return SpendRow(
        key=key,
        cost_usd=cost,
        share=cost / total if total > 0 else 0.0,
        calls=len(acc.costs),
        runs=len(acc.runs),
        input_tokens=acc.input_tokens,
        output_tokens=acc.output_tokens,
        cache_read_tokens=acc.cache_read_tokens,
    )


def daily_spend(
    events: Iterable[Event],
    *,
    tz: str = "UTC",
    start: date | None = None,
    end: date | None = None,
) -> dict[str, float]:
    """Spend per calendar day, every day from the first to the last (or ``start``..``end``)."""
    ZoneInfo(tz)
    costs: dict[str, list[float]] = defaultdict(list)
    for event in cost_events(events):
        costs[day_of(event.ts, tz)].append(event.cost_usd)
    spend = {day: math.fsum(day_costs) for day, day_costs in costs.items()}  # as spend_by
    if not spend and (start is None or end is None):
        return {}
    first = start or date.fromisoformat(min(spend))
    last = end or date.fromisoformat(max(spend))
    days = (last - first).days + 1
    series = ((first + timedelta(days=i)).isoformat() for i in range(max(days, 0)))
    return {day: spend.get(day, 0.0) for day in series}


# ====================================================================== runs


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..1) by linear interpolation between ranks; 0.0 if empty."""
    if not 0 <= p <= 1:
        raise ValueError(f"p must be in [0, 1] (got {p})")
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = p * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (rank - low) * (ordered[high] - ordered[low])


def run_roots(events: Iterable[Event]) -> dict[str, str]:
    """run id -> the id of the root run it is nested under (itself for a root)."""
    parents = {e.run_id: e.parent_run_id for e in events if e.run_id is not None}
    roots: dict[str, str] = {}
    for run_id in parents:
        node, seen = run_id, {run_id}
        while (parent := parents.get(node)) is not None and parent not in seen:
            seen.add(parent)
            node = parent
        roots[run_id] = node
    return roots


_ATTRIBUTION = ("agent", "workflow", "task_class", "user", "workspace", "key", "feature")


def runs_of(events: Iterable[Event]) -> list[RunSummary]:
    """Every root run, children folded in, in order of start."""
    ordered = sorted(events, key=lambda e: e.ts)
    roots = run_roots(ordered)
    runs: dict[str, RunSummary] = {}
    for event in ordered:
        if event.run_id is None:
            continue
        root = roots[event.run_id]
        run = runs.get(root)
        if run is None:
            attribution = {name: getattr(event, name) for name in _ATTRIBUTION}
            run = runs[root] = RunSummary(root, event.ts, event.ts, attribution)
        _add_to_run(run, event, own=event.run_id == root)
    return list(runs.values())


def _add_to_run(run: RunSummary, event: Event, *, own: bool) -> None:
    run.ended = max(run.ended, event.ts)
    success: Any = getattr(event, "success", None)
    if own and isinstance(success, bool):
        run.success = success
    if not isinstance(event, CostEvent):
        return
    run.cost_usd += event.cost_usd
    if event.kind == "tool":
        run.tool_calls += 1
        return
    run.steps += 1
    run.input_tokens += event.input_tokens
    run.output_tokens += event.output_tokens
    if event.model and event.model not in run.models:
        run.models.append(event.model)


def _by_task_class(runs: Iterable[RunSummary]) -> dict[str | None, list[RunSummary]]:
    groups: dict[str | None, list[RunSummary]] = defaultdict(list)
    for run in runs:
        groups[run.task_class].append(run)
    return dict(sorted(groups.items(), key=lambda kv: (kv[0] is None, kv[0] or "")))


def run_stats(task_class: str | None, runs: Sequence[RunSummary]) -> TaskClassStats:
    """P50 and P95 of cost, tokens and steps over these runs, labelled ``task_class``."""
    costs = [r.cost_usd for r in runs]
    tokens = [float(r.tokens) for r in runs]
    steps = [float(r.steps) for r in runs]
    return TaskClassStats(
        task_class=task_class,
        runs=len(runs),
        cost_usd=math.fsum(costs),
        cost_p50=percentile(costs, 0.5),
        cost_p95=percentile(costs, 0.95),
        tokens_p50=percentile(tokens, 0.5),
        tokens_p95=percentile(tokens, 0.95),
        steps_p50=percentile(steps, 0.5),
        steps_p95=percentile(steps, 0.95),
    )


def task_class_stats(runs: Sequence[RunSummary]) -> list[TaskClassStats]:
    """P50 and P95 of cost, tokens and steps per run, for each task class."""
    return [run_stats(tc, group) for tc, group in _by_task_class(runs).items()]


def _success_row(task_class: str | None, group: Sequence[RunSummary]) -> SuccessRow:
    known = [r for r in group if r.success is not None]
    succeeded = sum(1 for r in known if r.success)
    spend = math.fsum(r.cost_usd for r in known)
    return SuccessRow(
        task_class=task_class,
        runs=len(group),
        known=len(known),
        succeeded=succeeded,
        success_rate=succeeded / len(known) if known else None,
        cost_usd_known=spend,
        cost_per_success=spend / succeeded if succeeded else None,
    )


def success_by_task_class(runs: Sequence[RunSummary]) -> list[SuccessRow]:
    """Success rate and cost per successful run for each task class, then for all runs."""
    rows = [_success_row(tc, group) for tc, group in _by_task_class(runs).items()]
    return [*rows, _success_row(None, runs).model_copy(update={"task_class": "(all)"})]


def cache_hit_rates(events: Iterable[Event]) -> list[CacheRow]:
    """Cache-read tokens / input tokens per model, for model calls, busiest model first."""
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for event in cost_events(events):
        if event.kind == "llm" and event.model:
            acc = sums[event.model]
            acc[0] += event.input_tokens
            acc[1] += event.cache_read_tokens
            acc[2] += event.cache_write_tokens
    rows = [
        CacheRow(
            model=model,
            input_tokens=inp,
            cache_read_tokens=read,
            cache_write_tokens=write,
            hit_rate=read / inp if inp else None,
        )
        for model, (inp, read, write) in sums.items()
    ]
    return sorted(rows, key=lambda r: (-r.input_tokens, r.model))
