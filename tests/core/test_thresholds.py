"""Thresholds: alerts once per crossing, compress and one tier down at 90%, stop at 100%."""

from __future__ import annotations

import pytest

from budgetwarden import (
    Budget,
    BudgetExceeded,
    Limits,
    ModelPrice,
    Policy,
    Routing,
    Thresholds,
)

from .helpers import make_warden, usage


def test_alerts_fire_once_per_level_crossing() -> None:
    warden, sink, _ = make_warden(Policy(limits=Limits(max_input_tokens=1000)))
    run = warden.run()
    for _ in range(9):  # 100 tokens per call: 10%..90%
        step = run.before_llm_call("gpt-4o-mini", input_tokens=100, max_tokens=1)
        run.after_llm_call(step, usage(100, 0))
    levels = [(a.cap, a.level, a.action) for a in sink.alerts]
    assert levels == [
        ("max_input_tokens", 0.5, "alert"),
        ("max_input_tokens", 0.8, "warn"),
        ("max_input_tokens", 0.9, "degrade"),
    ]


def test_budget_alerts_fire_once_per_window_across_runs() -> None:
    policy = Policy(budgets=[Budget(scope="user", window="day", max_requests=10)])
    warden, sink, clock = make_warden(policy)
    for _ in range(6):
        run = warden.run(user="u1")
        run.after_llm_call(run.before_llm_call("gpt-4o-mini"), usage())
    assert [(a.cap, a.level) for a in sink.alerts] == [("budget:user=u1/day/requests", 0.5)]
    clock.advance(86400)
    for _ in range(5):
        run = warden.run(user="u1")
        run.after_llm_call(run.before_llm_call("gpt-4o-mini"), usage())
    assert [a.level for a in sink.alerts] == [0.5, 0.5]  # a new window crosses again


def test_degrade_level_sets_compress_and_moves_one_tier_down() -> None:
    policy = Policy(
        limits=Limits(max_input_tokens=1000),
        routing=Routing(tiers=["gpt-4o-mini", "gpt-4o", "o1"], task_classes={"hard": 2}),
    )
    warden, _sink, _ = make_warden(policy)
    run = warden.run(task_class="hard")
    first = run.before_llm_call(None, input_tokens=500, max_tokens=1)
    assert (first.model, first.compress, first.route_reason) == ("o1", False, "task_class=hard")
    run.after_llm_call(first, usage(500, 0))
    second = run.before_llm_call(None, input_tokens=400, max_tokens=1)
    assert second.model == "o1" and not second.compress  # 50%: no pressure yet
    run.after_llm_call(second, usage(400, 0))
    third = run.before_llm_call(None, input_tokens=50, max_tokens=1)  # 90% used now
    assert third.compress
    assert third.model == "gpt-4o"  # one tier down, never two
    assert third.route_reason.startswith("downgrade: run:max_input_tokens at 90%")
    event = run.after_llm_call(third, usage(50, 0))
    assert event.route == "tier 1: gpt-4o" and event.route_reason == third.route_reason


def test_stop_at_one_hundred_percent_names_the_budget_and_when_it_resets() -> None:
    policy = Policy(budgets=[Budget(scope="user", window="8h", max_requests=3)])
    warden, _, clock = make_warden(policy)
    run = warden.run(user="u1")
    for _ in range(3):
        run.after_llm_call(run.before_llm_call("gpt-4o-mini"), usage())
    with pytest.raises(BudgetExceeded) as info:
        run.before_llm_call("gpt-4o-mini")
    exc = info.value
    assert exc.cap == "budget:user=u1/8h/requests"
    assert exc.resets_at == clock.now + 8 * 3600  # the clock starts at midnight UTC
    assert "resets at 2026-01-01 08:00:00 UTC" in str(exc)
    other = warden.run(user="u2")
    other.before_llm_call("gpt-4o-mini")  # another user's bucket is untouched
    clock.advance(8 * 3600)
    run.before_llm_call("gpt-4o-mini")  # the window reset


def test_custom_stop_level_refuses_before_the_limit() -> None:
    policy = Policy(
        budgets=[Budget(scope="global", window="day", max_requests=10)],
        thresholds={"alerts": [0.5], "warn": 0.6, "degrade": 0.7, "stop": 0.8},
    )
    warden, _, _ = make_warden(policy)
    run = warden.run()
    made = 0
    with pytest.raises(BudgetExceeded):
        for _ in range(20):
            run.after_llm_call(run.before_llm_call("gpt-4o-mini"), usage())
            made += 1
    assert made == 8


@pytest.mark.parametrize(
    ("limits", "first", "refused", "allowed"),
    [
        (Limits(max_cost_usd=1.0), (350, 350), (100, 100), (10, 10)),  # $0.70, +$0.20, +$0.02
        (Limits(max_output_tokens=1000), (0, 700), (0, 150), (0, 50)),
        (Limits(max_input_tokens=1000), (700, 0), (150, 0), (50, 0)),
    ],
    ids=["dollars", "output tokens", "input tokens"],
)
def test_a_stop_level_below_one_holds_the_run_caps_as_it_holds_budgets(
    limits: Limits, first: tuple[int, int], refused: tuple[int, int], allowed: tuple[int, int]
) -> None:
    """Thresholds.stop applies to the run's own spend caps: no call may take the run past it
    (here 80 % of the cap; the refused call would end at 85 or 90 %)."""
    prices = {"m": ModelPrice(input_cost_per_token=1e-3, output_cost_per_token=1e-3)}
    thresholds = Thresholds(warn=0.5, degrade=0.6, stop=0.8)
    warden, _, _ = make_warden(Policy(limits=limits, thresholds=thresholds, prices=prices))
    run = warden.run()
    run.after_llm_call(
        run.before_llm_call("m", input_tokens=first[0], max_tokens=first[1]), usage(*first)
    )
    with pytest.raises(BudgetExceeded) as info:
        run.before_llm_call("m", input_tokens=refused[0], max_tokens=refused[1])
    cap, figure = next((name, value) for name, value in limits if value is not None)
    assert info.value.cap == cap and info.value.limit == pytest.approx(figure * 0.8)
    step = run.before_llm_call("m", input_tokens=allowed[0], max_tokens=allowed[1])
    run.after_llm_call(step, usage(*allowed))


def test_alert_marks_of_ended_windows_are_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    """A warden kept every alert mark it ever set (one per user and window crossed)."""
    import budgetwarden.warden as warden_module
    from budgetwarden import Budget, Warden

    from .helpers import FakeClock

    monkeypatch.setattr(warden_module, "_MARKS_KEPT", 8)
    clock = FakeClock()
    policy = Policy(budgets=[Budget(scope="user", window="1m", max_cost_usd=0.001)])
    warden = Warden(policy, clock=clock, log_events=False)
    for user in range(40):
        run = warden.run(user=f"u{user}")
        run.after_llm_call(
            run.before_llm_call("gpt-4o-mini", input_tokens=10, max_tokens=10), usage(6000, 10)
        )
        clock.advance(61)  # the next user is in the next minute: this one's marks are done
    assert 0 < len(warden._marked) <= 8 + 3
