"""Pools: on a shared ledger, reserve the worst case of many calls at once, serve them here.

A budget with plenty left (``headroom`` times what one call reserves, or more) does not need
a round trip per call to stay safe: the warden reserves ``calls`` calls' worth in one ledger
operation (a *pool*, held like any reservation, under its own id and lease) and then admits
calls against it in memory. Each call still reserves its own worst case, from the pool; its
real cost is added to the pool's spend; when the pool runs low, has been open
``Warden.settle_seconds`` (a background thread looks every that often), when spend is read,
or the warden closes, the pool is committed with the real total (dropping its hold) in one
operation: pooled spend reaches the ledger within about a second. The ledger counts the
pool's whole hold until then, so no process can spend what another holds: budgets are never
overspent, and near their limit (less than ``headroom`` calls left) every call goes to the
ledger on its own again. A pool settles as soon as it closes: a call still in flight is
counted at its worst case, and its real amounts correct that when it returns (a call whose
run was dropped mid-call stays counted at its worst case). A process killed with a pool
open loses the record of what its pooled calls spent since the pool opened (at most about a
second's worth), as it would that of a call in flight.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .ledger.base import BucketState, Charge, Settlement, new_charge, new_state

__all__ = ["Pools"]

_ids = itertools.count(1)


@dataclass(slots=True)
class _Pool:
    """One pooled reservation: what it holds per bucket, what is handed out, what was spent."""

    rid: str
    keys: tuple[str, ...]
    limits: tuple[float, ...]
    ends: tuple[float, ...]
    free: list[float]
    spent: list[float]
    opened: float  # monotonic
    calls: dict[str, tuple[float, ...]] = field(default_factory=dict)  # in flight
    closing: bool = False

    def take(self, rid: str, amounts: Sequence[float]) -> bool:
        """Hand a call its reservation from the pool, if every bucket has that much free."""
        free = self.free
        for i, amount in enumerate(amounts):
            if amount > free[i]:
                return False
        for i, amount in enumerate(amounts):
            free[i] -= amount
        self.calls[rid] = tuple(amounts)
        return True

    def settlement(self) -> Settlement:
        """The pool's commit (which also drops its hold): its real spend, and the worst case
        of each call still in flight (corrected when it returns: ``correction``)."""
        totals = list(self.spent)
        for reserved in self.calls.values():
            for i, amount in enumerate(reserved):
                totals[i] += amount
        return self.rid, self._charges(totals)

    def correction(self, rid: str, amounts: Sequence[float]) -> Settlement:
        """What a call that was in flight when its pool settled really spent, against the
        worst case the settlement counted for it (usually a negative amount)."""
        reserved = self.calls.pop(rid)
        return rid, self._charges([a - r for a, r in zip(amounts, reserved, strict=True)])

    def _charges(self, amounts: Sequence[float]) -> list[Charge]:
        return [
            new_charge(key, amount, limit, end)
            for key, amount, limit, end in zip(
                self.keys, amounts, self.limits, self.ends, strict=True
            )
        ]


class Pools:
    """A warden's open pools, one per set of buckets (see the module docstring)."""

    def __init__(
        self,
        *,
        enabled: bool,
        calls: int,
        headroom: float,
        max_age: float,
        closed: Callable[[Settlement], None],
    ) -> None:
        self.enabled = enabled and calls > 1
        self.calls = calls
        self.headroom = headroom
        self.max_age = max_age  # a pool is closed before half its lease has run
        self._closed = closed  # where a closed pool's settlement goes (the next ledger trip)
        self._open: dict[PoolKey, _Pool] = {}
        self._by_call: dict[str, _Pool] = {}
        self._lock = threading.Lock()
        _ALL.add(self)

    def _forget(self) -> None:
        """In a forked child: the pools are the parent's to spend and settle, not ours."""
        self._open, self._by_call, self._lock = {}, {}, threading.Lock()

    def serve(self, rid: str, charges: Sequence[Charge]) -> bool:
        """Admit a call from an open pool of its buckets; False: no pool can (then it is
        closed for new calls)."""
        if not self._open:
            return False
        return self.serve_amounts(rid, _identity(charges), [c.amount for c in charges])

    def serve_amounts(self, rid: str, keys: PoolKey, amounts: Sequence[float]) -> bool:
        """``serve`` for a call given as its buckets' (key, limit) pairs and amounts."""
        if not self._open:
            return False
        with self._lock:
            pool = self._open.get(keys)
            if pool is None:
                return False
            if time.monotonic() - pool.opened < self.max_age and pool.take(rid, amounts):
                self._by_call[rid] = pool
                return True
            self._close(keys, pool)
            return False

    def _close(self, keys: PoolKey, pool: _Pool) -> None:
        """No new calls for ``pool``, and settled now: a call still in flight is counted at
        its worst case until it returns (one that never does, whose run was dropped, stays
        counted so: the pool's other calls are never lost with it)."""
        pool.closing = True
        if self._open.get(keys) is pool:
            del self._open[keys]
        self._closed(pool.settlement())

    def plan(
        self, charges: Sequence[Charge], known: dict[str, tuple[float, float]]
    ) -> tuple[str, list[Charge]] | None:
        """A pool to reserve for these charges (its id and charges), or None when a bucket
        has less than ``headroom`` such calls left, as far as this process knows."""
        if not self.enabled:
            return None
        for charge in charges:
            committed, reserved = known.get(charge.key, (None, None))
            if committed is None or reserved is None:
                return None  # never seen: the first call goes alone and shows the bucket
            if charge.limit - committed - reserved < self.headroom * charge.amount:
                return None
        size = self.calls
        rid = f"pool-{os.getpid()}-{next(_ids)}"
        return rid, [new_charge(c.key, c.amount * size, c.limit, c.expires_at) for c in charges]

    def open(
        self, pool_rid: str, pooled: Sequence[Charge], rid: str, charges: Sequence[Charge]
    ) -> None:
        """Register a pool the ledger reserved, and admit the call it was reserved for."""
        pool = _Pool(
            rid=pool_rid,
            keys=tuple(c.key for c in pooled),
            limits=tuple(c.limit for c in pooled),
            ends=tuple(c.expires_at for c in pooled),
            free=[c.amount for c in pooled],
            spent=[0.0] * len(pooled),
            opened=time.monotonic(),
        )
        pool.take(rid, [c.amount for c in charges])
        identity = _identity(pooled)
        with self._lock:
            old = self._open.get(identity)
            if old is not None:
                self._close(identity, old)
            self._open[identity] = pool
            self._by_call[rid] = pool

    def holds(self, rid: str) -> bool:
        """Whether the call ``rid`` was admitted from a pool."""
        return rid in self._by_call

    def finish(self, rid: str, amounts: Sequence[float]) -> None:
        """A pooled call's real amounts: added to its pool's spend, the rest of its
        reservation back to the pool (settled if that was the last call of a closed pool)."""
        with self._lock:
            pool = self._by_call.pop(rid)
            if pool.closing:  # settled with this call at its worst case: correct that
                self._closed(pool.correction(rid, amounts))
                return
            reserved = pool.calls.pop(rid)
            for i, amount in enumerate(amounts):
                pool.spent[i] += amount
                pool.free[i] += reserved[i] - amount

    def release(self, rid: str) -> None:
        """A pooled call that did not happen: its reservation back to the pool."""
        with self._lock:
            pool = self._by_call.pop(rid)
            if pool.closing:  # settled with this call at its worst case: take it back
                self._closed(pool.correction(rid, [0.0] * len(pool.keys)))
                return
            for i, amount in enumerate(pool.calls.pop(rid)):
                pool.free[i] += amount

    def close_older_than(self, seconds: float) -> None:
        """Close pools open ``seconds`` or longer: so pooled spend lands within about that,
        whatever a process does next (and forget calls that never came back)."""
        if self._by_call and len(self._by_call) > _STRAYS_CHECKED_PAST:
            self._forget_strays()
        if not self._open:
            return
        cutoff = time.monotonic() - seconds
        with self._lock:
            for keys, pool in list(self._open.items()):
                if pool.opened <= cutoff:
                    self._close(keys, pool)

    def close_all(self) -> None:
        """Close every pool, busy or not (at exit or ``close()``: no call will come back)."""
        with self._lock:
            for keys, pool in list(self._open.items()):
                self._close(keys, pool)

    def _forget_strays(self) -> None:
        """Drop calls of settled pools older than ``_STRAY_AGES`` pool lifetimes: their runs
        were dropped mid-call (they stay counted at their worst case); should one still come
        back, it is committed on its own, on top of that worst case."""
        cutoff = time.monotonic() - _STRAY_AGES * self.max_age
        with self._lock:
            for rid, pool in list(self._by_call.items()):
                if pool.closing and pool.opened <= cutoff:
                    del self._by_call[rid]

    def close_idle(self) -> None:
        """Close every pool with no call in flight (their settlements go to the next trip)."""
        if not self._open:
            return
        with self._lock:
            for keys, pool in list(self._open.items()):
                if not pool.calls:
                    self._close(keys, pool)

    @property
    def open_count(self) -> int:
        """How many pools are open (for tests and diagnostics)."""
        return len(self._open)


#: What a pool serves: bucket keys and the limits its calls are held to (a run granted more
#: of a budget reserves against a higher limit: its pool must not serve other runs).
PoolKey = tuple[tuple[str, float], ...]


def _identity(charges: Sequence[Charge]) -> PoolKey:
    return tuple([(charge.key, charge.limit) for charge in charges])


def projected(
    charges: Sequence[Charge], known: dict[str, tuple[float, float]]
) -> tuple[BucketState, ...]:
    """Bucket states as far as this process knows (for ratios and alerts of pooled calls)."""
    states = []
    for charge in charges:
        committed, reserved = known.get(charge.key, _NOTHING)
        states.append(new_state(charge.key, committed, reserved, charge.limit))
    return tuple(states)


_NOTHING = (0.0, 0.0)
#: Calls in flight past which a warden looks for calls that never came back, and how many
#: pool lifetimes (half a lease each) such a call is waited for.
_STRAYS_CHECKED_PAST = 1024
_STRAY_AGES = 4


_ALL: weakref.WeakSet[Pools] = weakref.WeakSet()


def _after_fork() -> None:
    for pools in list(_ALL):
        pools._forget()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork)
