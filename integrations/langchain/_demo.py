"""``budgetwarden demo`` rows for LangChain: a real create_agent agent, a scripted looping model."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import HumanMessage
from langchain_core.tools import BaseTool, StructuredTool
from langgraph.errors import GraphRecursionError

from budgetwarden import BudgetExceeded, Limits, ListSink, Policy, RunReport, Warden

from ._scripted import ScriptedChatModel
from .handler import BudgetCallbackHandler
from .middleware import BudgetMiddleware

__all__ = ["run_demo"]

MODEL = "gpt-4o"
PAGE = "Agents overspend because they loop, retry and re-send their whole context. " * 12
TASK = {"messages": [HumanMessage("Why do agents overspend?")]}


def _search(query: str) -> str:
    return PAGE


def _agent(middleware: list[BudgetMiddleware] | None = None) -> Any:
    """A real agent whose model always wants one more search; its prompt grows each turn."""
    model = ScriptedChatModel(
        model_name=MODEL, tool="web_search", input_tokens=None, output_tokens=40, max_tokens=256
    )
    tool: BaseTool = StructuredTool.from_function(
        _search, name="web_search", description="Search the web."
    )
    return create_agent(model, [tool], middleware=middleware or [])


def _row(name: str, report: RunReport, stop: str) -> dict[str, Any]:
    return {
        "agent": name,
        "model_calls": report.iterations,
        "tool_calls": report.tool_calls,
        "input_tokens": report.input_tokens,
        "output_tokens": report.output_tokens,
        "cost_usd": report.cost_usd,
        "stop": stop,
    }


def _unguarded() -> dict[str, Any]:
    """No caps: LangGraph's recursion limit is the only thing that ends it, with no answer."""
    sink = ListSink()
    handler = BudgetCallbackHandler(Warden(Policy(), sinks=[sink], log_events=False))
    with contextlib.suppress(GraphRecursionError):
        _agent().invoke(TASK, config={"callbacks": [handler], "recursion_limit": 20})
    events = sink.cost_events
    report = RunReport(
        run_id=events[0].run_id or "-",
        iterations=sum(e.kind == "llm" for e in events),
        tool_calls=sum(e.kind == "tool" for e in events),
        input_tokens=sum(e.input_tokens for e in events),
        output_tokens=sum(e.output_tokens for e in events),
        cost_usd=sum(e.cost_usd for e in events),
    )
    return _row("LangChain agent, no caps (recursion_limit=20)", report, "GraphRecursionError")


def _handler() -> dict[str, Any]:
    """The callback handler raises BudgetExceeded, with the transcript and the report."""
    warden = Warden(Policy(limits=Limits(max_cost_usd=0.02)), log_events=False)
    handler = BudgetCallbackHandler(warden, workflow="demo")
    try:
        _agent().invoke(TASK, config={"callbacks": [handler]})
    except BudgetExceeded as exc:
        assert exc.report is not None
        return _row("LangChain agent, BudgetCallbackHandler ($0.02)", exc.report, exc.cap)
    raise AssertionError("the demo agent never stops by itself")


def _middleware() -> dict[str, Any]:
    """The middleware makes the last call it allows without tools: the model answers."""
    policy = Policy(limits=Limits(max_iterations=5, final_answer=True))
    warden = Warden(policy, log_events=False)
    result = _agent([BudgetMiddleware(warden, workflow="demo")]).invoke(TASK)
    stop = result["messages"][-1].response_metadata["budgetwarden"]
    report = RunReport.model_validate(stop["report"])
    name = "LangChain agent, BudgetMiddleware (5 model calls, final answer)"
    return _row(name, report, f"{stop['cap']}, answered")


def run_demo() -> list[dict[str, Any]]:
    """Rows for the demo table: the same looping agent without caps, then governed two ways."""
    callbacks_logger = logging.getLogger("langchain_core.callbacks.manager")
    level = callbacks_logger.level
    callbacks_logger.setLevel(logging.ERROR)  # LangChain logs every callback that raises
    try:
        return [_unguarded(), _handler(), _middleware()]
    finally:
        callbacks_logger.setLevel(level)
