"""LangChain agents for the overhead benchmark: a scripted model, a tool, do-nothing hooks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, NotRequired
from uuid import UUID

from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware, AgentState, ModelRequest, ModelResponse
from langchain.agents.middleware.types import PrivateStateAttr
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolCall
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool, StructuredTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.channels.untracked_value import UntrackedValue
from langgraph.runtime import Runtime

from .texts import prose

QUESTION = "Research why LLM agents overspend and cite sources. " + prose(400)
RESULT = prose(600)


class ScriptedChatModel(BaseChatModel):
    """Asks for ``search`` on turns 1..steps, then answers; reports usage and its name."""

    model_name: str = "gpt-4o-mini"
    steps: int = 8

    @property
    def _llm_type(self) -> str:
        return "bench-scripted"

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools as a provider would; the script decides the calls."""
        return self.bind(tools=[convert_to_openai_tool(tool) for tool in tools], **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        turn = 1 + sum(isinstance(m, AIMessage) for m in messages)
        if turn > self.steps:
            message = AIMessage(content="Agents overspend because nothing counts in the loop.")
        else:
            call = ToolCall(
                name="search", args={"query": f"step {turn}"}, id=f"call_{turn}", type="tool_call"
            )
            message = AIMessage(content="", tool_calls=[call])
        message.usage_metadata = {"input_tokens": 600, "output_tokens": 40, "total_tokens": 640}
        message.response_metadata = {"model_name": self.model_name}
        return ChatResult(generations=[ChatGeneration(message=message)])


def _search(query: str) -> str:
    return f"{query}: {RESULT}"


def search_tool() -> BaseTool:
    """The agent's only tool."""
    return StructuredTool.from_function(
        func=_search, name="search", description="Search the web for a query."
    )


class _NoopState(AgentState[Any]):
    noop: NotRequired[Annotated[object, UntrackedValue, PrivateStateAttr]]


class NoopMiddleware(AgentMiddleware[_NoopState, Any, Any]):
    """The hooks BudgetMiddleware uses (before/after agent, wrap model/tool call), doing nothing."""

    state_schema = _NoopState

    def before_agent(self, state: Any, runtime: Runtime[Any]) -> dict[str, Any] | None:
        return None

    def after_agent(self, state: Any, runtime: Runtime[Any]) -> dict[str, Any] | None:
        return None

    def wrap_model_call(
        self, request: ModelRequest[Any], handler: Callable[[ModelRequest[Any]], ModelResponse[Any]]
    ) -> ModelResponse[Any]:
        return handler(request)

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ModelResponse[Any]:
        return await handler(request)

    def wrap_tool_call(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        return handler(request)


class CountingMiddleware(NoopMiddleware):
    """The least a guard does: a model-call cap, and each call's usage added up (the floor
    under any budget middleware; ours also prices, reserves, attributes and checks tools)."""

    def __init__(self, max_calls: int = 10**9) -> None:
        super().__init__()
        self.max_calls = max_calls
        self.model_calls = 0
        self.total_tokens = 0

    def wrap_model_call(
        self, request: ModelRequest[Any], handler: Callable[[ModelRequest[Any]], ModelResponse[Any]]
    ) -> ModelResponse[Any]:
        if self.model_calls >= self.max_calls:
            raise RuntimeError(f"model call cap {self.max_calls} reached")
        response = handler(request)
        self.model_calls += 1
        message = response.result[-1]
        usage = message.usage_metadata if isinstance(message, AIMessage) else None
        if usage:
            self.total_tokens += usage["input_tokens"] + usage["output_tokens"]
        return response


class NoopHandler(BaseCallbackHandler):
    """The callbacks BudgetCallbackHandler implements, doing nothing (and raising errors)."""

    raise_error = True

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: UUID, **kw: Any) -> None:
        pass

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kw: Any) -> None:
        pass

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kw: Any) -> None:
        pass

    def on_chat_model_start(
        self, serialized: Any, messages: list[list[BaseMessage]], *, run_id: UUID, **kw: Any
    ) -> None:
        pass

    def on_llm_start(self, serialized: Any, prompts: list[str], *, run_id: UUID, **kw: Any) -> None:
        pass

    def on_llm_end(self, response: Any, *, run_id: UUID, **kw: Any) -> None:
        pass

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kw: Any) -> None:
        pass

    def on_tool_start(self, serialized: Any, input_str: str, *, run_id: UUID, **kw: Any) -> None:
        pass

    def on_tool_end(self, output: Any, *, run_id: UUID, **kw: Any) -> None:
        pass

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kw: Any) -> None:
        pass


def agent(steps: int, middleware: Sequence[AgentMiddleware[Any, Any, Any]] = ()) -> Any:
    """A real ``create_agent`` agent over the scripted model and the search tool."""
    return create_agent(ScriptedChatModel(steps=steps), [search_tool()], middleware=middleware)


def invoker(graph: Any, steps: int, callbacks: list[Any] | None = None) -> Callable[[], int]:
    """One invocation of ``graph``; returns its model calls (checked, so no variant cheats)."""
    config = {"callbacks": callbacks} if callbacks else None

    def invoke() -> int:
        result = graph.invoke({"messages": [HumanMessage(QUESTION)]}, config=config)
        calls = sum(isinstance(m, AIMessage) for m in result["messages"])
        if calls != steps + 1:
            raise AssertionError(f"expected {steps + 1} model calls, saw {calls}")
        return calls

    return invoke


def openai_client_agent(
    steps: int, middleware: Sequence[AgentMiddleware[Any, Any, Any]] = ()
) -> Any:
    """The same agent over LangChain's real ``ChatOpenAI`` (request building, response
    parsing) answered by a canned HTTP endpoint (``_openai_http``)."""
    import httpx
    from langchain_openai import ChatOpenAI

    from ._openai_http import BASE_URL, transport

    model = ChatOpenAI(
        model="gpt-4o-mini",
        api_key="sk-bench-offline",  # type: ignore[arg-type]
        base_url=BASE_URL,
        http_client=httpx.Client(transport=transport(steps, "search", "query")),
        max_retries=0,
    )
    return create_agent(model, [search_tool()], middleware=middleware)
