"""Issue 12 on LangChain: pause and resume, cancel from outside, grants, throttled waits."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from functools import partial
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langchain_core.tools import StructuredTool
from langgraph.checkpoint.memory import InMemorySaver
from lc_fakes import Clock, CountedTool, ScriptedChatModel, agent_graph, inputs, make_warden

from budgetwarden import Budget, BudgetExceeded, Limits, Policy, Warden
from budgetwarden.events import Notice
from budgetwarden.grants import Grant, LimitReached
from budgetwarden.integrations.langchain import (
    BudgetCallbackHandler,
    BudgetMiddleware,
    aresume_langgraph,
    resume_langgraph,
)

MODES = ["sync", "async"]
EIGHT_HOURS = 8 * 3600
CONFIG = {"configurable": {"thread_id": "t1"}}


def pause_policy(requests: int = 3) -> Policy:
    return Policy(
        budgets=[Budget(scope="user", window="8h", max_requests=requests)], on_exceeded="pause"
    )


def paused_agent(warden: Warden, model: ScriptedChatModel, search: CountedTool, saver: Any) -> Any:
    middleware = [BudgetMiddleware(warden, user="u1")]
    return agent_graph(model, [search.tool], middleware=middleware, checkpointer=saver)


def assert_transcript_grows_by_one_turn(model: ScriptedChatModel) -> None:
    """Every model call saw the previous call's transcript plus one turn: none was repeated."""
    assert [len(prompt) for prompt in model.prompts] == [1 + 2 * i for i in range(model.calls)]


# ---- pause and resume --------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_paused_agent_naps_until_the_window_resets_and_resumes_where_it_stopped(
    mode: str,
) -> None:
    clock = Clock()
    warden, sink = make_warden(pause_policy(), clock=clock, sleep=clock.advance)
    model, search = ScriptedChatModel(answer_after=4), CountedTool()
    agent = paused_agent(warden, model, search, InMemorySaver())
    if mode == "sync":
        first = agent.invoke(inputs(), config=CONFIG)
    else:
        first = asyncio.run(agent.ainvoke(inputs(), config=CONFIG))
    (pending,) = first["__interrupt__"]
    assert pending.value["cap"] == "budget:user=u1/8h/requests"
    assert (model.calls, search.calls) == (3, 3)
    handle = warden.load_handle(pending.value["handle"])
    assert handle is not None and handle.resets_at == clock.now + EIGHT_HOURS
    assert handle.report.iterations == 3 and handle.state["thread_id"] == "t1"
    assert not warden.ready_to_resume(handle)

    if mode == "sync":
        result = warden.nap_and_resume(handle.id, partial(resume_langgraph, agent))
    else:
        resume = partial(aresume_langgraph, agent)
        result = asyncio.run(warden.anap_and_resume(handle.id, resume))
    assert clock.now >= handle.resets_at, "the nap ran on the warden's clock"
    assert result["messages"][-1].text == "Done after 4 tool turns."
    assert (model.calls, search.calls) == (5, 4)
    assert_transcript_grows_by_one_turn(model)
    assert warden.load_handle(handle.id) is None
    assert [e.code for e in sink.events if isinstance(e, Notice)] == ["refused", "pause"]


def test_a_handle_in_sqlite_resumes_under_a_new_warden_with_a_raised_budget(tmp_path: Any) -> None:
    clock = Clock()
    ledger = f"sqlite:///{tmp_path / 'spend.db'}"
    saver = InMemorySaver()  # stands for the application's persistent checkpointer
    model, search = ScriptedChatModel(answer_after=4), CountedTool()
    first_warden = Warden(pause_policy(3), ledger=ledger, clock=clock, log_events=False)
    first = paused_agent(first_warden, model, search, saver).invoke(inputs(), config=CONFIG)
    handle_id = first["__interrupt__"][0].value["handle"]
    first_warden.close()

    # Later, elsewhere: the same ledger file, a policy with a raised budget, a new agent.
    raised = Warden(pause_policy(10), ledger=ledger, clock=clock, log_events=False)
    handle = raised.load_handle(handle_id)
    assert handle is not None and raised.ready_to_resume(handle)
    agent = paused_agent(raised, model, search, saver)
    result = raised.nap_and_resume(handle_id, partial(resume_langgraph, agent))
    assert clock.now < handle.resets_at, "no wait: the budget was raised"
    assert result["messages"][-1].text == "Done after 4 tool turns."
    assert (model.calls, search.calls) == (5, 4)
    assert_transcript_grows_by_one_turn(model)
    assert raised.spent("user", "u1") == 5
    assert raised.paused() == []


def test_an_agent_resumed_too_early_pauses_again_without_calling_the_model(
    search: CountedTool,
) -> None:
    clock = Clock()
    warden, _ = make_warden(pause_policy(2), clock=clock)
    model = ScriptedChatModel()
    agent = paused_agent(warden, model, search, InMemorySaver())
    first = agent.invoke(inputs(), config=CONFIG)
    handle = warden.load_handle(first["__interrupt__"][0].value["handle"])
    assert handle is not None
    again = resume_langgraph(agent, handle)
    (pending,) = again["__interrupt__"]
    assert pending.value["handle"] != handle.id
    assert model.calls == 2
    clock.advance(EIGHT_HOURS)
    later = warden.load_handle(pending.value["handle"])
    assert later is not None
    resume_langgraph(agent, later)
    assert model.calls == 4, "two more calls in the new window, then a pause again"
    assert_transcript_grows_by_one_turn(model)


def test_the_handler_saves_a_handle_and_resume_reruns_the_refused_step(
    search: CountedTool,
) -> None:
    clock = Clock()
    warden, _ = make_warden(pause_policy(), clock=clock, sleep=clock.advance)
    model = ScriptedChatModel(answer_after=4)
    agent = agent_graph(model, [search.tool], checkpointer=InMemorySaver())
    config = {**CONFIG, "callbacks": [BudgetCallbackHandler(warden, user="u1")]}
    with pytest.raises(BudgetExceeded) as caught:
        agent.invoke(inputs(), config=config)
    handle = caught.value.handle  # type: ignore[attr-defined]
    assert handle.cap == "budget:user=u1/8h/requests" and model.calls == 3
    result = warden.nap_and_resume(handle.id, partial(resume_langgraph, agent, config=config))
    assert result["messages"][-1].text == "Done after 4 tool turns."
    assert (model.calls, search.calls) == (5, 4)
    assert_transcript_grows_by_one_turn(model)


# ---- cancel from outside -----------------------------------------------------------------


@pytest.mark.parametrize("adapter", ["middleware", "handler"])
def test_a_cancel_from_another_thread_stops_a_running_agent_at_its_next_call(
    adapter: str,
) -> None:
    warden, sink = make_warden(Policy())
    in_tool, cancelled = threading.Event(), threading.Event()

    def slow_search(query: str) -> str:
        in_tool.set()
        assert cancelled.wait(5)
        return "results"

    def operator() -> None:
        assert in_tool.wait(5)
        warden.cancel(run_id=sink.cost_events[0].run_id, reason="user pressed stop")
        cancelled.set()

    model = ScriptedChatModel()
    tool = StructuredTool.from_function(slow_search, name="search", description="Search.")
    middleware = [BudgetMiddleware(warden)] if adapter == "middleware" else []
    config = {"callbacks": [BudgetCallbackHandler(warden)]} if adapter == "handler" else {}
    agent = agent_graph(model, [tool], middleware=middleware)
    canceller = threading.Thread(target=operator)
    canceller.start()
    try:
        if adapter == "middleware":
            final = agent.invoke(inputs(), config=config)["messages"][-1]
            assert final.response_metadata["budgetwarden"]["cap"] == "cancelled"
        else:
            with pytest.raises(BudgetExceeded) as caught:
                agent.invoke(inputs(), config=config)
            assert caught.value.cap == "cancelled"
    finally:
        canceller.join()
    assert model.calls == 1, "the tool that was running finished; the next call was refused"


# ---- approval to go on -------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_grant_of_five_cents_lets_the_run_go_exactly_that_far(mode: str) -> None:
    asked: list[LimitReached] = []

    def approve_once(question: LimitReached) -> Grant | None:
        asked.append(question)
        return Grant(extra=0.05, by="alice") if len(asked) == 1 else None

    async def aapprove_once(question: LimitReached) -> Grant | None:
        await asyncio.sleep(0)
        return approve_once(question)

    # $0.009 a call, reserved exactly: two fit in $0.02, five more in the granted $0.05.
    prices = {"house-model": {"input_cost_per_token": 0.0, "output_cost_per_token": 2e-4}}
    model = ScriptedChatModel(model_name="house-model", output_tokens=45, max_tokens=45)
    on_limit = approve_once if mode == "sync" else aapprove_once
    policy = Policy(limits=Limits(max_cost_usd=0.02), prices=prices)
    warden, sink = make_warden(policy, on_limit=on_limit)
    agent = agent_graph(model, [CountedTool().tool], middleware=[BudgetMiddleware(warden)])
    result = agent.invoke(inputs()) if mode == "sync" else asyncio.run(agent.ainvoke(inputs()))
    assert model.calls == 7
    stop = result["messages"][-1].response_metadata["budgetwarden"]
    assert stop["cap"] == "max_cost_usd" and stop["limit"] == pytest.approx(0.07)
    assert stop["report"]["cost_usd"] == pytest.approx(0.063)
    grants = [e for e in sink.events if isinstance(e, Notice) and e.code == "grant"]
    assert [(g.data["by"], g.data["extra"]) for g in grants] == [("alice", 0.05)]
    assert [q.cap for q in asked] == ["max_cost_usd", "max_cost_usd"]


# ---- throttling --------------------------------------------------------------------------


@pytest.mark.parametrize("adapter", ["middleware", "handler"])
async def test_a_one_second_wait_budget_holds_calls_without_blocking_the_event_loop(
    adapter: str,
) -> None:
    budget = Budget(
        scope="user", window="1s", max_requests=1, when_exhausted="wait", max_wait_seconds=3
    )
    warden, sink = make_warden(Policy(budgets=[budget]))
    model = ScriptedChatModel(answer_after=2)
    middleware = [BudgetMiddleware(warden, user="u1")] if adapter == "middleware" else []
    config = (
        {"callbacks": [BudgetCallbackHandler(warden, user="u1")]} if adapter == "handler" else {}
    )
    agent = agent_graph(model, [CountedTool().tool], middleware=middleware)
    beats: list[float] = []

    async def heartbeat() -> None:
        while True:
            beats.append(time.monotonic())
            await asyncio.sleep(0.02)

    beating = asyncio.create_task(heartbeat())
    result = await agent.ainvoke(inputs(), config=config)
    beating.cancel()
    assert isinstance(result["messages"][-1], AIMessage)
    assert result["messages"][-1].text == "Done after 2 tool turns."
    waits = [e for e in sink.events if isinstance(e, Notice) and e.code == "wait"]
    assert waits and all(0 < w.data["seconds"] <= 1.2 for w in waits)
    assert max(b - a for a, b in itertools.pairwise(beats)) < 0.3, "the loop ran on"
