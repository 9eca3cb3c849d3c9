"""MemoryLedger: one process, no persistence; the default."""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .base import (
    COMMIT_MEMORY_SECONDS,
    LIMIT_SLACK,
    BucketState,
    Charge,
    ReserveOutcome,
    Settlement,
    SyncLedger,
    granted_outcome,
    latest_states,
    new_state,
)

__all__ = ["MemoryLedger"]

#: The most committed reservation ids the memory ledger remembers (oldest forgotten first):
#: in one process a commit is repeated at once or never, and days of ids would fill memory.
_DONE_LIMIT = 65_536


#: A hold that is not there: as good as one whose lease ended long ago.
_GONE = (0.0, -math.inf)


@dataclass(slots=True)
class _Bucket:
    committed: float = 0.0
    expires_at: float = math.inf
    # reservation id -> (amount, lease_until)
    holds: dict[str, tuple[float, float]] = field(default_factory=dict)
    held: float = 0.0  # the holds' amounts, summed (exactly 0.0 when there are none)
    soonest: float = math.inf  # no lease ends before this (scan for expired ones from here)

    def reserved(self, now: float) -> float:
        """Live holds (those whose lease has not ended), summed."""
        if now >= self.soonest:
            self.expire(now)
        return self.held

    def expire(self, now: float) -> float:
        """Forget holds whose lease ended; the live ones, summed."""
        holds = self.holds
        for rid in [rid for rid, (_, until) in holds.items() if until <= now]:
            del holds[rid]
        self.soonest = min((until for _, until in holds.values()), default=math.inf)
        self.held = sum((amount for amount, _ in holds.values()), 0.0)
        return self.held

    def hold(self, reservation_id: str, amount: float, lease_until: float) -> None:
        holds = self.holds
        old = holds.get(reservation_id)
        holds[reservation_id] = (amount, lease_until)
        if old is not None:  # the same reservation again: its new amount replaces the old
            self.held = sum((a for a, _ in holds.values()), 0.0)
        elif len(holds) == 1:
            self.held = amount
        else:
            self.held += amount
        if lease_until < self.soonest:
            self.soonest = lease_until

    def drop(self, reservation_id: str) -> None:
        holds = self.holds
        gone = holds.pop(reservation_id, None)
        if gone is None:
            return
        if not holds:  # exact again whenever at most one hold is left: no drift lingers
            self.held = 0.0
            self.soonest = math.inf
        elif len(holds) == 1:
            self.held = next(iter(holds.values()))[0]
        else:
            self.held -= gone[0]


class MemoryLedger(SyncLedger):
    """A ledger in this process's memory, guarded by a lock. ``memory://``.

    Settlements (``reserve(settle=...)``, ``settle``) are applied by ``_commit_locked``, as
    ``commit`` is, under the lock and in the same operation. A subclass may hook every commit
    there; a subclass that overrides ``commit`` itself instead gets each settlement through
    its ``commit`` (one by one, before the reservation), so it still sees all of them.
    """

    settles = True
    _settle_through_commit = False  # set for subclasses that override ``commit``

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._settle_through_commit = cls.commit is not MemoryLedger.commit

    def __init__(self, uri: str = "memory://") -> None:
        self.uri = uri
        self._buckets: dict[str, _Bucket] = {}
        self._reservations: dict[str, list[_Bucket]] = {}  # reservation id -> its buckets
        self._marks: dict[str, float] = {}
        self._done: dict[str, float] = {}  # committed reservation id -> until
        self._cancels: dict[str, str] = {}
        self._values: dict[str, tuple[str, float]] = {}  # key -> (value, expires_at)
        self._lock = threading.Lock()
        self._ops = 0

    def reserve(
        self,
        reservation_id: str,
        charges: Sequence[Charge],
        *,
        now: float,
        lease_until: float,
        watch: Sequence[str] = (),
        settle: Sequence[Settlement] = (),
    ) -> ReserveOutcome:
        """Apply the settlements, then reserve all charges or none, within each bucket's
        limit."""
        if settle and self._settle_through_commit:
            for rid, settled in settle:
                self.commit(rid, settled, now=now)
            settle = ()
        with self._lock:
            for rid, settled in settle:
                self._commit_locked(rid, settled, now, False)
            if self._cancels:
                for target in watch:
                    if target in self._cancels:
                        return ReserveOutcome(ok=False, cancelled=target)
            buckets = self._buckets
            held: list[_Bucket] = []
            states = []
            for charge in charges:
                key = charge.key
                bucket = buckets.get(key)
                if bucket is None:
                    bucket = self._new_bucket(charge, now)
                committed = bucket.committed
                reserved = bucket.held if now < bucket.soonest else bucket.expire(now)
                amount = charge.amount
                if amount > 0 and committed + reserved + amount > charge.limit + LIMIT_SLACK:
                    state = BucketState(key, committed, reserved, charge.limit)
                    return ReserveOutcome.refusal(state, amount)
                held.append(bucket)
                states.append(new_state(key, committed, reserved + amount, charge.limit))
            for bucket, charge in zip(held, charges, strict=True):
                bucket.hold(reservation_id, charge.amount, lease_until)
            self._reservations[reservation_id] = held
            return granted_outcome(tuple(states))

    def commit(
        self, reservation_id: str, charges: Sequence[Charge], *, now: float
    ) -> tuple[BucketState, ...]:
        """Drop the reservation and add the real amounts, once per reservation id."""
        with self._lock:
            return self._commit_locked(reservation_id, charges, now, True)

    def settle(self, settlements: Sequence[Settlement], *, now: float) -> tuple[BucketState, ...]:
        """Apply several commits under one lock; the buckets they charged, after them."""
        states: list[BucketState] = []
        if self._settle_through_commit:
            for rid, charges in settlements:
                states += self.commit(rid, charges, now=now)
            return latest_states(states)
        with self._lock:
            for rid, charges in settlements:
                states += self._commit_locked(rid, charges, now)
            return latest_states(states)

    def _commit_locked(
        self, reservation_id: str, charges: Sequence[Charge], now: float, states: bool = True
    ) -> tuple[BucketState, ...]:
        """One commit, with the lock held: by ``commit``, ``settle`` and ``reserve(settle=)``
        (then ``states`` is False and nothing is returned, on the hot path)."""
        self._drop(reservation_id)
        first = self._first_commit(reservation_id, now)
        if not states:
            if first:
                buckets = self._buckets
                for charge in charges:
                    bucket = buckets.get(charge.key)
                    if bucket is None:
                        bucket = self._new_bucket(charge, now)
                    bucket.committed += charge.amount
            return ()
        out = []
        for charge in charges:
            bucket = self._buckets.get(charge.key)
            if bucket is None:
                bucket = self._new_bucket(charge, now)
            if first:
                bucket.committed += charge.amount
            reserved = bucket.held if now < bucket.soonest else bucket.expire(now)
            out.append(new_state(charge.key, bucket.committed, reserved, charge.limit))
        return tuple(out)

    def release(self, reservation_id: str, *, now: float) -> None:
        """Drop the reservation."""
        with self._lock:
            self._drop(reservation_id)

    def state(self, key: str, *, now: float, limit: float = 0.0) -> BucketState:
        """A bucket's committed spend and live reservations."""
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None or bucket.expires_at <= now:
                return BucketState(key, 0.0, 0.0, limit)
            return BucketState(key, bucket.committed, bucket.reserved(now), limit)

    def mark_once(self, key: str, *, expires_at: float) -> bool:
        """True the first time ``key`` is marked."""
        with self._lock:
            if key in self._marks:
                return False
            self._marks[key] = expires_at
            return True

    def cancel(self, target: str, *, reason: str = "") -> None:
        """Set a cancel marker."""
        with self._lock:
            self._cancels[target] = reason

    def uncancel(self, target: str) -> None:
        """Lift a cancel marker."""
        with self._lock:
            self._cancels.pop(target, None)

    def cancelled(self, targets: Sequence[str]) -> str | None:
        """The first cancelled target, or None."""
        cancels = self._cancels
        if cancels:  # usually none: asked at every tool call, so no generator for nothing
            for target in targets:
                if target in cancels:
                    return target
        return None

    def put_value(self, key: str, value: str, *, expires_at: float | None = None) -> None:
        """Store a value until ``expires_at`` (and at most until the process ends)."""
        with self._lock:
            self._values[key] = (value, math.inf if expires_at is None else expires_at)

    def get_value(self, key: str) -> str | None:
        """The value stored under ``key``, or None (also once it expired)."""
        found = self._values.get(key)
        if found is None or found[1] <= time.time():
            return None
        return found[0]

    def delete_value(self, key: str) -> None:
        """Forget ``key``."""
        with self._lock:
            self._values.pop(key, None)

    def list_values(self, prefix: str) -> list[str]:
        """Every key that starts with ``prefix``."""
        now = time.time()
        return sorted(
            k for k, (_, until) in self._values.items() if k.startswith(prefix) and until > now
        )

    def close(self) -> None:
        """Nothing to release."""

    def _first_commit(self, reservation_id: str, now: float) -> bool:
        """Remember a committed id; False if it was committed already (then add nothing)."""
        done = self._done
        first = reservation_id not in done
        done[reservation_id] = now + COMMIT_MEMORY_SECONDS
        if len(done) > _DONE_LIMIT:  # bounded: a busy process would keep days of ids
            for rid in list(itertools.islice(done, _DONE_LIMIT // 2)):
                del done[rid]
            self._forget_lapsed_reservations(now)
        return first

    def _new_bucket(self, charge: Charge, now: float) -> _Bucket:
        return self._new_bucket_at(charge.key, charge.expires_at, now)

    def _new_bucket_at(self, key: str, expires_at: float, now: float) -> _Bucket:
        self._ops += 1
        if self._ops % 1024 == 0:
            self._forget_ended_windows(now)  # before adding: the new bucket is never forgotten
        bucket = self._buckets[key] = _Bucket(expires_at=expires_at)
        return bucket

    # ------------------------------------------------------------------ in-process hot path
    def reserve_amounts(
        self,
        reservation_id: str,
        keys: Sequence[str],
        amounts: Sequence[float],
        limits: Sequence[float],
        ends: Sequence[float],
        *,
        now: float,
        lease_until: float,
        watch: Sequence[str] = (),
    ) -> list[float] | ReserveOutcome:
        """``reserve`` of ``Charge(keys[i], amounts[i], limits[i], ends[i])`` for a caller in
        this process that needs no objects back: each bucket's committed spend when it is
        granted, else the refused (or cancelled) outcome ``reserve`` would return."""
        with self._lock:
            cancels = self._cancels
            if cancels:
                for target in watch:
                    if target in cancels:
                        return ReserveOutcome(ok=False, cancelled=target)
            buckets = self._buckets
            held: list[_Bucket] = []
            committed: list[float] = []
            for key, amount, limit, end in zip(keys, amounts, limits, ends):  # noqa: B905 (see run_fast)
                bucket = buckets.get(key)
                if bucket is None:
                    bucket = self._new_bucket_at(key, end, now)
                spent = bucket.committed
                reserved = bucket.held if now < bucket.soonest else bucket.expire(now)
                if amount > 0 and spent + reserved + amount > limit + LIMIT_SLACK:
                    return ReserveOutcome.refusal(BucketState(key, spent, reserved, limit), amount)
                held.append(bucket)
                committed.append(spent)
            for bucket, amount in zip(held, amounts):  # noqa: B905 (see run_fast)
                holds = bucket.holds
                if holds:
                    bucket.hold(reservation_id, amount, lease_until)
                else:  # the usual case in one run at a time: ``hold`` on an empty bucket
                    holds[reservation_id] = (amount, lease_until)
                    bucket.held = amount
                    bucket.soonest = lease_until
            self._reservations[reservation_id] = held
            return committed

    def commit_amounts(
        self,
        reservation_id: str,
        keys: Sequence[str],
        amounts: Sequence[float],
        ends: Sequence[float],
        *,
        now: float,
    ) -> list[float]:
        """``commit`` of these amounts (see ``reserve_amounts``): each bucket's committed
        spend after it."""
        with self._lock:
            for was_held in self._reservations.pop(reservation_id, ()):
                holds = was_held.holds
                if len(holds) == 1 and reservation_id in holds:  # ``drop`` of the only hold
                    del holds[reservation_id]
                    was_held.held = 0.0
                    was_held.soonest = math.inf
                else:
                    was_held.drop(reservation_id)
            first = self._first_commit(reservation_id, now)
            buckets, committed = self._buckets, []
            for key, amount, end in zip(keys, amounts, ends):  # noqa: B905 (see run_fast)
                bucket = buckets.get(key)
                if bucket is None:
                    bucket = self._new_bucket_at(key, end, now)
                if first:
                    bucket.committed += amount
                committed.append(bucket.committed)
            return committed

    def _drop(self, reservation_id: str) -> None:
        for bucket in self._reservations.pop(reservation_id, ()):
            bucket.drop(reservation_id)

    def _forget_lapsed_reservations(self, now: float) -> None:
        """Forget reservations whose lease ended in every bucket (calls of runs dropped
        mid-call): their amounts stopped counting then, their records stay till now."""
        lapsed = [
            rid
            for rid, buckets in self._reservations.items()
            if all(b.holds.get(rid, _GONE)[1] <= now for b in buckets)
        ]
        for rid in lapsed:
            self._drop(rid)

    def _forget_ended_windows(self, now: float) -> None:
        ended = [k for k, b in self._buckets.items() if b.expires_at <= now and not b.holds]
        for key in ended:
            del self._buckets[key]
        for key in [k for k, until in self._marks.items() if until <= now]:
            del self._marks[key]
        for rid in [r for r, until in self._done.items() if until <= now]:
            del self._done[rid]
        self._forget_lapsed_reservations(now)
