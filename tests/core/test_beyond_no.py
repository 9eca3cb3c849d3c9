"""More than a no: final-answer calls, budget hints, grants, throttling waits, pause handles."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from budgetwarden import Budget, BudgetExceeded, Limits, Policy, Warden
from budgetwarden.events import Notice
from budgetwarden.grants import Grant, LimitReached

from .helpers import FakeClock, make_warden, usage


def test_last_call_an_iteration_cap_allows_is_marked_final() -> None:
    warden, _, _ = make_warden(Policy(limits=Limits(max_iterations=3, final_answer=True)))
    run = warden.run()
    finals = []
    for _ in range(3):
        step = run.before_llm_call("gpt-4o-mini", max_tokens=10)
        finals.append((step.final, step.final_cap))
        run.after_llm_call(step, usage(10, 10))
    assert finals == [(False, None), (False, None), (True, "max_iterations")]
    run.finish()
    assert run.report.partial and run.report.stop_reason == "max_iterations"


def test_final_call_keeps_the_money_it_needs_under_a_dollar_cap() -> None:
    warden, _, _ = make_warden(Policy(limits=Limits(max_cost_usd=0.01, final_answer=True)))
    run = warden.run()
    steps = []
    with pytest.raises(BudgetExceeded):
        for _ in range(50):
            step = run.before_llm_call("gpt-4o", input_tokens=500, max_tokens=100)
            steps.append(step)
            run.after_llm_call(step, usage(500, 100))
    assert steps[-1].final and steps[-1].final_cap == "max_cost_usd"
    assert not any(s.final for s in steps[:-1])
    assert run.report.cost_usd <= 0.01


def test_final_is_off_by_default() -> None:
    warden, _, _ = make_warden(Policy(limits=Limits(max_iterations=1)))
    step = warden.run().before_llm_call("gpt-4o-mini")
    assert not step.final


def test_budget_hint_appears_past_the_warn_level_and_not_before() -> None:
    policy = Policy(limits=Limits(max_iterations=10, max_cost_usd=1.0), budget_hints=True)
    warden, _, _ = make_warden(policy)
    run = warden.run()
    hints = []
    for _ in range(10):
        step = run.before_llm_call("gpt-4o-mini", max_tokens=10)
        hints.append(step.hint)
        run.after_llm_call(step, usage(10, 10))
    assert hints[:7] == [None] * 7
    assert hints[7] is not None and hints[7].startswith("Budget note: 2 model calls and $")
    assert hints[9] is not None and "0 model calls" in hints[9]


def test_hints_are_never_on_by_default() -> None:
    warden, _, _ = make_warden(Policy(limits=Limits(max_iterations=2)))
    run = warden.run()
    run.after_llm_call(run.before_llm_call("gpt-4o-mini"), usage())
    assert run.before_llm_call("gpt-4o-mini").hint is None


def test_a_grant_extends_a_dollar_cap_exactly_once_and_is_recorded() -> None:
    asked: list[LimitReached] = []

    def approve_once(question: LimitReached) -> Grant | None:
        asked.append(question)
        return Grant(extra=0.05, by="alice", note="ok for this one") if len(asked) == 1 else None

    warden, sink, _ = make_warden(Policy(limits=Limits(max_cost_usd=0.02)), on_limit=approve_once)
    run = warden.run()
    with pytest.raises(BudgetExceeded) as info:
        for _ in range(100):
            step = run.before_llm_call("gpt-4o", input_tokens=500, max_tokens=100)
            run.after_llm_call(step, usage(500, 100))
    assert [q.cap for q in asked] == ["max_cost_usd", "max_cost_usd"]
    assert asked[0].limit == 0.02
    assert info.value.limit == pytest.approx(0.07)
    assert 0.05 < run.report.cost_usd <= 0.07
    grants = [e for e in sink.events if isinstance(e, Notice) and e.code == "grant"]
    assert len(grants) == 1 and grants[0].data == {
        "cap": "max_cost_usd",
        "extra": 0.05,
        "by": "alice",
        "note": "ok for this one",
    }


def test_a_grant_can_extend_calls_and_a_budget() -> None:
    policy = Policy(
        limits=Limits(max_tool_calls=1),
        budgets=[Budget(scope="user", window="day", max_requests=1)],
    )
    warden, _, _ = make_warden(policy, on_limit=lambda q: Grant(extra=1, by="bob"))
    run = warden.run(user="u1")
    for _ in range(2):
        run.after_tool_call(run.before_tool_call("search", {"q": 1}))
        run.after_llm_call(run.before_llm_call("gpt-4o-mini"), usage())
    assert run.report.tool_calls == 2 and run.report.iterations == 2
    assert warden.spent("user", "u1") == 2


def test_a_grant_extends_the_cap_that_refused_and_only_the_runs_under_it() -> None:
    asked: list[tuple[str, str]] = []

    def grant(question: LimitReached) -> Grant:
        asked.append((question.run_id, question.cap))
        return Grant(extra=1, by="alice")

    warden, _, _ = make_warden(Policy(limits=Limits(max_iterations=3)), on_limit=grant)
    parent = warden.run()
    child = warden.run(parent=parent, limits=Limits(max_iterations=1))
    for _ in range(2):  # the child's own cap refuses the second call: only it grows
        child.after_llm_call(child.before_llm_call("gpt-4o-mini"), usage())
    assert (child.limits.max_iterations, parent.limits.max_iterations) == (2, 3)
    parent.after_llm_call(parent.before_llm_call("gpt-4o-mini"), usage())  # 3 of 3
    child.after_llm_call(child.before_llm_call("gpt-4o-mini"), usage())  # both caps full
    assert (child.limits.max_iterations, parent.limits.max_iterations) == (3, 4)
    # asked for the child's cap, then (third call) the child's again and its parent's
    assert asked == [(child.id, "max_iterations")] * 2 + [(parent.id, "max_iterations")]
    assert parent.report.iterations == 4


@pytest.mark.parametrize("answer", [True, 0.05, {"extra": 1}])
def test_on_limit_must_answer_a_grant_or_none(answer: object) -> None:
    warden, _, _ = make_warden(Policy(limits=Limits(max_iterations=1)), on_limit=lambda q: answer)
    run = warden.run()
    run.after_llm_call(run.before_llm_call("gpt-4o-mini"), usage())
    with pytest.raises(TypeError, match="on_limit must return a Grant"):
        run.before_llm_call("gpt-4o-mini")
    assert run.report.iterations == 1 and run.counters.reserved_usd == 0


async def test_async_on_limit_callbacks_are_awaited() -> None:
    async def grant(question: LimitReached) -> Grant:
        await asyncio.sleep(0)
        return Grant(extra=1, by="async")

    warden, _, _ = make_warden(Policy(limits=Limits(max_iterations=1)), on_limit=grant)
    run = warden.run()
    for _ in range(3):
        await run.aafter_llm_call(await run.abefore_llm_call("gpt-4o-mini"), usage())
    assert run.report.iterations == 3
    with pytest.raises(TypeError, match="async on_limit"):
        run.before_llm_call("gpt-4o-mini")


def test_wait_mode_holds_the_call_until_the_window_frees_it() -> None:
    clock = FakeClock()
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    policy = Policy(
        budgets=[
            Budget(
                scope="key", window="1s", max_requests=5, when_exhausted="wait", max_wait_seconds=5
            )
        ]
    )
    warden, sink, _ = make_warden(policy, clock=clock, sleep=sleep)
    run = warden.run(key="k1")
    for _ in range(12):
        run.after_llm_call(run.before_llm_call("gpt-4o-mini"), usage())
    per_second: dict[int, int] = {}
    calls_at = [e.ts for e in sink.cost_events]
    for ts in calls_at:
        per_second[int(ts)] = per_second.get(int(ts), 0) + 1
    assert max(per_second.values()) == 5
    assert len(calls_at) == 12 and len(slept) == 2
    waits = [e for e in sink.events if isinstance(e, Notice) and e.code == "wait"]
    assert len(waits) == 2 and all(0 < w.data["seconds"] <= 1.1 for w in waits)


def test_wait_mode_refuses_once_the_wait_would_pass_its_limit() -> None:
    clock = FakeClock()
    policy = Policy(
        budgets=[
            Budget(
                scope="key", window="1m", max_requests=1, when_exhausted="wait", max_wait_seconds=5
            )
        ]
    )
    warden, _, _ = make_warden(policy, clock=clock, sleep=clock.advance)
    run = warden.run(key="k1")
    run.after_llm_call(run.before_llm_call("gpt-4o-mini"), usage())
    with pytest.raises(BudgetExceeded) as info:
        run.before_llm_call("gpt-4o-mini")
    assert info.value.cap == "budget:key=k1/1m/requests"
    assert clock.now == FakeClock().now  # refused at once: a 60 s wait is over 5 s


def test_refuse_mode_refuses_the_excess_at_once() -> None:
    clock = FakeClock()
    policy = Policy(budgets=[Budget(scope="key", window="1s", max_requests=5)])
    warden, _, _ = make_warden(policy, clock=clock, sleep=clock.advance)
    run = warden.run(key="k1")
    for _ in range(5):
        run.after_llm_call(run.before_llm_call("gpt-4o-mini"), usage())
    with pytest.raises(BudgetExceeded):
        run.before_llm_call("gpt-4o-mini")
    assert clock.now == FakeClock().now


async def test_async_wait_uses_the_async_sleep() -> None:
    clock = FakeClock()
    awaited: list[float] = []

    async def asleep(seconds: float) -> None:
        awaited.append(seconds)
        clock.advance(seconds)

    policy = Policy(
        budgets=[
            Budget(
                scope="key", window="1s", max_requests=1, when_exhausted="wait", max_wait_seconds=3
            )
        ]
    )
    warden, _, _ = make_warden(policy, clock=clock, asleep=asleep)
    run = warden.run(key="k")
    for _ in range(3):
        await run.aafter_llm_call(await run.abefore_llm_call("gpt-4o-mini"), usage())
    assert len(awaited) == 2


def test_pause_handle_names_the_cap_its_reset_and_the_work_done() -> None:
    policy = Policy(
        budgets=[Budget(scope="user", window="8h", max_requests=2)], on_exceeded="pause"
    )
    warden, _, clock = make_warden(policy)
    run = warden.run(user="u1", thread="t1")
    for _ in range(2):
        run.after_llm_call(run.before_llm_call("gpt-4o-mini"), usage())
    with pytest.raises(BudgetExceeded):
        run.before_llm_call("gpt-4o-mini")
    handle = run.pause_handle("core", {"step": 3})
    assert handle.cap == "budget:user=u1/8h/requests"
    assert handle.resets_at == clock.now + 8 * 3600
    assert handle.report.iterations == 2 and handle.state == {"step": 3}
    assert handle.attribution["thread"] == "t1"
    assert type(handle).from_json(handle.to_json()) == handle


def _paused_run(warden, clock):
    run = warden.run(user="u1")
    for _ in range(2):
        run.after_llm_call(run.before_llm_call("gpt-4o-mini"), usage())
    with pytest.raises(BudgetExceeded):
        run.before_llm_call("gpt-4o-mini")
    return run.pause_handle("core", {"step": 3})


def test_nap_and_resume_sleeps_until_the_window_resets() -> None:
    clock = FakeClock()
    policy = Policy(
        budgets=[Budget(scope="user", window="8h", max_requests=2)], on_exceeded="pause"
    )
    warden, sink, _ = make_warden(policy, clock=clock, sleep=clock.advance)
    handle = _paused_run(warden, clock)
    warden.save_handle(handle)
    assert [h.id for h in warden.paused()] == [handle.id]
    assert not warden.ready_to_resume(handle)
    resumed = warden.nap_and_resume(handle.id, lambda h: h.state["step"])
    assert resumed == 3
    assert clock.now >= handle.resets_at
    assert warden.load_handle(handle.id) is None
    assert any(isinstance(e, Notice) and e.code == "pause" for e in sink.events)
    for again in (handle, handle.id):  # a handle is resumed once, by object or by id
        with pytest.raises(KeyError, match="resumed already"):
            warden.nap_and_resume(again, lambda h: h.state["step"])


def _paused_by_a_cancel(warden: Any) -> tuple[Any, Any]:
    """A run of u1 stopped by a cancel of u1 (still standing), and its pause handle."""
    run = warden.run(user="u1")
    warden.cancel(user="u1")
    with pytest.raises(BudgetExceeded):
        run.before_llm_call("gpt-4o-mini")
    return run, run.pause_handle("core", {"step": 1})


def test_a_run_paused_by_a_cancel_is_ready_once_every_cancel_is_lifted() -> None:
    warden, _, _ = make_warden(Policy(on_exceeded="pause"))
    run, handle = _paused_by_a_cancel(warden)
    assert handle.cap == "cancelled"
    assert not warden.ready_to_resume(handle)  # the user's cancel still stands
    warden.uncancel(user="u1")
    assert warden.ready_to_resume(handle)
    warden.cancel(run_id=run.id)
    assert not warden.ready_to_resume(handle)


def test_a_wait_that_would_spin_is_refused_before_it_starts() -> None:
    """poll_seconds=0 on a handle with no reset time spun forever, past its timeout."""
    import asyncio

    warden, _, _ = make_warden(Policy(on_exceeded="pause"))
    _, handle = _paused_by_a_cancel(warden)
    for poll in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"poll_seconds=.*above 0"):
            warden.wait_until_resumable(handle, poll_seconds=poll, timeout=0.5)
        with pytest.raises(ValueError, match="poll_seconds"):
            asyncio.run(warden.await_resumable(handle, poll_seconds=poll, timeout=0.5))
    with pytest.raises(ValueError, match="timeout=-1"):
        warden.wait_until_resumable(handle, timeout=-1)
    assert not warden.wait_until_resumable(handle, poll_seconds=0.01, timeout=0.05)


def test_a_raised_budget_makes_a_paused_run_ready_before_the_reset() -> None:
    clock = FakeClock()
    tight = Policy(budgets=[Budget(scope="user", window="8h", max_requests=2)])
    warden, _, _ = make_warden(tight, clock=clock)
    handle = _paused_run(warden, clock)
    assert not warden.ready_to_resume(handle)
    raised = Policy(budgets=[Budget(scope="user", window="8h", max_requests=5)])
    wider, _, _ = make_warden(raised, clock=clock, ledger=warden.ledger)
    assert wider.ready_to_resume(handle)
    assert wider.wait_until_resumable(handle, timeout=0)


def test_a_tool_call_after_the_final_answer_call_is_refused() -> None:
    warden, _, _ = make_warden(Policy(limits=Limits(max_iterations=2, final_answer=True)))
    run = warden.run()
    run.after_tool_call(run.before_tool_call("search", {"q": 1}))
    run.after_llm_call(run.before_llm_call("gpt-4o-mini"), usage())
    final = run.before_llm_call("gpt-4o-mini")
    assert final.final
    run.after_llm_call(final, usage())
    with pytest.raises(BudgetExceeded) as info:  # the model called a tool anyway
        run.before_tool_call("search", {"q": 2})
    assert info.value.cap == "max_iterations" and info.value.used == 2
    assert run.report.tool_calls == 1


def test_a_paused_refusal_can_carry_its_handle() -> None:
    warden, _, _ = make_warden(Policy(limits=Limits(max_iterations=0), on_exceeded="pause"))
    run = warden.run()
    with pytest.raises(BudgetExceeded) as info:
        run.before_llm_call("gpt-4o-mini")
    assert info.value.handle is None
    info.value.handle = run.pause_handle("core")
    assert info.value.handle.cap == "max_iterations"


async def test_resume_forgets_the_refusal_and_the_handle_saves_asynchronously() -> None:
    clock = FakeClock()
    policy = Policy(
        budgets=[Budget(scope="user", window="8h", max_requests=1)], on_exceeded="pause"
    )
    warden, _, _ = make_warden(policy, clock=clock)
    run = warden.run(user="u1")
    run.after_llm_call(run.before_llm_call("gpt-4o-mini"), usage())
    with pytest.raises(BudgetExceeded):
        run.before_llm_call("gpt-4o-mini")
    handle_id = await warden.asave_handle(run.pause_handle("core"))
    assert warden.load_handle(handle_id) is not None
    clock.advance(8 * 3600)
    run.resume()
    run.after_llm_call(run.before_llm_call("gpt-4o-mini"), usage())
    run.finish()
    assert run.report.stop_reason == "completed" and run.report.iterations == 2


def _saved_handle(uri: str) -> str:
    """A run of u1 paused by a cancel, its handle saved in the ledger at ``uri``."""
    warden = Warden(Policy(on_exceeded="pause"), ledger=uri, log_events=False)
    run = warden.run(user="u1")
    run.after_llm_call(run.before_llm_call("gpt-4o-mini", input_tokens=10), usage(10, 5))
    warden.cancel(run_id=run.id)
    with pytest.raises(BudgetExceeded):
        run.before_llm_call("gpt-4o-mini")
    handle_id = warden.save_handle(run.pause_handle("core", {"step": 2}))
    warden.uncancel(run_id=run.id)
    warden.close()
    return handle_id


def test_a_handle_resumed_by_two_processes_at_once_is_resumed_by_one(tmp_path: Any) -> None:
    """Two workers given the same resume job: the check and the drop were two steps, so
    both ran the paused agent on."""
    import threading
    import time

    uri = f"sqlite:///{tmp_path / 'spend.db'}"
    handle_id = _saved_handle(uri)
    resumed: list[int] = []
    refused: list[KeyError] = []
    start = threading.Barrier(2)

    def resume(handle: Any) -> None:
        time.sleep(0.3)  # the agent goes on: the other worker has long loaded the handle
        resumed.append(handle.state["step"])

    def worker() -> None:
        warden = Warden(Policy(on_exceeded="pause"), ledger=uri, log_events=False)
        start.wait()
        try:
            warden.nap_and_resume(handle_id, resume)
        except KeyError as exc:
            refused.append(exc)
        warden.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert resumed == [2] and len(refused) == 1
    assert "resumed once" in str(refused[0]) or "resumed already" in str(refused[0])


def test_a_resume_that_fails_leaves_the_handle_to_resume_again(tmp_path: Any) -> None:
    uri = f"sqlite:///{tmp_path / 'spend.db'}"
    handle_id = _saved_handle(uri)
    warden = Warden(Policy(on_exceeded="pause"), ledger=uri, log_events=False)

    def broken(handle: Any) -> None:
        raise RuntimeError("the worker lost its connection")

    with pytest.raises(RuntimeError):
        warden.nap_and_resume(handle_id, broken)
    assert warden.nap_and_resume(handle_id, lambda h: h.state["step"]) == 2
    with pytest.raises(KeyError):
        warden.nap_and_resume(handle_id, lambda h: h.state["step"])


def test_a_resume_that_crashed_frees_its_handle_after_its_claim_lapses() -> None:
    clock = FakeClock()
    warden, _, _ = make_warden(Policy(on_exceeded="pause"), clock=clock)
    run = warden.run(user="u1")
    warden.cancel(run_id=run.id)
    with pytest.raises(BudgetExceeded):
        run.before_llm_call("gpt-4o-mini")
    handle = run.pause_handle("core", {"step": 1})
    warden.save_handle(handle)
    warden.uncancel(run_id=run.id)
    warden._claim_handle(handle)  # a worker took it, then its process died
    with pytest.raises(KeyError, match="being resumed"):
        warden.nap_and_resume(handle.id, lambda h: h.state["step"])
    clock.advance(warden.resume_claim_seconds + 1)
    assert warden.nap_and_resume(handle.id, lambda h: h.state["step"]) == 1


def test_a_cancel_by_task_class_or_tag_stops_the_matching_runs_only() -> None:
    """Every scope a cancel accepts stops runs: a task class, and a run's own tags."""
    warden, _, _ = make_warden()
    open_before = warden.run(task_class="extraction")
    assert warden.cancel(task_class="extraction") == ["task_class=extraction"]
    assert warden.cancel(tags={"team": "search"}) == ["tag:team=search"]
    stopped = [
        open_before,
        warden.run(task_class="extraction"),
        warden.run(tags={"team": "search"}),
    ]
    for run in stopped:
        with pytest.raises(BudgetExceeded) as info:
            run.before_llm_call("gpt-4o-mini")
        assert info.value.cap == "cancelled"
    warden.run(task_class="chat", tags={"team": "ops"}).before_llm_call("gpt-4o-mini")
    warden.uncancel(task_class="extraction", tags={"team": "search"})
    warden.run(task_class="extraction", tags={"team": "search"}).before_llm_call("gpt-4o-mini")
    with pytest.raises(ValueError, match="tags=\\{name: value\\}"):
        warden.cancel(team="search")


def test_a_total_budget_refusal_says_raise_the_limit_not_wait() -> None:
    warden, _, _ = make_warden(
        Policy(budgets=[Budget(scope="thread", window="total", max_requests=1)])
    )
    run = warden.run(thread="t1")
    run.after_llm_call(run.before_llm_call("gpt-4o-mini"), usage())
    with pytest.raises(BudgetExceeded) as info:
        run.before_llm_call("gpt-4o-mini")
    assert info.value.resets_at is None
    assert "a total budget never resets" in str(info.value)
    assert "wait for the window" not in str(info.value)


def test_a_run_paused_by_a_dollar_budget_naps_until_its_next_call_fits() -> None:
    """A dollar budget refuses a call whose worst case does not fit, while it still has some
    room: resuming then would only be refused again. The handle keeps what the call needed,
    and the run is ready once that much is free (the window resets, or the budget grows)."""
    clock = FakeClock()
    policy = Policy(
        budgets=[Budget(scope="user", window="8h", max_cost_usd=0.004)], on_exceeded="pause"
    )
    warden, _, _ = make_warden(policy, clock=clock, sleep=clock.advance)
    run = warden.run(user="u1")
    with pytest.raises(BudgetExceeded) as info:
        for _ in range(100):  # $0.00021 each, $0.0006 held: the 18th does not fit
            run.after_llm_call(run.before_llm_call("gpt-4o-mini", max_tokens=1000), usage())
    handle = run.pause_handle("core", {"step": 1})
    assert warden.spent("user", "u1") < 0.004  # some room, not enough for the call
    assert not warden.ready_to_resume(handle)
    assert handle.needed == info.value.requested > 0
    warden.save_handle(handle)
    assert warden.nap_and_resume(handle.id, lambda h: clock.now) >= handle.resets_at
