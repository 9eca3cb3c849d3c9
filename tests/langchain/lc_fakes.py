"""Test helpers for the LangChain adapter: counted tools, a hand-made clock, agents to drive."""

from __future__ import annotations

from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import BaseTool, StructuredTool, ToolException
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from budgetwarden import ListSink, Policy, Warden
from budgetwarden.integrations.langchain._scripted import ScriptedChatModel

__all__ = [
    "Clock",
    "CountedTool",
    "ScriptedChatModel",
    "agent_graph",
    "hand_loop",
    "inputs",
    "make_warden",
    "react_graph",
]


class Clock:
    """Epoch seconds that move only when a test (or a tool) says so."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CountedTool:
    """A ``search`` tool that counts its calls; it can fail or move a clock each time."""

    def __init__(
        self,
        name: str = "search",
        *,
        fail: bool = False,
        clock: Clock | None = None,
        step_seconds: float = 0.0,
    ) -> None:
        self.calls = 0
        self._fail = fail
        self._clock = clock
        self._step = step_seconds
        self.tool: BaseTool = StructuredTool.from_function(
            func=self._run,
            name=name,
            description="Search the web for a query.",
            handle_tool_error=True,
        )

    def _run(self, query: str) -> str:
        self.calls += 1
        if self._clock is not None:
            self._clock.advance(self._step)
        if self._fail:
            raise ToolException(f"search backend down for {query!r}")
        return f"results for {query}"


def make_warden(
    policy: Policy | dict[str, Any] | None = None, **kwargs: Any
) -> tuple[Warden, ListSink]:
    """A warden on the memory ledger with a list sink (and whatever else the test passes)."""
    sink = ListSink()
    warden = Warden(policy, sinks=[sink], log_events=False, **kwargs)
    return warden, sink


def agent_graph(model: BaseChatModel, tools: list[BaseTool], **kwargs: Any) -> Any:
    """A real LangChain 1.x agent."""
    return create_agent(model, tools, **kwargs)


def react_graph(model: BaseChatModel, tools: list[BaseTool]) -> Any:
    """A hand-built LangGraph ReAct loop: model node, ToolNode, tools_condition."""
    bound = model.bind_tools(tools)

    def call_model(state: MessagesState) -> dict[str, list[BaseMessage]]:
        return {"messages": [bound.invoke(state["messages"])]}

    async def acall_model(state: MessagesState) -> dict[str, list[BaseMessage]]:
        return {"messages": [await bound.ainvoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", RunnableLambda(call_model, afunc=acall_model))
    graph.add_node("tools", ToolNode(tools))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph.compile()


def hand_loop(model: BaseChatModel, tools: list[BaseTool], turns: int = 50) -> Any:
    """A plain Runnable: an agent loop written by hand inside one RunnableLambda."""
    bound = model.bind_tools(tools)
    by_name = {tool.name: tool for tool in tools}

    def loop(question: str) -> list[BaseMessage]:
        messages: list[BaseMessage] = [HumanMessage(question)]
        for _ in range(turns):
            reply = bound.invoke(messages)
            messages.append(reply)
            if not isinstance(reply, AIMessage) or not reply.tool_calls:
                break
            messages.extend(by_name[call["name"]].invoke(call) for call in reply.tool_calls)
        return messages

    return RunnableLambda(loop)


def inputs(text: str = "find the answer") -> dict[str, Any]:
    """Agent input with one user message."""
    return {"messages": [HumanMessage(text)]}
