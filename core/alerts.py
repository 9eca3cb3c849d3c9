"""Alert rules over recorded spend, delivered to the warden's sinks and to your callback.

``Policy(alerts=AlertRules(monthly_envelope_usd=500))`` (or ``alerts:`` in a policy file)
sets the figures; ``AlertEvaluator`` checks them over events (an event store or a JSONL file)
and delivers each firing once per crossing:

- envelope levels (default 50, 80 and 100 % of ``monthly_envelope_usd``) of month-to-date
  spend, as a ``BudgetAlert`` with ``cap="envelope:month"``, once per level and month; and,
  with ``alert_on_projection``, one ``Notice`` (``envelope.projected_over``) per month when
  the month-end projection exceeds the envelope;
- the anomalies of ``budgetwarden.anomalies`` (day spike, heavy user, expensive run, daily
  surge), each as a ``Notice`` with ``code="anomaly.<kind>"``, once per day, user and month,
  or run.

"Once" is kept by a key per firing in ``marks``: an ``SQLiteEventStore`` (shared by every
process using the file) or ``MemoryMarks``. A firing whose callback raises is forgotten
again, so the next evaluation retries it. This module imports nothing heavy: the policy
depends on ``AlertRules``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import Field, field_validator

from .events import BudgetAlert, Event, Notice, Sink
from .strict import Strict

if TYPE_CHECKING:
    from .anomalies import Anomaly, BudgetStatus
    from .warden import Warden

__all__ = ["AlertEvaluator", "AlertRules", "Firing", "Marks", "MemoryMarks"]

_log = logging.getLogger("budgetwarden")
ENVELOPE_CAP = "envelope:month"


class AlertRules(Strict):
    """Anomaly figures and monthly envelope levels that alerts fire on (None turns one off)."""

    monthly_envelope_usd: float | None = Field(
        default=None,
        gt=0,
        description="Dollars the whole application may spend per calendar month.",
    )
    envelope_levels: list[float] = Field(
        default_factory=lambda: [0.5, 0.8, 1.0],
        description="Fractions of the envelope that alert once per month each.",
    )
    alert_on_projection: bool = Field(
        default=True,
        description="Alert once a month when the month-end projection exceeds the envelope.",
    )
    day_sigma: float | None = Field(
        default=2.0, gt=0, description="A day above mean + this many standard deviations."
    )
    user_share: float | None = Field(
        default=0.10, gt=0, le=1, description="A user above this share of the month's spend."
    )
    run_usd: float | None = Field(default=1.0, gt=0, description="A run that cost more than this.")
    surge_factor: float | None = Field(
        default=2.0, gt=1, description="A day above this multiple of its trailing average."
    )
    surge_days: int = Field(default=7, ge=1, description="Days in the trailing average.")

    @field_validator("envelope_levels")
    @classmethod
    def _ascending(cls, levels: list[float]) -> list[float]:
        if any(level <= 0 for level in levels) or levels != sorted(set(levels)):
            raise ValueError(
                "envelope_levels must be distinct positive fractions in ascending order, "
                "e.g. [0.5, 0.8, 1.0]"
            )
        return levels


class Marks(Protocol):
    """Where firing keys are kept so each fires once (``SQLiteEventStore`` is one)."""

    def mark_once(self, key: str, ts: float | None = None) -> bool:
        """Record ``key``; True only the first time."""

    def forget(self, key: str) -> None:
        """Drop ``key`` so it can fire again."""


class MemoryMarks:
    """Firing keys kept in memory, for one process."""

    def __init__(self) -> None:
        self._keys: set[str] = set()

    def mark_once(self, key: str, ts: float | None = None) -> bool:
        """Record ``key``; True only the first time."""
        if key in self._keys:
            return False
        self._keys.add(key)
        return True

    def forget(self, key: str) -> None:
        """Drop ``key`` so it can fire again."""
        self._keys.discard(key)


@dataclass(frozen=True, slots=True)
class Firing:
    """One alert that fired: its dedupe key, kind, message, and the event sent to the sinks."""

    key: str
    kind: str
    message: str
    event: BudgetAlert | Notice
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what a webhook posts)."""
        return {
            "key": self.key,
            "kind": self.kind,
            "message": self.message,
            "data": self.data,
            "event": self.event.to_dict(),
        }


Callback = Callable[[Firing], Any]


class AlertEvaluator:
    """Checks ``AlertRules`` over events and delivers new firings to sinks and a callback.

    ``sinks``: where each firing goes as an event (default: a ``StructlogSink``);
    ``callback``: called with each new ``Firing`` (e.g. a function posting to a webhook);
    ``marks``: where firing keys are kept (default ``MemoryMarks``); ``timezone``: for days
    and months.
    """

    def __init__(
        self,
        rules: AlertRules,
        *,
        sinks: Sequence[Sink] | None = None,
        callback: Callback | None = None,
        marks: Marks | None = None,
        timezone: str = "UTC",
    ) -> None:
        if sinks is None:
            from .events import StructlogSink

            sinks = [StructlogSink()]
        self.rules = rules
        self.sinks = list(sinks)
        self.callback = callback
        self.marks: Marks = marks if marks is not None else MemoryMarks()
        self.timezone = timezone
        #: The firings the last ``evaluate`` could not deliver to the callback, with the
        #: error; they fire again at the next ``evaluate``.
        self.undelivered: list[tuple[Firing, Exception]] = []

    @classmethod
    def for_warden(
        cls, warden: Warden, *, callback: Callback | None = None, marks: Marks | None = None
    ) -> AlertEvaluator:
        """An evaluator with the warden's policy rules, sinks and time zone."""
        rules = warden.policy.alerts or AlertRules()
        return cls(
            rules,
            sinks=warden.sinks,
            callback=callback,
            marks=marks,
            timezone=warden.policy.timezone,
        )

    def check(self, events: Sequence[Event], now: float | None = None) -> list[Firing]:
        """Everything firing now (no dedupe, nothing delivered)."""
        from .analytics import daily_spend
        from .anomalies import budget_status, find_anomalies, heavy_users, month_bounds

        now = time.time() if now is None else now
        start, end = month_bounds(now, self.timezone)
        past = [e for e in events if e.ts <= now]
        month = [e for e in past if e.ts >= start.timestamp()]
        status = budget_status(month, self.rules.monthly_envelope_usd, now, self.timezone)
        firings = _envelope_firings(status, self.rules, now, end.timestamp())
        daily = daily_spend(past, tz=self.timezone)
        history_rules = self.rules.model_copy(update={"user_share": None})
        anomalies = find_anomalies(past, daily, history_rules)
        if self.rules.user_share is not None:  # heavy users: of this month's spend
            anomalies += heavy_users(month, self.rules.user_share, status.month)
        return firings + [_anomaly_firing(a, now) for a in anomalies]

    def evaluate(self, events: Sequence[Event], now: float | None = None) -> list[Firing]:
        """Deliver every firing not delivered before; returns the ones delivered now."""
        delivered = []
        self.undelivered = []
        for firing in self.check(events, now):
            if not self.marks.mark_once(firing.key, firing.event.ts):
                continue
            if self._deliver(firing):
                delivered.append(firing)
            else:
                self.marks.forget(firing.key)
        return delivered

    def _deliver(self, firing: Firing) -> bool:
        for sink in self.sinks:
            try:
                sink.emit(firing.event)
            except Exception:
                _log.exception("budgetwarden alert sink %s failed", type(sink).__name__)
        if self.callback is None:
            return True
        try:
            self.callback(firing)
        except Exception as exc:  # a webhook that is down: said once, retried next time
            self.undelivered.append((firing, exc))
            _log.warning("budgetwarden alert %s not delivered (%s); will retry", firing.key, exc)
            return False
        return True


def usd(value: float) -> str:
    """Dollars for messages: cents from $1 up, four decimals below ($0.0420)."""
    return f"${value:,.2f}" if abs(value) >= 1 else f"${value:.4f}"


def _envelope_firings(
    status: BudgetStatus, rules: AlertRules, now: float, resets_at: float
) -> list[Firing]:
    envelope = rules.monthly_envelope_usd
    if envelope is None:
        return []
    firings = []
    for level in rules.envelope_levels:
        if status.spent_usd < level * envelope:
            continue
        action: Literal["alert", "warn"] = "alert" if level < 0.8 else "warn"
        message = (
            f"month {status.month} spent {usd(status.spent_usd)}, {level:.0%} or more of the "
            f"{usd(envelope)} envelope (projected {usd(status.projected_usd)})"
        )
        event = BudgetAlert(
            ts=now,
            cap=ENVELOPE_CAP,
            level=level,
            action=action,
            ratio=status.spent_usd / envelope,
            used=status.spent_usd,
            limit=envelope,
            resets_at=resets_at,
        )
        data = {"month": status.month, "level": level, "projected_usd": status.projected_usd}
        key = f"envelope|{status.month}|{level:g}"
        firings.append(Firing(key, "envelope", message, event, data))
    if rules.alert_on_projection and status.status == "at_risk":
        firings.append(_projection_firing(status, envelope, now))
    return firings


def _projection_firing(status: BudgetStatus, envelope: float, now: float) -> Firing:
    message = (
        f"month {status.month} is projected to spend {usd(status.projected_usd)}, above the "
        f"{usd(envelope)} envelope ({usd(status.spent_usd)} after {status.days_elapsed:.1f} days)"
    )
    data = status.model_dump(mode="json")
    event = Notice(ts=now, code="envelope.projected_over", message=message, data=data)
    return Firing(
        f"envelope_projection|{status.month}", "envelope_projection", message, event, data
    )


def _anomaly_firing(anomaly: Anomaly, now: float) -> Firing:
    data = anomaly.model_dump(mode="json")
    event = Notice(ts=now, code=f"anomaly.{anomaly.kind}", message=anomaly.message, data=data)
    return Firing(anomaly.key, anomaly.kind, anomaly.message, event, data)
