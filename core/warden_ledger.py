"""A warden's trips to its ledger: reservations, commits (deferred to ride on the next
trip on a shared ledger), pools of reservations served in-process, cancel checks."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Sequence
from typing import Any, Unpack, cast

from .errors import LedgerUnavailable
from .ledger import Ledger
from .ledger.base import (
    BucketState,
    Charge,
    ReserveOutcome,
    Settlement,
    SettlingLedger,
    granted_outcome,
)
from .ledger.memory import MemoryLedger
from .pools import PoolKey, Pools, projected
from .settling import Settler
from .warden_faults import LedgerLink, LinkArgs, settle_on

__all__ = ["LedgerTrips"]


class LedgerTrips(LedgerLink):
    """The layer of ``Warden`` that reserves, commits and releases on the ledger, and checks
    for cancels, in as few round trips as it can."""

    #: On a shared ledger (SQLite, Redis), the longest a call's commit waits for the next
    #: ledger trip to ride on (checked at the next call; see ``budgetwarden.settling``).
    settle_seconds: float = 1.0
    #: On a shared ledger, how often a tool call with nothing to reserve asks the ledger
    #: whether its run was cancelled from another process (model calls always ask; cancels
    #: made through this warden are seen at once).
    cancel_poll_seconds: float = 0.25
    #: On a shared ledger, a budget with at least ``pool_headroom`` calls' worth left is
    #: reserved ``pool_calls`` calls at a time and served here (see ``budgetwarden.pools``);
    #: ``pool_calls = 0`` sends every call to the ledger. ``settle_seconds``, ``pool_calls``
    #: and ``pool_headroom`` are read when the warden is made (set them on a subclass).
    pool_calls: int = 32
    pool_headroom: float = 1000.0

    def __init__(self, **link: Unpack[LinkArgs]) -> None:
        super().__init__(**link)
        shared = getattr(self.ledger, "settles", False) and not isinstance(
            self.ledger, MemoryLedger
        )
        self._settler = Settler(enabled=shared, max_age=self.settle_seconds)
        self._pools = Pools(
            enabled=shared,
            calls=self.pool_calls,
            headroom=self.pool_headroom,
            max_age=self.policy.lease_seconds / 2,
            closed=self._settler.queue,
        )
        #: The plain memory ledger: never down, nothing deferred (calls go straight to it).
        self._in_process = type(self.ledger) is MemoryLedger
        # cancelled through this warden or found so at the last poll (used between polls)
        self._cancelled_known: set[str] = set()
        #: when each run's cancel targets (its ``_watch``) are next asked about, and each
        #: target (``user=u1``...) as any run last asked about it
        self._next_polls: dict[Sequence[str], float] = {}
        self._target_polls: dict[str, float] = {}

    def _reserve(
        self, charges: Sequence[Charge], rid: str, watch: Sequence[str], *, poll: bool = False
    ) -> ReserveOutcome:
        """Reserve ``charges`` (with any deferred commits riding along); with nothing to
        reserve, only a cancel check (``poll``: at most every ``cancel_poll_seconds``)."""
        if not charges:
            return self._check_cancel(watch, poll)
        now = self.clock()
        lease = now + self.policy.lease_seconds
        if self._in_process:  # cannot fail, defers nothing: no fault handling needed
            return self.ledger.reserve(rid, charges, now=now, lease_until=lease, watch=watch)
        if self._pools.serve(rid, charges):
            return self._pooled(rid, charges, self._check_cancel(watch, True))
        settle = self._settler.take()
        plan = self._pools.plan(charges, self._settler.known)
        if plan is not None:
            pool_rid, pooled = plan
            outcome = self._reserve_trip(pool_rid, pooled, (now, lease), watch, settle, charges)
            if self._pool_tried(outcome, pool_rid, pooled, rid, charges):
                return outcome
            settle = []  # sent with the pool's try: now the call alone
        return self._reserve_trip(rid, charges, (now, lease), watch, settle, charges)

    def _pool_tried(
        self,
        outcome: ReserveOutcome,
        pool_rid: str,
        pooled: Sequence[Charge],
        rid: str,
        charges: Sequence[Charge],
    ) -> bool:
        """After a pool's reservation: True when its outcome is the call's (the pool opened
        with the call in it, a cancel, or the ledger is down); False: try the call alone."""
        if outcome.ok:
            self._pools.open(pool_rid, pooled, rid, charges)
            return True
        return outcome.cancelled is not None or self._fallback_ledger is not None

    def _reserve_trip(
        self,
        rid: str,
        charges: Sequence[Charge],
        when: tuple[float, float],
        watch: Sequence[str],
        settle: list[Settlement],
        refused_for: Sequence[Charge],
    ) -> ReserveOutcome:
        """One reservation on the ledger at ``when`` (now, lease end), deferred commits
        riding along, with fault handling (refused for ``refused_for`` while it is down)."""
        now, lease = when
        outcome = self._ledger_call(
            lambda lg: _reserve_on(lg, rid, charges, now, lease, watch, settle),
            lambda: _unavailable(refused_for),
            settle=settle,
            holds=rid,
        )
        self._settler.saw(outcome.states)
        if settle:
            self._alert_settled(outcome.states)
        self._learn_cancels(watch, outcome)
        return outcome

    def _pooled(
        self, rid: str, charges: Sequence[Charge], cancel: ReserveOutcome
    ) -> ReserveOutcome:
        """The outcome of a call admitted from a pool (unless a cancel check refused it)."""
        if not cancel.ok:
            self._pools.release(rid)
            return cancel
        return granted_outcome(projected(charges, self._settler.known))

    def _reserve_amounts(
        self,
        rid: str,
        plan: tuple[Sequence[str], Sequence[float], Sequence[float], Sequence[str], Any],
        amounts: Sequence[float],
        watch: Sequence[str],
    ) -> ReserveOutcome | list[float]:
        """A reservation of plain amounts on the in-process ledger (``_in_process`` only)."""
        now = self.clock()
        keys, limits, ends, _, _ = plan
        return cast(MemoryLedger, self.ledger).reserve_amounts(
            rid,
            keys,
            amounts,
            limits,
            ends,
            now=now,
            lease_until=now + self.policy.lease_seconds,
            watch=watch,
        )

    def _serve_pooled(
        self,
        rid: str,
        plan: tuple[Sequence[str], Sequence[float], Sequence[float], Sequence[str], Any],
        amounts: Sequence[float],
        watch: Sequence[str],
    ) -> ReserveOutcome | list[float] | None:
        """A call from an open pool, as plain amounts: the buckets' committed spend as this
        process knows it (or the cancel that refused it); None when no pool can serve it."""
        if not self._pools.serve_amounts(rid, plan[4], amounts):
            return None
        return self._pooled_amounts(rid, plan, self._check_cancel(watch, True))

    async def _aserve_pooled(
        self,
        rid: str,
        plan: tuple[Sequence[str], Sequence[float], Sequence[float], Sequence[str], Any],
        amounts: Sequence[float],
        watch: Sequence[str],
    ) -> ReserveOutcome | list[float] | None:
        """Async twin of ``_serve_pooled``."""
        if not self._pools.serve_amounts(rid, plan[4], amounts):
            return None
        return self._pooled_amounts(rid, plan, await self._acheck_cancel(watch, True))

    def _between_polls(self, watch: Sequence[str]) -> bool:
        """True when a cancel check of ``watch`` on a shared ledger needs no trip now (no
        poll due, nothing to settle) and finds nothing: no cancel made through this warden
        or seen at the last poll."""
        if watch and (
            not self._settler.enabled
            or self._settler.due
            or time.monotonic() >= self._poll_due(watch)
        ):
            return False
        known_cancels = self._cancelled_known
        return not (known_cancels and any(target in known_cancels for target in watch))

    def _serve_pooled_now(
        self,
        rid: str,
        pairs: PoolKey,
        keys: Sequence[str],
        amounts: Sequence[float],
        watch: Sequence[str],
    ) -> list[float] | None:
        """A call from an open pool when that needs no trip to the ledger: the buckets'
        committed spend as this process knows them. None (nothing taken) when no pool
        serves it, when a cancel poll is due (sync and async callers poll differently) or
        when it is known to be cancelled: the general path then does and says the rest."""
        if not self._between_polls(watch) or not self._pools.serve_amounts(rid, pairs, amounts):
            return None
        known = self._settler.known
        return [known.get(key, _NO_SPEND)[0] for key in keys]

    def _pooled_amounts(
        self,
        rid: str,
        plan: tuple[Sequence[str], Sequence[float], Sequence[float], Sequence[str], Any],
        cancel: ReserveOutcome,
    ) -> ReserveOutcome | list[float]:
        if not cancel.ok:
            self._pools.release(rid)
            return cancel
        known = self._settler.known
        return [known.get(key, _NO_SPEND)[0] for key in plan[0]]

    def _finish_pooled(
        self, rid: str, keys: Sequence[str], amounts: Sequence[float]
    ) -> list[float]:
        """A pooled call's real amounts (see ``Pools.finish``); the buckets' committed spend."""
        self._pools.finish(rid, amounts)
        self._settler.watch(self._flush_due, self._flush_at_exit)
        return self._settler.project_amounts(keys, amounts)

    def _commit_amounts(
        self, rid: str, keys: Sequence[str], amounts: Sequence[float], ends: Sequence[float]
    ) -> list[float]:
        """A commit of plain amounts on the in-process ledger (``_in_process`` only)."""
        return cast(MemoryLedger, self.ledger).commit_amounts(
            rid, keys, amounts, ends, now=self.clock()
        )

    async def _areserve(
        self, charges: Sequence[Charge], rid: str, watch: Sequence[str], *, poll: bool = False
    ) -> ReserveOutcome:
        if not charges:
            return await self._acheck_cancel(watch, poll)
        if self._in_process:
            return self._reserve(charges, rid, watch)  # memory: nothing to await
        if self._pools.serve(rid, charges):
            return self._pooled(rid, charges, await self._acheck_cancel(watch, True))
        settle = self._settler.take()
        plan = self._pools.plan(charges, self._settler.known)
        if plan is not None:
            pool_rid, pooled = plan
            outcome = await self._areserve_trip(pool_rid, pooled, watch, settle, charges)
            if self._pool_tried(outcome, pool_rid, pooled, rid, charges):
                return outcome
            settle = []  # sent with the pool's try: now the call alone
        return await self._areserve_trip(rid, charges, watch, settle, charges)

    async def _areserve_trip(
        self,
        rid: str,
        charges: Sequence[Charge],
        watch: Sequence[str],
        settle: list[Settlement],
        refused_for: Sequence[Charge],
    ) -> ReserveOutcome:
        """One awaited reservation (deferred commits riding along), with fault handling."""
        now = self.clock()
        lease = now + self.policy.lease_seconds
        ledger = self._active()
        if self._refusing():
            self._settle_locally(settle)
            return _unavailable(refused_for)
        try:
            if settle and getattr(ledger, "settles", False):
                outcome = await cast(SettlingLedger, ledger).areserve(
                    rid, charges, now=now, lease_until=lease, watch=watch, settle=settle
                )
            else:
                for settled, settled_charges in settle:
                    await ledger.acommit(settled, settled_charges, now=now)
                outcome = await ledger.areserve(
                    rid, charges, now=now, lease_until=lease, watch=watch
                )
        except LedgerUnavailable as exc:
            self._fail_over(exc)
            if self._refusing():
                self._doubt(rid)
            return self._reserve_trip(rid, charges, (now, lease), watch, settle, refused_for)
        except asyncio.CancelledError:
            self._cancelled_trip(rid, settle)
            raise
        self._settler.saw(outcome.states)
        if settle:
            self._alert_settled(outcome.states)
        self._learn_cancels(watch, outcome)
        return outcome

    def _cancelled_trip(self, rid: str, settle: Sequence[Settlement]) -> None:
        """A reservation trip whose task was cancelled on the way, not knowing what the
        ledger did: its deferred commits go again (a ledger applies a commit once), and its
        reservation, if made, is released now rather than held until its lease ends."""
        self._settler.put_back(settle)
        with contextlib.suppress(Exception):  # best effort: the lease frees it anyway
            self._release(rid)

    def _check_cancel(self, watch: Sequence[str], poll: bool) -> ReserveOutcome:
        known = self._cancel_now_known(watch, poll)
        if known is not None:
            return known
        settle = self._settler.take()
        now = self.clock()
        hit = self._ledger_call(lambda lg: _cancelled_on(lg, watch, settle, now), settle=settle)
        return self._polled(watch, hit)

    async def _acheck_cancel(self, watch: Sequence[str], poll: bool) -> ReserveOutcome:
        known = self._cancel_now_known(watch, poll)
        return known if known is not None else await self._apoll_cancel(watch)

    def _cancel_now_known(self, watch: Sequence[str], poll: bool) -> ReserveOutcome | None:
        """The cancel check's answer when it needs nothing awaited (the in-process ledger,
        nothing watched, no poll due); None: ask the ledger now (``_apoll_cancel``)."""
        if self._in_process:
            hit = self.ledger.cancelled(watch)
            return _NOT_CANCELLED if hit is None else ReserveOutcome(ok=False, cancelled=hit)
        if not watch:
            return _NOT_CANCELLED
        if not self._cancel_poll_due(watch, poll):
            return self._cancel_as_known(watch)
        return None

    async def _apoll_cancel(self, watch: Sequence[str]) -> ReserveOutcome:
        """Ask the ledger whether a watched target is cancelled (deferred commits ride)."""
        settle = self._settler.take()
        if settle:  # rare: a commit waiting while only free tools run (one trip for both)
            now = self.clock()
            hit = self._ledger_call(lambda lg: _cancelled_on(lg, watch, settle, now), settle=settle)
        else:
            hit = await self._acancelled(watch)
        return self._polled(watch, hit)

    def _polled(self, watch: Sequence[str], hit: str | None) -> ReserveOutcome:
        """Remember what the ledger said about ``watch`` until the next poll."""
        if hit is None:
            self._cancelled_known.difference_update(watch)
            return _NOT_CANCELLED
        self._cancelled_known.add(hit)
        return ReserveOutcome(ok=False, cancelled=hit)

    def _cancel_as_known(self, watch: Sequence[str]) -> ReserveOutcome:
        """Between polls: cancelled if made so through this warden or seen at the last poll."""
        known = self._cancelled_known
        hit = next((t for t in watch if t in known), None) if known else None
        return _NOT_CANCELLED if hit is None else ReserveOutcome(ok=False, cancelled=hit)

    def _cancel_poll_due(self, watch: Sequence[str], poll: bool) -> bool:
        """Whether to ask the ledger now: always on a local ledger and for model calls."""
        if not poll or not self._settler.enabled:
            return True
        tick = time.monotonic()
        if tick < self._poll_due(watch) and not self._settler.due:
            return False
        self._polled_at(watch, tick)
        return True

    def _poll_due(self, watch: Sequence[str]) -> float:
        """When ``watch`` (a run's cancel targets) is next asked about; 0: now."""
        return self._next_polls.get(watch, 0.0)

    def _start_poll_clock(self, watch: Sequence[str], fresh: str | None) -> None:
        """A new run's clock: due when the first of its targets is (its user's, asked about
        for that user's other runs), leaving out ``fresh`` (its own new id): not a trip of
        its own at once, one per run and so per agent step. A target never asked about
        here is due now."""
        if not self._settler.enabled or not watch:
            return
        targets = self._target_polls
        due = min((targets.get(t, 0.0) for t in watch if t != fresh), default=math.inf)
        if due == math.inf:  # only its own new id: nothing to ask for a poll period
            due = time.monotonic() + self.cancel_poll_seconds
        self._set_poll(self._next_polls, watch, due)

    def _polled_at(self, watch: Sequence[str], tick: float) -> None:
        """Ask about ``watch`` again ``cancel_poll_seconds`` after ``tick`` (each run's
        targets on their own clock: another user's polls say nothing about this run's)."""
        due = tick + self.cancel_poll_seconds
        self._set_poll(self._next_polls, watch, due)
        for target in watch:
            self._set_poll(self._target_polls, target, due)

    @staticmethod
    def _set_poll(polls: dict[Any, float], key: Any, due: float) -> None:
        if len(polls) >= _MAX_POLL_CLOCKS:  # forget the clocks that are due anyway
            tick = time.monotonic()
            for old in [k for k, when in polls.items() if when <= tick]:
                del polls[old]
            if len(polls) >= _MAX_POLL_CLOCKS:
                polls.clear()  # more live runs than that: some ask a little early
        polls[key] = due

    def _learn_cancels(self, watch: Sequence[str], outcome: ReserveOutcome) -> None:
        """What a reservation on the ledger said about ``watch``: a cancel it hit (for the
        same targets' other runs), or none of them cancelled (a lifted cancel is forgotten)."""
        if not watch or self._fallback_ledger is not None:
            return  # nothing watched, or a local ledger that knows no other process's cancels
        if outcome.cancelled is not None:
            self._cancelled_known.add(outcome.cancelled)
        elif outcome.ok and self._cancelled_known:
            self._cancelled_known.difference_update(watch)

    def _commit(self, rid: str, charges: Sequence[Charge]) -> tuple[BucketState, ...]:
        if not charges:  # the reservation held nothing in the ledger (only a cancel check)
            return ()
        if self._in_process:
            return self.ledger.commit(rid, charges, now=self.clock())
        kept = self._commit_later(rid, charges)
        if kept is not None:
            states, deferred = kept
            if deferred and self._settler.due:
                self._flush()
            return states
        now = self.clock()
        return self._ledger_call(lambda lg: lg.commit(rid, charges, now=now))

    def _commit_later(
        self, rid: str, charges: Sequence[Charge]
    ) -> tuple[tuple[BucketState, ...], bool] | None:
        """A commit on a shared ledger that needs no trip now: a pooled call's (its pool
        lands the total) or one deferred to ride on the next trip (then True: the caller
        flushes if enough waits). The buckets' states as this process knows them; None: the
        commit must go to the ledger now."""
        if self._pools.holds(rid):
            self._pools.finish(rid, [c.amount for c in charges])
            self._settler.watch(self._flush_due, self._flush_at_exit)
            return self._settler.project(charges), False
        if self._settler.enabled and self._fallback_ledger is None:
            states = self._settler.defer(rid, charges)
            self._settler.watch(self._flush_due, self._flush_at_exit)
            return states, True
        return None

    async def _acommit(self, rid: str, charges: Sequence[Charge]) -> tuple[BucketState, ...]:
        if not charges:
            return ()
        kept = self._commit_later(rid, charges)
        if kept is not None:
            states, deferred = kept
            if deferred and self._settler.due:
                await self._aflush()
            return states
        now = self.clock()
        try:
            return await self._active().acommit(rid, charges, now=now)
        except LedgerUnavailable as exc:
            self._fail_over(exc)
            return self._ledger_call(lambda lg: lg.commit(rid, charges, now=now))

    def _flush_due(self) -> None:
        """From the background, every ``settle_seconds``: close pools open that long (their
        spend lands as their calls finish) and send every deferred commit."""
        self._pools.close_older_than(self.settle_seconds)
        if self._settler.pending:
            self._flush(pools=False)

    def _flush_at_exit(self) -> None:
        """At the interpreter's exit, what ``close()`` sends: every pool's spend (a call
        still in flight at its worst case), every deferred commit, and local spend kept while
        the ledger was down."""
        self._pools.close_all()
        self._flush()
        self._last_reconcile()

    def _alert_settled(self, states: Sequence[BucketState]) -> None:
        """Alert budgets that commits just landed carried past a level (``Warden`` does)."""

    def _flush(self, *, pools: bool = True) -> None:
        """Send every deferred commit to the ledger now (one trip), with the spend of idle
        pools (closed) unless ``pools=False``."""
        if pools:
            self._pools.close_idle()
        settle = self._settler.take()
        if settle:
            now = self.clock()
            self._alert_settled(self._ledger_call(lambda lg: settle_on(lg, settle, now)))

    async def _aflush(self, *, pools: bool = True) -> None:
        """Async twin of ``_flush``."""
        if pools:
            self._pools.close_idle()
        settle = self._settler.take()
        if not settle:
            return
        now = self.clock()
        ledger = self._active()
        states: Sequence[BucketState]
        try:
            if getattr(ledger, "settles", False):
                states = await cast(SettlingLedger, ledger).asettle(settle, now=now) or ()
            else:
                states = []
                for rid, charges in settle:
                    states += await ledger.acommit(rid, charges, now=now)
        except LedgerUnavailable as exc:
            self._fail_over(exc)
            states = self._ledger_call(lambda lg: settle_on(lg, settle, now))
        except asyncio.CancelledError:
            self._settler.put_back(settle)
            raise
        self._alert_settled(states)

    async def _acancelled(self, watch: Sequence[str]) -> str | None:
        if self._fallback_ledger is not None:  # down: ask the local ledger (and maybe recover)
            return self._ledger_call(lambda lg: lg.cancelled(watch))
        try:
            return await self.ledger.acancelled(watch)
        except LedgerUnavailable as exc:
            self._fail_over(exc)
            return self._ledger_call(lambda lg: lg.cancelled(watch))

    def _release(self, rid: str) -> None:
        if self._pools.holds(rid):
            self._pools.release(rid)
            return
        now = self.clock()
        self._ledger_call(lambda lg: lg.release(rid, now=now))  # a fault: released locally

    async def _arelease(self, rid: str) -> None:
        if self._pools.holds(rid):
            self._pools.release(rid)
            return
        now = self.clock()
        try:
            await self._active().arelease(rid, now=now)
        except LedgerUnavailable as exc:
            self._fail_over(exc)
            self._active().release(rid, now=now)  # locally, and in the ledger when it is back


_NOT_CANCELLED = ReserveOutcome(ok=True)

_NO_SPEND = (0.0, 0.0)
#: Runs whose cancel-poll clocks a warden keeps before it forgets those that are due.
_MAX_POLL_CLOCKS = 4096


def _reserve_on(
    ledger: Ledger,
    rid: str,
    charges: Sequence[Charge],
    now: float,
    lease: float,
    watch: Sequence[str],
    settle: Sequence[Settlement],
) -> ReserveOutcome:
    """A reservation with deferred commits riding along (or sent first, by a ledger that
    cannot settle)."""
    if settle and getattr(ledger, "settles", False):
        return cast(SettlingLedger, ledger).reserve(
            rid, charges, now=now, lease_until=lease, watch=watch, settle=settle
        )
    settle_on(ledger, settle, now)
    return ledger.reserve(rid, charges, now=now, lease_until=lease, watch=watch)


def _cancelled_on(
    ledger: Ledger, watch: Sequence[str], settle: Sequence[Settlement], now: float
) -> str | None:
    """A cancel check, with deferred commits riding along when there are some."""
    if settle and getattr(ledger, "settles", False):
        outcome = cast(SettlingLedger, ledger).reserve(
            "", (), now=now, lease_until=now, watch=watch, settle=settle
        )
        return outcome.cancelled
    settle_on(ledger, settle, now)
    return ledger.cancelled(watch)


def _unavailable(charges: Sequence[Charge]) -> ReserveOutcome:
    """A reservation refused because the ledger is down and the policy fails closed."""
    state = BucketState("ledger_unavailable", 0.0, 0.0, 0.0)
    amount = max((c.amount for c in charges), default=0.0)
    return ReserveOutcome.refusal(state, amount)
