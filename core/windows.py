"""Window arithmetic: which window a moment falls in, and when that window ends."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from functools import lru_cache
from typing import NamedTuple
from zoneinfo import ZoneInfo

__all__ = ["Window", "window_at", "window_seconds"]

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DAY = 86400


class Window(NamedTuple):
    """One occurrence of a budget window: [start, end) in epoch seconds."""

    start: float
    end: float  # math.inf for windows that never end ("total", "run")

    @property
    def resets_at(self) -> float | None:
        """When this window frees its budget, or None if it never does."""
        return None if math.isinf(self.end) else self.end


@lru_cache(maxsize=64)
def window_seconds(window: str) -> int | None:
    """Length of a fixed window like ``8h`` in seconds; None for run/total/day/month."""
    if window in ("run", "total", "day", "month"):
        return None
    return int(window[:-1]) * _UNIT_SECONDS[window[-1]]


@lru_cache(maxsize=16)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def window_at(window: str, now: float, timezone: str = "UTC") -> Window:
    """The occurrence of ``window`` that contains ``now``.

    Fixed windows that divide a day (``8h``, ``15m``) are aligned to local midnight in
    ``timezone``, so ``8h`` means 00:00-08:00-16:00 on the wall clock there; longer or
    uneven ones are aligned to the Unix epoch. ``day`` and ``month`` are calendar windows.
    """
    if window in ("run", "total"):
        return Window(0.0, math.inf)
    if window == "day":
        return _calendar_day(now, _zone(timezone))
    if window == "month":
        return _calendar_month(now, _zone(timezone))
    size = window_seconds(window)
    assert size is not None
    if _DAY % size == 0 and size < _DAY:
        day = _calendar_day(now, _zone(timezone))
        index = math.floor((now - day.start) / size)
        start = day.start + index * size
        return Window(start, min(start + size, day.end))
    start = math.floor(now / size) * size
    return Window(float(start), float(start + size))


def _calendar_day(now: float, zone: ZoneInfo) -> Window:
    local = datetime.fromtimestamp(math.floor(now), zone)  # boundaries are whole seconds
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    start = _as_epoch(midnight, zone)
    following = (midnight + timedelta(days=1)).replace(tzinfo=None)
    end = _as_epoch(following, zone)
    return Window(start, end)


def _calendar_month(now: float, zone: ZoneInfo) -> Window:
    local = datetime.fromtimestamp(math.floor(now), zone)  # boundaries are whole seconds
    first = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0).replace(tzinfo=None)
    following = (
        first.replace(year=first.year + 1, month=1)
        if first.month == 12
        else first.replace(month=first.month + 1)
    )
    return Window(_as_epoch(first, zone), _as_epoch(following, zone))


def _as_epoch(naive_or_aware: datetime, zone: ZoneInfo) -> float:
    """Epoch seconds of a local wall-clock time (the first occurrence when ambiguous)."""
    local = naive_or_aware.replace(tzinfo=zone, fold=0)
    return local.timestamp()
