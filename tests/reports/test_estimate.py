"""The pre-launch cost model and the self-hosting break-even, against hand arithmetic."""

from __future__ import annotations

import math
import random
import time

import pytest

from budgetwarden import CostEvent, ModelPrice, PriceBook
from budgetwarden.breakeven import SelfHosted, breakeven
from budgetwarden.estimate import (
    MAX_STEPS,
    TaskShape,
    estimate,
    fit_shape,
    step_distribution,
)
from budgetwarden.events import Event

from .eventsets import at

# $1 / M input, $2 / M output, $0.10 / M cache reads
BOOK = PriceBook(
    overrides={
        "toy": ModelPrice(
            input_cost_per_token=1e-6,
            output_cost_per_token=2e-6,
            cache_read_input_token_cost=1e-7,
        )
    }
)
SHAPE = {
    "model": "toy",
    "system_prompt_tokens": 1000,
    "tool_output_tokens": 500,
    "output_tokens": 100,
}


def _cost(n: int) -> float:
    """Hand formula: n * 1000 in + 600 * n(n-1)/2 re-sent in, n * 100 out."""
    return (n * 1000 + 600 * n * (n - 1) / 2) * 1e-6 + n * 100 * 2e-6


def test_a_fixed_number_of_steps_costs_the_sum_of_growing_prompts() -> None:
    shape = TaskShape(steps_p50=4, steps_p95=4, **SHAPE)
    result = estimate(shape, tasks_per_day=100, prices=BOOK)
    # prompts 1000, 1600, 2200, 2800 = 7600 in; 400 out -> 0.0076 + 0.0008
    assert (result.steps_p50, result.steps_p95) == (4, 4)
    assert result.input_tokens_p50 == 7600 and result.output_tokens_p50 == 400
    assert result.cost_p50 == result.cost_p95 == result.cost_mean == pytest.approx(0.0084)
    assert result.monthly_usd == pytest.approx(25.2)  # 0.0084 * 100 tasks * 30 days


def test_cost_grows_quadratically_with_steps() -> None:
    result = estimate(TaskShape(steps_p50=4, steps_p95=4, **SHAPE), prices=BOOK)
    # 5 steps: 0.005 + 0.006 + 0.001; 10 steps: 0.010 + 0.027 + 0.002
    assert result.cost_by_steps[5] == pytest.approx(0.012)
    assert result.cost_by_steps[10] == pytest.approx(0.039)
    assert result.cost_by_steps[10] > 3 * result.cost_by_steps[5]


def test_variable_steps_give_p50_and_p95_of_the_log_normal() -> None:
    shape = TaskShape(steps_p50=4, steps_p95=8, **SHAPE)
    result = estimate(shape, tasks_per_day=1000, prices=BOOK)
    # sigma = ln 2 / 1.645; P(N <= 3) = 0.376, P(N <= 4) = 0.610; P(N <= 7) = 0.932, (<= 8) 0.957
    assert (result.steps_p50, result.steps_p95) == (4, 8)
    assert result.cost_p50 == pytest.approx(0.0084)
    assert result.cost_p95 == pytest.approx(0.0264)  # 0.008 + 600e-6 * 28 + 0.0016
    assert sum(step_distribution(shape).values()) == pytest.approx(1.0)


def test_the_mean_agrees_with_a_monte_carlo_of_the_same_model() -> None:
    shape = TaskShape(steps_p50=6, steps_p95=20, **SHAPE)
    result = estimate(shape, prices=BOOK)
    rng = random.Random(5)
    sigma = math.log(20 / 6) / 1.6448536
    steps = [
        max(math.floor(rng.lognormvariate(math.log(6), sigma) + 0.5), 1) for _ in range(200_000)
    ]
    sampled = sum(_cost(n) for n in steps) / len(steps)
    assert result.cost_mean == pytest.approx(sampled, rel=0.02)
    assert result.steps_mean == pytest.approx(sum(steps) / len(steps), rel=0.01)


def test_a_step_cap_bounds_the_tail() -> None:
    shape = TaskShape(steps_p50=4, steps_p95=8, max_steps=6, **SHAPE)
    result = estimate(shape, prices=BOOK)
    assert result.steps_p95 == 6
    assert result.cost_p95 == pytest.approx(_cost(6)) == pytest.approx(0.0162)
    assert max(step_distribution(shape)) == 6


@pytest.mark.parametrize(
    ("figures", "named"),
    [
        ({"steps_p95": 1e6}, "steps_p95"),
        ({"steps_p95": math.inf}, "steps_p95"),
        ({"steps_p95": math.nan}, "steps_p95"),
        ({"steps_p50": math.inf, "steps_p95": math.inf}, "steps_p50"),
        ({"steps_p95": 1000}, "max_steps"),  # a tail running to ~1e8 steps, uncapped
        ({"steps_p50": 1e-9, "steps_p95": 1}, "max_steps"),
        ({"steps_p95": 20, "max_steps": 10**9}, "max_steps"),
        ({"steps_p95": 20, "cache_hit_rate": math.nan}, "cache_hit_rate"),
    ],
)
def test_step_counts_beyond_reach_are_refused_with_the_field_named(
    figures: dict[str, float], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        TaskShape(**{"steps_p50": 5, **figures, **SHAPE})  # type: ignore[arg-type]


def test_the_longest_shapes_allowed_are_priced_in_well_under_a_few_seconds() -> None:
    started = time.perf_counter()
    capped = TaskShape(steps_p50=5, steps_p95=1000, max_steps=MAX_STEPS, **SHAPE)
    assert estimate(capped, prices=BOOK).steps_p95 == 1000
    widest = TaskShape(steps_p50=5, steps_p95=110, **SHAPE)  # tail to ~87,000 steps
    assert max(step_distribution(widest)) <= MAX_STEPS
    assert time.perf_counter() - started < 10


def test_a_month_of_infinitely_many_tasks_is_refused() -> None:
    shape = TaskShape(steps_p50=4, steps_p95=4, **SHAPE)
    for bad in (math.inf, math.nan, -1.0):
        with pytest.raises(ValueError, match="tasks_per_day"):
            estimate(shape, tasks_per_day=bad, prices=BOOK)


def test_cached_prompt_tokens_are_priced_as_cache_reads() -> None:
    shape = TaskShape(steps_p50=2, steps_p95=2, cache_hit_rate=0.5, **SHAPE)
    # step 1: 1000 in + 100 out = 0.0012; step 2: 1600 in, 800 cached:
    # 800 * 1e-6 + 800 * 1e-7 + 100 * 2e-6 = 0.00108
    assert estimate(shape, prices=BOOK).cost_p50 == pytest.approx(0.00228)


def _recorded(steps_per_run: list[int]) -> list[Event]:
    """Runs recorded from a 1200-token system prompt, 300 tool + 100 output tokens a step."""
    events: list[Event] = []
    for r, steps in enumerate(steps_per_run):
        for k in range(1, steps + 1):
            events.append(
                CostEvent(
                    ts=at(1, 3600 * r + k), run_id=f"run{r}", task_class="qa", model="toy",
                    input_tokens=1200 + (k - 1) * 400, output_tokens=100,
                    cache_read_tokens=(1200 + (k - 1) * 400) // 4 if k > 1 else 0,
                )
            )  # fmt: skip
    return events


def test_fit_recovers_the_shape_of_recorded_runs() -> None:
    shape = fit_shape(_recorded([2, 3, 3, 4, 10]))
    assert shape.model == "toy"
    assert (shape.system_prompt_tokens, shape.tool_output_tokens, shape.output_tokens) == (
        1200,
        300,
        100,
    )
    assert shape.steps_p50 == 3
    assert shape.steps_p95 == pytest.approx(8.8)  # rank 3.8 of [2,3,3,4,10]: 4 + 0.8 * 6
    assert shape.cache_hit_rate == pytest.approx(0.25)
    with pytest.raises(ValueError, match="task class 'other'"):
        fit_shape(_recorded([2]), task_class="other")


def test_self_hosting_against_the_api_and_the_break_even_volume() -> None:
    hosting = SelfHosted(
        gpu_usd_per_hour=2, tokens_per_second=1000, utilisation=0.5, ops_usd_per_month=560
    )
    # blended API price 0.75 * $1/M + 0.25 * $3/M = $1.50 / M tokens
    low = breakeven("toy", 10e6, hosting, input_usd_per_token=1e-6, output_usd_per_token=3e-6)
    assert low.api_usd_per_token == pytest.approx(1.5e-6)
    assert low.api_monthly_usd == pytest.approx(450.0)  # 10M * 30 * 1.5e-6
    assert low.gpus == 1  # one GPU serves 1000 * 0.5 * 86400 = 43.2M tokens a day
    assert low.self_hosted_monthly_usd == pytest.approx(2000.0)  # 2 * 720 + 560
    assert low.cheaper == "api"
    # One GPU's capacity costs $1944 a month through the API against $1440 rented. 2 GPUs
    # cross at $3440 / (30 * 1.5e-6) = 76.4M, but a third GPU ($4880 at 86.4M) puts the API
    # ($3888) below again; so do the 4th. From 5 GPUs on every step is cheaper self-hosted
    # ((1944 + 560) / 504 = 4.97), and the 4-GPU step crosses at $6320 / 4.5e-5 = 140.4M.
    assert low.breakeven_tokens_per_day == pytest.approx(6320 / 4.5e-5)
    assert low.breakeven_gpus == 4
    high = breakeven("toy", 80e6, hosting, input_usd_per_token=1e-6, output_usd_per_token=3e-6)
    assert (high.gpus, high.cheaper) == (2, "self-hosted")
    assert high.self_hosted_monthly_usd == pytest.approx(3440.0)


@pytest.mark.parametrize(
    ("gpu_usd", "tokens_per_second", "ops", "price"),
    [(2, 1000, 560, 1.5e-6), (1, 200, 20_000, 4.2e-6), (2.5, 2000, 500, 5e-6), (3, 1400, 0, 2e-6)],
)
def test_above_the_break_even_volume_self_hosting_is_always_cheaper(
    gpu_usd: float, tokens_per_second: float, ops: float, price: float
) -> None:
    hosting = SelfHosted(
        gpu_usd_per_hour=gpu_usd, tokens_per_second=tokens_per_second, ops_usd_per_month=ops
    )
    found = breakeven("toy", 1.0, hosting, input_usd_per_token=price, output_usd_per_token=price)
    volume = found.breakeven_tokens_per_day
    assert volume is not None
    capacity = hosting.tokens_per_gpu_day
    for step in range(1, 400):  # every GPU step's edges from the break-even up, and between
        for v in (volume + step * capacity / 7, math.ceil(volume / capacity + step) * capacity):
            api = v * 30 * price
            assert api >= hosting.monthly_usd(v) - 1e-6, (v, api, hosting.monthly_usd(v))
    just_below = [volume - capacity * f for f in (1e-9, 0.01, 0.3, 1.0, 2.5) if volume > 0]
    assert any(v * 30 * price < hosting.monthly_usd(v) for v in just_below) or volume == 0


@pytest.mark.parametrize(
    ("figures", "named"),
    [
        ({"input_usd_per_token": -1e-6}, "input_usd_per_token"),
        ({"output_usd_per_token": math.nan}, "output_usd_per_token"),
        ({"tokens_per_day": math.inf}, "tokens_per_day"),
    ],
)
def test_negative_prices_and_endless_volumes_are_refused(
    figures: dict[str, float], named: str
) -> None:
    hosting = SelfHosted(gpu_usd_per_hour=2, tokens_per_second=1000)
    given = {"input_usd_per_token": 1e-6, "output_usd_per_token": 3e-6, **figures}
    with pytest.raises(ValueError, match=named):
        breakeven("toy", given.pop("tokens_per_day", 1e6), hosting, **given)
    with pytest.raises(ValueError, match="gpu_usd_per_hour"):
        SelfHosted(gpu_usd_per_hour=math.inf, tokens_per_second=1000)


def test_no_break_even_when_the_api_serves_a_gpus_capacity_for_less() -> None:
    hosting = SelfHosted(gpu_usd_per_hour=2, tokens_per_second=1000, utilisation=0.5)
    cheap = breakeven("toy", 1e6, hosting, input_usd_per_token=1e-7, output_usd_per_token=1e-7)
    # 43.2M tokens * 30 days * $0.10/M = $129.6 a month < $1440 for the GPU
    assert cheap.breakeven_tokens_per_day is None and cheap.cheaper == "api"


def test_a_class_that_mixes_models_is_priced_as_the_one_it_spent_most_on() -> None:
    """Three calls on a cheap model and two on a dear one: priced as the cheap one (the
    most frequent), the fit came out 8x under what the class cost."""
    calls = [("cheap", 0.0001)] * 3 + [("dear", 0.002)] * 2
    events: list[Event] = [
        CostEvent(
            ts=at(1, k), run_id="r", task_class="qa", model=model, cost_usd=cost, input_tokens=100
        )
        for k, (model, cost) in enumerate(calls)
    ]
    assert fit_shape(events).model == "dear"
    assert fit_shape(events, model="cheap").model == "cheap"
