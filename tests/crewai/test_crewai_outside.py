"""From outside a running crew: a cancel stops it, a grant lets it go on, a rate limit slows it."""

from __future__ import annotations

import threading
import time

import pytest
from crewai_fakes import ScriptedLLM, SearchTool, make_crew

from budgetwarden import Budget, Limits, ListSink, ModelPrice, Notice, Policy, Warden
from budgetwarden.grants import Grant, LimitReached
from budgetwarden.integrations.crewai import GuardedCrewOutput, guard_crew

PRICED = "scripted-priced"
#: 5 output tokens cost $0.05; input is free.
PRICES = {PRICED: ModelPrice(input_cost_per_token=0.0, output_cost_per_token=0.01)}


def kickoff_in_thread(
    warden: Warden, llm: ScriptedLLM, **attribution: str
) -> tuple[threading.Thread, list[GuardedCrewOutput]]:
    results: list[GuardedCrewOutput] = []
    crew = make_crew([llm], tools=[SearchTool()])
    guarded = guard_crew(crew, warden, **attribution)
    thread = threading.Thread(target=lambda: results.append(guarded.kickoff()), daemon=True)
    thread.start()
    return thread, results


def wait_for_calls(llm: ScriptedLLM, calls: int) -> int:
    deadline = time.monotonic() + 10
    while llm.calls < calls and time.monotonic() < deadline:
        time.sleep(0.005)
    return llm.calls


@pytest.mark.parametrize("by", ["run_id", "user"])
def test_a_cancel_from_another_thread_stops_the_crew_at_its_next_call(by: str) -> None:
    sink = ListSink()
    warden = Warden(Policy(limits=Limits(max_iterations=200)), sinks=[sink])
    llm = ScriptedLLM(delay=0.02)  # never finishes on its own
    thread, results = kickoff_in_thread(warden, llm, user="u1")

    seen = wait_for_calls(llm, 3)
    if by == "run_id":
        warden.cancel(run_id=sink.cost_events[0].run_id, reason="operator")
    else:
        warden.cancel(user="u1")
    thread.join(timeout=10)

    [result] = results
    assert result.stopped and result.cap == "cancelled"
    assert llm.calls <= seen + 1  # at most the call already in flight
    assert result.report is not None and result.report.stop_reason == "cancelled"


def test_a_grant_of_five_cents_lets_the_crew_go_on_exactly_that_far() -> None:
    asked: list[LimitReached] = []

    def grant_once(question: LimitReached) -> Grant | None:
        asked.append(question)
        return Grant(extra=0.05, by="alice") if len(asked) == 1 else None

    sink = ListSink()
    policy = Policy(limits=Limits(max_cost_usd=0.10), prices=PRICES)
    warden = Warden(policy, sinks=[sink], on_limit=grant_once)
    llm = ScriptedLLM(model=PRICED, completion_tokens=5, max_tokens=5)  # $0.05 a call

    result = guard_crew(make_crew([llm], tools=[SearchTool()]), warden).kickoff()

    assert llm.calls == 3  # two within $0.10, one more with the grant
    assert result.cap == "max_cost_usd"
    assert result.report is not None and result.report.cost_usd == pytest.approx(0.15)
    assert [q.cap for q in asked] == ["max_cost_usd", "max_cost_usd"]
    grants = [e for e in sink.events if isinstance(e, Notice) and e.code == "grant"]
    assert len(grants) == 1
    assert grants[0].data["by"] == "alice" and grants[0].data["extra"] == 0.05


def test_a_rate_limit_in_wait_mode_slows_the_crew_down_instead_of_stopping_it() -> None:
    # Two requests per second, five calls: the hooks sleep (synchronously) until a window
    # frees a request; the run's own cap ends the crew, not the rate limit.
    rate = Budget(
        scope="key", window="1s", max_requests=2, when_exhausted="wait", max_wait_seconds=3
    )
    sink = ListSink()
    warden = Warden(Policy(budgets=[rate], limits=Limits(max_iterations=5)), sinks=[sink])
    llm = ScriptedLLM()

    result = guard_crew(make_crew([llm], tools=[SearchTool()]), warden, key="k1").kickoff()

    assert llm.calls == 5 and result.cap == "max_iterations"
    per_second: dict[int, int] = {}
    for started in llm.started:
        per_second[int(started)] = per_second.get(int(started), 0) + 1
    assert max(per_second.values()) <= 2
    waits = [e for e in sink.events if isinstance(e, Notice) and e.code == "wait"]
    assert waits and all(0 < w.data["seconds"] <= 1.1 for w in waits)
