"""BudgetMiddleware on real create_agent agents: caps, graceful ends, raise mode, concurrency."""

from __future__ import annotations

import asyncio
import gc
from collections import Counter
from typing import Any

import pytest
from langchain.agents.middleware import HumanInTheLoopMiddleware, ModelRetryMiddleware
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from lc_fakes import Clock, CountedTool, ScriptedChatModel, agent_graph, inputs, make_warden

from budgetwarden import Budget, BudgetExceeded, Limits, Policy, RunFinished, ToolRules
from budgetwarden.finalizing import join_abandoned
from budgetwarden.integrations.langchain import BudgetMiddleware

MODES = ["sync", "async"]
CUSTOM_PRICE = {"input_cost_per_token": 1e-6, "output_cost_per_token": 1e-5}


def run_agent(agent: Any, mode: str, text: str = "find the answer", **config: Any) -> Any:
    """Invoke the agent sync or async and return its final state."""
    if mode == "sync":
        return agent.invoke(inputs(text), config=config or None)
    return asyncio.run(agent.ainvoke(inputs(text), config=config or None))


def orphan_tool_calls(messages: list[BaseMessage]) -> list[str]:
    """Ids of tool calls that no ToolMessage answers."""
    answered = {m.tool_call_id for m in messages if isinstance(m, ToolMessage)}
    return [
        call["id"] or ""
        for m in messages
        if isinstance(m, AIMessage)
        for call in m.tool_calls
        if call["id"] not in answered
    ]


def assert_graceful_end(result: dict[str, Any], cap: str) -> dict[str, Any]:
    """The agent ended with a final AI message naming the cap, and no orphan tool call."""
    final = result["messages"][-1]
    assert isinstance(final, AIMessage)
    assert not final.tool_calls
    assert cap in final.text
    assert "Done so far:" in final.text
    assert orphan_tool_calls(result["messages"]) == []
    stop: dict[str, Any] = final.response_metadata["budgetwarden"]
    assert stop["cap"] == cap
    assert stop["partial"] is True
    return stop


def governed(model: ScriptedChatModel, tool: CountedTool, policy: Policy, **kw: Any) -> Any:
    warden, _ = make_warden(policy, **kw)
    return agent_graph(model, [tool.tool], middleware=[BudgetMiddleware(warden, user="u1")])


@pytest.mark.parametrize("mode", MODES)
def test_max_iterations_ends_the_agent_with_an_explanation(
    mode: str, model: ScriptedChatModel, search: CountedTool
) -> None:
    agent = governed(model, search, Policy(limits=Limits(max_iterations=3)))
    result = run_agent(agent, mode)
    assert (model.calls, search.calls) == (3, 3)
    stop = assert_graceful_end(result, "max_iterations")
    assert (stop["limit"], stop["used"]) == (3, 3)
    assert stop["report"]["iterations"] == 3
    assert stop["report"]["tool_calls"] == 3
    assert "3 model calls, 3 tool calls" in result["messages"][-1].text


@pytest.mark.parametrize("mode", MODES)
def test_a_model_told_of_the_tool_cap_that_asks_again_is_ended(
    mode: str, model: ScriptedChatModel, search: CountedTool
) -> None:
    agent = governed(model, search, Policy(limits=Limits(max_tool_calls=2)))
    result = run_agent(agent, mode)
    assert (model.calls, search.calls) == (4, 2)
    assert_graceful_end(result, "max_tool_calls")
    told, refused = [m for m in result["messages"] if isinstance(m, ToolMessage)][-2:]
    assert told.status == refused.status == "error"
    assert told.text.startswith("tool call limit reached: do not call 'search' or any tool again")
    assert refused.text.startswith("Not run:")


@pytest.mark.parametrize("mode", MODES)
def test_parallel_calls_past_a_tool_cap_are_told_and_the_model_continues(mode: str) -> None:
    model = ScriptedChatModel(parallel=3, answer_after=1)
    search = CountedTool()
    agent = governed(model, search, Policy(tools=ToolRules(max_calls={"search": 1})))
    result = run_agent(agent, mode)
    assert (model.calls, search.calls) == (2, 1)
    assert result["messages"][-1].text == "Done after 1 tool turns."
    answers = sorted(
        (m for m in result["messages"] if isinstance(m, ToolMessage)), key=lambda m: m.status
    )
    assert [m.status for m in answers] == ["error", "error", "success"]
    told = "tool call limit reached: do not call 'search' again"
    assert all(m.text.startswith(told) for m in answers[:2])
    assert orphan_tool_calls(result["messages"]) == []


@pytest.mark.parametrize("mode", MODES)
def test_parallel_calls_asked_again_end_the_run_and_leave_no_orphan(mode: str) -> None:
    model = ScriptedChatModel(parallel=3)
    search = CountedTool()
    agent = governed(model, search, Policy(tools=ToolRules(max_calls={"search": 1})))
    result = run_agent(agent, mode)
    assert (model.calls, search.calls) == (2, 1)
    assert_graceful_end(result, "max_tool_calls[search]")
    statuses = [m.status for m in result["messages"] if isinstance(m, ToolMessage)]
    assert sorted(statuses) == ["error"] * 5 + ["success"]


def test_max_cost_usd_ends_gracefully_within_the_limit(search: CountedTool) -> None:
    model = ScriptedChatModel(model_name="house-model", input_tokens=1000, output_tokens=50)
    policy = Policy(
        limits=Limits(max_cost_usd=0.005),
        prices={"house-model": CUSTOM_PRICE},
        default_max_output_tokens=100,
    )
    result = run_agent(governed(model, search, policy), "async")
    # $0.0015 a call; from the second call on the billed 1,000-token prompt is reserved
    # (Run.prompt_gap), so the third call's worst case (~$0.002) does not fit in $0.002 left
    assert model.calls == 2
    stop = assert_graceful_end(result, "max_cost_usd")
    assert stop["report"]["cost_usd"] == pytest.approx(0.003)


@pytest.mark.parametrize(
    ("limits", "cap", "calls"),
    [
        # 1,000 billed per call: a third call would cross 2,500 (see test_lc_handler)
        (Limits(max_input_tokens=2500), "max_input_tokens", 2),
        (Limits(max_output_tokens=250), "max_output_tokens", 4),
    ],
)
def test_token_caps_end_the_agent(
    limits: Limits, cap: str, calls: int, search: CountedTool
) -> None:
    model = ScriptedChatModel(input_tokens=1000, output_tokens=50)
    result = run_agent(
        governed(model, search, Policy(limits=limits, default_max_output_tokens=100)), "sync"
    )
    assert model.calls == calls
    stop = assert_graceful_end(result, cap)
    used = stop["report"][cap.removeprefix("max_")]
    assert used <= getattr(limits, cap), "the cap is never crossed"


@pytest.mark.parametrize("mode", MODES)
def test_max_wall_seconds_ends_the_agent(mode: str, model: ScriptedChatModel) -> None:
    clock = Clock()
    search = CountedTool(clock=clock, step_seconds=10)
    agent = governed(model, search, Policy(limits=Limits(max_wall_seconds=25)), clock=clock)
    result = run_agent(agent, mode)
    assert (model.calls, search.calls) == (3, 3)
    assert_graceful_end(result, "max_wall_seconds")


@pytest.mark.parametrize("mode", MODES)
def test_a_tool_loop_is_stopped(mode: str, search: CountedTool) -> None:
    model = ScriptedChatModel(repeat_args=True)
    agent = governed(model, search, Policy(limits=Limits(max_repeated_tool_calls=2)))
    result = run_agent(agent, mode)
    assert (model.calls, search.calls) == (3, 2)
    assert_graceful_end(result, "max_repeated_tool_calls")


@pytest.mark.parametrize("mode", MODES)
def test_consecutive_errors_end_a_retrying_agent(mode: str, search: CountedTool) -> None:
    model = ScriptedChatModel(fail_calls=frozenset(range(1, 10)))
    warden, sink = make_warden(Policy(limits=Limits(max_consecutive_errors=2)))
    retry = ModelRetryMiddleware(max_retries=5, initial_delay=0, jitter=False)
    agent = agent_graph(model, [search.tool], middleware=[retry, BudgetMiddleware(warden)])
    result = run_agent(agent, mode)
    assert model.calls == 2
    assert_graceful_end(result, "max_consecutive_errors")
    assert [e.outcome for e in sink.cost_events] == ["provider_error", "provider_error"]


@pytest.mark.parametrize("mode", MODES)
def test_raise_mode_raises_with_the_transcript_and_report(
    mode: str, model: ScriptedChatModel, search: CountedTool
) -> None:
    policy = Policy(limits=Limits(max_iterations=2), on_exceeded="raise")
    with pytest.raises(BudgetExceeded) as caught:
        run_agent(governed(model, search, policy), mode)
    exc = caught.value
    assert (model.calls, search.calls) == (2, 2)
    assert exc.cap == "max_iterations"
    assert exc.report.iterations == 2
    assert exc.report.stop_reason == "max_iterations"
    assert isinstance(exc.partial[-1], ToolMessage)


def test_raise_mode_raises_when_the_model_asks_past_a_tool_cap_again(
    model: ScriptedChatModel,
) -> None:
    search = CountedTool()
    policy = Policy(limits=Limits(max_tool_calls=1), on_exceeded="raise")
    with pytest.raises(BudgetExceeded) as caught:
        run_agent(governed(model, search, policy), "sync")
    # Told once of the cap (an error answer), the model asks again: that call raises.
    assert (model.calls, search.calls) == (3, 1)
    assert caught.value.cap == "max_tool_calls"


def test_a_denied_tool_gets_an_error_answer_and_the_agent_goes_on(
    search: CountedTool,
) -> None:
    model = ScriptedChatModel(answer_after=1)
    result = run_agent(governed(model, search, Policy(tools=ToolRules(deny=["search"]))), "sync")
    assert search.calls == 0
    denied = result["messages"][2]
    assert isinstance(denied, ToolMessage) and denied.status == "error"
    assert "deny list" in denied.text
    assert result["messages"][-1].text == "Done after 1 tool turns."


def test_a_finished_agent_is_untouched_and_its_run_completes(search: CountedTool) -> None:
    model = ScriptedChatModel(answer_after=2)
    warden, sink = make_warden(Policy(limits=Limits(max_iterations=5)))
    agent = agent_graph(model, [search.tool], middleware=[BudgetMiddleware(warden)])
    result = agent.invoke(inputs())
    assert result["messages"][-1].text == "Done after 2 tool turns."
    assert "budgetwarden" not in result
    assert [e.kind for e in sink.cost_events] == ["llm", "tool", "llm", "tool", "llm"]


@pytest.mark.parametrize("mode", MODES)
def test_a_run_an_exception_ended_is_finished_when_langgraph_drops_it(
    mode: str, search: CountedTool
) -> None:
    """after_agent does not run when the model raises: the run still ends, once, as an
    error, and a run that completed keeps its stop reason when its state is dropped."""
    warden, sink = make_warden(Policy(limits=Limits(max_iterations=5)))
    failing = ScriptedChatModel(fail_calls=frozenset({2}))
    agent = agent_graph(failing, [search.tool], middleware=[BudgetMiddleware(warden)])
    with pytest.raises(RuntimeError, match="scripted provider error"):
        run_agent(agent, mode)
    gc.collect()
    join_abandoned()
    finished = [e for e in sink.events if isinstance(e, RunFinished)]
    assert [(e.stop_reason, e.iterations) for e in finished] == [("error", 2)]

    completing = ScriptedChatModel(answer_after=1)
    agent = agent_graph(completing, [search.tool], middleware=[BudgetMiddleware(warden)])
    run_agent(agent, mode)
    gc.collect()
    join_abandoned()
    finished = [e for e in sink.events if isinstance(e, RunFinished)]
    assert [e.stop_reason for e in finished] == ["error", "completed"]


@pytest.mark.parametrize("mode", MODES)
def test_invocations_ended_at_a_cap_are_freed(mode: str, search: CountedTool) -> None:
    """The finalizer's registry held each run, its refusal's traceback and through that the
    invocation it waited on: every capped invocation stayed in memory (about 50 KB each)."""
    warden, _ = make_warden(Policy(limits=Limits(max_iterations=1)))
    agent = agent_graph(ScriptedChatModel(), [search.tool], middleware=[BudgetMiddleware(warden)])

    def refusals_alive() -> int:
        gc.collect()
        return sum(isinstance(o, BudgetExceeded) for o in gc.get_objects())

    run_agent(agent, mode)
    before = refusals_alive()
    for _ in range(20):
        assert_graceful_end(run_agent(agent, mode), "max_iterations")
    assert refusals_alive() - before <= 1


async def test_concurrent_ainvokes_of_one_agent_keep_separate_counters(
    search: CountedTool,
) -> None:
    model = ScriptedChatModel()
    warden, sink = make_warden(Policy(limits=Limits(max_iterations=4)))
    agent = agent_graph(model, [search.tool], middleware=[BudgetMiddleware(warden)])
    texts = ["answer after 1", "answer after 2", "never stop"]
    results = await asyncio.gather(*(agent.ainvoke(inputs(t)) for t in texts))
    assert results[0]["messages"][-1].text == "Done after 1 tool turns."
    assert results[1]["messages"][-1].text == "Done after 2 tool turns."
    assert_graceful_end(results[2], "max_iterations")
    per_run = Counter(e.run_id for e in sink.cost_events if e.kind == "llm")
    assert sorted(per_run.values()) == [2, 3, 4]


def test_each_invoke_on_a_thread_is_a_new_run_attributed_to_the_thread(
    search: CountedTool,
) -> None:
    model = ScriptedChatModel()
    warden, sink = make_warden(Policy(limits=Limits(max_iterations=2)))
    agent = agent_graph(
        model, [search.tool], middleware=[BudgetMiddleware(warden)], checkpointer=InMemorySaver()
    )
    config = {"configurable": {"thread_id": "conv-1"}}
    agent.invoke(inputs("first"), config=config)
    second = agent.invoke(inputs("second"), config=config)
    assert model.calls == 4, "run caps reset on each invoke"
    assert_graceful_end(second, "max_iterations")
    assert {e.thread for e in sink.cost_events} == {"conv-1"}
    assert len({e.run_id for e in sink.cost_events}) == 2


def test_an_agent_resumed_after_an_interrupt_is_still_governed(search: CountedTool) -> None:
    model = ScriptedChatModel(answer_after=2)
    warden, sink = make_warden(Policy(limits=Limits(max_iterations=2)))
    budget = BudgetMiddleware(warden)
    approval = HumanInTheLoopMiddleware(interrupt_on={"search": True})
    agent = agent_graph(
        model, [search.tool], middleware=[budget, approval], checkpointer=InMemorySaver()
    )
    config = {"configurable": {"thread_id": "review-1"}}
    first = agent.invoke(inputs(), config=config)
    assert "__interrupt__" in first and search.calls == 0
    resume = Command(resume={"decisions": [{"type": "approve"}]})
    second = agent.invoke(resume, config=config)
    assert "__interrupt__" in second and search.calls == 1
    final = agent.invoke(resume, config=config)
    # As with LangChain's own run limits, what ran before the interrupt counts apart.
    assert (model.calls, search.calls) == (3, 2)
    assert final["messages"][-1].text == "Done after 2 tool turns."
    assert {e.thread for e in sink.cost_events} == {"review-1"}
    assert budget._invocations.resumed == {}, "the resumed run was finished at the end"


def test_a_thread_budget_holds_across_invokes_and_threads_stay_apart() -> None:
    model = ScriptedChatModel(answer_after=0)
    budget = Budget(scope="thread", window="total", max_requests=3)
    warden, _ = make_warden(Policy(budgets=[budget]))
    agent = agent_graph(
        model,
        [CountedTool().tool],
        middleware=[BudgetMiddleware(warden)],
        checkpointer=InMemorySaver(),
    )
    on_a = {"configurable": {"thread_id": "a"}}
    answers = [agent.invoke(inputs(f"q{i}"), config=on_a)["messages"][-1] for i in range(4)]
    assert model.calls == 3
    stop = answers[-1].response_metadata["budgetwarden"]
    assert stop["cap"] == "budget:thread=a/total/requests"
    other = agent.invoke(inputs("q"), config={"configurable": {"thread_id": "b"}})
    assert other["messages"][-1].text.startswith("Done")


async def test_a_streamed_agent_ends_with_the_explanation(
    model: ScriptedChatModel, search: CountedTool
) -> None:
    agent = governed(model, search, Policy(limits=Limits(max_iterations=2)))
    steps = [step async for step in agent.astream(inputs(), stream_mode="updates")]
    last = [step["model"] for step in steps if "model" in step][-1]["messages"][-1]
    assert isinstance(last, AIMessage) and "max_iterations" in last.text
    assert "BudgetMiddleware.after_agent" in steps[-1], "the run is finished at the end"
    assert model.calls == 2
