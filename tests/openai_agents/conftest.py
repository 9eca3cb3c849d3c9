"""Agents SDK adapter tests: tracing off, a counting tool, a warden per test."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from agents import FunctionTool, function_tool, set_tracing_disabled

from budgetwarden import ListSink, Policy, Warden

set_tracing_disabled(True)


class ToolLog:
    """A search tool that records every call that really ran."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        log = self

        @function_tool
        def search(q: str) -> str:
            """Search the web for q."""
            log.ran.append(q)
            return f"results for {q}"

        @function_tool
        def lookup(q: str) -> str:
            """Look q up in the wiki."""
            log.ran.append(f"lookup:{q}")
            return f"page for {q}"

        self.search: FunctionTool = search
        self.lookup: FunctionTool = lookup


@pytest.fixture
def tools() -> ToolLog:
    return ToolLog()


@pytest.fixture
def sink() -> ListSink:
    return ListSink()


@pytest.fixture
def make_warden(sink: ListSink) -> Callable[..., Warden]:
    def make(**policy: Any) -> Warden:
        return Warden(Policy.model_validate(policy), sinks=[sink], log_events=False)

    return make
