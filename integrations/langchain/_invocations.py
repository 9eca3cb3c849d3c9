"""The middleware's runs: one per agent invocation, kept in the agent's private state."""

from __future__ import annotations

import functools
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

from langgraph.config import get_config

from budgetwarden import BudgetError, BudgetExceeded, Run, Warden
from budgetwarden.finalizing import finish_abandoned

from ._attribution import Attribution
from ._nesting import parent_run

__all__ = ["Invocation", "Invocations", "thread_id"]


class Ending:
    """How an invocation dropped before ``after_agent`` ended, as far as the middleware saw:
    kept apart from the invocation so that its finalizer can read it."""

    __slots__ = ("raised",)

    def __init__(self) -> None:
        #: an exception (not an interrupt) came out of one of its model or tool calls
        self.raised = False

    def reason(self) -> str:
        """``"error"`` after an exception from a model or tool call; else ``"interrupted"``:
        an interrupt (a human in the loop), a stream closed early, or an error raised where
        the middleware has no hook (another middleware's ``before_model``, for one)."""
        return "error" if self.raised else "interrupted"


@dataclass
class Invocation:
    """One agent invocation: its Run, the refusal that ends it, the tool caps it was told of."""

    run: Run
    stopped: BudgetError | None = None
    told: dict[str, int] = field(default_factory=dict)
    #: ``Policy.record_content`` of the run, read once (a pydantic read per call is dear)
    record_content: bool = False
    #: what its finalizer says if it is dropped unfinished
    ending: Ending = field(default_factory=Ending)
    #: finishes the run if the invocation is dropped unfinished (an exception or an
    #: interrupt ended the agent)
    finalizer: weakref.finalize[[Run, Ending], Invocation] | None = None

    def finish(self, error: BaseException | None = None) -> None:
        """Finish the run, and let go of it: the finalizer's registry held the run, its
        refusal's traceback, and through that this invocation, for good."""
        self.run.finish(error=error)
        self._let_go()

    async def afinish(self, error: BaseException | None = None) -> None:
        """Async twin of ``finish``."""
        await self.run.afinish(error=error)
        self._let_go()

    def _let_go(self) -> None:
        if self.finalizer is not None:
            self.finalizer.detach()

    def tells(self, exc: BudgetExceeded) -> bool:
        """True for a tool-call cap the model hears of in this turn: it is told and goes on.

        A model that asks for a capped tool again in a later turn ends the run instead.
        """
        if not (exc.cap == "max_tool_calls" or exc.cap.startswith("max_tool_calls[")):
            return False
        turn: int = self.run.report.iterations
        return self.told.setdefault(exc.cap, turn) == turn


class Invocations:
    """Opens each invocation's run (a child of the calling agent's run inside a governed
    tool) and finds it again: in the agent's state, or by thread for a resumed agent."""

    def __init__(self, warden: Warden, attribution: Attribution) -> None:
        self._warden = warden
        self._attribution = attribution
        self._resumed: dict[str, Invocation] = {}
        self._lock = threading.Lock()

    def open(self, thread: str | None = None) -> Invocation:
        """A new invocation on the running LangGraph thread. An exception or an interrupt
        that ends the agent skips ``after_agent``: its run is finished when LangGraph drops
        its state."""
        thread = thread or thread_id()
        run = self._attribution.open_run(self._warden, thread, parent=parent_run())
        invocation = Invocation(run, record_content=run.policy.record_content)
        invocation.finalizer = weakref.finalize(invocation, _finish_dropped, run, invocation.ending)
        return invocation

    def start(self) -> Invocation:
        """The invocation of a new ``invoke`` (``before_agent``). A resumed part still kept
        for its thread was left at an interrupt, or ended by an exception, and is over: a
        new task on the thread is a run of its own."""
        thread = thread_id()
        if thread is not None and self._resumed:
            with self._lock:
                left = self._resumed.pop(thread, None)
            if left is not None:
                _finish_if_open(left.run, left.ending)
                left._let_go()
        return self.open(thread)

    def of(self, state: Any, key: str) -> Invocation:
        """The invocation in ``state[key]``; an agent resumed from a checkpoint (which does
        not run ``before_agent`` again) gets one per thread."""
        invocation = state.get(key) if isinstance(state, dict) else None
        if isinstance(invocation, Invocation):
            return invocation
        thread = thread_id()
        with self._lock:
            found = self._resumed.get(thread or "")
            if found is None:
                found = self._resumed[thread or ""] = self.open(thread)
            return found

    def closing(self, state: Any, key: str) -> Invocation | None:
        """The invocation that ends now (and is forgotten)."""
        invocation = state.get(key) if isinstance(state, dict) else None
        if isinstance(invocation, Invocation):
            return invocation
        with self._lock:
            return self._resumed.pop(thread_id() or "", None)

    def forget(self, invocation: Invocation) -> None:
        """A paused invocation is over: its resumption opens a new run."""
        with self._lock:
            for thread, found in list(self._resumed.items()):
                if found is invocation:
                    del self._resumed[thread]

    @property
    def resumed(self) -> dict[str, Invocation]:
        """Invocations resumed from a checkpoint and not finished yet, by thread."""
        with self._lock:
            return dict(self._resumed)


def _finish_if_open(run: Run, ending: Ending) -> None:
    """The invocation was dropped before ``after_agent`` (an exception or an interrupt
    ended the agent)."""
    if run.finished_at is None:
        run.finish(ending.reason())


def _finish_dropped(run: Run, ending: Ending) -> None:
    """``_finish_if_open``, from the invocation's finalizer (``finish_abandoned``)."""
    finish_abandoned(functools.partial(_finish_if_open, run, ending))


def thread_id() -> str | None:
    """LangGraph's ``configurable.thread_id`` of the running invocation, if any."""
    try:
        thread = get_config().get("configurable", {}).get("thread_id")
    except RuntimeError:
        return None
    return str(thread) if thread is not None else None
