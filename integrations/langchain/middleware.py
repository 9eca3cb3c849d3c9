"""BudgetMiddleware: govern a LangChain 1.x ``create_agent`` agent, route and compress."""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, NotRequired

from langchain.agents.middleware import (
    AgentMiddleware,
    AgentState,
    ExtendedModelResponse,
    ModelRequest,
    ModelResponse,
)
from langchain.agents.middleware.types import PrivateStateAttr
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.channels.untracked_value import UntrackedValue
from langgraph.config import get_config
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.runtime import Runtime
from langgraph.types import Command

from budgetwarden import BudgetError, BudgetExceeded, ToolDenied, Usage, Warden
from budgetwarden.compress import compress_messages
from budgetwarden.run import Run, Step

from ._attribution import Attribution
from ._convert import (
    max_tokens_of,
    model_from_message,
    model_name_of,
    outcome_of_error,
    outcome_of_message,
    tool_failed,
    tool_names,
    usage_from_message,
)
from ._final import final_message, refusal_tool_message, unanswered_tool_messages
from ._models import ModelCache, ModelFactory

__all__ = ["BudgetMiddleware", "BudgetState"]

_KEY = "budgetwarden"
ToolResult = ToolMessage | Command[Any]


@dataclass
class _Invocation:
    """One agent invocation: its budgetwarden Run and the refusal that ended it, if any."""

    run: Run
    stopped: BudgetError | None = None


class BudgetState(AgentState[Any]):
    """Agent state with the invocation's budgetwarden Run (private, never checkpointed)."""

    budgetwarden: NotRequired[Annotated[_Invocation, UntrackedValue, PrivateStateAttr]]


class BudgetMiddleware(AgentMiddleware[BudgetState, Any, Any]):
    """Enforce a warden's caps on a ``create_agent`` agent; end it with an honest answer.

    Each invocation opens one budgetwarden Run. Every model call is checked (and routed to
    the policy's tier, with its context compressed when the policy asks) and every tool
    call is checked before it runs. A refused call ends the agent with a final AI message
    naming the cap, the figures and what was done, or raises ``BudgetExceeded`` when the
    policy says ``on_exceeded="raise"``.
    """

    state_schema = BudgetState

    def __init__(
        self,
        warden: Warden,
        *,
        agent: str | None = None,
        user: str | None = None,
        workspace: str | None = None,
        workflow: str | None = None,
        task_class: str | None = None,
        key: str | None = None,
        thread: str | None = None,
        model_factory: ModelFactory | None = None,
        compress_to_tokens: int | None = None,
    ) -> None:
        """Govern every invocation of the agent, attributed to the given scopes.

        ``model_factory`` builds the chat model for a routed model name (default:
        ``langchain-litellm`` when installed, else ``init_chat_model``);
        ``compress_to_tokens`` is the context size kept when the policy asks to compress
        (default: the policy's ``compress_ratio`` of the estimated prompt).
        """
        super().__init__()
        self.warden = warden
        self._attribution = Attribution(agent, user, workspace, workflow, task_class, key, thread)
        self._models = ModelCache(model_factory)
        self._compress_to = compress_to_tokens
        self._resumed: dict[str, _Invocation] = {}
        self._lock = threading.Lock()

    # ---- one Run per invocation ------------------------------------------------------

    def _open(self) -> dict[str, Any]:
        return {_KEY: _Invocation(self._attribution.open_run(self.warden, _thread_id()))}

    def before_agent(self, state: BudgetState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        """Open this invocation's budgetwarden Run."""
        return self._open()

    async def abefore_agent(
        self, state: BudgetState, runtime: Runtime[Any]
    ) -> dict[str, Any] | None:
        """Open this invocation's budgetwarden Run."""
        return self._open()

    def after_agent(self, state: BudgetState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        """Finish this invocation's budgetwarden Run."""
        if (invocation := self._closing(state)) is not None:
            invocation.run.finish()
        return None

    async def aafter_agent(
        self, state: BudgetState, runtime: Runtime[Any]
    ) -> dict[str, Any] | None:
        """Finish this invocation's budgetwarden Run."""
        if (invocation := self._closing(state)) is not None:
            await invocation.run.afinish()
        return None

    def _closing(self, state: BudgetState) -> _Invocation | None:
        invocation = state.get(_KEY)
        if isinstance(invocation, _Invocation):
            return invocation
        with self._lock:
            return self._resumed.pop(_thread_id() or "", None)

    def _invocation(self, state: Any) -> _Invocation:
        """The invocation's state; one resumed from a checkpoint (no before_agent) gets one."""
        invocation = state.get(_KEY) if isinstance(state, dict) else None
        if isinstance(invocation, _Invocation):
            return invocation
        thread = _thread_id()
        with self._lock:
            found = self._resumed.get(thread or "")
            if found is None:
                found = _Invocation(self._attribution.open_run(self.warden, thread))
                self._resumed[thread or ""] = found
            return found

    # ---- model calls ---------------------------------------------------------------------

    def _llm_args(self, request: ModelRequest[Any]) -> dict[str, Any]:
        messages = list(request.messages)
        if request.system_message is not None:
            messages.insert(0, request.system_message)
        params = {**request.model_settings, **_model_limits(request.model)}
        return {
            "model": model_name_of(request.model),
            "messages": messages,
            "max_tokens": max_tokens_of(params),
            "tools": tool_names(request.tools),
        }

    def _routed(self, request: ModelRequest[Any], step: Step) -> ModelRequest[Any]:
        """The request as the step says: the routed model, the compressed context."""
        overrides: dict[str, Any] = {}
        if step.model and step.model != model_name_of(request.model):
            overrides["model"] = self._models.get(step.model)
        if step.compress:
            ratio = self.warden.policy.compress_ratio
            budget = self._compress_to or max(int(step.input_tokens * ratio), 1)
            overrides["messages"] = compress_messages(request.messages, budget, keep_task=True)
        return request.override(**overrides) if overrides else request

    def _ended(
        self, invocation: _Invocation, request: ModelRequest[Any], exc: BudgetError
    ) -> ExtendedModelResponse[Any]:
        """End the agent: answer pending tool calls, then a final message; or raise."""
        invocation.stopped = exc
        report = invocation.run.report
        if self.warden.policy.on_exceeded == "raise":
            exc.partial = list(request.messages)
            exc.report = report
            raise exc
        answers = unanswered_tool_messages(request.messages, exc)
        return ExtendedModelResponse(
            model_response=ModelResponse(result=[*answers, final_message(exc, report)]),
            command=Command(update={"jump_to": "end"}),
        )

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ModelResponse[Any] | AIMessage | ExtendedModelResponse[Any]:
        """Check, route and compress a model call; end the agent when it is refused."""
        invocation = self._invocation(request.state)
        if invocation.stopped is not None:
            return self._ended(invocation, request, invocation.stopped)
        try:
            step = invocation.run.before_llm_call(**self._llm_args(request))
        except BudgetExceeded as exc:
            self._finish_if_raising(invocation, exc)
            return self._ended(invocation, request, exc)
        started = time.perf_counter()
        try:
            response = handler(self._routed(request, step))
        except Exception as exc:
            invocation.run.after_llm_call(step, **_failed(exc, started))
            raise
        invocation.run.after_llm_call(step, **_answered(response, started))
        return response

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ModelResponse[Any] | AIMessage | ExtendedModelResponse[Any]:
        """Check, route and compress a model call; end the agent when it is refused."""
        invocation = self._invocation(request.state)
        if invocation.stopped is not None:
            return self._ended(invocation, request, invocation.stopped)
        try:
            step = await invocation.run.abefore_llm_call(**self._llm_args(request))
        except BudgetExceeded as exc:
            await self._afinish_if_raising(invocation, exc)
            return self._ended(invocation, request, exc)
        started = time.perf_counter()
        try:
            response = await handler(self._routed(request, step))
        except Exception as exc:
            await invocation.run.aafter_llm_call(step, **_failed(exc, started))
            raise
        await invocation.run.aafter_llm_call(step, **_answered(response, started))
        return response

    # ---- tool calls ----------------------------------------------------------------------

    def _tool_refused(
        self, invocation: _Invocation, request: ToolCallRequest, exc: BudgetError
    ) -> ToolMessage:
        """A refused tool call gets an error answer; a cap (not a denial) ends the agent."""
        if isinstance(exc, BudgetExceeded):
            invocation.stopped = exc
            if self.warden.policy.on_exceeded == "raise":
                exc.partial = list(request.state.get("messages", []))
                exc.report = invocation.run.report
                raise exc
        return refusal_tool_message(exc, dict(request.tool_call))

    def wrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], ToolResult],
    ) -> ToolResult:
        """Check a tool call before it runs; record how it went."""
        invocation = self._invocation(request.state)
        call = request.tool_call
        if invocation.stopped is not None:
            return refusal_tool_message(invocation.stopped, dict(call))
        try:
            step = invocation.run.before_tool_call(call["name"], call["args"], call_id=call["id"])
        except (BudgetExceeded, ToolDenied) as exc:
            self._finish_if_raising(invocation, exc)
            return self._tool_refused(invocation, request, exc)
        started = time.perf_counter()
        try:
            result = handler(request)
        except Exception as exc:
            invocation.run.after_tool_call(step, ok=False, latency_s=_since(started), error=exc)
            raise
        invocation.run.after_tool_call(step, ok=not tool_failed(result), latency_s=_since(started))
        return result

    async def awrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], Awaitable[ToolResult]],
    ) -> ToolResult:
        """Check a tool call before it runs; record how it went."""
        invocation = self._invocation(request.state)
        call = request.tool_call
        if invocation.stopped is not None:
            return refusal_tool_message(invocation.stopped, dict(call))
        try:
            step = await invocation.run.abefore_tool_call(
                call["name"], call["args"], call_id=call["id"]
            )
        except (BudgetExceeded, ToolDenied) as exc:
            await self._afinish_if_raising(invocation, exc)
            return self._tool_refused(invocation, request, exc)
        started = time.perf_counter()
        try:
            result = await handler(request)
        except Exception as exc:
            await invocation.run.aafter_tool_call(
                step, ok=False, latency_s=_since(started), error=exc
            )
            raise
        await invocation.run.aafter_tool_call(
            step, ok=not tool_failed(result), latency_s=_since(started)
        )
        return result

    # ---- raising ends the run here: after_agent will not run -----------------------------

    def _finish_if_raising(self, invocation: _Invocation, exc: BudgetError) -> None:
        if isinstance(exc, BudgetExceeded) and self.warden.policy.on_exceeded == "raise":
            invocation.run.finish(error=exc)

    async def _afinish_if_raising(self, invocation: _Invocation, exc: BudgetError) -> None:
        if isinstance(exc, BudgetExceeded) and self.warden.policy.on_exceeded == "raise":
            await invocation.run.afinish(error=exc)


def _thread_id() -> str | None:
    """LangGraph's ``configurable.thread_id`` of the running invocation, if any."""
    try:
        thread = get_config().get("configurable", {}).get("thread_id")
    except RuntimeError:
        return None
    return str(thread) if thread is not None else None


def _model_limits(model: BaseChatModel) -> dict[str, Any]:
    return {
        k: getattr(model, k) for k in ("max_tokens", "max_completion_tokens") if hasattr(model, k)
    }


def _since(started: float) -> float:
    return time.perf_counter() - started


def _failed(exc: BaseException, started: float) -> dict[str, Any]:
    """A call that raised used nothing we can see (providers do not bill failed calls)."""
    return {"usage": Usage(), "latency_s": _since(started), "outcome": outcome_of_error(exc)}


def _answered(response: ModelResponse[Any], started: float) -> dict[str, Any]:
    message = next((m for m in reversed(response.result) if isinstance(m, AIMessage)), None)
    return {
        "usage": usage_from_message(message),
        "model": model_from_message(message),
        "latency_s": _since(started),
        "outcome": outcome_of_message(message),
        "output_text": message.text if message is not None else "",
    }
