"""What will an agent cost before it ships? A cost model of one task, and its fit to events.

An agent task runs ``n`` model calls (steps). Every step re-sends the whole context so far:

    prompt tokens of step k = S + (k - 1) * (T + O)        (k = 1..n)
    output tokens of step k = O

where ``S`` is the system prompt plus the task's own input, ``T`` the tool output added per
step and ``O`` the model's output per step. A task's input therefore grows with ``n**2``:
``n*S + (T + O) * n*(n-1)/2``. A share ``cache_hit_rate`` of the prompt tokens of steps 2..n
may be read from a prompt cache. Each step is priced by ``PriceBook.cost`` (so long-context
tiers and cache prices apply per call).

The number of steps varies from task to task: it is modelled as a log-normal variable with
median ``steps_p50`` and 95th percentile ``steps_p95`` (``sigma = ln(p95 / p50) / 1.6449``),
rounded to the nearest whole step (at least 1) and capped at ``max_steps`` when given (a
``Limits.max_iterations``). Cost grows with ``n``, so the P50 and P95 cost of a task are the
costs of the P50 and P95 step counts; the mean cost (what a month costs) is the expectation
over the distribution. A month is 30 days.

The model prices every step count it follows, so a shape is refused when its steps reach past
``MAX_STEPS`` (100,000): a median, P95 or cap above it, or a P95 so far above the median that
the log-normal's tail (followed to a mass of 1e-7) runs past it without a ``max_steps`` cap.
An estimate therefore prices at most ``MAX_STEPS`` steps (well under a second).

``fit_shape(events)`` fits the model to recorded runs: ``steps_p50``/``steps_p95`` are the
percentiles of the runs' model calls, ``S`` and ``T + O`` the intercept and slope of a least-
squares line through each call's prompt tokens against its step index in its own run, ``O`` the
mean output tokens per call, and ``cache_hit_rate`` the cache-read share of the prompts of
steps 2..n.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .analytics import percentile, run_roots, runs_of
from .events import CostEvent, Event
from .pricing import PriceBook
from .usage import Usage

__all__ = [
    "MAX_STEPS",
    "Estimate",
    "TaskShape",
    "estimate",
    "fit_shape",
    "fitted_figures",
    "step_distribution",
]

DAYS_PER_MONTH = 30
#: The most steps a task shape may reach (median, P95, cap, or the tail followed without a cap).
MAX_STEPS = 100_000
_Z95 = 1.6448536269514722  # the standard normal's 95th percentile
_TAIL = 1e-7  # step counts beyond this tail mass are lumped into the last one kept
_Z_TAIL = NormalDist().inv_cdf(1.0 - _TAIL)  # where the distribution is followed to


class TaskShape(BaseModel):
    """The shape of one agent task: steps, prompt sizes and the model that runs it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(description="The model every step calls (priced by PriceBook).")
    steps_p50: float = Field(
        gt=0, le=MAX_STEPS, allow_inf_nan=False, description="Median model calls per task."
    )
    steps_p95: float = Field(
        gt=0,
        le=MAX_STEPS,
        allow_inf_nan=False,
        description="95th percentile of model calls per task.",
    )
    max_steps: int | None = Field(
        default=None, ge=1, le=MAX_STEPS, description="A cap on steps (max_iterations)."
    )
    system_prompt_tokens: int = Field(default=0, ge=0, description="System prompt plus task input.")
    tool_output_tokens: int = Field(default=0, ge=0, description="Tool output added per step.")
    output_tokens: int = Field(default=0, ge=0, description="Model output per step.")
    cache_hit_rate: float = Field(
        default=0.0,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="Share of the prompt of steps 2..n read from a cache.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> TaskShape:
        if self.steps_p95 < self.steps_p50:
            raise ValueError(
                f"steps_p95 ({self.steps_p95}) must be >= steps_p50 ({self.steps_p50})"
            )
        return self

    @model_validator(mode="after")
    def _tail_within_reach(self) -> TaskShape:
        if self.max_steps is None and self.log_tail_steps() > math.log(MAX_STEPS):
            raise ValueError(
                f"steps_p95 ({self.steps_p95:g}) is so far above steps_p50 "
                f"({self.steps_p50:g}) that the step count's tail runs to about "
                f"{math.exp(min(self.log_tail_steps(), 700.0)):.3g} steps, past the "
                f"{MAX_STEPS:,} the model follows: set max_steps (the agent's "
                "max_iterations) or bring steps_p95 closer to steps_p50"
            )
        return self

    def sigma(self) -> float:
        """The log-normal's sigma: ``ln(p95 / p50) / z95``."""
        return math.log(self.steps_p95 / self.steps_p50) / _Z95

    def log_tail_steps(self) -> float:
        """ln of the step count an uncapped distribution is followed to (tail mass 1e-7)."""
        return math.log(self.steps_p50) + self.sigma() * _Z_TAIL

    def prompt_tokens(self, step: int) -> int:
        """Prompt tokens of step ``step`` (1-based): everything said so far is re-sent."""
        return self.system_prompt_tokens + (step - 1) * (
            self.tool_output_tokens + self.output_tokens
        )

    def step_usage(self, step: int) -> Usage:
        """The usage of step ``step``."""
        prompt = self.prompt_tokens(step)
        cached = round(prompt * self.cache_hit_rate) if step > 1 else 0
        return Usage(
            input_tokens=prompt, output_tokens=self.output_tokens, cache_read_tokens=cached
        )


class Estimate(BaseModel):
    """Cost of one task (P50, P95, mean) and of a month of tasks."""

    model_config = ConfigDict(frozen=True)

    shape: TaskShape
    steps_p50: int
    steps_p95: int
    steps_mean: float
    cost_p50: float
    cost_p95: float
    cost_mean: float
    input_tokens_p50: int
    input_tokens_p95: int
    output_tokens_p50: int
    output_tokens_p95: int
    tasks_per_day: float
    monthly_usd: float
    cost_by_steps: dict[int, float] = Field(
        description="Cost of a task of N steps, for a few N: how cost grows with N."
    )


def _normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def step_distribution(shape: TaskShape) -> dict[int, float]:
    """P(steps = n) for n = 1, 2, ...: a rounded log-normal, capped at ``max_steps``."""
    median = shape.steps_p50
    sigma = shape.sigma()
    cap = shape.max_steps
    if sigma == 0:
        n = max(1, math.floor(median + 0.5))
        return {min(n, cap) if cap else n: 1.0}

    def below(x: float) -> float:  # P(continuous steps < x)
        return _normal_cdf((math.log(x) - math.log(median)) / sigma)

    probs: dict[int, float] = {}
    n, mass = 1, 0.0
    while True:
        p = below(n + 0.5) - mass
        mass += p
        if (cap is not None and n >= cap) or 1.0 - mass < _TAIL:
            probs[n] = p + (1.0 - mass)  # the tail (or everything above the cap)
            return probs
        probs[n] = p
        n += 1


def _quantile(probs: dict[int, float], q: float) -> int:
    acc = 0.0
    for n in sorted(probs):
        acc += probs[n]
        if acc >= q - 1e-12:
            return n
    return max(probs)


def _cumulative(shape: TaskShape, steps: int, prices: PriceBook) -> list[float]:
    """cost[n] of a task of n steps, for n = 0..steps."""
    costs = [0.0]
    for k in range(1, steps + 1):
        costs.append(costs[-1] + prices.cost(shape.model, shape.step_usage(k)))
    return costs


def _input_tokens(shape: TaskShape, steps: int) -> int:
    return sum(shape.prompt_tokens(k) for k in range(1, steps + 1))


def estimate(
    shape: TaskShape, *, tasks_per_day: float = 0.0, prices: PriceBook | None = None
) -> Estimate:
    """The cost of one task at P50, P95 and on average, and of ``tasks_per_day`` for a month."""
    _check_tasks_per_day(tasks_per_day)
    prices = prices or PriceBook()
    probs = step_distribution(shape)
    p50, p95 = _quantile(probs, 0.5), _quantile(probs, 0.95)
    samples = sorted(
        {1, 2, 5, 10, 20, 50, p50, p95} | ({shape.max_steps} if shape.max_steps else set())
    )
    costs = _cumulative(shape, max(max(probs), samples[-1]), prices)
    mean = math.fsum(p * costs[n] for n, p in probs.items())
    by_steps = {n: costs[n] for n in samples}
    return Estimate(
        shape=shape,
        steps_p50=p50,
        steps_p95=p95,
        steps_mean=math.fsum(p * n for n, p in probs.items()),
        cost_p50=costs[p50],
        cost_p95=costs[p95],
        cost_mean=mean,
        input_tokens_p50=_input_tokens(shape, p50),
        input_tokens_p95=_input_tokens(shape, p95),
        output_tokens_p50=p50 * shape.output_tokens,
        output_tokens_p95=p95 * shape.output_tokens,
        tasks_per_day=tasks_per_day,
        monthly_usd=mean * tasks_per_day * DAYS_PER_MONTH,
        cost_by_steps=by_steps,
    )


def _check_tasks_per_day(tasks_per_day: float) -> None:
    if not (math.isfinite(tasks_per_day) and tasks_per_day >= 0):
        raise ValueError(
            f"tasks_per_day must be a finite number of tasks >= 0 (got {tasks_per_day})"
        )


def _indexed_calls(events: Sequence[Event], task_class: str | None) -> list[tuple[int, CostEvent]]:
    """(step index within its own run, call) for every model call of the matching tasks."""
    roots = run_roots(events)
    wanted = {r.run_id for r in runs_of(events) if task_class in (None, r.task_class)}
    counters: Counter[str] = Counter()
    calls: list[tuple[int, CostEvent]] = []
    for event in sorted(events, key=lambda e: e.ts):
        if not isinstance(event, CostEvent) or event.kind != "llm" or event.run_id is None:
            continue
        if roots[event.run_id] in wanted:
            counters[event.run_id] += 1
            calls.append((counters[event.run_id], event))
    return calls


def _costliest_model(calls: Sequence[CostEvent]) -> str:
    """The model a fitted class is priced as: the one its calls spent most on (a class that
    mixes a cheap model's many calls with a dear one's few was priced as the cheap one, 8x
    under what it cost). ``--model`` prices another."""
    spent: dict[str, float] = {}
    for event in calls:
        if event.model:
            spent[event.model] = spent.get(event.model, 0.0) + event.cost_usd
    if not spent:
        raise ValueError("these calls name no model: pass --model to price the estimate")
    return max(spent, key=lambda name: spent[name])


def _line(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares intercept and slope of y on x (slope 0 when x never varies)."""
    n = len(points)
    mean_x = math.fsum(x for x, _ in points) / n
    mean_y = math.fsum(y for _, y in points) / n
    sxx = math.fsum((x - mean_x) ** 2 for x, _ in points)
    if sxx == 0:
        return mean_y, 0.0
    slope = math.fsum((x - mean_x) * (y - mean_y) for x, y in points) / sxx
    return mean_y - slope * mean_x, slope


def fit_shape(
    events: Sequence[Event], *, task_class: str | None = None, model: str | None = None
) -> TaskShape:
    """Fit a ``TaskShape`` to recorded runs (optionally of one task class)."""
    return TaskShape.model_validate(fitted_figures(events, task_class=task_class, model=model))


def fitted_figures(
    events: Sequence[Event], *, task_class: str | None = None, model: str | None = None
) -> dict[str, Any]:
    """The ``TaskShape`` fields fitted to recorded runs, not yet validated: figures to
    override (a ``max_steps`` for a long tail, say) before making the shape."""
    runs = [r for r in runs_of(events) if task_class in (None, r.task_class) and r.steps > 0]
    calls = _indexed_calls(events, task_class)
    if not runs or not calls:
        which = f" of task class {task_class!r}" if task_class else ""
        raise ValueError(f"no model calls{which} in these events to fit an estimate to")
    steps = [float(r.steps) for r in runs]
    intercept, slope = _line([(k - 1.0, float(e.input_tokens)) for k, e in calls])
    output = math.fsum(e.output_tokens for _, e in calls) / len(calls)
    later = [e for k, e in calls if k > 1]
    later_input = sum(e.input_tokens for e in later)
    used = model or _costliest_model([e for _, e in calls])
    return {
        "model": used,
        "steps_p50": percentile(steps, 0.5),
        "steps_p95": percentile(steps, 0.95),
        "system_prompt_tokens": max(round(intercept), 0),
        "tool_output_tokens": max(round(slope - output), 0),
        "output_tokens": round(output),
        "cache_hit_rate": sum(e.cache_read_tokens for e in later) / later_input
        if later_input
        else 0.0,
    }
