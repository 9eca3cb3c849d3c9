"""BudgetMiddleware stacked with LangChain's own middleware, in the order the README gives."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from langchain.agents.middleware import (
    HumanInTheLoopMiddleware,
    ModelFallbackMiddleware,
    ModelRetryMiddleware,
    ToolRetryMiddleware,
)
from langchain_core.tools import BaseTool, StructuredTool, ToolException
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command, interrupt
from lc_fakes import CountedTool, ScriptedChatModel, agent_graph, inputs, make_warden

from budgetwarden import BudgetExceeded, Limits, Policy, RunFinished, ToolRules
from budgetwarden.finalizing import join_abandoned
from budgetwarden.integrations.langchain import (
    BudgetCallbackHandler,
    BudgetMiddleware,
    retryable,
)

MODES = ["sync", "async"]


def run_agent(agent: Any, mode: str) -> Any:
    if mode == "sync":
        return agent.invoke(inputs("find the answer"))
    return asyncio.run(agent.ainvoke(inputs("find the answer")))


class FlakyTool:
    """A ``search`` tool whose first ``fails`` runs of each query raise."""

    def __init__(self, fails: int) -> None:
        self.fails = fails
        self.runs: dict[str, int] = {}
        self.tool: BaseTool = StructuredTool.from_function(
            func=self._run, name="search", description="Search the web for a query."
        )

    def _run(self, query: str) -> str:
        self.runs[query] = self.runs.get(query, 0) + 1
        if self.runs[query] <= self.fails:
            raise ToolException(f"search backend down for {query!r}")
        return f"results for {query}"


@pytest.mark.parametrize("mode", MODES)
def test_tool_retries_inside_tool_retry_middleware_are_counted_and_no_loop(mode: str) -> None:
    """Listed after ToolRetryMiddleware, every run of a tool is counted and priced, and the
    retries of one call are not the model repeating itself."""
    flaky = FlakyTool(fails=2)
    model = ScriptedChatModel(answer_after=2)
    policy = Policy(
        limits=Limits(max_repeated_tool_calls=2),
        tools=ToolRules(price_usd={"search": 0.01}),
    )
    warden, sink = make_warden(policy)
    retry = ToolRetryMiddleware(max_retries=2, initial_delay=0, jitter=False)
    agent = agent_graph(model, [flaky.tool], middleware=[retry, BudgetMiddleware(warden)])
    result = run_agent(agent, mode)
    assert list(flaky.runs.values()) == [3, 3]  # two calls, each failing twice first
    assert "budgetwarden" not in result["messages"][-1].response_metadata
    finished = sink.of_type(RunFinished)[-1]
    assert finished.stop_reason == "completed"
    assert finished.tool_calls == 6
    tool_events = [e for e in sink.cost_events if e.kind == "tool"]
    assert [e.status for e in tool_events] == ["error", "error", "ok"] * 2
    assert finished.cost_usd == pytest.approx(0.06 + 3 * model_cost(sink))


def model_cost(sink: Any) -> float:
    """What one model call of the run cost (the scripted model's calls all cost the same)."""
    costs = {round(e.cost_usd, 12) for e in sink.cost_events if e.kind == "llm"}
    assert len(costs) == 1
    return costs.pop()


@pytest.mark.parametrize("mode", MODES)
def test_a_fallback_model_is_reserved_at_its_own_price_inside_the_fallback(mode: str) -> None:
    """Listed after ModelFallbackMiddleware, the fallback call passes through the guard: a
    cap that the pricier fallback's worst case does not fit refuses it before it runs."""
    primary = ScriptedChatModel(max_tokens=1000, fail_calls=frozenset(range(1, 100)))
    fallback = ScriptedChatModel(model_name="o1", max_tokens=1000, answer_after=0)
    warden, sink = make_warden(Policy(limits=Limits(max_cost_usd=0.005)))
    middleware = [ModelFallbackMiddleware(fallback), BudgetMiddleware(warden)]
    result = run_agent(agent_graph(primary, [CountedTool().tool], middleware=middleware), mode)
    assert (primary.calls, fallback.calls) == (1, 0)
    assert result["messages"][-1].response_metadata["budgetwarden"]["cap"] == "max_cost_usd"
    assert [(e.requested_model, e.outcome) for e in sink.cost_events] == [
        ("gpt-4o-mini", "provider_error")
    ]


def refused_twice(handler_or_middleware: str, retry_on: Any) -> tuple[Any, ScriptedChatModel]:
    """An agent whose second model call is refused, under ModelRetryMiddleware(retry_on)."""
    model = ScriptedChatModel()
    retry = (
        ModelRetryMiddleware(max_retries=2, initial_delay=0, jitter=False)
        if retry_on is None
        else ModelRetryMiddleware(max_retries=2, initial_delay=0, jitter=False, retry_on=retry_on)
    )
    policy = Policy(limits=Limits(max_iterations=1), on_exceeded="raise")
    warden, _ = make_warden(policy)
    tools = [CountedTool().tool]
    if handler_or_middleware == "handler":
        agent = agent_graph(model, tools, middleware=[retry])
        handler = BudgetCallbackHandler(warden)
        return (lambda: agent.invoke(inputs("go"), config={"callbacks": [handler]})), model
    agent = agent_graph(model, tools, middleware=[retry, BudgetMiddleware(warden)])
    return (lambda: agent.invoke(inputs("go"))), model


@pytest.mark.parametrize("guard", ["handler", "middleware"])
def test_retryable_lets_a_refusal_out_of_model_retry_middleware(guard: str) -> None:
    invoke, model = refused_twice(guard, retryable)
    with pytest.raises(BudgetExceeded) as info:
        invoke()
    assert info.value.cap == "max_iterations"
    assert model.calls == 1


@pytest.mark.parametrize("guard", ["handler", "middleware"])
def test_langchains_default_retry_rule_swallows_a_refusal(guard: str) -> None:
    """Why ``retryable`` exists: LangChain's default retries the refusal, then answers."""
    invoke, model = refused_twice(guard, None)
    final = invoke()["messages"][-1]
    assert "BudgetExceeded" in final.text
    assert model.calls == 1


def test_retryable_keeps_langchains_rule_for_other_errors() -> None:
    from langchain_core.exceptions import ModelError

    class Permanent(ModelError):
        is_retryable = False

    assert retryable(TimeoutError("slow")) is True
    assert retryable(Permanent("bad request")) is False
    assert retryable(KeyboardInterrupt()) is False


APPROVE = Command(resume={"decisions": [{"type": "approve"}]})


def reviewed_agent(limits: Limits) -> tuple[Any, Any, Any, BudgetMiddleware]:
    """An agent whose every search waits for a person's approval (HITL), on a thread."""
    warden, sink = make_warden(Policy(limits=limits))
    budget = BudgetMiddleware(warden)
    approval = HumanInTheLoopMiddleware(interrupt_on={"search": True})
    agent = agent_graph(
        ScriptedChatModel(),
        [CountedTool().tool],
        middleware=[budget, approval],
        checkpointer=InMemorySaver(),
    )
    return agent, sink, {"configurable": {"thread_id": "review-1"}}, budget


def finished(sink: Any) -> list[tuple[str | None, bool, int]]:
    gc.collect()  # the interrupted part's run ends when LangGraph drops its state
    join_abandoned()
    return [(e.stop_reason, e.partial, e.iterations) for e in sink.of_type(RunFinished)]


def test_the_part_before_a_human_in_the_loop_interrupt_ends_interrupted() -> None:
    agent, sink, config, _ = reviewed_agent(Limits())
    assert "__interrupt__" in agent.invoke(inputs("task"), config=config)
    assert finished(sink) == [("interrupted", True, 1)]


def test_a_conversation_left_at_an_interrupt_does_not_count_into_the_next_task() -> None:
    agent, sink, config, budget = reviewed_agent(Limits(max_iterations=3))
    agent.invoke(inputs("first task"), config=config)
    agent.invoke(APPROVE, config=config)  # the resumed part: one more call, interrupted
    assert set(budget._invocations.resumed) == {"review-1"}
    agent.invoke(inputs("second task"), config=config)  # left at the interrupt: a new task
    assert budget._invocations.resumed == {}
    assert finished(sink) == [("interrupted", True, 1)] * 3  # task 1 twice, task 2 once
    resumes, result = 0, {"__interrupt__": True}
    while "__interrupt__" in result:  # the new task's resumed part has 3 calls of its own
        result = agent.invoke(APPROVE, config=config)
        resumes += 1
    assert resumes == 4
    assert result["messages"][-1].response_metadata["budgetwarden"]["used"] == 3


@pytest.mark.parametrize("mode", MODES)
def test_a_tool_that_asks_a_person_is_counted_once_and_not_as_failed(mode: str) -> None:
    """``interrupt()`` inside a tool is no failure: the tool runs again, whole, on resume."""
    runs: list[str] = []

    def pay(query: str) -> str:
        runs.append(query)
        answer = interrupt(f"pay for {query}?")
        return f"paid: {answer}"

    tool = StructuredTool.from_function(func=pay, name="search", description="Pay a bill.")
    warden, sink = make_warden(Policy())
    agent = agent_graph(
        ScriptedChatModel(answer_after=1),
        [tool],
        middleware=[BudgetMiddleware(warden)],
        checkpointer=InMemorySaver(),
    )
    config = {"configurable": {"thread_id": "pay-1"}}
    if mode == "sync":
        agent.invoke(inputs("pay it"), config=config)
        agent.invoke(Command(resume="yes"), config=config)
    else:

        async def both() -> None:
            await agent.ainvoke(inputs("pay it"), config=config)
            await agent.ainvoke(Command(resume="yes"), config=config)

        asyncio.run(both())
    assert len(runs) == 2  # LangGraph ran the tool again on resume
    tool_events = [e for e in sink.cost_events if e.kind == "tool"]
    assert [e.status for e in tool_events] == ["ok"]
    assert sorted((reason, partial) for reason, partial, _ in finished(sink)) == [
        ("completed", False),
        ("interrupted", True),
    ]


def test_the_handler_ends_the_part_before_an_interrupt_interrupted() -> None:
    warden, sink = make_warden(Policy())
    approval = HumanInTheLoopMiddleware(interrupt_on={"search": True})
    agent = agent_graph(
        ScriptedChatModel(answer_after=1),
        [CountedTool().tool],
        middleware=[approval],
        checkpointer=InMemorySaver(),
    )
    config = {"configurable": {"thread_id": "h-1"}, "callbacks": [BudgetCallbackHandler(warden)]}
    assert "__interrupt__" in agent.invoke(inputs("task"), config=config)
    agent.invoke(APPROVE, config=config)
    assert [(e.stop_reason, e.partial) for e in sink.of_type(RunFinished)] == [
        ("interrupted", True),
        ("completed", False),
    ]
