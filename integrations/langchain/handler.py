"""BudgetCallbackHandler: govern any LangChain Runnable through its callbacks."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import LLMResult
from langgraph.errors import GraphInterrupt

from budgetwarden import BudgetError, BudgetExceeded, Usage, Warden
from budgetwarden.run import Run, Step, ToolStep
from budgetwarden.usage import searches_offered
from budgetwarden.warden import require_warden

from ._attribution import Attribution
from ._convert import (
    answer_text,
    model_and_max_tokens,
    model_from_message,
    model_from_output,
    model_from_result,
    outcome_of_error,
    outcome_of_message,
    requested_tier,
    usage_from_message,
    usage_from_output,
    usage_from_result,
)

__all__ = ["BudgetCallbackHandler"]

#: How the handler keys LangChain runs: a UUID's int, which hashes in C (a UUID hashes in
#: Python). Every callback converts its ``run_id`` inline, ``run_id.int if type(run_id) is
#: UUID else run_id``: one helper call per callback is a measurable share of the glue.
Key = Any


@dataclass(slots=True)
class _Invocation:
    """One governed invocation: its budgetwarden Run and the transcript seen so far.

    ``root`` is the LangChain run that opened it, whose end finishes the Run; ``live`` turns
    False then, so runs of it that are still mapped no longer find it.
    """

    run: Run
    root: Key
    thread: str | None = None
    live: bool = True
    #: a node of it stopped at a LangGraph interrupt (a human in the loop)
    interrupted: bool = False
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
        self._warden = require_warden(warden, "BudgetCallbackHandler")
        self._attribution = Attribution(agent, user, workspace, workflow, task_class, key, thread)
        self._attribution.check("BudgetCallbackHandler")

        self._lock = threading.Lock()
        # Every LangChain run under way -> the invocation it belongs to (by its key).
        self._runs: dict[Key, _Invocation] = {}
        self._tool_runs: set[Key] = set()

    # ---- run bookkeeping -------------------------------------------------------------

    # The map of runs is read and written without a lock: each step is one atomic dict
    # operation. A run that joins an invocation just as its root ends is as one that joined
    # just before: at its own end it finds the invocation no longer ``live``. Only adopting
    # a subgraph (look, then open one child run) is done under the lock.

    def _enter(
        self, run_id: Key, parent: Key | None, metadata: Mapping[str, Any] | None, chain: bool
    ) -> _Invocation:
        """The invocation a new LangChain run belongs to: its parent's. A run without a
        known parent opens one; a chain started inside a tool opens a child of its caller's
        run."""
        found = self._runs.get(parent)
        if found is None or not found.live:
            found = None
        elif not (chain and parent in self._tool_runs):
            self._runs[run_id] = found
            return found
        invocation = self._runs[run_id] = self._open(run_id, metadata, found)
        return invocation

    def _open(
        self, root: Key, metadata: Mapping[str, Any] | None, caller: _Invocation | None
    ) -> _Invocation:
        """A new invocation: a child of ``caller``'s run while that run is still going."""
        parent = caller.run if caller is not None and caller.run.finished_at is None else None
        thread = _thread_from(metadata)
        run = self._attribution.open_run(self._warden, thread, parent=parent)
        return _Invocation(run, root, thread)

    def _adopt_subgraph(self, graph_run: Key, metadata: Mapping[str, Any] | None) -> None:
        """A node of a graph nested in another graph's step starts: that graph (a subgraph
        node) becomes a child run of its caller's, before any of its calls is made."""
        with self._lock:
            caller = self._runs.get(graph_run)
            if caller is None or not caller.live or caller.root == graph_run:
                return
            self._runs[graph_run] = self._open(graph_run, metadata, caller)

    def _close(self, run_id: Key) -> _Invocation | None:
        """Forget a finished LangChain run: the invocation it was part of (None once that is
        over). When ``run_id`` is its root, the caller ``_finish``-es it."""
        found = self._runs.pop(run_id, None)
        return found if found is not None and found.live else None

    def _leave(self, run_id: Key, error: BaseException | None = None) -> None:
        """Forget a finished LangChain run; finish the budgetwarden Run at its root."""
        self._tool_runs.discard(run_id)
        invocation = self._close(run_id)
        if invocation is None:
            return
        if invocation.root == run_id:
            self._finish(invocation, error)
        elif isinstance(error, GraphInterrupt):  # the graph ends normally, at an interrupt
            invocation.interrupted = True

    def _finish(self, invocation: _Invocation, error: BaseException | None = None) -> None:
        """Finish an invocation's Run, at its root's end; a refusal that ends it carries
        its report (and, at the top, the transcript so far)."""
        invocation.live = False
        stop = "interrupted" if error is None and invocation.interrupted else None
        invocation.run.finish(stop, error=error)
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
        self._leave(run_id, exc)
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
        key = run_id.int if type(run_id) is UUID else run_id
        parent = None
        if parent_run_id is not None:
            parent = parent_run_id.int if type(parent_run_id) is UUID else parent_run_id
            namespace = metadata.get("langgraph_checkpoint_ns") if metadata else None
            if isinstance(namespace, str) and "|" in namespace and _in_graph_step(tags):
                self._adopt_subgraph(parent, metadata)
        self._enter(key, parent, metadata, True)

    def on_chain_end(self, outputs: dict[str, Any] | Any, *, run_id: UUID, **kwargs: Any) -> None:
        """Finish the budgetwarden Run when the root chain ends."""
        key = run_id.int if type(run_id) is UUID else run_id
        invocation = self._runs.pop(key, None)
        if invocation is not None and invocation.root == key and invocation.live:
            self._finish(invocation)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Finish the budgetwarden Run, with the error, when the root chain fails."""
        self._leave(run_id.int if type(run_id) is UUID else run_id, error)

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
        key = run_id.int if type(run_id) is UUID else run_id
        parent = parent_run_id.int if type(parent_run_id) is UUID else parent_run_id
        self._enter(key, parent, metadata, False)

    def on_retriever_end(self, documents: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """Forget a finished retriever run."""
        self._leave(run_id.int if type(run_id) is UUID else run_id)

    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Forget a failed retriever run."""
        self._leave(run_id.int if type(run_id) is UUID else run_id, error)

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
        key = run_id.int if type(run_id) is UUID else run_id
        parent = parent_run_id.int if type(parent_run_id) is UUID else parent_run_id
        invocation = self._enter(key, parent, metadata, False)
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
        key = run_id.int if type(run_id) is UUID else run_id
        parent = parent_run_id.int if type(parent_run_id) is UUID else parent_run_id
        invocation = self._enter(key, parent, metadata, False)
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
        model, max_tokens = model_and_max_tokens(serialized, metadata, params)
        run = invocation.run
        if not run.counters.iterations:  # before any bill: the tier and searches it asks for
            run.expect_service_tier(requested_tier(None, params))
            run.expect_web_searches(searches_offered(params.get("tools") if params else None))
        try:
            step = run.before_llm_call(
                model,
                prompt,
                max_tokens=max_tokens,
                tools=params.get("tools") if params else None,  # the core only counts them
                route=False,  # the model is the caller's: a callback cannot switch it
            )
        except BudgetError as exc:
            raise self._refuse(invocation, run_id, exc) from None
        invocation.llm_steps[run_id] = (step, perf_counter())

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        """Commit the call's real usage and price it as the model that answered."""
        key = run_id.int if type(run_id) is UUID else run_id
        invocation = self._close(key)
        if invocation is None:
            return
        if pending := invocation.llm_steps.pop(key, None):
            step, started = pending
            latency_s = perf_counter() - started
            message, usage, model = _answer_of(response)
            # The core reads the text only to estimate a missing usage, or to record it.
            text = None
            if usage is None or invocation.run.policy.record_content:
                text = _text_of(response)
            invocation.run.record_llm_call(
                step,
                usage,
                model=model,
                latency_s=latency_s,
                outcome=outcome_of_message(message),
                output_text=text,
            )
            if message is not None:
                invocation.transcript.append(message)
        if invocation.root == key:
            self._finish(invocation)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Record a failed model call (timeout, rate limit, provider error)."""
        key = run_id.int if type(run_id) is UUID else run_id
        invocation = self._close(key)
        if invocation is None:
            return
        if pending := invocation.llm_steps.pop(key, None):
            step, started = pending
            invocation.run.record_llm_call(
                step,
                Usage(),  # providers do not bill a call that failed
                latency_s=perf_counter() - started,
                outcome=outcome_of_error(error),
            )
        if invocation.root == key:
            self._finish(invocation, error)

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
        key = run_id.int if type(run_id) is UUID else run_id
        parent = parent_run_id.int if type(parent_run_id) is UUID else parent_run_id
        self._tool_runs.add(key)
        invocation = self._enter(key, parent, metadata, False)
        name = str((serialized or {}).get("name") or kwargs.get("name") or "tool")
        call_id = kwargs.get("tool_call_id")
        try:
            tool_step = invocation.run.before_tool_call(
                name, inputs if inputs is not None else input_str, call_id=call_id
            )
        except BudgetError as exc:
            raise self._refuse(invocation, key, exc) from None
        invocation.tool_steps[key] = (tool_step, perf_counter(), call_id)

    def _tool_ended(self, run_id: UUID) -> tuple[Key, _Invocation] | None:
        """A tool run ends: forget it; its key and invocation (None once that is over)."""
        key = run_id.int if type(run_id) is UUID else run_id
        self._tool_runs.discard(key)
        invocation = self._close(key)
        return None if invocation is None else (key, invocation)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """Record a finished tool call; an error ToolMessage counts as a failed call."""
        if (ended := self._tool_ended(run_id)) is None:
            return
        key, invocation = ended
        if pending := invocation.tool_steps.pop(key, None):
            tool_step, started, call_id = pending
            # ``tool_failed`` and ``_tool_message``, with one type check for both.
            message: BaseMessage
            if isinstance(output, ToolMessage):
                message, failed = output, output.status == "error"
            else:
                message, failed = _tool_message(output, call_id, tool_step), False
            invocation.run.record_tool_call(
                tool_step,
                ok=not failed,
                latency_s=perf_counter() - started,
                error=str(output.content) if failed else None,
            )
            invocation.transcript.append(message)
        if invocation.root == key:
            self._finish(invocation)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Record a tool call that raised."""
        if (ended := self._tool_ended(run_id)) is None:
            return
        key, invocation = ended
        if pending := invocation.tool_steps.pop(key, None):
            tool_step, started, _ = pending
            invocation.run.record_tool_call(
                tool_step, ok=False, latency_s=perf_counter() - started, error=repr(error)
            )
        if invocation.root == key:
            self._finish(invocation, error)


def _thread_from(metadata: Mapping[str, Any] | None) -> str | None:
    """LangGraph copies ``configurable.thread_id`` into the callback metadata."""
    thread = (metadata or {}).get("thread_id")
    return str(thread) if thread is not None else None


def _in_graph_step(tags: Sequence[str] | None) -> bool:
    """True for a run that LangGraph tags as a step of a graph (``graph:step:<n>``); one
    whose checkpoint namespace nests (``"sub:<task>|model:<task>"``) is a node of a graph
    that runs inside another graph's step."""
    return any(tag.startswith("graph:step:") for tag in tags or ())


def _answer_of(response: LLMResult) -> tuple[BaseMessage | None, Usage | None, str | None]:
    """The answer a model call gave, its usage and the model that answered, in one pass
    over the usual single generation (see ``_first_message``, ``usage_from_result`` and
    ``model_from_result`` for any other shape)."""
    generations = response.generations
    if len(generations) == 1 and len(generations[0]) == 1:
        message = getattr(generations[0][0], "message", None)
        if isinstance(message, BaseMessage):
            usage = usage_from_message(message)
            if usage is None:
                usage = usage_from_output(response.llm_output)
            model = model_from_message(message) or model_from_output(response.llm_output)
            return message, usage, model
    return _first_message(response), usage_from_result(response), model_from_result(response)


def _first_message(response: LLMResult) -> BaseMessage | None:
    for generations in response.generations:
        for generation in generations:
            message = getattr(generation, "message", None)
            if isinstance(message, BaseMessage):
                return message
            return AIMessage(content=generation.text)
    return None


def _text_of(response: LLMResult) -> str:
    """What the call produced, tool calls included (see ``answer_text``)."""
    return "".join(
        answer_text(message)
        if isinstance(message := getattr(g, "message", None), BaseMessage)
        else g.text
        for generations in response.generations
        for g in generations
    )


def _tool_message(output: Any, call_id: str | None, tool_step: ToolStep) -> BaseMessage:
    """The transcript's ToolMessage for a tool that returned something else."""
    content = output.content if isinstance(output, BaseMessage) else str(output)
    return ToolMessage(content=content, tool_call_id=call_id or "", name=tool_step.name)
