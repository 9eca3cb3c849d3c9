"""BudgetCallbackHandler: govern any LangChain Runnable through its callbacks."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import LLMResult

from budgetwarden import BudgetError, BudgetExceeded, Usage, Warden
from budgetwarden.run import Run, Step, ToolStep

from ._attribution import Attribution
from ._convert import (
    ToolNames,
    max_tokens_of,
    model_from_result,
    model_from_start,
    outcome_of_error,
    outcome_of_message,
    tool_failed,
    usage_from_result,
)

__all__ = ["BudgetCallbackHandler"]

#: How the handler keys LangChain runs (``_key``): a UUID's int, which hashes in C.
Key = Any


@dataclass
class _Invocation:
    """One governed invocation: its budgetwarden Run and the transcript seen so far."""

    run: Run
    thread: str | None = None
    transcript: list[BaseMessage] = field(default_factory=list)
    llm_steps: dict[Key, tuple[Step, float]] = field(default_factory=dict)
    tool_steps: dict[Key, tuple[ToolStep, float, str | None]] = field(default_factory=dict)


class BudgetCallbackHandler(BaseCallbackHandler):
    """Enforce a warden's caps and budgets on any Runnable, raising ``BudgetExceeded``.

    Pass it in ``config={"callbacks": [handler]}``. Each root run (one ``invoke``) gets its
    own budgetwarden Run, so one handler serves concurrent invocations; a graph invoked from
    a tool, or a subgraph node, gets a child run of its caller's. A refused model or tool
    call raises out of ``invoke`` before the call, with the transcript so far as
    ``exc.partial`` and the run report as ``exc.report`` (and, under ``on_exceeded="pause"``
    on a LangGraph thread, a saved pause handle as ``exc.handle``). It works for ``ainvoke``
    too.
    """

    raise_error = True

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
    ) -> None:
        """Govern every invocation this handler sees, attributed to the given scopes."""
        self._warden = warden
        self._attribution = Attribution(agent, user, workspace, workflow, task_class, key, thread)
        self._lock = threading.Lock()
        # Keyed by ``_key(run_id)``: a UUID hashes in Python, its int in C.
        self._invocations: dict[Key, _Invocation] = {}
        self._roots: dict[Key, Key] = {}
        self._tool_runs: set[Key] = set()
        self._tools = ToolNames()

    # ---- run bookkeeping -------------------------------------------------------------

    def _enter(
        self,
        run_id: Key,
        parent_run_id: Key | None,
        metadata: Mapping[str, Any] | None,
        *,
        kind: str = "call",
    ) -> _Invocation:
        """The invocation a new LangChain run belongs to. A run without a known parent opens
        one; a chain started inside a tool opens a child of its caller's run."""
        with self._lock:
            root = self._roots.get(parent_run_id) if parent_run_id is not None else None
            found = self._invocations.get(root) if root is not None else None
            if kind == "tool":
                self._tool_runs.add(run_id)
            nested = kind == "chain" and parent_run_id in self._tool_runs
            if root is not None and found is not None and not nested:
                self._roots[run_id] = root
                return found
            invocation = self._open(metadata, found)
            self._roots[run_id] = run_id
            self._invocations[run_id] = invocation
            return invocation

    def _open(self, metadata: Mapping[str, Any] | None, caller: _Invocation | None) -> _Invocation:
        """A new invocation: a child of ``caller``'s run while that run is still going."""
        parent = caller.run if caller is not None and caller.run.finished_at is None else None
        thread = _thread_from(metadata)
        return _Invocation(self._attribution.open_run(self._warden, thread, parent=parent), thread)

    def _adopt_subgraph(self, graph_run: Key, metadata: Mapping[str, Any] | None) -> None:
        """A node of a graph nested in another graph's step starts: that graph (a subgraph
        node) becomes a child run of its caller's, before any of its calls is made."""
        with self._lock:
            root = self._roots.get(graph_run)
            caller = self._invocations.get(root) if root is not None else None
            if root is None or root == graph_run or caller is None:
                return
            self._roots[graph_run] = graph_run
            self._invocations[graph_run] = self._open(metadata, caller)

    def _lookup(self, run_id: Key) -> _Invocation | None:
        with self._lock:
            root = self._roots.get(run_id)
            return self._invocations.get(root) if root is not None else None

    def _leave(self, run_id: Key, error: BaseException | None = None) -> None:
        """Forget a finished LangChain run; finish the budgetwarden Run at its root."""
        with self._lock:
            self._tool_runs.discard(run_id)
            root = self._roots.pop(run_id, None)
            invocation = self._invocations.pop(run_id, None) if root == run_id else None
        if invocation is not None:
            invocation.run.finish(error=error)
            if isinstance(error, BudgetError):
                error.report = invocation.run.report
                if invocation.run.parent is None:
                    error.partial = list(invocation.transcript)

    def _refuse(self, invocation: _Invocation, run_id: Key, exc: BudgetError) -> BudgetError:
        """Attach the transcript so far to a refusal (and a pause handle under
        ``on_exceeded="pause"``); a refused root run ends here."""
        exc.partial = list(invocation.transcript)
        if exc.report is None:
            exc.report = invocation.run.report
        if isinstance(exc, BudgetExceeded):
            self._save_pause(invocation, exc)
        with self._lock:
            is_root = self._roots.get(run_id) == run_id
        if is_root:
            self._leave(run_id, exc)
        else:
            with self._lock:
                self._roots.pop(run_id, None)
                self._tool_runs.discard(run_id)
        return exc

    def _save_pause(self, invocation: _Invocation, exc: BudgetExceeded) -> None:
        """Under ``on_exceeded="pause"`` on a LangGraph thread: keep a handle to go on from
        the step that raised (``resume_langgraph`` invokes the thread again with ``None``)."""
        if self._warden.policy.on_exceeded != "pause" or invocation.thread is None:
            return
        state = {"thread_id": invocation.thread, "resume": "retry"}
        handle = invocation.run.pause_handle("langgraph", state=state)
        self._warden.save_handle(handle)
        setattr(exc, "handle", handle)  # noqa: B010 - BudgetError declares no handle yet

    # ---- chains: the root opens and finishes the budgetwarden Run ---------------------

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: dict[str, Any] | Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Open a budgetwarden Run at the root chain (a child run for a nested graph); map
        other chains to their run."""
        parent = _key(parent_run_id) if parent_run_id is not None else None
        if parent is not None and _nested_node(tags, metadata):
            self._adopt_subgraph(parent, metadata)
        self._enter(_key(run_id), parent, metadata, kind="chain")

    def on_chain_end(self, outputs: dict[str, Any] | Any, *, run_id: UUID, **kwargs: Any) -> None:
        """Finish the budgetwarden Run when the root chain ends."""
        self._leave(_key(run_id))

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Finish the budgetwarden Run, with the error, when the root chain fails."""
        self._leave(_key(run_id), error)

    def on_retriever_start(
        self,
        serialized: dict[str, Any],
        query: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Map a retriever run to its root, so model calls inside it count for that run."""
        self._enter(_key(run_id), _parent_key(parent_run_id), metadata)

    def on_retriever_end(self, documents: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """Forget a finished retriever run."""
        self._leave(_key(run_id))

    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Forget a failed retriever run."""
        self._leave(_key(run_id), error)

    # ---- model calls -------------------------------------------------------------------

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        invocation_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Check the caps before a chat model runs; raise ``BudgetExceeded`` to stop it."""
        key = _key(run_id)
        invocation = self._enter(key, _parent_key(parent_run_id), metadata)
        prompt = list(messages[0]) if messages else []
        invocation.transcript = prompt
        self._before_llm(invocation, key, prompt, serialized, metadata, invocation_params)

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        invocation_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Check the caps before a plain (text) LLM runs; raise ``BudgetExceeded`` to stop it."""
        key = _key(run_id)
        invocation = self._enter(key, _parent_key(parent_run_id), metadata)
        prompt: list[BaseMessage] = [HumanMessage(content=text) for text in prompts]
        invocation.transcript = prompt
        self._before_llm(invocation, key, prompt, serialized, metadata, invocation_params)

    def _before_llm(
        self,
        invocation: _Invocation,
        run_id: Key,
        prompt: Sequence[BaseMessage],
        serialized: Mapping[str, Any] | None,
        metadata: Mapping[str, Any] | None,
        params: Mapping[str, Any] | None,
    ) -> None:
        try:
            step = invocation.run.before_llm_call(
                model_from_start(serialized, metadata, params),
                prompt,
                max_tokens=max_tokens_of(params, metadata),
                tools=self._tools.names(params.get("tools") if params else None),
            )
        except BudgetError as exc:
            raise self._refuse(invocation, run_id, exc) from None
        invocation.llm_steps[run_id] = (step, time.perf_counter())

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        """Commit the call's real usage and price it as the model that answered."""
        key = _key(run_id)
        invocation = self._lookup(key)
        if invocation is not None and (pending := invocation.llm_steps.pop(key, None)):
            step, started = pending
            latency_s = time.perf_counter() - started
            message = _first_message(response)
            usage = usage_from_result(response)
            # The core reads the text only to estimate a missing usage, or to record it.
            text = None
            if usage is None or invocation.run.policy.record_content:
                text = _text_of(response)
            invocation.run.record_llm_call(
                step,
                usage,
                model=model_from_result(response),
                latency_s=latency_s,
                outcome=outcome_of_message(message),
                output_text=text,
            )
            if message is not None:
                invocation.transcript.append(message)
        self._leave(key)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Record a failed model call (timeout, rate limit, provider error)."""
        key = _key(run_id)
        invocation = self._lookup(key)
        if invocation is not None and (pending := invocation.llm_steps.pop(key, None)):
            step, started = pending
            invocation.run.record_llm_call(
                step,
                Usage(),  # providers do not bill a call that failed
                latency_s=time.perf_counter() - started,
                outcome=outcome_of_error(error),
            )
        self._leave(key, error)

    # ---- tool calls --------------------------------------------------------------------

    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Check the caps before a tool runs; raise ``BudgetExceeded`` or ``ToolDenied``."""
        key = _key(run_id)
        invocation = self._enter(key, _parent_key(parent_run_id), metadata, kind="tool")
        name = str((serialized or {}).get("name") or kwargs.get("name") or "tool")
        call_id = kwargs.get("tool_call_id")
        try:
            tool_step = invocation.run.before_tool_call(
                name, inputs if inputs is not None else input_str, call_id=call_id
            )
        except BudgetError as exc:
            raise self._refuse(invocation, key, exc) from None
        invocation.tool_steps[key] = (tool_step, time.perf_counter(), call_id)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """Record a finished tool call; an error ToolMessage counts as a failed call."""
        key = _key(run_id)
        invocation = self._lookup(key)
        if invocation is not None and (pending := invocation.tool_steps.pop(key, None)):
            tool_step, started, call_id = pending
            failed = tool_failed(output)
            invocation.run.record_tool_call(
                tool_step,
                ok=not failed,
                latency_s=time.perf_counter() - started,
                error=str(output.content) if failed else None,
            )
            invocation.transcript.append(_tool_message(output, call_id, tool_step))
        self._leave(key)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Record a tool call that raised."""
        key = _key(run_id)
        invocation = self._lookup(key)
        if invocation is not None and (pending := invocation.tool_steps.pop(key, None)):
            tool_step, started, _ = pending
            invocation.run.record_tool_call(
                tool_step, ok=False, latency_s=time.perf_counter() - started, error=repr(error)
            )
        self._leave(key, error)


def _key(run_id: UUID) -> Key:
    return run_id.int if type(run_id) is UUID else run_id


def _parent_key(parent_run_id: UUID | None) -> Key | None:
    return _key(parent_run_id) if parent_run_id is not None else None


def _thread_from(metadata: Mapping[str, Any] | None) -> str | None:
    """LangGraph copies ``configurable.thread_id`` into the callback metadata."""
    thread = (metadata or {}).get("thread_id")
    return str(thread) if thread is not None else None


def _nested_node(tags: Sequence[str] | None, metadata: Mapping[str, Any] | None) -> bool:
    """True for a node of a LangGraph graph that runs inside another graph's step: its
    checkpoint namespace nests (``"sub:<task>|model:<task>"``)."""
    namespace = metadata.get("langgraph_checkpoint_ns") if metadata else None
    if not isinstance(namespace, str) or "|" not in namespace:
        return False
    return any(tag.startswith("graph:step:") for tag in tags or ())


def _first_message(response: LLMResult) -> BaseMessage | None:
    for generations in response.generations:
        for generation in generations:
            message = getattr(generation, "message", None)
            if isinstance(message, BaseMessage):
                return message
            return AIMessage(content=generation.text)
    return None


def _text_of(response: LLMResult) -> str:
    return "".join(g.text for generations in response.generations for g in generations)


def _tool_message(output: Any, call_id: str | None, tool_step: ToolStep) -> BaseMessage:
    if isinstance(output, ToolMessage):
        return output
    content = output.content if isinstance(output, BaseMessage) else str(output)
    return ToolMessage(content=content, tool_call_id=call_id or "", name=tool_step.name)
