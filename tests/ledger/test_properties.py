"""Property tests: any reserve / commit / release / settle sequence gives the same results on
SQLite and Redis as on the memory ledger; committed spend is the sum of commits (settled ones
included); calls that stay within their reservations never push a bucket past its limit."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from budgetwarden.ledger import Charge, Ledger, MemoryLedger, ReserveOutcome, open_ledger

from .conftest import backend_uri

T0 = 10_000.0
LIMITS = (2.0, 5.0, 3.5)
ENDS = (T0 + 120, math.inf, T0 + 10_000)  # the first window ends during many sequences
KEYS = range(len(LIMITS))

# Amounts are multiples of 1/4, so every sum is exact and backends can be compared exactly.
amounts = st.integers(0, 12).map(lambda q: q / 4)
charges = st.lists(st.tuples(st.sampled_from(KEYS), amounts), min_size=1, max_size=3)
# (which issued reservation, its real charges, clamped to what it reserved?), as for a commit
settlements = st.lists(st.tuples(st.integers(0, 50), charges, st.booleans()), max_size=3)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), charges, st.sampled_from([5, 10, 20, 40])),
        st.tuples(st.just("commit"), st.integers(0, 50), charges, st.booleans()),
        st.tuples(
            st.just("settle_reserve"),
            settlements,
            st.lists(st.tuples(st.sampled_from(KEYS), amounts), max_size=3),
            st.sampled_from([5, 10, 20, 40]),
        ),
        st.tuples(st.just("settle"), settlements),
        st.tuples(st.just("release"), st.integers(0, 50)),
        st.tuples(st.just("advance"), st.sampled_from([5, 10, 20])),  # often lands on a lease end
        st.tuples(st.just("state"), st.sampled_from(KEYS)),
    ),
    max_size=30,
)


@dataclass
class Model:
    """What the test knows: time, grants still live, and the sum of commits per bucket."""

    now: float = T0
    grants: dict[str, tuple[dict[int, float], float]] = field(default_factory=dict)
    issued: list[str] = field(default_factory=list)
    commits: dict[int, float] = field(default_factory=lambda: dict.fromkeys(KEYS, 0.0))
    within_reservations: bool = True
    done: set[str] = field(default_factory=set)
    stray: str = "never-reserved"

    def open_keys(self, wanted: list[tuple[int, float]]) -> list[tuple[int, float]]:
        """Charges on windows that have not ended (the warden never charges an ended one)."""
        return [(k, a) for k, a in wanted if ENDS[k] > self.now]

    def pick(self, index: int) -> str:
        return self.issued[index % len(self.issued)] if self.issued else self.stray

    def committed_within(
        self, rid: str, wanted: list[tuple[int, float]]
    ) -> list[tuple[int, float]]:
        """The charges clamped to what ``rid`` reserved, when it holds a live reservation."""
        grant = self.grants.get(rid)
        if grant is None or grant[1] <= self.now:
            self.within_reservations = False
            return wanted
        left = dict(grant[0])
        within = []
        for k, a in wanted:
            if k in left:
                within.append((k, min(a, left[k])))
                left[k] -= within[-1][1]
        return within


def normal(result: Any, prefix: str) -> Any:
    """A result with the per-example key prefix removed, for comparison across backends."""
    if isinstance(result, ReserveOutcome):
        refused = normal(result.refused, prefix) if result.refused else None
        states = normal(result.states, prefix)
        return (result.ok, result.cancelled, refused, result.refused_amount, states)
    if isinstance(result, tuple):
        return tuple(normal(r, prefix) for r in result)
    if hasattr(result, "committed"):
        return (result.key.removeprefix(prefix), result.committed, result.reserved, result.limit)
    return result


def run_sequence(ledger: Ledger, prefix: str, sequence: list[tuple[Any, ...]]) -> list[Any]:
    """Apply the sequence to one ledger, checking the invariants after every step."""
    model = Model()
    model.stray = f"{prefix}never-reserved"
    out: list[Any] = []

    def as_charges(wanted: list[tuple[int, float]]) -> list[Charge]:
        return [Charge(f"{prefix}k{k}", a, LIMITS[k], ENDS[k]) for k, a in wanted]

    def settled(picks: list[tuple[int, list[tuple[int, float]], bool]]) -> list[Any]:
        """The settlements to send, applied to the model as commits (in order)."""
        out = []
        for index, wanted, within in picks:
            rid = model.pick(index)
            wanted = model.open_keys(wanted)
            if within:
                wanted = model.committed_within(rid, wanted)
            else:
                model.within_reservations = False
            model.grants.pop(rid, None)
            if rid not in model.done:
                model.done.add(rid)
                for k, a in wanted:
                    model.commits[k] += a
            out.append((rid, as_charges(wanted)))
        return out

    for n, op in enumerate(sequence):
        kind = op[0]
        if kind == "reserve":
            rid = f"{prefix}r{n}"
            wanted = model.open_keys(op[1])
            lease = model.now + op[2]
            outcome = ledger.reserve(rid, as_charges(wanted), now=model.now, lease_until=lease)
            model.issued.append(rid)
            if outcome.ok:
                model.grants[rid] = (dict(wanted), lease)
            out.append(normal(outcome, prefix))
        elif kind == "commit":
            rid = model.pick(op[1])
            wanted = model.open_keys(op[2])
            if op[3]:
                wanted = model.committed_within(rid, wanted)
            else:
                model.within_reservations = False
            states = ledger.commit(rid, as_charges(wanted), now=model.now)
            model.grants.pop(rid, None)
            if rid not in model.done:  # a reservation id commits once: a repeat adds nothing
                model.done.add(rid)
                for k, a in wanted:
                    model.commits[k] += a
            out.append(normal(states, prefix))
        elif kind == "settle_reserve":
            rid = f"{prefix}r{n}"
            settle = settled(op[1])
            wanted = model.open_keys(op[2])
            lease = model.now + op[3]
            outcome = ledger.reserve(  # type: ignore[call-arg]
                rid, as_charges(wanted), now=model.now, lease_until=lease, settle=settle
            )
            model.issued.append(rid)
            if outcome.ok:
                model.grants[rid] = (dict(wanted), lease)
            out.append(normal(outcome, prefix))
        elif kind == "settle":
            ledger.settle(settled(op[1]), now=model.now)  # type: ignore[attr-defined]
        elif kind == "release":
            rid = model.pick(op[1])
            ledger.release(rid, now=model.now)
            model.grants.pop(rid, None)
        elif kind == "advance":
            model.now += op[1]
        else:
            out.append(normal(ledger.state(f"{prefix}k{op[1]}", now=model.now), prefix))
        check_invariants(ledger, prefix, model)
    return out


def check_invariants(ledger: Ledger, prefix: str, model: Model) -> None:
    for k in KEYS:
        if ENDS[k] <= model.now:
            continue
        state = ledger.state(f"{prefix}k{k}", now=model.now, limit=LIMITS[k])
        assert state.committed == model.commits[k]  # spend is the sum of commits, exactly
        if model.within_reservations:
            assert state.committed + state.reserved <= LIMITS[k]


@pytest.mark.parametrize("other", ["sqlite", "redis"])
def test_backends_agree_with_memory_on_any_sequence(
    other: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    ledger = open_ledger(backend_uri(other, request, tmp_path))

    @settings(
        max_examples=120,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(sequence=ops)
    def check(sequence: list[tuple[Any, ...]]) -> None:
        prefix = f"{uuid.uuid4().hex[:8]}|"
        expected = run_sequence(MemoryLedger(), prefix, sequence)
        assert run_sequence(ledger, prefix, sequence) == expected

    try:
        check()
    finally:
        ledger.close()
