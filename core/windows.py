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

    Fixed windows that divide a day (``8h``, ``15m``) follow the wall clock in ``timezone``,
    so ``8h`` means 00:00-08:00-16:00 there, daylight-saving days included; longer or uneven
    ones are aligned to the Unix epoch. ``day`` and ``month`` are calendar windows.
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
        return _part_of_day(now, size, _zone(timezone))
    start = math.floor(now / size) * size
    return Window(float(start), float(start + size))


def _calendar_day(now: float, zone: ZoneInfo) -> Window:
    local = datetime.fromtimestamp(math.floor(now), zone)  # boundaries are whole seconds
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    start = _as_epoch(midnight, zone)
    following = (midnight + timedelta(days=1)).replace(tzinfo=None)
    end = _as_epoch(following, zone)
    return Window(start, end)


def _part_of_day(now: float, size: int, zone: ZoneInfo) -> Window:
    """The window of ``size`` seconds (a divisor of a day) containing ``now``, its bounds
    where the local wall clock shows a multiple of ``size`` (``8h``: 00:00, 08:00, 16:00).

    On a daylight-saving day the window that holds the change is shorter or longer; when the
    clock is turned back, a window ends as the clock shows a boundary again (the repeated
    hour has windows of its own when they are shorter than it)."""
    second = math.floor(now)  # boundaries are whole seconds
    local = datetime.fromtimestamp(second, zone)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    index = _wall_seconds(local) // size
    start = _as_epoch(midnight + timedelta(seconds=index * size), zone, local.fold)
    if (index + 1) * size >= _DAY:
        end = _as_epoch(midnight + timedelta(days=1), zone)
    else:
        end = _as_epoch(midnight + timedelta(seconds=(index + 1) * size), zone, local.fold)
    turned = _turned_back(second, end, zone)
    if turned is not None:
        shown = _wall_seconds(datetime.fromtimestamp(turned, zone))
        if shown % size == 0 or shown // size != index:
            end = turned
    return Window(start, end)


def _wall_seconds(local: datetime) -> int:
    return local.hour * 3600 + local.minute * 60 + local.second


def _turned_back(since: int, until: float, zone: ZoneInfo) -> float | None:
    """The first second in (``since``, ``until``) at which the clock was turned back (its UTC
    offset fell), or None."""
    offset = _offset(since, zone)
    last = math.ceil(until) - 1
    if last <= since or _offset(last, zone) >= offset:
        return None
    low, high = since, last  # the offset at low is the first one, at high a lower one
    while high - low > 1:
        middle = (low + high) // 2
        if _offset(middle, zone) < offset:
            high = middle
        else:
            low = middle
    return float(high)


def _offset(second: int, zone: ZoneInfo) -> timedelta:
    return datetime.fromtimestamp(second, zone).utcoffset() or timedelta(0)


def _calendar_month(now: float, zone: ZoneInfo) -> Window:
    local = datetime.fromtimestamp(math.floor(now), zone)  # boundaries are whole seconds
    first = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0).replace(tzinfo=None)
    following = (
        first.replace(year=first.year + 1, month=1)
        if first.month == 12
        else first.replace(month=first.month + 1)
    )
    return Window(_as_epoch(first, zone), _as_epoch(following, zone))


def _as_epoch(naive_or_aware: datetime, zone: ZoneInfo, fold: int = 0) -> float:
    """Epoch seconds of a local wall-clock time (when ambiguous, the first occurrence, or
    the second with ``fold=1``; a time the clock skipped counts at the skip)."""
    local = naive_or_aware.replace(tzinfo=zone, fold=fold)
    return local.timestamp()
