"""Budgets over time on every backend: an injected clock crosses 8h, day and month boundaries
in a configured time zone; the refusal says when the window resets, and it does reset then."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from budgetwarden import Budget, BudgetExceeded, Warden

from .helpers import FakeClock, guarded_call, policy

CASES = {
    # window: (time zone, the moment the test starts, the local time its window resets)
    "8h": ("Europe/Paris", datetime(2026, 6, 15, 7, 30), datetime(2026, 6, 15, 8, 0)),
    # 2026-03-08 is the 23-hour day when New York moves to summer time
    "day": ("America/New_York", datetime(2026, 3, 8, 10, 0), datetime(2026, 3, 9, 0, 0)),
    "month": ("Asia/Kolkata", datetime(2026, 2, 27, 23, 0), datetime(2026, 3, 1, 0, 0)),
}


def epoch(local: datetime, zone: str) -> float:
    return local.replace(tzinfo=ZoneInfo(zone)).timestamp()


@pytest.mark.parametrize("window", CASES)
def test_a_window_refuses_until_its_local_boundary_then_resets(
    ledger_uri: str, window: str
) -> None:
    zone, start, boundary = CASES[window]
    clock = FakeClock(epoch(start, zone))
    budget = Budget(scope="user", window=window, max_requests=2)
    warden = Warden(policy(budget, timezone=zone), ledger=ledger_uri, clock=clock, log_events=False)
    resets_at = epoch(boundary, zone)
    for _ in range(2):
        guarded_call(warden.run(user="u1"))
    with pytest.raises(BudgetExceeded) as info:
        guarded_call(warden.run(user="u1"))
    assert info.value.resets_at == resets_at
    assert f"it resets at {datetime.fromtimestamp(resets_at, ZoneInfo('UTC')):%Y-%m-%d %H:%M}" in (
        str(info.value)
    )

    clock.now = resets_at - 1
    with pytest.raises(BudgetExceeded):
        guarded_call(warden.run(user="u1"))
    assert warden.spent("user", "u1", window) == 2

    clock.now = resets_at
    assert warden.spent("user", "u1", window) == 0
    guarded_call(warden.run(user="u1"))
    assert warden.spent("user", "u1", window) == 1
    assert warden.remaining("user", "u1", window) == 1
    warden.close()


def test_a_user_8h_budget_and_a_workspace_month_budget_reset_apart(ledger_uri: str) -> None:
    zone = "Europe/Paris"
    clock = FakeClock(epoch(datetime(2026, 1, 15, 7, 0), zone))
    budgets = (
        Budget(scope="user", window="8h", max_cost_usd=0.0025),  # two calls per 8 hours
        Budget(scope="workspace", window="month", max_cost_usd=0.0045),  # four a month
    )
    warden = Warden(
        policy(*budgets, timezone=zone), ledger=ledger_uri, clock=clock, log_events=False
    )
    for user in ("u1", "u1", "u2", "u2"):
        guarded_call(warden.run(user=user, workspace="acme"))
    with pytest.raises(BudgetExceeded) as info:
        guarded_call(warden.run(user="u1", workspace="acme"))
    assert info.value.cap == "budget:user=u1/8h"

    clock.now = epoch(datetime(2026, 1, 15, 8, 0), zone)  # u1's 8 hours reset, the month not
    assert warden.spent("user", "u1") == 0
    with pytest.raises(BudgetExceeded) as info:
        guarded_call(warden.run(user="u1", workspace="acme"))
    assert info.value.cap == "budget:workspace=acme/month"
    assert info.value.resets_at == epoch(datetime(2026, 2, 1, 0, 0), zone)

    clock.now = info.value.resets_at
    guarded_call(warden.run(user="u1", workspace="acme"))
    assert warden.spent("workspace", "acme") == pytest.approx(0.001)
    warden.close()
