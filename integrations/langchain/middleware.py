"""BudgetMiddleware: govern a LangChain 1.x ``create_agent`` agent: caps, routing, endings."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
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
from langgraph.errors import GraphBubbleUp, GraphInterrupt
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.runtime import Runtime
from langgraph.types import Command
from pydantic import BaseModel

from budgetwarden import BudgetError, BudgetExceeded, Run, ToolDenied, Usage, Warden
from budgetwarden.compress import compress_messages
from budgetwarden.run import FINAL_ANSWER_INSTRUCTION, Step, ToolStep
from budgetwarden.usage import searches_offered
from budgetwarden.warden import require_warden

from ._attribution import Attribution
from ._convert import (
    answer_text,
    max_tokens_of,
    model_from_message,
    model_name_of,
    outcome_of_error,
    outcome_of_message,
    requested_tier,
    tool_failed,
    usage_from_message,
)
from ._final import (
    final_answer_message,
    final_call_overrides,
    final_message,
    note_message,
    refusal_tool_message,
    tool_limit_message,
    unanswered_tool_messages,
)
from ._invocations import Invocation, Invocations, thread_id
from ._models import ModelCache, ModelFactory
from ._nesting import enter_tool, leave_tool
from ._pause import pause_here

__all__ = ["BudgetMiddleware", "BudgetState"]

_KEY = "budgetwarden"
ToolResult = ToolMessage | Command[Any]
ModelResult = ModelResponse[Any] | AIMessage | ExtendedModelResponse[Any]


class BudgetState(AgentState[Any]):
    """Agent state with the invocation's budgetwarden Run (private, never checkpointed)."""

    budgetwarden: NotRequired[Annotated[Invocation, UntrackedValue, PrivateStateAttr]]


class BudgetMiddleware(AgentMiddleware[BudgetState, Any, Any]):
    """Enforce a warden's caps on a ``create_agent`` agent; end it with an honest answer.

    Each invocation opens one budgetwarden Run (a child of the calling agent's run when the
    agent runs inside a governed agent's tool). Every model call is checked, routed,
    compressed, given the policy's budget hint, and made without tools when it is the last
    one a cap allows (``Limits(final_answer=True)``). A call past a tool-call cap is answered
    with an error telling the model to stop; any other refusal ends the agent with a final
    AI message naming the cap, raises (``on_exceeded="raise"``) or pauses it with a LangGraph
    ``interrupt`` (``on_exceeded="pause"``, resumed by ``resume_langgraph``).
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
        self.warden = require_warden(warden, "BudgetMiddleware")
        attribution = Attribution(agent, user, workspace, workflow, task_class, key, thread)
        attribution.check("BudgetMiddleware")

        self._invocations = Invocations(warden, attribution)
        self._models = ModelCache(model_factory)
        self._compress_to = compress_to_tokens

    # ---- one Run per invocation ------------------------------------------------------

    def before_agent(self, state: BudgetState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        """Open this invocation's budgetwarden Run."""
        return {_KEY: self._invocations.start()}

    async def abefore_agent(
        self, state: BudgetState, runtime: Runtime[Any]
    ) -> dict[str, Any] | None:
        """Open this invocation's budgetwarden Run."""
        return {_KEY: self._invocations.start()}

    def after_agent(self, state: BudgetState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        """Finish this invocation's budgetwarden Run."""
        if (invocation := self._invocations.closing(state, _KEY)) is not None:
            invocation.finish()
        return None

    async def aafter_agent(
        self, state: BudgetState, runtime: Runtime[Any]
    ) -> dict[str, Any] | None:
        """Finish this invocation's budgetwarden Run."""
        if (invocation := self._invocations.closing(state, _KEY)) is not None:
            await invocation.afinish()
        return None

    def _invocation(self, state: Any) -> Invocation:
        """This invocation, from the agent's state (or by thread for a resumed agent)."""
        invocation = state.get(_KEY) if type(state) is dict else None
        if type(invocation) is Invocation:
            return invocation
        return self._invocations.of(state, _KEY)

    # ---- model calls ---------------------------------------------------------------------

    def _reserve(self, invocation: Invocation, request: ModelRequest[Any]) -> Step:
        """``before_llm_call`` with what the request says. The core only estimates the
        messages' tokens (per message object, cached within the run), so the request's own
        message objects are passed, not converted copies."""
        system = request.system_message
        messages = request.messages if system is None else [system, *request.messages]
        model = request.model
        limits = _model_limits(model)
        params = {**request.model_settings, **limits} if limits else request.model_settings
        run = invocation.run
        if not run.counters.iterations:  # before any bill: the tier and searches it asks for
            _expect_first_call(run, model, params, request.tools)
        return run.before_llm_call(
            model_name_of(model),
            messages,
            max_tokens=max_tokens_of(params) if params else None,
            tools=request.tools,
        )

    async def _areserve(self, invocation: Invocation, request: ModelRequest[Any]) -> Step:
        """Async twin of ``_reserve``."""
        system = request.system_message
        messages = request.messages if system is None else [system, *request.messages]
        model = request.model
        limits = _model_limits(model)
        params = {**request.model_settings, **limits} if limits else request.model_settings
        run = invocation.run
        if not run.counters.iterations:  # before any bill: the tier and searches it asks for
            _expect_first_call(run, model, params, request.tools)
        return await run.abefore_llm_call(
            model_name_of(model),
            messages,
            max_tokens=max_tokens_of(params) if params else None,
            tools=request.tools,
        )

    def _prepared(self, request: ModelRequest[Any], step: Step) -> ModelRequest[Any]:
        """The request as the step says: routed model, compressed context, budget notes, and
        for the final-answer call no tools, or tools it may not use (``final_call_overrides``)."""
        routed = step.model if step.model and step.model != step.requested_model else None
        if not (routed or step.compress or step.hint or step.final):
            return request  # the usual call: as the agent asked for it
        overrides: dict[str, Any] = {}
        if routed:
            overrides["model"] = self._models.get(routed)
        if step.compress:
            ratio = self.warden.policy.compress_ratio
            budget = self._compress_to or step.compress_target(ratio)
            overrides["messages"] = compress_messages(request.messages, budget, keep_task=True)
        notes = [note for note in (step.hint, _final_note(step)) if note]
        if notes:
            messages = overrides.get("messages", request.messages)
            overrides["messages"] = [*messages, note_message("\n".join(notes))]
        if step.final:
            model = overrides.get("model", request.model)
            overrides.update(final_call_overrides(model, step.model or step.requested_model))
        return request.override(**overrides) if overrides else request

    def _ended(
        self, invocation: Invocation, request: ModelRequest[Any], exc: BudgetError
    ) -> ExtendedModelResponse[Any]:
        """End the agent: answer pending tool calls, then a final message; or raise."""
        invocation.stopped = exc
        report = invocation.run.report
        if self.warden.policy.on_exceeded == "raise":
            exc.partial = list(request.messages)
            exc.report = report
            raise exc
        answers = unanswered_tool_messages(request.messages, exc)
        return _end_with([*answers, final_message(exc, report)])

    def _final_answer(
        self, invocation: Invocation, step: Step, response: ModelResponse[Any]
    ) -> ExtendedModelResponse[Any]:
        """End the agent with the model's own answer from the last call a cap allowed."""
        if response.structured_response is not None:
            return ExtendedModelResponse(model_response=response, command=_END)
        message = _last_ai(response)
        cap = step.final_cap or "final_answer"
        return _end_with([final_answer_message(message, cap, invocation.run.report)])

    def _can_pause(self) -> bool:
        """Pausing needs the policy's say-so and a LangGraph thread (a checkpointer's state)."""
        return self.warden.policy.on_exceeded == "pause" and thread_id() is not None

    def _admit(self, invocation: Invocation, request: ModelRequest[Any]) -> Step:
        """Reserve the call; a refusal raises, or pauses the agent under ``"pause"``."""
        while True:
            try:
                return self._reserve(invocation, request)
            except BudgetExceeded as exc:
                if not self._can_pause():
                    raise
                self._pause(invocation, exc)

    async def _aadmit(self, invocation: Invocation, request: ModelRequest[Any]) -> Step:
        """Async twin of ``_admit`` (throttling waits and ``on_limit`` grants are awaited)."""
        while True:
            try:
                return await self._areserve(invocation, request)
            except BudgetExceeded as exc:
                if not self._can_pause():
                    raise
                await self._apause(invocation, exc)

    def _pause(self, invocation: Invocation, exc: BudgetExceeded) -> None:
        try:
            pause_here(self.warden, invocation.run, exc, thread_id() or "")
        except GraphInterrupt:
            self._invocations.forget(invocation)
            invocation.finish(error=exc)
            raise

    async def _apause(self, invocation: Invocation, exc: BudgetExceeded) -> None:
        try:
            pause_here(self.warden, invocation.run, exc, thread_id() or "")
        except GraphInterrupt:
            self._invocations.forget(invocation)
            await invocation.afinish(error=exc)
            raise

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ModelResult:
        """Check, route and annotate a model call; end the agent when it is refused."""
        invocation = self._invocation(request.state)
        if invocation.stopped is not None:
            return self._ended(invocation, request, invocation.stopped)
        try:
            step = self._admit(invocation, request)
        except BudgetExceeded as exc:
            self._finish_if_raising(invocation, exc)
            return self._ended(invocation, request, exc)
        started = time.perf_counter()
        try:
            response = handler(self._prepared(request, step))
        except Exception as exc:
            invocation.ending.raised = True
            invocation.run.record_llm_call(step, **_failed(exc, started))
            raise
        invocation.run.record_llm_call(
            step, **_answered(response, started, invocation.record_content)
        )
        return self._final_answer(invocation, step, response) if step.final else response

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ModelResult:
        """Check, route and annotate a model call; end the agent when it is refused."""
        invocation = self._invocation(request.state)
        if invocation.stopped is not None:
            return self._ended(invocation, request, invocation.stopped)
        try:
            step = await self._aadmit(invocation, request)
        except BudgetExceeded as exc:
            await self._afinish_if_raising(invocation, exc)
            return self._ended(invocation, request, exc)
        except asyncio.CancelledError as exc:
            self._cancelled(invocation, exc)
            raise
        started = time.perf_counter()
        try:
            response = await handler(self._prepared(request, step))
        except Exception as exc:
            invocation.ending.raised = True
            await invocation.run.arecord_llm_call(step, **_failed(exc, started))
            raise
        except asyncio.CancelledError as exc:
            self._cancelled(invocation, exc)
            raise
        await invocation.run.arecord_llm_call(
            step, **_answered(response, started, invocation.record_content)
        )
        return self._final_answer(invocation, step, response) if step.final else response

    # ---- tool calls ----------------------------------------------------------------------

    def _admit_tool(self, invocation: Invocation, request: ToolCallRequest) -> ToolStep:
        call = request.tool_call
        while True:
            try:
                return invocation.run.before_tool_call(
                    call["name"], call["args"], call_id=call["id"]
                )
            except BudgetExceeded as exc:
                if invocation.tells(exc) or not self._can_pause():
                    raise
                self._pause(invocation, exc)

    async def _aadmit_tool(self, invocation: Invocation, request: ToolCallRequest) -> ToolStep:
        call = request.tool_call
        while True:
            try:
                return await invocation.run.abefore_tool_call(
                    call["name"], call["args"], call_id=call["id"]
                )
            except BudgetExceeded as exc:
                if invocation.tells(exc) or not self._can_pause():
                    raise
                await self._apause(invocation, exc)

    def _tool_answer(
        self, invocation: Invocation, request: ToolCallRequest, exc: BudgetError
    ) -> ToolMessage | None:
        """The error answer to a refused tool call; None when the policy says raise.

        A denial and a tool-call cap let the agent go on; any other cap ends it at its next
        model call (every other pending tool call is answered meanwhile).
        """
        call = dict(request.tool_call)
        if isinstance(exc, BudgetExceeded) and invocation.tells(exc):
            return tool_limit_message(exc, call)
        if isinstance(exc, BudgetExceeded):
            invocation.stopped = exc
            if self.warden.policy.on_exceeded == "raise":
                exc.partial = list(request.state.get("messages", []))
                exc.report = invocation.run.report
                return None
        return refusal_tool_message(exc, call)

    def wrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], ToolResult],
    ) -> ToolResult:
        """Check a tool call before it runs; record how it went."""
        invocation = self._invocation(request.state)
        if invocation.stopped is not None:
            return refusal_tool_message(invocation.stopped, dict(request.tool_call))
        try:
            step = self._admit_tool(invocation, request)
        except (BudgetExceeded, ToolDenied) as exc:
            if (answer := self._tool_answer(invocation, request, exc)) is None:
                invocation.finish(error=exc)
                raise
            return answer
        started = time.perf_counter()
        try:
            token = enter_tool(invocation.run)
            try:
                result = handler(request)
            finally:
                leave_tool(token)
        except GraphBubbleUp:  # interrupt() in the tool: it runs again, whole, on resume
            invocation.run.release(step)
            raise
        except Exception as exc:
            invocation.ending.raised = True
            invocation.run.record_tool_call(step, ok=False, latency_s=_since(started), error=exc)
            raise
        invocation.run.record_tool_call(step, ok=not tool_failed(result), latency_s=_since(started))
        return result

    async def awrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], Awaitable[ToolResult]],
    ) -> ToolResult:
        """Check a tool call before it runs; record how it went."""
        invocation = self._invocation(request.state)
        if invocation.stopped is not None:
            return refusal_tool_message(invocation.stopped, dict(request.tool_call))
        try:
            step = await self._aadmit_tool(invocation, request)
        except (BudgetExceeded, ToolDenied) as exc:
            if (answer := self._tool_answer(invocation, request, exc)) is None:
                await invocation.afinish(error=exc)
                raise
            return answer
        except asyncio.CancelledError as exc:
            self._cancelled(invocation, exc)
            raise
        started = time.perf_counter()
        try:
            token = enter_tool(invocation.run)
            try:
                result = await handler(request)
            finally:
                leave_tool(token)
        except GraphBubbleUp:  # interrupt() in the tool: it runs again, whole, on resume
            await invocation.run.arelease(step)
            raise
        except asyncio.CancelledError as exc:
            self._cancelled(invocation, exc)
            raise
        except Exception as exc:
            invocation.ending.raised = True
            await invocation.run.arecord_tool_call(
                step, ok=False, latency_s=_since(started), error=exc
            )
            raise
        await invocation.run.arecord_tool_call(
            step, ok=not tool_failed(result), latency_s=_since(started)
        )
        return result

    # ---- raising ends the run here: after_agent will not run -----------------------------

    def _cancelled(self, invocation: Invocation, exc: BaseException) -> None:
        """The agent's task was cancelled (a timeout, a client gone): its run ends now, as
        ``cancelled``, releasing what its calls hold. Waiting for LangGraph to drop the
        invocation's state could wait for ever: whoever keeps the ``CancelledError`` keeps
        that state, through its traceback. Finished synchronously: a second cancel cannot
        cut it short."""
        if invocation.run.finished_at is None:
            self._invocations.forget(invocation)
            invocation.finish(error=exc)

    def _finish_if_raising(self, invocation: Invocation, exc: BudgetError) -> None:
        if isinstance(exc, BudgetExceeded) and self.warden.policy.on_exceeded == "raise":
            invocation.finish(error=exc)

    async def _afinish_if_raising(self, invocation: Invocation, exc: BudgetError) -> None:
        if isinstance(exc, BudgetExceeded) and self.warden.policy.on_exceeded == "raise":
            await invocation.afinish(error=exc)


_END: Command[Any] = Command(update={"jump_to": "end"})


def _end_with(messages: list[Any]) -> ExtendedModelResponse[Any]:
    """A model-node result that adds ``messages`` and ends the agent."""
    return ExtendedModelResponse(model_response=ModelResponse(result=messages), command=_END)


def _final_note(step: Step) -> str | None:
    return FINAL_ANSWER_INSTRUCTION if step.final else None


_LIMIT_KEYS = ("max_tokens", "max_completion_tokens")
#: pydantic's own ``__getattr__`` (private attributes, extra fields), hidden from type checkers.
_PYDANTIC_GETATTR = getattr(BaseModel, "__getattr__", None)


@functools.cache
def _class_limits(cls: type) -> tuple[tuple[str, str], ...] | None:
    """Where instances of ``cls`` keep each output-token limit they can have: on the class
    (a property or class attribute), in a declared field, or among extra fields; None when
    they may find attributes elsewhere (a custom ``__getattr__``): then ask ``getattr``."""
    if not issubclass(cls, BaseModel) or getattr(cls, "__getattr__", None) is not _PYDANTIC_GETATTR:
        return None
    extra = cls.model_config.get("extra") == "allow"
    plan: list[tuple[str, str]] = []
    for key in _LIMIT_KEYS:
        if hasattr(cls, key):
            plan.append((key, "class"))
        elif key in cls.model_fields:
            plan.append((key, "field"))
        elif extra:
            plan.append((key, "extra"))
    return tuple(plan)


def _model_limits(model: BaseChatModel) -> dict[str, Any]:
    """The model's own output-token limits. Like ``getattr``, without pydantic raising (and
    catching) an AttributeError for each limit the model does not have."""
    plan = _class_limits(type(model))
    if plan is None:
        return {k: getattr(model, k) for k in _LIMIT_KEYS if hasattr(model, k)}
    limits: dict[str, Any] = {}
    for key, where in plan:
        if where == "class":
            limits[key] = getattr(model, key)
        elif where == "field":
            limits[key] = model.__dict__[key]
        elif (extra := model.__pydantic_extra__) and key in extra:
            limits[key] = extra[key]
    return limits


def _since(started: float) -> float:
    return time.perf_counter() - started


def _last_ai(response: ModelResponse[Any]) -> AIMessage | None:
    for message in reversed(response.result):
        if isinstance(message, AIMessage):
            return message
    return None


def _failed(exc: BaseException, started: float) -> dict[str, Any]:
    """A call that raised used nothing we can see (providers do not bill failed calls)."""
    return {"usage": Usage(), "latency_s": _since(started), "outcome": outcome_of_error(exc)}


def _expect_first_call(run: Run, model: Any, params: Any, tools: Any) -> None:
    """What a run's first call asks for that only its bill would say: its service tier
    and the hosted web searches its tools may make."""
    run.expect_service_tier(requested_tier(model, params))
    run.expect_web_searches(searches_offered(tools))


def _answered(response: ModelResponse[Any], started: float, record: bool) -> dict[str, Any]:
    """What ``after_llm_call`` needs of a response. The core reads the text only to estimate
    the output when usage is missing, or to record it (``record``: ``Policy.record_content``),
    so it is only built then."""
    latency_s = time.perf_counter() - started
    result = response.result
    message = result[-1] if result and type(result[-1]) is AIMessage else _last_ai(response)
    usage = usage_from_message(message)
    text = None
    if usage is None or record:
        text = answer_text(message)
    return {
        "usage": usage,
        "model": model_from_message(message),
        "latency_s": latency_s,
        "outcome": outcome_of_message(message),
        "output_text": text,
    }
