"""MemoryLedger: one process, no persistence; the default."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from .base import COMMIT_MEMORY_SECONDS, BucketState, Charge, ReserveOutcome, SyncLedger

__all__ = ["MemoryLedger"]


@dataclass(slots=True)
class _Bucket:
    committed: float = 0.0
    expires_at: float = math.inf
    # reservation id -> (amount, lease_until)
    holds: dict[str, tuple[float, float]] = field(default_factory=dict)
    soonest: float = math.inf  # no lease ends before this (scan for expired ones from here)

    def reserved(self, now: float) -> float:
        if self.holds and now >= self.soonest:
            expired = [rid for rid, (_, until) in self.holds.items() if until <= now]
            for rid in expired:
                del self.holds[rid]
            self.soonest = min((until for _, until in self.holds.values()), default=math.inf)
        return sum(amount for amount, _ in self.holds.values())

    def hold(self, reservation_id: str, amount: float, lease_until: float) -> None:
        self.holds[reservation_id] = (amount, lease_until)
        self.soonest = min(self.soonest, lease_until)


class MemoryLedger(SyncLedger):
    """A ledger in this process's memory, guarded by a lock. ``memory://``."""

    def __init__(self, uri: str = "memory://") -> None:
        self.uri = uri
        self._buckets: dict[str, _Bucket] = {}
        self._reservations: dict[str, list[str]] = {}
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
    ) -> ReserveOutcome:
        """Reserve all charges or none, within each bucket's limit."""
        with self._lock:
            for target in watch:
                if target in self._cancels:
                    return ReserveOutcome(ok=False, cancelled=target)
            states = []
            for charge in charges:
                bucket = self._bucket(charge, now)
                reserved = bucket.reserved(now)
                state = BucketState(charge.key, bucket.committed, reserved, charge.limit)
                if charge.amount > 0 and bucket.committed + reserved + charge.amount > charge.limit:
                    return ReserveOutcome.refusal(state, charge.amount)
                states.append(state)
            for charge in charges:
                self._buckets[charge.key].hold(reservation_id, charge.amount, lease_until)
            self._reservations[reservation_id] = [c.key for c in charges]
            return ReserveOutcome.granted(states, charges)

    def commit(
        self, reservation_id: str, charges: Sequence[Charge], *, now: float
    ) -> tuple[BucketState, ...]:
        """Drop the reservation and add the real amounts, once per reservation id."""
        with self._lock:
            self._drop(reservation_id)
            first = reservation_id not in self._done
            self._done[reservation_id] = now + COMMIT_MEMORY_SECONDS
            states = []
            for charge in charges:
                bucket = self._bucket(charge, now)
                bucket.committed += charge.amount if first else 0.0
                states.append(
                    BucketState(charge.key, bucket.committed, bucket.reserved(now), charge.limit)
                )
            return tuple(states)

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
        return next((t for t in targets if t in self._cancels), None)

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

    def _bucket(self, charge: Charge, now: float) -> _Bucket:
        bucket = self._buckets.get(charge.key)
        if bucket is None:
            bucket = self._buckets[charge.key] = _Bucket(expires_at=charge.expires_at)
            self._ops += 1
            if self._ops % 1024 == 0:
                self._forget_ended_windows(now)
        return bucket

    def _drop(self, reservation_id: str) -> None:
        for key in self._reservations.pop(reservation_id, ()):
            bucket = self._buckets.get(key)
            if bucket is not None:
                bucket.holds.pop(reservation_id, None)

    def _forget_ended_windows(self, now: float) -> None:
        ended = [k for k, b in self._buckets.items() if b.expires_at <= now and not b.holds]
        for key in ended:
            del self._buckets[key]
        for key in [k for k, until in self._marks.items() if until <= now]:
            del self._marks[key]
        for rid in [r for r, until in self._done.items() if until <= now]:
            del self._done[rid]
