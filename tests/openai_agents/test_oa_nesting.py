"""Nested runs (an agent used as a tool) and thread budgets across Runner.run calls."""

from __future__ import annotations

from typing import Any

import pytest
from agents import Agent, Runner, SQLiteSession
from oa_scripted import ScriptedModel, tool_call

from budgetwarden import BudgetExceeded
from budgetwarden.integrations.openai_agents import BudgetRunHooks, run_guarded

THREAD_BUDGET = {"scope": "thread", "window": "total", "max_requests": 5}


def lead_with(tools: Any, hooks: BudgetRunHooks, inner_model: ScriptedModel) -> Agent[Any]:
    """A lead agent that delegates once to a digger agent used as a tool."""
    digger = Agent(name="digger", model=inner_model, tools=[tools.search])
    dig = digger.as_tool("dig", "Dig into a topic.", hooks=hooks)
    lead_model = ScriptedModel([[tool_call("dig", {"input": "topic"})]], loop_tool=None)
    return Agent(name="lead", model=lead_model, tools=[dig])


async def test_an_agent_tool_cannot_spend_past_its_callers_remainder(make_warden, tools) -> None:
    inner_model = ScriptedModel()  # would search forever
    hooks = BudgetRunHooks(make_warden(limits={"max_iterations": 4}), user="u1")
    lead = lead_with(tools, hooks, inner_model)
    with pytest.raises(BudgetExceeded) as info:
        await Runner.run(lead, "research it", hooks=hooks)
    assert inner_model.calls == 3  # the lead's one call left three for the child
    report = info.value.report
    assert report is not None and report.agent == "lead"
    assert report.iterations == 4 and report.tool_calls == 1 + 3
    [child] = report.children
    assert (child.agent, child.iterations, child.tool_calls) == ("digger", 3, 3)
    assert child.parent_run_id == report.run_id and child.stop_reason == "max_iterations"
    assert 0 < child.cost_usd < report.cost_usd


async def test_a_child_runs_spend_shows_in_its_parents_report(make_warden, sink, tools) -> None:
    inner_model = ScriptedModel([[tool_call("search", {"q": "x"})]], loop_tool=None)
    hooks = BudgetRunHooks(make_warden())
    result = await run_guarded(
        lead_with(tools, hooks, inner_model), "go", hooks.warden, hooks=hooks
    )
    assert result.output == "done" and not result.partial
    report = result.report
    assert report is not None and report.stop_reason == "completed"
    [child] = report.children
    assert child.stop_reason == "completed" and child.iterations == 2
    assert report.iterations == 2 + 2  # the lead's two calls and the child's two
    child_events = [e for e in sink.cost_events if e.run_id == child.run_id]
    assert len(child_events) == 3 and {e.parent_run_id for e in child_events} == {report.run_id}
    assert report.cost_usd == pytest.approx(sum(e.cost_usd for e in sink.cost_events))


async def test_a_handoff_keeps_one_run_without_children(make_warden, sink, tools) -> None:
    writer = Agent(name="writer", model=ScriptedModel(loop_tool=None), tools=[tools.search])
    first = ScriptedModel([[tool_call("transfer_to_writer")]])
    triage = Agent(name="triage", model=first, tools=[tools.search], handoffs=[writer])
    result = await run_guarded(triage, "write", make_warden())
    assert result.output == "done"
    assert result.report is not None and result.report.children == []
    assert len({event.run_id for event in sink.cost_events}) == 1


def _two_call_agent(tools: Any, n: int) -> Agent[Any]:
    model = ScriptedModel([[tool_call("search", {"q": f"q{n}"})]], loop_tool=None)
    return Agent(name="chat", model=model, tools=[tools.search])


async def test_a_thread_budget_holds_across_runs_on_one_session(make_warden, tools) -> None:
    warden = make_warden(limits={"max_iterations": 2}, budgets=[THREAD_BUDGET])
    session = SQLiteSession("chat-1")
    results = [
        await run_guarded(_two_call_agent(tools, n), f"question {n}", warden, session=session)
        for n in range(3)
    ]
    assert [r.partial for r in results] == [False, False, True]  # run caps reset every run
    assert results[2].cap == "budget:thread=chat-1/total/requests"
    assert warden.spent("thread", "chat-1") == 5
    other = await run_guarded(_two_call_agent(tools, 9), "hi", warden, session=SQLiteSession("b"))
    assert not other.partial and warden.spent("thread", "b") == 2


async def test_the_conversation_id_becomes_the_thread(make_warden, sink, tools) -> None:
    warden = make_warden(budgets=[THREAD_BUDGET])
    await run_guarded(_two_call_agent(tools, 0), "hi", warden, conversation_id="conv-9")
    assert {event.thread for event in sink.cost_events} == {"conv-9"}
    assert warden.spent("thread", "conv-9") == 2
