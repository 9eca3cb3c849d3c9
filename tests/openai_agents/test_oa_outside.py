"""Stopped, extended or slowed from outside: cancel, an on_limit grant, a wait budget."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from agents import Agent, ModelSettings, Runner
from oa_scripted import ScriptedModel, tool_call

from budgetwarden import BudgetExceeded, ListSink, Policy, PriceBook, Usage, Warden
from budgetwarden.events import Notice
from budgetwarden.grants import Grant, LimitReached
from budgetwarden.integrations.openai_agents import BudgetRunHooks, run_guarded


def searcher(tools: Any, model: ScriptedModel) -> Agent[Any]:
    return Agent(name="searcher", instructions="Search.", model=model, tools=[tools.search])


def notices(sink: ListSink, code: str) -> list[Notice]:
    return [e for e in sink.events if isinstance(e, Notice) and e.code == code]


async def test_a_cancel_from_another_thread_stops_the_run_at_its_next_call(
    make_warden, tools
) -> None:
    hooks = BudgetRunHooks(make_warden(limits={"max_iterations": 10}))

    def cancel_from_a_thread(index: int) -> list[Any]:
        assert hooks.run is not None
        worker = threading.Thread(target=hooks.warden.cancel, kwargs={"run_id": hooks.run.id})
        worker.start()
        worker.join()
        return [tool_call("search", {"q": "after the cancel"})]

    model = ScriptedModel([[tool_call("search", {"q": "first"})], cancel_from_a_thread])
    with pytest.raises(BudgetExceeded) as info:
        await Runner.run(searcher(tools, model), "go", hooks=hooks)
    assert info.value.cap == "cancelled"
    assert model.calls == 2 and tools.ran == ["first"]  # the next call (a tool) never ran


async def test_a_cancel_from_another_process_stops_a_running_agent(tmp_path, tools) -> None:
    ledger = f"sqlite:///{tmp_path / 'spend.db'}"
    warden = Warden(Policy(), ledger=ledger, log_events=False)
    script = f"from budgetwarden import Warden; Warden(ledger={ledger!r}).cancel(user='u1')"

    def cancel_from_a_process(index: int) -> list[Any]:
        subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
        return [tool_call("search", {"q": "after the cancel"})]

    model = ScriptedModel([[tool_call("search", {"q": "first"})], cancel_from_a_process])
    result = await run_guarded(searcher(tools, model), "go", warden, user="u1")
    assert result.cap == "cancelled" and model.calls == 2 and tools.ran == ["first"]
    again = await run_guarded(searcher(tools, ScriptedModel()), "go", warden, user="u1")
    assert again.cap == "cancelled"  # a cancel holds until it is lifted
    warden.uncancel(user="u1")
    lifted = await run_guarded(
        searcher(tools, ScriptedModel(loop_tool=None)), "go", warden, user="u1"
    )
    assert lifted.output == "done" and not lifted.partial


async def test_an_async_approval_grants_five_cents_once_and_the_run_goes_that_far(
    tools,
) -> None:
    asked: list[LimitReached] = []

    async def approve_once(question: LimitReached) -> Grant | None:
        await asyncio.sleep(0)
        asked.append(question)
        return Grant(extra=0.05, by="alice", note="worth it") if len(asked) == 1 else None

    sink = ListSink()
    policy = Policy.model_validate({"limits": {"max_cost_usd": 0.02}})
    warden = Warden(policy, sinks=[sink], log_events=False, on_limit=approve_once)
    model = ScriptedModel(usage=(10, 400, 0, 0), model="gpt-4o")
    agent = searcher(tools, model)
    agent.model_settings = ModelSettings(max_tokens=400)
    result = await run_guarded(agent, "search a lot", warden, max_turns=50)
    assert [q.cap for q in asked] == ["max_cost_usd", "max_cost_usd"]
    assert result.cap == "max_cost_usd" and isinstance(result.stopped, BudgetExceeded)
    assert result.stopped.limit == pytest.approx(0.07)
    one_call = PriceBook().cost("gpt-4o", Usage(input_tokens=10, output_tokens=400))
    report = result.report
    assert report is not None and 0.07 - 2 * one_call < report.cost_usd <= 0.07
    assert model.calls == report.iterations == round(report.cost_usd / one_call)
    [grant] = notices(sink, "grant")
    assert grant.data == {"cap": "max_cost_usd", "extra": 0.05, "by": "alice", "note": "worth it"}


async def test_a_wait_budget_holds_the_call_without_blocking_the_event_loop(
    make_warden, sink, tools
) -> None:
    budget = {
        "scope": "key", "window": "1s", "max_requests": 1,
        "when_exhausted": "wait", "max_wait_seconds": 3,
    }  # fmt: skip
    warden = make_warden(budgets=[budget])
    model = ScriptedModel([[tool_call("search", {"q": "a"})]], loop_tool=None)
    ticks = 0
    running = True

    async def ticker() -> None:
        nonlocal ticks
        while running:
            ticks += 1
            await asyncio.sleep(0.02)

    await asyncio.sleep(1.02 - time.time() % 1)  # start just after a second begins
    beat = asyncio.create_task(ticker())
    started = time.monotonic()
    result = await run_guarded(searcher(tools, model), "go", warden, key="k1")
    elapsed = time.monotonic() - started
    running = False
    await beat
    assert result.output == "done" and model.calls == 2
    [wait] = notices(sink, "wait")
    assert 0.2 < wait.data["seconds"] <= 1.5 and elapsed >= 0.2
    assert ticks >= 5  # the loop kept running while the call waited (~50 ticks a second)
