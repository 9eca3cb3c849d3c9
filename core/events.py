"""Events: one ``CostEvent`` per model or tool call, ``BudgetAlert`` per threshold crossing.

Sinks receive every event. By default only the structlog sink is attached: alerts and faults
at warning level, cost events at debug level, through the standard ``logging`` logger named
``budgetwarden`` (so the host's logging configuration decides what is shown).
``Warden(..., sinks=[JSONLSink("events.jsonl")])`` adds others.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BudgetAlert",
    "CostEvent",
    "Event",
    "JSONLSink",
    "ListSink",
    "Notice",
    "RunFinished",
    "Sink",
    "StructlogSink",
    "event_from_dict",
]


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    ts: float = Field(description="Epoch seconds when the event happened.")
    run_id: str | None = None
    parent_run_id: str | None = None
    agent: str | None = None
    workflow: str | None = None
    task_class: str | None = None
    user: str | None = None
    workspace: str | None = None
    key: str | None = None
    thread: str | None = None
    feature: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The event as a JSON-ready dict, with its ``type``."""
        data = self.model_dump(mode="json")
        data["type"] = self.type
        return data

    @property
    def type(self) -> str:
        """The event's type name, as written to JSONL and the event store."""
        return type(self).__name__


class CostEvent(_Event):
    """One model call or tool call: who, what model and route, tokens, cost, latency, outcome."""

    kind: Literal["llm", "tool"] = "llm"
    provider: str | None = None
    model: str | None = None
    tool: str | None = None
    requested_model: str | None = Field(default=None, description="The model the caller asked for.")
    tier: int | None = None
    route: str | None = Field(default=None, description="'tier N: model' that served the call.")
    route_reason: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False
    service_tier: str | None = Field(
        default=None, description="The provider's service tier, when billed apart (priority)."
    )
    web_search_requests: int = Field(
        default=0, description="Searches the provider's hosted web search tool made."
    )
    cost_usd: float = 0.0
    reserved_usd: float = 0.0
    overshoot_usd: float = 0.0
    latency_s: float | None = None
    retries: int = 0
    retry: bool = False
    outcome: str = "ok"
    validation: str | None = Field(
        default=None, description="'passed', 'failed' or None if not checked."
    )
    status: Literal["ok", "error", "refused"] = "ok"
    budget_ratios: dict[str, float] = Field(default_factory=dict)
    success: bool | None = None
    prompt: str | None = None
    response: str | None = None


class BudgetAlert(_Event):
    """A cap or budget crossed a level: alert (50%), warn (80%), degrade (90%), stop (100%)."""

    cap: str
    level: float
    action: Literal["alert", "warn", "degrade", "stop"]
    ratio: float
    used: float
    limit: float
    resets_at: float | None = None


class RunFinished(_Event):
    """One run ended: why, whether it succeeded, and its totals (children included)."""

    stop_reason: str | None = None
    partial: bool = False
    success: bool | None = None
    iterations: int = 0
    tool_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    wall_seconds: float = 0.0


class Notice(_Event):
    """Anything else worth knowing: ledger faults, unpriced models, route changes, waits."""

    code: str
    message: str
    level: Literal["debug", "info", "warning", "error"] = "warning"
    data: dict[str, Any] = Field(default_factory=dict)


Event = CostEvent | BudgetAlert | Notice | RunFinished
_TYPES: dict[str, type[_Event]] = {
    "CostEvent": CostEvent,
    "BudgetAlert": BudgetAlert,
    "Notice": Notice,
    "RunFinished": RunFinished,
}


def trusted(cls: type[_E], values: dict[str, Any]) -> _E:
    """An event from values the core built itself, skipping validation (hot path only).

    Every value must already have its field's type (what validation would return); fields
    not given take their defaults. The result equals ``cls(**values)``. When ``values`` names
    every field it becomes the event's own dict: pass a fresh one.
    """
    defaults = _DEFAULTS.get(cls)
    if defaults is None:
        defaults = _DEFAULTS[cls] = _defaults_of(cls)
    if len(values) == len(defaults[2]):
        data, given = values, defaults[2].copy()  # every field: no defaults, no re-hashing
    else:
        given = set(values)
        data = {**defaults[0], **values}
        for name, factory in defaults[1]:
            if name not in values:
                data[name] = factory()
    event = _new(cls)
    _set(event, "__dict__", data)
    _set(event, "__pydantic_fields_set__", given)
    _set(event, "__pydantic_extra__", None)
    _set(event, "__pydantic_private__", None)
    return event


def _defaults_of(
    cls: type[_Event],
) -> tuple[dict[str, Any], list[tuple[str, Any]], set[str]]:
    plain: dict[str, Any] = {}
    factories: list[tuple[str, Any]] = []
    for name, info in cls.model_fields.items():
        if info.default_factory is not None:
            factories.append((name, info.default_factory))
        elif not info.is_required():
            plain[name] = info.default
    return plain, factories, set(cls.model_fields)


_E = TypeVar("_E", bound=_Event)
_DEFAULTS: dict[type[_Event], tuple[dict[str, Any], list[tuple[str, Any]], set[str]]] = {}
_new = object.__new__
_set = object.__setattr__


def event_from_dict(data: dict[str, Any]) -> Event:
    """Rebuild an event from ``to_dict()`` output (JSONL lines, event store rows)."""
    cls = _TYPES[str(data.get("type", "CostEvent"))]
    return cls.model_validate(data)  # type: ignore[return-value]


@runtime_checkable
class Sink(Protocol):
    """Anything with ``emit(event)`` receives every event.

    A sink may also have ``wants(event_type) -> bool``: when no sink wants CostEvents,
    adapters do not build them (a sink without ``wants`` is given every event). A run asks
    about CostEvents once, when it opens (and about RunFinished when it ends): a sink that
    starts wanting them (a log level turned to debug) gets them from the next run on.
    """

    def emit(self, event: Event) -> None:
        """Take one event; must not raise for ordinary I/O trouble (log it instead)."""


def _default_renderer() -> Any:
    import structlog

    if sys.stderr.isatty():
        return structlog.dev.ConsoleRenderer(colors=False)
    return structlog.processors.JSONRenderer(default=str)


class StructlogSink:
    """Events to structlog over the stdlib ``budgetwarden`` logger: JSON when not a TTY.

    Cost events go at debug level, alerts and notices at warning (or their own level), so a
    library never floods its host's logs unless the host asks for debug.
    """

    def __init__(self, logger_name: str = "budgetwarden") -> None:
        self._stdlib = logging.getLogger(logger_name)
        self._logger: Any = None  # built at the first event logged: structlog is slow to import

    def _log(self) -> Any:
        if self._logger is None:
            import structlog

            self._logger = structlog.wrap_logger(
                self._stdlib,
                processors=[
                    structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso"),
                    _default_renderer(),
                ],
                wrapper_class=structlog.stdlib.BoundLogger,
            )
        return self._logger

    def wants(self, kind: type[Event]) -> bool:
        """Whether events of this type would be logged now (their level is on)."""
        return self._stdlib.isEnabledFor(_TYPE_LEVELS.get(kind, logging.WARNING))

    def emit(self, event: Event) -> None:
        """Log the event at its level, skipping all work when that level is off."""
        level = _level_of(event)
        if not self._stdlib.isEnabledFor(level):
            return
        data = {k: v for k, v in event.to_dict().items() if v is not None and v != {}}
        name = data.pop("type")
        if isinstance(event, Notice):
            name = f"{name}.{event.code}"
            data.pop("level", None)  # it is the log level
        elif "level" in data:
            data["threshold"] = data.pop("level")
        self._log().log(level, name, **data)


_TYPE_LEVELS: dict[type[Any], int] = {}  # filled below, once the types exist


def _level_of(event: Event) -> int:
    if isinstance(event, (CostEvent, RunFinished)):
        return logging.DEBUG
    if isinstance(event, Notice):
        return logging.getLevelNamesMapping()[event.level.upper()]
    return logging.WARNING


class JSONLSink:
    """Append every event as one JSON line to a file (readable by ``budgetwarden report``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        """Append one line; the file is opened per write so several processes can share it."""
        line = json.dumps(event.to_dict(), default=str, separators=(",", ":")) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)


class ListSink:
    """Keep events in memory: for tests, notebooks and adapters that inspect them."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        """Keep the event."""
        self.events.append(event)

    def of_type(self, cls: type[Event]) -> list[Any]:
        """The events of one type, in order."""
        return [e for e in self.events if isinstance(e, cls)]  # type: ignore[arg-type]

    @property
    def cost_events(self) -> list[CostEvent]:
        """Every CostEvent, in order."""
        return [e for e in self.events if isinstance(e, CostEvent)]

    @property
    def alerts(self) -> list[BudgetAlert]:
        """Every BudgetAlert, in order."""
        return [e for e in self.events if isinstance(e, BudgetAlert)]


_TYPE_LEVELS.update({CostEvent: logging.DEBUG, RunFinished: logging.DEBUG, Notice: logging.ERROR})
