"""BudgetCallbackHandler on real create_agent agents, LangGraph graphs and plain Runnables."""

from __future__ import annotations

import asyncio
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import StructuredTool
from langgraph.graph import END, START, MessagesState, StateGraph
from lc_fakes import (
    Clock,
    CountedTool,
    ScriptedChatModel,
    agent_graph,
    hand_loop,
    inputs,
    make_warden,
    react_graph,
)

from budgetwarden import (
    BudgetExceeded,
    Grant,
    Limits,
    Policy,
    PriceBook,
    Routing,
    RunFinished,
    ToolDenied,
    ToolRules,
    Usage,
)
from budgetwarden.integrations.langchain import BudgetCallbackHandler

MODES = ["sync", "async"]
CUSTOM_PRICE = {"input_cost_per_token": 1e-6, "output_cost_per_token": 1e-5}


def invoke(runnable: Any, value: Any, mode: str, **config: Any) -> Any:
    """Invoke sync or async, with the given config."""
    if mode == "sync":
        return runnable.invoke(value, config=config)
    return asyncio.run(runnable.ainvoke(value, config=config))


def refused(runnable: Any, value: Any, mode: str, handler: BudgetCallbackHandler) -> Any:
    """Invoke and return the BudgetExceeded that must come out of it."""
    with pytest.raises(BudgetExceeded) as caught:
        invoke(runnable, value, mode, callbacks=[handler])
    return caught.value


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("driver", ["create_agent", "langgraph", "plain_runnable"])
def test_max_iterations_stops_every_kind_of_runnable_before_the_next_model_call(
    driver: str, mode: str, model: ScriptedChatModel, search: CountedTool
) -> None:
    warden, _ = make_warden(Policy(limits=Limits(max_iterations=3)))
    build = {"create_agent": agent_graph, "langgraph": react_graph, "plain_runnable": hand_loop}
    runnable = build[driver](model, [search.tool])
    value = "find the answer" if driver == "plain_runnable" else inputs()
    exc = refused(runnable, value, mode, BudgetCallbackHandler(warden, user="u1"))
    assert (model.calls, search.calls) == (3, 3)
    assert exc.cap == "max_iterations"
    assert (exc.limit, exc.used) == (3, 3)
    assert exc.report.iterations == 3
    assert exc.report.stop_reason == "max_iterations"
    assert isinstance(exc.partial[0], HumanMessage)
    assert isinstance(exc.partial[-1], ToolMessage)
    assert sum(isinstance(m, AIMessage) for m in exc.partial) == 3


@pytest.mark.parametrize("mode", MODES)
def test_max_tool_calls_refuses_the_tool_before_it_runs(
    mode: str, model: ScriptedChatModel, search: CountedTool
) -> None:
    warden, _ = make_warden(Policy(limits=Limits(max_tool_calls=2)))
    exc = refused(agent_graph(model, [search.tool]), inputs(), mode, BudgetCallbackHandler(warden))
    assert (model.calls, search.calls) == (3, 2)
    assert exc.cap == "max_tool_calls"
    assert exc.report.tool_calls == 2
    last = exc.partial[-1]
    assert isinstance(last, AIMessage) and last.tool_calls, "the refused call is the last thing"


@pytest.mark.parametrize("mode", MODES)
def test_per_tool_cap_names_the_tool(
    mode: str, model: ScriptedChatModel, search: CountedTool
) -> None:
    warden, _ = make_warden(Policy(tools=ToolRules(max_calls={"search": 2})))
    exc = refused(react_graph(model, [search.tool]), inputs(), mode, BudgetCallbackHandler(warden))
    assert search.calls == 2
    assert exc.cap == "max_tool_calls[search]"
    assert exc.report.tool_calls_by_name == {"search": 2}


def test_max_cost_usd_allows_only_calls_whose_worst_case_fits() -> None:
    # Each call really costs 1000 * 1e-6 + 50 * 1e-5 = $0.0015. The first call's worst case
    # is its estimated prompt (~200 tokens) and 100 output tokens, ~$0.0012; from the second
    # on, the prompt the provider billed (1,000) is reserved (Run.prompt_gap): ~$0.002.
    # With $0.005: calls at $0 and $0.0015 fit; the third ($0.003 + ~$0.002) does not.
    model = ScriptedChatModel(model_name="house-model", input_tokens=1000, output_tokens=50)
    search = CountedTool()
    policy = Policy(
        limits=Limits(max_cost_usd=0.005),
        prices={"house-model": CUSTOM_PRICE},
        default_max_output_tokens=100,
    )
    warden, _ = make_warden(policy)
    exc = refused(
        agent_graph(model, [search.tool]), inputs(), "sync", BudgetCallbackHandler(warden)
    )
    assert model.calls == 2
    assert exc.cap == "max_cost_usd"
    assert exc.report.cost_usd == pytest.approx(0.003)
    assert exc.report.cost_usd <= 0.005


@pytest.mark.parametrize(
    ("limits", "cap", "calls"),
    [
        # 1000 real input tokens per call for prompts estimated under 500: from the second
        # call on, the reservation counts the billed 1,000, so a third call (3,000) is not
        # made (it was, when only the estimate was reserved: the cap was crossed by 500).
        (Limits(max_input_tokens=2500), "max_input_tokens", 2),
        # 50 real output tokens per call, 100 reserved: 0+100, 50+100, 100+100, 150+100 fit.
        (Limits(max_output_tokens=250), "max_output_tokens", 4),
    ],
)
def test_token_caps_stop_the_call_that_would_cross_them(
    limits: Limits, cap: str, calls: int, search: CountedTool
) -> None:
    model = ScriptedChatModel(input_tokens=1000, output_tokens=50)
    warden, _ = make_warden(Policy(limits=limits, default_max_output_tokens=100))
    exc = refused(
        agent_graph(model, [search.tool]), inputs(), "async", BudgetCallbackHandler(warden)
    )
    assert model.calls == calls
    assert exc.cap == cap
    assert getattr(exc.report, cap.removeprefix("max_")) <= getattr(limits, cap)


@pytest.mark.parametrize("mode", MODES)
def test_max_wall_seconds_reads_the_wardens_clock(mode: str, model: ScriptedChatModel) -> None:
    clock = Clock()
    search = CountedTool(clock=clock, step_seconds=10)
    warden, _ = make_warden(Policy(limits=Limits(max_wall_seconds=25)), clock=clock)
    exc = refused(agent_graph(model, [search.tool]), inputs(), mode, BudgetCallbackHandler(warden))
    # Model calls at t=0, 10, 20 run; the one at t=30 is refused.
    assert (model.calls, search.calls) == (3, 3)
    assert exc.cap == "max_wall_seconds"


@pytest.mark.parametrize("mode", MODES)
def test_repeated_identical_tool_calls_are_stopped_as_a_loop(
    mode: str, search: CountedTool
) -> None:
    model = ScriptedChatModel(repeat_args=True)
    warden, _ = make_warden(Policy(limits=Limits(max_repeated_tool_calls=2)))
    exc = refused(agent_graph(model, [search.tool]), inputs(), mode, BudgetCallbackHandler(warden))
    assert (model.calls, search.calls) == (3, 2)
    assert exc.cap == "max_repeated_tool_calls"


@pytest.mark.parametrize("mode", MODES)
def test_consecutive_model_errors_stop_a_retrying_model(mode: str) -> None:
    model = ScriptedChatModel(fail_calls=frozenset(range(1, 10)))
    retrying = model.with_retry(stop_after_attempt=5, wait_exponential_jitter=False)
    warden, sink = make_warden(Policy(limits=Limits(max_consecutive_errors=2)))
    exc = refused(retrying, "hello", mode, BudgetCallbackHandler(warden))
    assert model.calls == 2
    assert exc.cap == "max_consecutive_errors"
    assert [e.outcome for e in sink.cost_events] == ["provider_error", "provider_error"]


@pytest.mark.parametrize("mode", MODES)
def test_failing_tool_calls_count_as_errors(mode: str) -> None:
    model = ScriptedChatModel(parallel=2)
    search = CountedTool(fail=True)
    warden, sink = make_warden(Policy(limits=Limits(max_consecutive_errors=2)))
    exc = refused(agent_graph(model, [search.tool]), inputs(), mode, BudgetCallbackHandler(warden))
    # Two parallel tool calls fail in a row: the next model call is refused.
    assert (model.calls, search.calls) == (1, 2)
    assert exc.cap == "max_consecutive_errors"
    assert [e.status for e in sink.cost_events if e.kind == "tool"] == ["error", "error"]


def test_denied_tool_raises_tool_denied_and_never_runs(model: ScriptedChatModel) -> None:
    search = CountedTool()
    warden, _ = make_warden(Policy(tools=ToolRules(deny=["search"])))
    with pytest.raises(ToolDenied) as caught:
        agent_graph(model, [search.tool]).invoke(
            inputs(), config={"callbacks": [BudgetCallbackHandler(warden)]}
        )
    assert search.calls == 0
    assert caught.value.tool == "search"
    assert isinstance(caught.value.partial[-1], AIMessage)


def test_usage_and_model_come_from_the_response(search: CountedTool) -> None:
    model = ScriptedChatModel(model_name="gpt-4o-mini", answer_after=1)
    warden, sink = make_warden()
    result = agent_graph(model, [search.tool]).invoke(
        inputs(), config={"callbacks": [BudgetCallbackHandler(warden)]}
    )
    assert result["messages"][-1].content.startswith("Done")
    llm = [e for e in sink.cost_events if e.kind == "llm"]
    assert [(e.model, e.input_tokens, e.output_tokens, e.estimated) for e in llm] == [
        ("gpt-4o-mini", 100, 20, False)
    ] * 2
    expected = PriceBook().cost("gpt-4o-mini", Usage(input_tokens=100, output_tokens=20))
    assert llm[0].cost_usd == pytest.approx(expected)
    assert [e.tool for e in sink.cost_events if e.kind == "tool"] == ["search"]


def test_missing_usage_is_estimated_and_marked(search: CountedTool) -> None:
    model = ScriptedChatModel(report_usage=False, answer_after=0)
    warden, sink = make_warden()
    agent_graph(model, [search.tool]).invoke(
        inputs(), config={"callbacks": [BudgetCallbackHandler(warden)]}
    )
    (event,) = sink.cost_events
    assert event.estimated
    assert event.output_tokens > 0 and event.input_tokens > 0


def test_cache_and_reasoning_tokens_are_read_from_usage_details() -> None:
    class CachingModel(ScriptedChatModel):
        def _next(self, messages: Any, **kwargs: Any) -> Any:
            result = super()._next(messages, **kwargs)
            message = result.generations[0].message
            message.usage_metadata = {
                "input_tokens": 1000,
                "output_tokens": 300,
                "total_tokens": 1300,
                "input_token_details": {"cache_read": 600, "cache_creation": 100},
                "output_token_details": {"reasoning": 200},
            }
            return result

    warden, sink = make_warden()
    CachingModel(answer_after=0).invoke("hi", config={"callbacks": [BudgetCallbackHandler(warden)]})
    (event,) = sink.cost_events
    assert (event.input_tokens, event.cache_read_tokens, event.cache_write_tokens) == (
        1000,
        600,
        100,
    )
    assert event.reasoning_tokens == 200


def test_a_model_invoked_directly_is_one_run_per_invoke() -> None:
    model = ScriptedChatModel(answer_after=0)
    warden, sink = make_warden(Policy(limits=Limits(max_iterations=1)))
    handler = BudgetCallbackHandler(warden)
    model.invoke("one", config={"callbacks": [handler]})
    model.invoke("two", config={"callbacks": [handler]})
    assert model.calls == 2
    assert len({e.run_id for e in sink.cost_events}) == 2


async def test_concurrent_ainvokes_sharing_one_handler_keep_separate_counters(
    search: CountedTool,
) -> None:
    model = ScriptedChatModel()
    warden, sink = make_warden(Policy(limits=Limits(max_iterations=4)))
    handler = BudgetCallbackHandler(warden, user="u1")
    agent = agent_graph(model, [search.tool])
    texts = ["answer after 1", "answer after 2", "never stop"]
    results = await asyncio.gather(
        *(agent.ainvoke(inputs(t), config={"callbacks": [handler]}) for t in texts),
        return_exceptions=True,
    )
    assert results[0]["messages"][-1].content == "Done after 1 tool turns."
    assert results[1]["messages"][-1].content == "Done after 2 tool turns."
    assert isinstance(results[2], BudgetExceeded)
    assert results[2].report.iterations == 4
    per_run = Counter(e.run_id for e in sink.cost_events if e.kind == "llm")
    assert sorted(per_run.values()) == [2, 3, 4]
    assert model.calls == 9


def test_threads_sharing_one_handler_keep_separate_runs_and_forget_them_all(
    search: CountedTool,
) -> None:
    """The handler's map of runs is shared lock-free: many threads at once lose nothing."""
    model = ScriptedChatModel()
    warden, sink = make_warden(Policy(limits=Limits(max_iterations=10)))
    handler = BudgetCallbackHandler(warden, user="u1")
    agent = agent_graph(model, [search.tool])

    def invoke_one(_: int) -> str:
        result = agent.invoke(inputs("answer after 2"), config={"callbacks": [handler]})
        return str(result["messages"][-1].content)

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(invoke_one, range(32)))
    assert answers == ["Done after 2 tool turns."] * 32
    per_run = Counter(e.run_id for e in sink.cost_events if e.kind == "llm")
    assert sorted(per_run.values()) == [3] * 32
    assert handler._runs == {}
    assert handler._tool_runs == set()


def test_thread_id_from_langgraph_config_attributes_the_run(
    model: ScriptedChatModel, search: CountedTool
) -> None:
    warden, sink = make_warden(Policy(limits=Limits(max_iterations=1)))
    with pytest.raises(BudgetExceeded):
        agent_graph(model, [search.tool]).invoke(
            inputs(),
            config={
                "callbacks": [BudgetCallbackHandler(warden, user="u1")],
                "configurable": {"thread_id": "conv-7"},
            },
        )
    assert {(e.thread, e.user) for e in sink.cost_events} == {("conv-7", "u1")}


def test_a_nested_agent_called_from_a_tool_is_a_child_run_within_the_callers_remainder() -> None:
    inner_model = ScriptedChatModel(model_name="gpt-4o-mini")
    inner_search = CountedTool()
    inner = create_agent(inner_model, [inner_search.tool])

    def research(query: str) -> str:
        result = inner.invoke(inputs(query))
        return str(result["messages"][-1].content)

    outer_model = ScriptedChatModel(tool="research")
    research_tool = StructuredTool.from_function(research, description="Ask a researcher.")
    warden, sink = make_warden(Policy(limits=Limits(max_iterations=4)))
    with pytest.raises(BudgetExceeded) as caught:
        create_agent(outer_model, [research_tool]).invoke(
            inputs(), config={"callbacks": [BudgetCallbackHandler(warden)]}
        )
    # outer call 1 -> research -> inner calls 2, 3, 4 -> inner call 5 refused, out of invoke.
    assert (outer_model.calls, inner_model.calls) == (1, 3)
    report = caught.value.report
    assert report.iterations == 4 and report.parent_run_id is None
    (child,) = report.children
    assert (child.iterations, child.tool_calls, child.parent_run_id) == (3, 3, report.run_id)
    assert child.stop_reason == "max_iterations"
    assert {e.parent_run_id for e in sink.cost_events if e.run_id == child.run_id} == {
        report.run_id
    }
    assert isinstance(caught.value.partial[0], HumanMessage), "the caller's transcript"


@pytest.mark.parametrize("mode", MODES)
def test_a_subgraph_node_is_a_child_run(mode: str, model: ScriptedChatModel) -> None:
    inner = create_agent(model, [CountedTool().tool])
    graph = StateGraph(MessagesState)
    graph.add_node("research", inner)
    graph.add_edge(START, "research")
    graph.add_edge("research", END)
    warden, _ = make_warden(Policy(limits=Limits(max_iterations=3)))
    exc = refused(graph.compile(), inputs(), mode, BudgetCallbackHandler(warden))
    assert model.calls == 3
    (child,) = exc.report.children
    assert (exc.report.iterations, child.iterations) == (3, 3)


def test_a_refused_direct_model_call_never_runs_and_finishes_its_run() -> None:
    model = ScriptedChatModel(answer_after=0)
    warden, _ = make_warden(Policy(limits=Limits(max_iterations=0)))
    with pytest.raises(BudgetExceeded) as caught:
        model.invoke("hi", config={"callbacks": [BudgetCallbackHandler(warden)]})
    assert model.calls == 0
    assert caught.value.report.stop_reason == "max_iterations"
    assert [m.text for m in caught.value.partial] == ["hi"]


@pytest.mark.parametrize("mode", MODES)
def test_the_handler_forgets_every_invocation_it_finished(mode: str, search: CountedTool) -> None:
    warden, _ = make_warden(Policy(limits=Limits(max_iterations=2)))
    handler = BudgetCallbackHandler(warden)
    done = ScriptedChatModel(answer_after=1)
    invoke(agent_graph(done, [search.tool]), inputs(), mode, callbacks=[handler])
    with pytest.raises(BudgetExceeded):
        invoke(agent_graph(ScriptedChatModel(), [search.tool]), inputs(), mode, callbacks=[handler])
    with pytest.raises(RuntimeError):
        failing = ScriptedChatModel(fail_calls=frozenset({1}))
        invoke(agent_graph(failing, [search.tool]), inputs(), mode, callbacks=[handler])
    assert handler._runs == {}
    assert handler._tool_runs == set()


def test_a_streamed_agent_stops_mid_stream(model: ScriptedChatModel, search: CountedTool) -> None:
    warden, _ = make_warden(Policy(limits=Limits(max_iterations=2)))
    agent = agent_graph(model, [search.tool])
    chunks = []
    with pytest.raises(BudgetExceeded):
        for chunk in agent.stream(inputs(), config={"callbacks": [BudgetCallbackHandler(warden)]}):
            chunks.append(chunk)
    assert model.calls == 2
    assert len(chunks) == 4, "two model steps and two tool steps were streamed first"


async def test_a_stream_its_reader_closes_ends_its_run_as_cancelled(
    model: ScriptedChatModel, search: CountedTool
) -> None:
    warden, sink = make_warden(Policy(limits=Limits(max_iterations=20)))
    agent = agent_graph(model, [search.tool])
    handler = BudgetCallbackHandler(warden)

    sync_stream = agent.stream(inputs(), config={"callbacks": [handler]})
    next(sync_stream)
    sync_stream.close()
    async_stream = agent.astream(inputs(), config={"callbacks": [handler]})
    await anext(async_stream)
    await async_stream.aclose()

    ends = [event for event in sink.events if isinstance(event, RunFinished)]
    assert [(end.stop_reason, end.partial) for end in ends] == [("cancelled", True)] * 2
    assert model.calls == 2 and handler._runs == {}


@pytest.mark.parametrize("mode", MODES)
def test_a_routing_policy_does_not_make_the_handler_reserve_a_model_that_does_not_run(
    mode: str,
) -> None:
    """A callback cannot switch the model: under a ``Routing`` policy the handler's calls are
    reserved and priced as the agent's own gpt-4o, so the cost cap holds (the routed tier's
    price let each gpt-4o call overshoot its reservation: $0.0334 of $0.03)."""
    model = ScriptedChatModel(model_name="gpt-4o", input_tokens=1500, output_tokens=300)
    policy = Policy(
        limits=Limits(max_cost_usd=0.03),
        routing=Routing(tiers=["gpt-4o-mini", "gpt-4o", "o1"], task_classes={"mid": 1}),
        default_max_output_tokens=300,
    )
    warden, sink = make_warden(policy)
    handler = BudgetCallbackHandler(warden, task_class="mid")
    exc = refused(agent_graph(model, [CountedTool().tool]), inputs(), mode, handler)
    assert exc.cap == "max_cost_usd"
    assert exc.report.cost_usd <= 0.03
    calls = [e for e in sink.cost_events if e.kind == "llm"]
    assert len(calls) == 4 and {e.model for e in calls} == {"gpt-4o"}
    assert {e.route_reason for e in calls} == {"caller model (the caller cannot switch models)"}
    # the first call's prompt is only estimated (no bill to learn from yet); the others are
    # reserved at gpt-4o's price, so they fit their reservations
    assert all(e.overshoot_usd == 0 for e in calls[1:])


def test_a_grant_after_the_final_answer_call_lets_the_run_go_on() -> None:
    """The handler cannot take the tools off the final-answer call, so the model may still
    ask for one; ``on_limit`` is asked then, and its grant must let the run go on (it was
    recorded, and the run stopped anyway: "max_iterations: 3 of 5 used")."""
    asked: list[float] = []

    def decide(question: Any) -> Grant | None:
        asked.append(question.limit)
        return Grant(extra=2, by="alice") if len(asked) == 1 else None

    warden, _ = make_warden(
        Policy(limits=Limits(max_iterations=3, final_answer=True)), on_limit=decide
    )
    model, search = ScriptedChatModel(), CountedTool()
    exc = refused(
        agent_graph(model, [search.tool]), inputs(), "sync", BudgetCallbackHandler(warden)
    )
    assert asked == [3, 5]
    assert model.calls == 5 and search.calls == 4
    assert (exc.cap, exc.limit, exc.used) == ("max_iterations", 5, 5)
