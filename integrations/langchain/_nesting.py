"""Nested runs: an agent invoked while a tool of a governed agent runs is that run's child."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

from budgetwarden import Run

__all__ = ["calling_tool", "enter_tool", "leave_tool", "parent_run"]

_CALLER: ContextVar[Run | None] = ContextVar("budgetwarden_langchain_caller", default=None)


@contextmanager
def calling_tool(run: Run) -> Iterator[None]:
    """While a tool of ``run`` runs, agents it invokes open their runs as children of ``run``."""
    token = _CALLER.set(run)
    try:
        yield
    finally:
        _CALLER.reset(token)


def enter_tool(run: Run) -> Token[Run | None]:
    """``calling_tool`` without a context manager, for the hot path: pass the token to
    ``leave_tool`` in a ``finally``."""
    return _CALLER.set(run)


def leave_tool(token: Token[Run | None]) -> None:
    """The tool ``enter_tool`` announced has returned."""
    _CALLER.reset(token)


def parent_run() -> Run | None:
    """The run whose tool is running here, if it is still going (a finished one adopts none)."""
    run = _CALLER.get()
    return run if run is not None and run.finished_at is None else None
