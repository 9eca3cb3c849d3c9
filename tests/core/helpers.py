"""Helpers for core tests: a clock that tests move by hand, and a warden factory."""

from __future__ import annotations

from typing import Any

from budgetwarden import ListSink, Policy, Usage, Warden


class FakeClock:
    """Epoch seconds that only move when a test says so."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_warden(
    policy: Policy | dict[str, Any] | None = None, **kwargs: Any
) -> tuple[Warden, ListSink, FakeClock]:
    """A warden on a memory ledger with a fake clock and a list sink."""
    sink = ListSink()
    clock = kwargs.pop("clock", None) or FakeClock()
    warden = Warden(policy, clock=clock, sinks=[sink], **kwargs)
    return warden, sink, clock


def usage(inp: int = 1000, out: int = 100) -> Usage:
    """A usage with the given input and output tokens."""
    return Usage(input_tokens=inp, output_tokens=out)
