"""Alert rules: each fires once per crossing, to the sinks and to the callback."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from budgetwarden import BudgetAlert, CostEvent, ListSink, Notice, Policy, Warden
from budgetwarden.alerts import AlertEvaluator, AlertRules, Firing
from budgetwarden.store import SQLiteEventStore

from .eventsets import at, hand_events

RULES = AlertRules(monthly_envelope_usd=25.0, run_usd=5.0)
FIRST_KEYS = [
    "daily_surge|2026-01-10",
    "day_spike|2026-01-10",
    "envelope_projection|2026-01",
    "envelope|2026-01|0.5",
    "envelope|2026-01|0.8",
    "expensive_run|R11",
    "heavy_user|2026-01|whale",
]


def _evaluator(**kwargs: object) -> tuple[AlertEvaluator, ListSink, list[Firing]]:
    sink, received = ListSink(), []
    evaluator = AlertEvaluator(
        RULES,
        sinks=[sink],
        callback=received.append,
        **kwargs,  # type: ignore[arg-type]
    )
    return evaluator, sink, received


def test_every_rule_fires_once_to_the_sinks_and_the_callback() -> None:
    evaluator, sink, received = _evaluator()
    fired = evaluator.evaluate(hand_events(), now=at(11, 0))
    assert sorted(f.key for f in fired) == FIRST_KEYS
    assert [f.key for f in received] == [f.key for f in fired]
    alerts = sink.of_type(BudgetAlert)
    # $21 of $25 = 84 %: the 50 % and 80 % levels, not 100 %
    assert [(a.cap, a.level, a.action) for a in alerts] == [
        ("envelope:month", 0.5, "alert"),
        ("envelope:month", 0.8, "warn"),
    ]
    assert alerts[0].used == pytest.approx(21.0) and alerts[0].limit == 25.0
    assert alerts[0].resets_at == at(32, 0)  # Feb 1 00:00 UTC
    codes = sorted(n.code for n in sink.of_type(Notice))
    assert codes == [
        "anomaly.daily_surge",
        "anomaly.day_spike",
        "anomaly.expensive_run",
        "anomaly.heavy_user",
        "envelope.projected_over",
    ]
    assert evaluator.evaluate(hand_events(), now=at(11, 0)) == []  # nothing new
    assert len(sink.events) == 7


def test_the_next_level_fires_when_spend_crosses_it() -> None:
    evaluator, _, received = _evaluator()
    evaluator.evaluate(hand_events(), now=at(11, 0))
    received.clear()
    # $5 more on Jan 11 (no user, a run of exactly $5 is not above $5): $26 >= $25
    more = [*hand_events(), CostEvent(ts=at(11, 3600), run_id="R13", cost_usd=5.0)]
    fired = evaluator.evaluate(more, now=at(11, 7200))
    assert [f.key for f in fired] == ["envelope|2026-01|1"]
    assert received[0].event.level == 1.0  # type: ignore[union-attr]


def test_a_new_month_starts_its_envelope_levels_again() -> None:
    evaluator, _, _ = _evaluator()
    evaluator.evaluate(hand_events(), now=at(11, 0))
    february = [CostEvent(ts=at(33), run_id="F1", cost_usd=13.0)]  # Feb 2: 52 % of $25
    fired = evaluator.evaluate([*hand_events(), *february], now=at(34, 0))
    keys = [f.key for f in fired]
    assert "envelope|2026-02|0.5" in keys and "envelope|2026-01|0.5" not in keys


def test_a_failed_callback_is_retried_at_the_next_evaluation() -> None:
    calls: list[str] = []

    def flaky(firing: Firing) -> None:
        calls.append(firing.key)
        if len(calls) == 1:
            raise OSError("webhook down")

    evaluator = AlertEvaluator(RULES, sinks=[], callback=flaky)
    first = evaluator.evaluate(hand_events(), now=at(11, 0))
    assert len(first) == 6  # one of seven failed
    again = evaluator.evaluate(hand_events(), now=at(11, 0))
    assert [f.key for f in again] == [calls[0]]


def test_marks_in_the_event_store_dedupe_across_evaluators(tmp_path: Path) -> None:
    one = AlertEvaluator(RULES, sinks=[], marks=SQLiteEventStore(tmp_path / "e.db"))
    two = AlertEvaluator(RULES, sinks=[], marks=SQLiteEventStore(tmp_path / "e.db"))
    assert len(one.evaluate(hand_events(), now=at(11, 0))) == 7
    assert two.evaluate(hand_events(), now=at(11, 0)) == []


def test_alerts_reach_structlog_as_warnings(caplog: pytest.LogCaptureFixture) -> None:
    evaluator = AlertEvaluator(RULES)  # the default sink: structlog
    with caplog.at_level(logging.WARNING, logger="budgetwarden"):
        evaluator.evaluate(hand_events(), now=at(11, 0))
    text = caplog.text
    assert "envelope:month" in text and "Notice.anomaly.heavy_user" in text
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 7


def test_check_reports_without_delivering() -> None:
    evaluator, sink, received = _evaluator()
    assert len(evaluator.check(hand_events(), now=at(11, 0))) == 7
    assert sink.events == [] and received == []


def test_rules_come_from_the_policy_file_and_the_warden(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "timezone: Europe/Paris\nalerts:\n  monthly_envelope_usd: 25\n  run_usd: 5\n"
        "  day_sigma: null\n"
    )
    policy = Policy.from_file(path)
    assert policy.alerts == AlertRules(monthly_envelope_usd=25, run_usd=5, day_sigma=None)
    sink = ListSink()
    warden = Warden(policy, sinks=[sink], log_events=False)
    evaluator = AlertEvaluator.for_warden(warden)
    assert evaluator.timezone == "Europe/Paris"
    keys = sorted(f.key for f in evaluator.evaluate(hand_events(), now=at(11, 0)))
    assert keys == [k for k in FIRST_KEYS if not k.startswith("day_spike")]
    assert len(sink.events) == 6


def test_alert_rules_reject_bad_figures() -> None:
    with pytest.raises(ValidationError, match="ascending"):
        AlertRules(envelope_levels=[0.8, 0.5])
    with pytest.raises(ValidationError, match="Extra inputs"):
        AlertRules.model_validate({"monthly_budget": 5})
    with pytest.raises(ValidationError):
        AlertRules(user_share=1.5)
    with pytest.raises(ValidationError):
        Policy.model_validate({"alerts": {"surge_factor": 0.5}})
