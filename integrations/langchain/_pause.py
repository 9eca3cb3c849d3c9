"""Pause a LangGraph agent at a budget and resume it later, from its checkpointer's state."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.config import get_config
from langgraph.errors import GraphInterrupt
from langgraph.pregel import Pregel
from langgraph.types import Command, StateSnapshot, interrupt

from budgetwarden import BudgetExceeded, Run, Warden
from budgetwarden.pause import PauseHandle

__all__ = ["aresume_langgraph", "pause_here", "resume_langgraph"]

Agent = Pregel[Any, Any, Any, Any]
_MARK = "budgetwarden"


def pause_here(warden: Warden, run: Run, exc: BudgetExceeded, thread: str) -> None:
    """Pause the graph with ``interrupt`` (its checkpointer keeps the state) and keep the
    handle in the warden's ledger; the caller then finishes the run. Returns only when
    LangGraph replays an interrupt that was already answered: the call is tried again."""
    namespace = get_config().get("configurable", {}).get("checkpoint_ns", "")
    state = {"thread_id": thread, "checkpoint_ns": namespace, "resume": "interrupt"}
    handle = run.pause_handle("langgraph", state=state)
    try:
        interrupt(pause_payload(handle, exc))
    except GraphInterrupt:
        warden.save_handle(handle)
        raise


def pause_payload(handle: PauseHandle, exc: BudgetExceeded) -> dict[str, Any]:
    """What ``interrupt`` shows the caller (in ``result["__interrupt__"]``): the handle and why."""
    return {
        _MARK: "pause",
        "handle": handle.id,
        "cap": handle.cap,
        "resets_at": handle.resets_at,
        "message": str(exc),
    }


def _pauses(snapshot: StateSnapshot) -> dict[str, Any]:
    """The thread's pending budgetwarden interrupts, answered with their own handle ids."""
    return {
        pending.id: pending.value["handle"]
        for pending in snapshot.interrupts
        if isinstance(pending.value, Mapping) and pending.value.get(_MARK) == "pause"
    }


def _resume_input(snapshot: StateSnapshot) -> Command[Any] | None:
    """``Command(resume=...)`` for paused interrupts; None re-runs a step that raised."""
    pauses = _pauses(snapshot)
    return Command(resume=pauses) if pauses else None


def _config(handle: PauseHandle, config: RunnableConfig | None) -> RunnableConfig:
    given: dict[str, Any] = dict(config or {})
    configurable = dict(given.get("configurable") or {})
    if configurable.get("thread_id") is None:
        configurable["thread_id"] = handle.state.get("thread_id")
    if configurable["thread_id"] is None:
        raise ValueError(
            f"pause handle {handle.id} names no LangGraph thread: pass "
            "config={'configurable': {'thread_id': ...}} (pausing needs a checkpointer)"
        )
    given["configurable"] = configurable
    return cast(RunnableConfig, given)


def resume_langgraph(
    agent: Agent, handle: PauseHandle, *, config: RunnableConfig | None = None
) -> Any:
    """Go on with an agent paused by budgetwarden, from the step it stopped at.

    The agent's checkpointer holds its state; ``config`` adds to (or names) the thread.
    Use it with ``warden.nap_and_resume(handle_id, partial(resume_langgraph, agent))``.
    """
    resolved = _config(handle, config)
    return agent.invoke(_resume_input(agent.get_state(resolved)), resolved)


async def aresume_langgraph(
    agent: Agent, handle: PauseHandle, *, config: RunnableConfig | None = None
) -> Any:
    """Async twin of ``resume_langgraph`` (for ``warden.anap_and_resume``)."""
    resolved = _config(handle, config)
    return await agent.ainvoke(_resume_input(await agent.aget_state(resolved)), resolved)
