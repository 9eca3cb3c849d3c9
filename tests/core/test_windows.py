"""Window arithmetic: occurrences contain the moment, tile time, and follow the time zone."""

from __future__ import annotations

import math
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from budgetwarden.windows import window_at

WINDOWS = ["30s", "1m", "15m", "1h", "8h", "7h", "1d", "7d", "day", "month"]
ZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]
moments = st.floats(min_value=946_684_800, max_value=4_102_444_800, allow_nan=False)


@given(moment=moments, window=st.sampled_from(WINDOWS), zone=st.sampled_from(ZONES))
def test_occurrence_contains_the_moment_and_the_next_one_starts_at_its_end(
    moment: float, window: str, zone: str
) -> None:
    occurrence = window_at(window, moment, zone)
    assert occurrence.start <= moment < occurrence.end
    following = window_at(window, occurrence.end, zone)
    assert following.start == occurrence.end
    assert window_at(window, occurrence.end - 1e-3, zone) == occurrence


@given(moment=moments, zone=st.sampled_from(ZONES))
def test_day_and_month_start_at_local_midnight(moment: float, zone: str) -> None:
    tz = ZoneInfo(zone)
    day = window_at("day", moment, zone)
    start = datetime.fromtimestamp(day.start, tz)
    assert (start.hour, start.minute) == (0, 0) or start.date() != datetime.fromtimestamp(
        math.floor(moment), tz
    ).date()
    month = window_at("month", moment, zone)
    assert datetime.fromtimestamp(month.start, tz).day == 1
    # floor: fromtimestamp rounds 23:59:59.9999995 up into the next month
    assert (
        datetime.fromtimestamp(math.floor(moment), tz).month
        == datetime.fromtimestamp(month.start, tz).month
    )


def test_eight_hour_windows_follow_the_local_wall_clock() -> None:
    paris = ZoneInfo("Europe/Paris")
    moment = datetime(2026, 7, 1, 9, 30, tzinfo=paris).timestamp()
    occurrence = window_at("8h", moment, "Europe/Paris")
    assert datetime.fromtimestamp(occurrence.start, paris).hour == 8
    assert datetime.fromtimestamp(occurrence.end, paris).hour == 16


def test_run_and_total_windows_never_reset() -> None:
    for window in ("run", "total"):
        occurrence = window_at(window, 1e9)
        assert math.isinf(occurrence.end) and occurrence.resets_at is None


def test_dst_day_is_twenty_three_hours_long() -> None:
    moment = datetime(2026, 3, 29, 12, tzinfo=ZoneInfo("Europe/Paris")).timestamp()
    day = window_at("day", moment, "Europe/Paris")
    assert day.end - day.start == 23 * 3600


CLOCK_CHANGES = [
    ("Europe/Paris", "2024-03-31"),  # clock forward an hour
    ("Europe/Paris", "2024-10-27"),  # clock back an hour
    ("America/New_York", "2024-11-03"),
    ("Australia/Lord_Howe", "2024-04-07"),  # clock back half an hour
    ("Australia/Lord_Howe", "2024-10-06"),  # forward half an hour
]


@pytest.mark.parametrize(("zone", "day"), CLOCK_CHANGES)
@pytest.mark.parametrize("window", ["1m", "15m", "30m", "1h", "8h"])
def test_windows_of_a_day_tile_clock_change_days_on_wall_clock_boundaries(
    zone: str, day: str, window: str
) -> None:
    tz = ZoneInfo(zone)
    size = int(window[:-1]) * {"m": 60, "h": 3600}[window[-1]]
    moment = datetime.fromisoformat(day).replace(tzinfo=tz).timestamp() - 3 * 3600
    for _ in range(1200):  # every 97 s over 32 hours around the change
        occurrence = window_at(window, moment, zone)
        assert occurrence.start <= moment < occurrence.end
        assert window_at(window, occurrence.end, zone).start == occurrence.end
        start = datetime.fromtimestamp(occurrence.start, tz)
        on_boundary = (start.hour * 3600 + start.minute * 60 + start.second) % size == 0
        at_a_change = datetime.fromtimestamp(occurrence.start - 1, tz).utcoffset() != (
            start.utcoffset()
        )
        assert on_boundary or at_a_change
        moment += 97


@pytest.mark.parametrize("day", ["2024-03-31", "2024-10-27"])
def test_eight_hour_windows_keep_their_hours_on_clock_change_days(day: str) -> None:
    tz = ZoneInfo("Europe/Paris")
    occurrence = window_at("8h", datetime.fromisoformat(day).replace(tzinfo=tz).timestamp(), tz.key)
    starts = []
    for _ in range(4):
        starts.append(datetime.fromtimestamp(occurrence.start, tz).strftime("%H:%M"))
        occurrence = window_at("8h", occurrence.end, tz.key)
    assert starts == ["00:00", "08:00", "16:00", "00:00"]
