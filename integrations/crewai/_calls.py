"""One model call of a guarded kickoff: its reservation, and where its real usage comes from.

CrewAI reports a call's usage in two places, neither of them in the hook contexts: the
``LLMCallCompletedEvent`` on its global event bus (handled in a worker thread, and not
emitted at all by LiteLLM-backed LLMs for native tool-call answers) and the LLM instance's
cumulative token tracker. A call takes the tracker delta when it had its LLM to itself,
else the usage of the events emitted inside it, else budgetwarden's estimate.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from crewai.events.event_bus import crewai_event_bus
from crewai.events.types.llm_events import LLMCallCompletedEvent, LLMCallFailedEvent
from crewai.llms.base_llm import BaseLLM
from crewai.types.usage_metrics import UsageMetrics

from budgetwarden import Run, Step, Usage
from budgetwarden.dispatch import classify_error
from budgetwarden.usage import answer_text

if TYPE_CHECKING:
    from ._notes import CallNotes
    from ._state import CrewRunState

#: How long settling a call may wait for CrewAI's event bus to deliver the call's events.
EVENT_FLUSH_SECONDS = 2.0

#: The model call whose reservation the current context holds (set by the pre-call hook).
current_call: ContextVar[ModelCall | None] = ContextVar("budgetwarden_crewai_call", default=None)


@dataclass(eq=False)
class ModelCall:
    """A reserved model call of one kickoff, from its pre-call hook until it is committed."""

    state: CrewRunState
    run: Run
    step: Step
    lane: int
    notes: CallNotes | None = None
    started: float = field(default_factory=time.perf_counter)
    llm: BaseLLM | None = None
    baseline: UsageMetrics | None = None
    shared: bool = False
    consumed: bool = False
    claimed: bool = False  # being committed: no longer pending
    settled: bool = False  # committed: later events are ignored
    returned_at: float | None = None
    # the usage dicts of the call's completed events, as CrewAI's bus thread delivered them
    # (converted only if the token tracker cannot say: usually it can)
    event_usages: list[dict[str, Any]] = field(default_factory=list)
    text: str | None = None
    calls_text: str | None = None  # its native tool calls, as ``name(arguments)``
    model: str | None = None
    outcome: str = "ok"

    @property
    def latency_s(self) -> float:
        """Seconds from the reservation to the answer (or to now, if none was seen)."""
        end = self.returned_at if self.returned_at is not None else time.perf_counter()
        return max(end - self.started, 0.0)

    def returned(self, response: Any = None, model: str | None = None) -> None:
        """Note that the model answered (the call can be committed): with its text, or with
        the native tool calls it asked for."""
        if self.returned_at is None:
            self.returned_at = time.perf_counter()
        if isinstance(response, str):
            self.text = response
        elif isinstance(response, list):
            self.calls_text = tool_calls_text(response)
        if model is not None:
            self.model = model

    @property
    def output_text(self) -> str | None:
        """What the call produced, for an output estimate (tool calls are billed output)."""
        return self.text if self.text is not None else self.calls_text

    def tracker_delta(self) -> UsageMetrics | None:
        """What the measured LLM's token tracker counted since the reservation."""
        if self.llm is None or self.baseline is None:
            return None
        return self.llm.get_token_usage_summary().delta_since(self.baseline)

    def measured_usage(self) -> Usage | None:
        """The call's real usage when CrewAI reported it, else None (budgetwarden estimates)."""
        delta = self.tracker_delta()
        if delta is not None and delta.successful_requests > 0 and not self.shared:
            return usage_from_metrics(delta)
        usage = self.event_usage()
        if usage is None:
            crewai_event_bus.flush(timeout=EVENT_FLUSH_SECONDS)
            usage = self.event_usage()
        return usage

    def event_usage(self) -> Usage | None:
        """The usage the call's completed events reported, summed (None if none did)."""
        total: Usage | None = None
        for raw in list(self.event_usages):
            usage = usage_from_event(raw)
            if usage is not None:
                total = usage if total is None else total + usage
        return total

    def has_answered(self) -> bool:
        """True when there is evidence that the model call has returned."""
        if self.returned_at is not None:
            return True
        delta = self.tracker_delta()
        return delta is not None and delta.successful_requests > 0 and not self.shared


def usage_from_metrics(metrics: UsageMetrics) -> Usage:
    """Convert CrewAI's usage (prompt tokens include cached ones, except in the token tracker
    of its native Bedrock LLM, hence ``from_counts``) to budgetwarden's Usage."""
    return Usage.from_counts(
        input_tokens=metrics.prompt_tokens,
        output_tokens=metrics.completion_tokens,
        cache_read_tokens=metrics.cached_prompt_tokens,
        cache_write_tokens=metrics.cache_creation_tokens,
        reasoning_tokens=metrics.reasoning_tokens,
    )


def usage_from_event(usage: dict[str, Any] | None) -> Usage | None:
    """The usage an ``LLMCallCompletedEvent`` carries, in budgetwarden's convention."""
    metrics = UsageMetrics.from_provider_dict(usage)
    return usage_from_metrics(metrics) if metrics is not None else None


def outcome_of_error(error: BaseException | str) -> str:
    """Map a provider failure (an exception, or an event's error text) to an outcome."""
    if isinstance(error, BaseException):
        return classify_error(error) or "provider_error"
    text = error.lower()
    if "timeout" in text or "timed out" in text:
        return "timeout"
    if "ratelimit" in text or "rate limit" in text or "429" in text:
        return "rate_limited"
    return "provider_error"


class _TrackerWatch:
    """Which guarded calls are in flight on each LLM instance.

    A token-tracker delta is only that call's usage when no other guarded call used the same
    instance meanwhile; overlapping calls are marked ``shared`` and use their events instead.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[int, set[ModelCall]] = {}

    def bind(self, call: ModelCall, llm: Any) -> None:
        """Measure ``call`` on ``llm``'s token tracker from now on."""
        self.release(call)
        if not isinstance(llm, BaseLLM):
            return
        with self._lock:
            call.llm = llm
            call.baseline = llm.get_token_usage_summary()
            call.shared = False
            others = self._active.setdefault(id(llm), set())
            for other in others:
                other.shared = True
                call.shared = True
            others.add(call)

    def release(self, call: ModelCall) -> None:
        """Stop watching ``call`` (it is committed or measured elsewhere)."""
        if call.llm is None:
            return
        with self._lock:
            others = self._active.get(id(call.llm))
            if others is not None:
                others.discard(call)
                if not others:
                    del self._active[id(call.llm)]


trackers = _TrackerWatch()

_listening = False
_listening_lock = threading.Lock()


def listen_to_llm_events() -> None:
    """Register budgetwarden's LLM event handler on CrewAI's bus (once per process).

    The handler runs in CrewAI's handler threads with a copy of the emitting context, so the
    call reserved in that context is known; events from unguarded crews are ignored.
    """
    global _listening
    with _listening_lock:
        if _listening:
            return
        crewai_event_bus.on(LLMCallCompletedEvent)(_on_llm_completed)
        crewai_event_bus.on(LLMCallFailedEvent)(_on_llm_failed)
        _listening = True


def _on_llm_completed(source: Any, event: LLMCallCompletedEvent) -> None:
    call = current_call.get()
    if call is not None:
        call.state.record_completed(call, event)


def _on_llm_failed(source: Any, event: LLMCallFailedEvent) -> None:
    call = current_call.get()
    if call is not None:
        call.state.record_failed(call, event)


def tool_calls_text(calls: list[Any]) -> str:
    """Native tool calls as ``name(arguments)`` lines, whichever shape the provider gave:
    chat-completions ``{"function": {...}}``, Responses ``{"name", "arguments"}``, or
    Anthropic's ``tool_use`` blocks (``name``, ``input``)."""
    return answer_text(None, [_call_parts(call) for call in calls])


def _call_parts(call: Any) -> tuple[str, str]:
    """A native tool call's name and arguments (as text)."""
    function = _field(call, "function")
    source = function if function is not None else call
    arguments = _field(source, "arguments")
    if arguments is None:
        arguments = _field(call, "input")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, default=str) if arguments is not None else ""
    return str(_field(source, "name") or ""), arguments


def _field(source: Any, key: str) -> Any:
    return source.get(key) if isinstance(source, Mapping) else getattr(source, key, None)
