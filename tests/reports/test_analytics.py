"""Every figure of the hand event set, checked against numbers worked out by hand.

See ``eventsets.py`` for the runs; the arithmetic is written next to each expectation.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from budgetwarden import CostEvent
from budgetwarden.alerts import AlertRules
from budgetwarden.analytics import (
    cache_hit_rates,
    daily_spend,
    percentile,
    runs_of,
    spend_by,
    success_by_task_class,
    task_class_stats,
    total_spend,
)
from budgetwarden.anomalies import (
    budget_status,
    daily_surges,
    day_spikes,
    expensive_runs,
    find_anomalies,
    heavy_users,
)
from budgetwarden.events import Event
from budgetwarden.spend_report import build_report

from .eventsets import DAY, JAN_1, Call, at, hand_events, run_events

approx = pytest.approx


def _by(dimension: str) -> dict[str | None, float]:
    return {row.key: row.cost_usd for row in spend_by(hand_events(), dimension)}


def test_total_spend_counts_cost_events_only() -> None:
    # 1+1+1+1+0+2+1+2+2+10; the alert and the notice carry no spend
    assert total_spend(hand_events()) == approx(21.0)


def test_spend_by_agent_model_user_workspace_workflow_and_task_class() -> None:
    assert _by("agent") == approx({"researcher": 15.0, "writer": 5.0, "summarizer": 1.0})
    # tool calls show as tool:<name> under the model dimension
    assert _by("model") == approx({"gpt-4o": 15.6, "gpt-4o-mini": 5.0, "tool:search": 0.4})
    assert _by("user") == approx(
        {"whale": 9.0, "u1": 2.0, "u2": 2.0, "u3": 2.0, "u4": 2.0, "u5": 2.0, "u6": 2.0}
    )
    assert _by("workspace") == approx({"acme": 12.0, "bigco": 9.0})
    assert _by("workflow") == approx({"triage": 12.0, "deep-dive": 9.0})
    assert _by("task_class") == approx({"research": 13.0, "extraction": 8.0})
    assert _by("tool") == approx({None: 20.6, "search": 0.4})


def test_spend_rows_carry_calls_runs_tokens_and_share_dearest_first() -> None:
    rows = spend_by(hand_events(), "agent")
    assert [r.key for r in rows] == ["researcher", "writer", "summarizer"]
    researcher, writer, summarizer = rows
    assert (researcher.calls, researcher.runs) == (10, 7)  # R1 has a tool call; R11 3 calls
    assert (researcher.input_tokens, researcher.output_tokens) == (36500, 3650)
    assert researcher.share == approx(15 / 21)
    assert (writer.calls, writer.runs, writer.input_tokens, writer.output_tokens) == (
        6,
        5,
        8000,
        800,
    )
    assert (summarizer.calls, summarizer.runs, summarizer.cache_read_tokens) == (1, 1, 2000)


def test_a_task_with_nested_runs_counts_once_in_every_spend_table() -> None:
    users = {row.key: row for row in spend_by(hand_events(), "user")}
    assert (users["u5"].calls, users["u5"].runs) == (2, 1)  # R5 and its child R5c: one task
    tasks = len(runs_of(hand_events()))
    for dimension in ("workspace", "workflow"):
        assert sum(row.runs for row in spend_by(hand_events(), dimension)) == tasks == 12


def test_a_flat_daily_series_has_no_spike_whatever_order_its_costs_add_in() -> None:
    orders = [(0.1, 0.2, 0.3), (0.3, 0.2, 0.1), (0.2, 0.3, 0.1), (0.3, 0.1, 0.2)]
    events: list[Event] = []
    for day, costs in enumerate(orders * 3, start=1):
        calls = [Call(cost) for cost in costs]
        events += run_events(
            f"R{day}", day, calls, user="u1", agent="a", task_class="t", success=True
        )
    daily = daily_spend(events)
    assert set(daily.values()) == {0.6}
    assert daily == {row.key: row.cost_usd for row in spend_by(events, "day")}
    assert day_spikes(daily, 2.0) == []


def test_spend_by_day_fills_days_without_spend_in_calendar_order() -> None:
    daily = daily_spend(hand_events())
    assert list(daily) == [f"2026-01-{d:02d}" for d in range(1, 11)]
    assert list(daily.values()) == approx([1, 1, 1, 1, 0, 2, 1, 2, 2, 10])
    days = [r.key for r in spend_by(hand_events(), "day")]
    assert days == sorted(days) and "2026-01-05" not in days  # rows only for days with calls


def test_days_follow_the_time_zone() -> None:
    # 12:00 UTC on Jan 1 is 01:00 on Jan 2 in Auckland (UTC+13 in January)
    spend = daily_spend(hand_events(), tz="Pacific/Auckland")
    assert next(iter(spend)) == "2026-01-02"
    assert spend["2026-01-11"] == approx(10.0)


def test_percentiles_interpolate_between_ranks() -> None:
    assert percentile([1, 1, 1, 1, 9], 0.95) == approx(7.4)  # rank 3.8: 1 + 0.8 * 8
    assert percentile([3, 1, 2], 0.5) == 2
    assert percentile([5], 0.95) == 5
    assert percentile([], 0.5) == 0.0


def test_runs_fold_children_into_the_task_that_started_them() -> None:
    runs = {r.run_id: r for r in runs_of(hand_events())}
    assert sorted(runs, key=lambda k: int(k[1:])) == [f"R{i}" for i in range(1, 13)]
    r5 = runs["R5"]
    assert (r5.cost_usd, r5.steps, r5.tokens) == (approx(2.0), 2, 5500)
    assert r5.success is True  # the child's success=False is not the task's outcome
    assert r5.models == ["gpt-4o", "gpt-4o-mini"]
    assert (runs["R1"].steps, runs["R1"].tool_calls, runs["R1"].cost_usd) == (1, 1, approx(1.0))


def test_p50_and_p95_of_cost_tokens_and_steps_per_task_class() -> None:
    stats = {s.task_class: s for s in task_class_stats(runs_of(hand_events()))}
    ex, re = stats["extraction"], stats["research"]
    # extraction: 7 runs; costs [1,1,1,1,1,1,2], tokens [550,1100,1100,1100,1100,2200,5500]
    assert (ex.runs, ex.cost_usd) == (7, approx(8.0))
    assert (ex.cost_p50, ex.cost_p95) == (approx(1.0), approx(1.7))  # rank 5.7: 1 + 0.7
    assert (ex.tokens_p50, ex.tokens_p95) == (approx(1100), approx(4510))  # 2200 + 0.7*3300
    assert (ex.steps_p50, ex.steps_p95) == (approx(1.0), approx(1.7))
    # research: 5 runs; costs [1,1,1,1,9], tokens [1100,1100,2200,3300,33000], steps [1,1,1,2,3]
    assert (re.runs, re.cost_usd) == (5, approx(13.0))
    assert (re.cost_p50, re.cost_p95) == (approx(1.0), approx(7.4))
    assert (re.tokens_p50, re.tokens_p95) == (approx(2200), approx(27060))  # 3300 + 0.8*29700
    assert (re.steps_p50, re.steps_p95) == (approx(1.0), approx(2.8))


def test_success_rate_and_cost_per_successful_task() -> None:
    rows = {s.task_class: s for s in success_by_task_class(runs_of(hand_events()))}
    ex, re, every = rows["extraction"], rows["research"], rows["(all)"]
    # extraction: R1 T, R2 F, R5 T, R6 T, R9 T, R10 T, R12 T -> 6 of 7, $8 / 6
    assert (ex.runs, ex.known, ex.succeeded) == (7, 7, 6)
    assert ex.success_rate == approx(6 / 7)
    assert ex.cost_per_success == approx(8 / 6)
    # research: R3 T, R7 F, R11 F known (R4, R8 unknown) -> 1 of 3, ($1 + $1 + $9) / 1
    assert (re.runs, re.known, re.succeeded) == (5, 3, 1)
    assert re.success_rate == approx(1 / 3)
    assert (re.cost_usd_known, re.cost_per_success) == (approx(11.0), approx(11.0))
    # all: 7 of 10 known, $19 / 7
    assert (every.runs, every.known, every.succeeded) == (12, 10, 7)
    assert every.success_rate == approx(0.7)
    assert every.cost_per_success == approx(19 / 7)


def test_cache_hit_rate_is_cache_reads_over_input_tokens_per_model() -> None:
    rows = {c.model: c for c in cache_hit_rates(hand_events())}
    # gpt-4o: input 1000+2000+3000+1000+1000+1000+30000+1000, reads 400+1500+15000
    assert (rows["gpt-4o"].input_tokens, rows["gpt-4o"].cache_read_tokens) == (40000, 16900)
    assert rows["gpt-4o"].hit_rate == approx(0.4225)
    # gpt-4o-mini: input 2000+4000+500+1000+1000, reads 2000+500
    assert rows["gpt-4o-mini"].hit_rate == approx(2500 / 8500)
    assert [c.model for c in cache_hit_rates(hand_events())] == ["gpt-4o", "gpt-4o-mini"]


def test_a_day_above_mean_plus_two_sigma_is_a_spike() -> None:
    # series [1,1,1,1,0,2,1,2,2,10]: mean 2.1, population sigma 2.7 -> threshold 7.5
    spikes = day_spikes(daily_spend(hand_events()), 2.0)
    assert [(a.subject, a.value_usd) for a in spikes] == [("2026-01-10", approx(10.0))]
    assert spikes[0].threshold_usd == approx(7.5)
    assert day_spikes({"a": 1.0, "b": 50.0}, 2.0) == []  # fewer than 3 days: no verdict


def test_a_day_above_twice_its_trailing_seven_day_average_is_a_surge() -> None:
    surges = daily_surges(daily_spend(hand_events()), 2.0, 7)
    # Jan 8: 2 vs 2 x 7/7 (not above); Jan 9: 2 vs 2 x 8/7; Jan 10: 10 vs 2 x 9/7
    assert [a.subject for a in surges] == ["2026-01-10"]
    assert surges[0].threshold_usd == approx(18 / 7)


def test_a_user_above_ten_percent_of_the_total_is_flagged() -> None:
    heavy = heavy_users(hand_events(), 0.10)
    # whale 9 / 21 = 42.9 %; every other user 2 / 21 = 9.5 %
    assert [(a.subject, a.value_usd, a.threshold_usd) for a in heavy] == [
        ("whale", approx(9.0), approx(2.1))
    ]


def test_a_run_above_the_dollar_figure_is_flagged_with_its_children() -> None:
    runs = runs_of(hand_events())
    assert [a.subject for a in expensive_runs(runs, 5.0)] == ["R11"]
    # R5 costs 1 + 1 with its child: above 1.5 only when folded
    assert [a.subject for a in expensive_runs(runs, 1.5)] == ["R11", "R5"]


def test_month_end_projection_is_the_linear_run_rate() -> None:
    now = at(11, 0)  # Jan 11 00:00: 10 days elapsed
    status = budget_status(hand_events(), 25.0, now)
    assert status.month == "2026-01" and status.days_in_month == 31
    assert status.days_elapsed == approx(10.0)
    assert status.spent_usd == approx(21.0)
    assert status.projected_usd == approx(65.1)  # 21 * 31 / 10
    assert (status.spent_ratio, status.projected_ratio) == (approx(0.84), approx(2.604))
    assert status.status == "at_risk"
    assert budget_status(hand_events(), 100.0, now).status == "ok"  # 65.1 < 100
    assert budget_status(hand_events(), 20.0, now).status == "over"
    assert budget_status(hand_events(), None, now).status == "no_envelope"


@pytest.mark.parametrize(
    ("tz", "end_of_month"),
    [("Europe/Paris", "2026-03-31T23:59:59"), ("America/New_York", "2026-11-30T23:59:59")],
)
def test_months_with_a_clock_change_elapse_in_calendar_days(tz: str, end_of_month: str) -> None:
    """March in Paris is an hour short, November in New York an hour long: one second before
    the month ends, all of its days have elapsed, and the projection is the spend."""
    now = datetime.fromisoformat(end_of_month).replace(tzinfo=ZoneInfo(tz)).timestamp()
    spend = [CostEvent(kind="llm", ts=now - 10, cost_usd=31.0)]
    status = budget_status(spend, 31.02, now, tz)
    assert status.days_elapsed == approx(status.days_in_month, abs=1e-3)
    assert status.projected_usd == approx(31.0, abs=1e-3) and status.status == "ok"


def test_projection_in_the_first_hours_counts_a_whole_day() -> None:
    # R1's two calls are at 12:00 and 12:01; at 12:02, $1 spent and half a day elapsed,
    # floored to one day: 1 * 31 / 1
    status = budget_status(hand_events(), 25.0, JAN_1 + 0.5 * DAY + 120)
    assert status.spent_usd == approx(1.0)
    assert status.projected_usd == approx(31.0)


def test_find_anomalies_applies_every_rule_and_turns_rules_off() -> None:
    events = hand_events()
    rules = AlertRules(run_usd=5.0)
    found = find_anomalies(events, daily_spend(events), rules, period="2026-01")
    assert sorted(a.key for a in found) == [
        "daily_surge|2026-01-10",
        "day_spike|2026-01-10",
        "expensive_run|R11",
        "heavy_user|2026-01|whale",
    ]
    off = AlertRules(day_sigma=None, surge_factor=None, user_share=None, run_usd=None)
    assert find_anomalies(events, daily_spend(events), off) == []


def test_the_report_puts_every_figure_together() -> None:
    report = build_report(
        hand_events(), rules=AlertRules(monthly_envelope_usd=25.0, run_usd=5.0), now=at(11, 0)
    )
    assert (report.events, report.calls, report.runs) == (19, 17, 12)
    assert (report.alerts, report.notices) == (1, 1)
    assert report.total_usd == approx(21.0)
    assert report.budget.projected_usd == approx(65.1)
    assert len(report.anomalies) == 4
    assert report.by["agent"][0].key == "researcher"
    data = report.model_dump(mode="json")
    assert data["daily"]["2026-01-05"] == 0.0
    assert data["success"][-1]["task_class"] == "(all)"
