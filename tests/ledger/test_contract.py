"""One contract, three backends: memory, SQLite and Redis behave the same."""

from __future__ import annotations

import math
import time

import pytest

from budgetwarden import Budget, BudgetExceeded, Warden
from budgetwarden.ledger import Charge, Ledger, open_ledger
from budgetwarden.ledger.base import ValueStore

from .helpers import FakeClock, guarded_call, policy

END = 1_000.0  # the window of the test buckets ends here


def charge(key: str, amount: float, limit: float = 10.0, end: float = END) -> Charge:
    return Charge(key, amount, limit, end)


@pytest.fixture
def ledger(ledger_uri: str) -> Ledger:
    opened = open_ledger(ledger_uri)
    yield opened
    opened.close()


def test_reserve_takes_every_charge_or_none(ledger: Ledger) -> None:
    ledger.reserve("r1", [charge("b", 9.0)], now=1, lease_until=100)
    outcome = ledger.reserve("r2", [charge("a", 1.0), charge("b", 2.0)], now=1, lease_until=100)
    assert not outcome.ok
    assert ledger.state("a", now=2).reserved == 0  # nothing held on the bucket that had room
    assert ledger.state("b", now=2).reserved == 9.0


def test_refusal_names_the_full_bucket_and_the_amount(ledger: Ledger) -> None:
    ledger.commit("c", [charge("b", 4.0)], now=1)
    ledger.reserve("r1", [charge("b", 5.0)], now=1, lease_until=100)
    outcome = ledger.reserve("r2", [charge("a", 1.0), charge("b", 2.0)], now=2, lease_until=100)
    assert outcome.refused is not None
    assert (outcome.refused.key, outcome.refused.committed, outcome.refused.reserved) == (
        "b",
        4.0,
        5.0,
    )
    assert outcome.refused_amount == 2.0


def test_granted_reservation_reports_states_including_itself(ledger: Ledger) -> None:
    ledger.commit("c", [charge("a", 1.5)], now=1)
    outcome = ledger.reserve("r", [charge("a", 2.0), charge("b", 3.0)], now=1, lease_until=9)
    assert outcome.ok
    assert [(s.key, s.committed, s.reserved, s.limit) for s in outcome.states] == [
        ("a", 1.5, 2.0, 10.0),
        ("b", 0.0, 3.0, 10.0),
    ]


def test_an_expired_lease_no_longer_counts(ledger: Ledger) -> None:
    assert ledger.reserve("r1", [charge("a", 10.0)], now=1, lease_until=50).ok
    assert not ledger.reserve("r2", [charge("a", 1.0)], now=49, lease_until=99).ok
    assert ledger.reserve("r3", [charge("a", 10.0)], now=50, lease_until=99).ok


def test_commit_adds_the_real_amount_even_past_the_limit(ledger: Ledger) -> None:
    ledger.reserve("r", [charge("a", 1.0)], now=1, lease_until=100)
    states = ledger.commit("r", [charge("a", 12.5)], now=2)
    assert [(s.committed, s.reserved) for s in states] == [(12.5, 0.0)]
    assert ledger.state("a", now=3).committed == 12.5


def test_commit_drops_the_reservation_on_every_bucket(ledger: Ledger) -> None:
    ledger.reserve("r", [charge("a", 2.0), charge("b", 3.0)], now=1, lease_until=100)
    ledger.commit("r", [charge("a", 1.0)], now=2)
    assert ledger.state("b", now=3).reserved == 0.0
    assert ledger.state("a", now=3).committed == 1.0


def test_release_frees_the_reservation_and_spends_nothing(ledger: Ledger) -> None:
    ledger.reserve("r", [charge("a", 10.0)], now=1, lease_until=100)
    ledger.release("r", now=2)
    state = ledger.state("a", now=3)
    assert (state.committed, state.reserved) == (0.0, 0.0)
    assert ledger.reserve("r2", [charge("a", 10.0)], now=3, lease_until=100).ok


def test_zero_charges_pass_a_full_bucket(ledger: Ledger) -> None:
    ledger.commit("c", [charge("a", 10.0)], now=1)
    assert ledger.reserve("r", [charge("a", 0.0)], now=2, lease_until=100).ok


def test_state_is_zero_once_the_window_ended(ledger: Ledger) -> None:
    ledger.commit("c", [charge("a", 3.0, end=100)], now=1)
    assert ledger.state("a", now=99, limit=10).committed == 3.0
    ended = ledger.state("a", now=100, limit=10)
    assert (ended.committed, ended.reserved, ended.limit) == (0.0, 0.0, 10)


def test_a_window_that_never_ends_keeps_its_spend(ledger: Ledger) -> None:
    ledger.commit("c", [charge("total", 3.0, end=math.inf)], now=1)
    assert ledger.state("total", now=1e12).committed == 3.0


def test_a_watched_cancel_marker_refuses_until_lifted(ledger: Ledger) -> None:
    ledger.cancel("user=u1", reason="runaway")
    watch = ["run=r", "user=u1"]
    assert ledger.cancelled(watch) == "user=u1"
    outcome = ledger.reserve("r", [charge("a", 1.0)], now=1, lease_until=9, watch=watch)
    assert (outcome.ok, outcome.cancelled) == (False, "user=u1")
    assert ledger.state("a", now=2).reserved == 0.0
    ledger.uncancel("user=u1")
    assert ledger.cancelled(watch) is None
    assert ledger.reserve("r", [charge("a", 1.0)], now=1, lease_until=9, watch=watch).ok


def test_mark_once_is_true_only_the_first_time(ledger: Ledger) -> None:
    assert ledger.mark_once("alert|a|0.8", expires_at=END)
    assert not ledger.mark_once("alert|a|0.8", expires_at=END)
    assert ledger.mark_once("alert|a|0.9", expires_at=math.inf)


@pytest.mark.parametrize("key", ["a|user=b", "{bw:x}", "a b", "ü/ñ", "a"])
def test_any_key_text_is_its_own_bucket(ledger: Ledger, key: str) -> None:
    ledger.commit("c", [charge(key, 1.0)], now=1)
    ledger.commit("d", [charge(key + "|1", 2.0)], now=1)
    assert ledger.state(key, now=2).committed == 1.0
    assert ledger.state(key + "|1", now=2).committed == 2.0


async def test_async_twins_do_what_the_sync_methods_do(ledger: Ledger) -> None:
    assert (await ledger.areserve("r1", [charge("a", 6.0)], now=1, lease_until=100)).ok
    assert not (await ledger.areserve("r2", [charge("a", 6.0)], now=1, lease_until=100)).ok
    states = await ledger.acommit("r1", [charge("a", 5.0)], now=2)
    assert [(s.committed, s.reserved) for s in states] == [(5.0, 0.0)]
    assert (await ledger.areserve("r3", [charge("a", 5.0)], now=3, lease_until=100)).ok
    await ledger.arelease("r3", now=4)
    assert ledger.state("a", now=5).reserved == 0.0


def test_warden_spent_and_remaining_read_the_ledger(ledger_uri: str) -> None:
    clock = FakeClock()
    budgets = (
        Budget(scope="user", window="day", max_cost_usd=0.01),
        Budget(scope="user", window="1m", max_requests=3),
    )
    warden = Warden(policy(*budgets), ledger=ledger_uri, clock=clock, log_events=False)
    run = warden.run(user="u1")
    costs = [guarded_call(run, output_tokens=50) for _ in range(2)]
    assert warden.spent("user", "u1", "day") == pytest.approx(sum(costs))
    assert warden.spent("user", "u1", "1m") == 2
    assert warden.remaining("user", "u1", "day") == pytest.approx(0.01 - sum(costs))
    assert warden.remaining("user", "u1", "1m") == 1
    assert warden.remaining("user", "nobody", "day") == 0.01
    assert warden.remaining("workspace", "w") is None
    clock.advance(60)
    assert warden.spent("user", "u1", "1m") == 0
    warden.close()


@pytest.mark.parametrize("backend", ["sqlite", "redis"], indirect=True)  # memory:// is per process
def test_two_wardens_on_one_uri_share_a_budget(backend: str, ledger_uri: str) -> None:
    budget = Budget(scope="workspace", window="day", max_requests=3)
    first, second = (
        Warden(policy(budget), ledger=ledger_uri, clock=FakeClock(), log_events=False)
        for _ in range(2)
    )
    for warden in (first, second, first):
        with warden.run(workspace="acme") as run:  # a run's commits reach the ledger by its end
            guarded_call(run)
    with pytest.raises(BudgetExceeded) as info:
        guarded_call(second.run(workspace="acme"))
    assert info.value.cap == "budget:workspace=acme/day/requests"
    assert second.spent("workspace", "acme") == 3
    first.close()
    second.close()


def test_values_are_kept_listed_by_prefix_and_forgotten(ledger: Ledger) -> None:
    assert isinstance(ledger, ValueStore)
    ledger.put_value("handle|ns|b", '{"id": "b"}')
    ledger.put_value("handle|ns|a", '{"id": "a"}')
    ledger.put_value("handle|other|c", "{}")
    ledger.put_value("handle|ns|a", '{"id": "a2"}')
    assert ledger.get_value("handle|ns|a") == '{"id": "a2"}'
    assert ledger.list_values("handle|ns|") == ["handle|ns|a", "handle|ns|b"]
    ledger.delete_value("handle|ns|a")
    assert ledger.get_value("handle|ns|a") is None
    assert ledger.list_values("handle|ns|") == ["handle|ns|b"]
    assert ledger.list_values("nothing|") == []


def test_an_expired_value_is_gone(ledger: Ledger) -> None:
    assert isinstance(ledger, ValueStore)
    ledger.put_value("v|old", "x", expires_at=time.time() - 1)
    ledger.put_value("v|new", "y", expires_at=time.time() + 60)
    assert ledger.get_value("v|old") is None
    assert ledger.list_values("v|") == ["v|new"]


def test_a_commit_repeated_with_the_same_reservation_id_counts_once(ledger: Ledger) -> None:
    charge = Charge("dup|k", 0.25, 1.0, time.time() + 3600)
    now = time.time()
    first = ledger.commit("rid-dup", [charge], now=now)
    again = ledger.commit("rid-dup", [charge], now=now)  # a retry after a timeout
    assert first[0].committed == again[0].committed == 0.25
    assert ledger.state("dup|k", now=now).committed == 0.25
    ledger.commit("rid-other", [charge], now=now)
    assert ledger.state("dup|k", now=now).committed == 0.5


def test_the_memory_ledger_forgets_reservations_whose_lease_ended() -> None:
    """A call whose run was dropped mid-call never commits or releases: its record stayed
    for good (its amount stopped counting at the lease's end)."""
    from budgetwarden.ledger.memory import MemoryLedger

    ledger = MemoryLedger()
    charge = Charge("k", 1.0, 100.0, math.inf)
    ledger.reserve("dropped", [charge], now=0.0, lease_until=10.0)
    ledger.reserve("live", [charge], now=0.0, lease_until=1000.0)
    ledger._forget_lapsed_reservations(now=20.0)
    assert set(ledger._reservations) == {"live"}
    assert ledger.state("k", now=20.0).reserved == 1.0


def test_a_limit_that_exactly_fits_its_last_charge_grants_it(ledger: Ledger) -> None:
    """Ten charges of 0.001 fit a limit of 0.01, though their float sum is
    0.010000000000000002: the check forgives rounding (``LIMIT_SLACK``), and no more."""
    for n in range(10):
        outcome = ledger.reserve(f"r{n}", [charge("b", 0.001, limit=0.01)], now=1, lease_until=9)
        assert outcome.ok, n
        ledger.commit(f"r{n}", [charge("b", 0.001, limit=0.01)], now=1)
    assert ledger.state("b", now=2).committed == pytest.approx(0.01)
    refused = ledger.reserve("r10", [charge("b", 1e-6, limit=0.01)], now=1, lease_until=9)
    assert not refused.ok  # a millionth past the limit is past it
