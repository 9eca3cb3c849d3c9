"""The Ledger protocol: atomic reserve / commit / release over budget buckets.

A *bucket* is one budget's counter for one scope value in one window occurrence, named by a
key the warden builds (``budget_key|scope=value|window_start``, values percent-escaped).
The rules (what to charge, which limit) are decided by the core; a ledger only applies them
atomically and persists them. Sync and async methods share semantics; ``SyncLedger`` gives
the async twins to ledgers whose I/O is local.

A ledger that *settles* (``settles = True``) can apply commits inside another operation: a
``reserve(..., settle=[(rid, charges), ...])`` first commits each settlement, then reserves,
in one atomic operation (one round trip), and ``settle([...])`` applies several commits at once.
"""

from __future__ import annotations

import contextlib
import functools
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "COMMIT_MEMORY_SECONDS",
    "LIMIT_SLACK",
    "BucketState",
    "Charge",
    "ValueStore",
    "Ledger",
    "ReserveOutcome",
    "Settlement",
    "SettlingLedger",
    "SyncLedger",
]


#: How long a ledger remembers a committed reservation id, so a repeat adds nothing.
COMMIT_MEMORY_SECONDS = 2 * 86400.0
#: How far past a limit a reservation may reach by float rounding alone: a billionth (of a
#: dollar; counts of tokens and requests are whole numbers, which it cannot move). Ten calls
#: of $0.001 fit a $0.01 budget, though their float sum is 0.010000000000000002.
LIMIT_SLACK = 1e-9


@dataclass(frozen=True, slots=True)
class Charge:
    """An amount against one bucket, with the bucket's limit and when its window ends."""

    key: str
    amount: float
    limit: float
    expires_at: float  # epoch seconds when the window ends; math.inf if never


@dataclass(frozen=True, slots=True)
class BucketState:
    """A bucket's committed spend and live reservations, as a ledger saw them."""

    key: str
    committed: float
    reserved: float
    limit: float

    @property
    def ratio(self) -> float:
        """Committed spend as a fraction of the limit (inf for a zero limit with spend)."""
        if self.limit > 0:
            return self.committed / self.limit
        return float("inf") if self.committed > 0 else 0.0


@dataclass(frozen=True, slots=True)
class ReserveOutcome:
    """What a reserve did: ``ok``, the bucket states after it, and the refusal if any."""

    ok: bool
    states: tuple[BucketState, ...] = ()
    refused: BucketState | None = None
    refused_amount: float = 0.0
    cancelled: str | None = None

    @classmethod
    def granted(cls, before: Sequence[BucketState], charges: Sequence[Charge]) -> ReserveOutcome:
        """All charges reserved: each bucket's state as it was, plus this reservation."""
        return granted_outcome(
            tuple(
                new_state(s.key, s.committed, s.reserved + c.amount, s.limit)
                for s, c in zip(before, charges, strict=True)
            )
        )

    @classmethod
    def refusal(cls, state: BucketState, amount: float) -> ReserveOutcome:
        """Nothing reserved: ``state``'s bucket has no room for ``amount``."""
        return cls(ok=False, states=(state,), refused=state, refused_amount=amount)


# Hot-path constructors for ledgers: the same objects as ``BucketState(...)`` and
# ``ReserveOutcome(True, states)``, built without a frozen dataclass's ``__init__`` (which
# sets each field through ``object.__setattr__``): about half the cost, per call of a run.
_new = object.__new__
_STATE_FIELDS = ("key", "committed", "reserved", "limit")
_OUTCOME_FIELDS = ("ok", "states", "refused", "refused_amount", "cancelled")
if tuple(f.name for f in fields(BucketState)) != _STATE_FIELDS or (
    tuple(f.name for f in fields(ReserveOutcome)) != _OUTCOME_FIELDS
):  # pragma: no cover - a guard for whoever adds a field
    raise AssertionError("update new_state / granted_outcome to the new fields")
_set_key, _set_committed, _set_reserved, _set_limit = (
    BucketState.__dict__[name].__set__ for name in _STATE_FIELDS
)
_set_ok, _set_states, _set_refused, _set_refused_amount, _set_cancelled = (
    ReserveOutcome.__dict__[name].__set__ for name in _OUTCOME_FIELDS
)
_CHARGE_FIELDS = ("key", "amount", "limit", "expires_at")
if tuple(f.name for f in fields(Charge)) != _CHARGE_FIELDS:  # pragma: no cover
    raise AssertionError("update new_charge to the new fields")
_set_charge_key, _set_amount, _set_charge_limit, _set_expires_at = (
    Charge.__dict__[name].__set__ for name in _CHARGE_FIELDS
)


def new_charge(key: str, amount: float, limit: float, expires_at: float) -> Charge:
    """``Charge(key, amount, limit, expires_at)``, built faster (for the run's hot path)."""
    charge: Charge = _new(Charge)
    _set_charge_key(charge, key)
    _set_amount(charge, amount)
    _set_charge_limit(charge, limit)
    _set_expires_at(charge, expires_at)
    return charge


def new_state(key: str, committed: float, reserved: float, limit: float) -> BucketState:
    """``BucketState(key, committed, reserved, limit)``, built faster."""
    state: BucketState = _new(BucketState)
    _set_key(state, key)
    _set_committed(state, committed)
    _set_reserved(state, reserved)
    _set_limit(state, limit)
    return state


def latest_states(states: Sequence[BucketState]) -> tuple[BucketState, ...]:
    """Each bucket's last state among ``states`` (a bucket several settlements charged),
    in the order the buckets first appear."""
    last = {state.key: state for state in states}
    return tuple(last.values())


def latest_charges(settlements: Sequence[Settlement]) -> list[Charge]:
    """One charge per bucket the settlements charge (the last, for its limit), in the order
    the buckets first appear."""
    last = {charge.key: charge for _, charges in settlements for charge in charges}
    return list(last.values())


def granted_outcome(states: tuple[BucketState, ...]) -> ReserveOutcome:
    """``ReserveOutcome(ok=True, states=states)``, built faster."""
    outcome: ReserveOutcome = _new(ReserveOutcome)
    _set_ok(outcome, True)
    _set_states(outcome, states)
    _set_refused(outcome, None)
    _set_refused_amount(outcome, 0.0)
    _set_cancelled(outcome, None)
    return outcome


#: A commit carried by another operation: the reservation id and the real charges, applied
#: exactly as ``commit(reservation_id, charges, now=now)`` would.
Settlement = tuple[str, Sequence[Charge]]


@runtime_checkable
class Ledger(Protocol):
    """Where spend is kept; every method is one atomic operation.

    A ledger MAY support settling: it then sets the class attribute ``settles = True``,
    takes ``settle=`` in ``reserve``/``areserve`` and has ``settle``/``asettle``, so a
    caller can fold the commit of one call into the reservation of the next (one round trip
    per call instead of two). Callers look it up with ``getattr(ledger, "settles", False)``:
    a ledger without the attribute (the default, ``settles = False``) is only given separate
    ``commit`` calls and never the ``settle=`` keyword. The built-in ledgers all settle.
    """

    uri: str

    def reserve(
        self,
        reservation_id: str,
        charges: Sequence[Charge],
        *,
        now: float,
        lease_until: float,
        watch: Sequence[str] = (),
    ) -> ReserveOutcome:
        """Reserve every charge or none: each bucket's committed + live reservations + amount
        must stay within its limit. ``watch`` are cancel targets; if one is set, nothing is
        reserved and ``cancelled`` names it. Expired leases are not counted.

        A ledger with ``settles = True`` also takes ``settle: Sequence[Settlement] = ()``:
        those commits are applied first, in the same atomic operation, and stay applied even
        when the reservation is refused or cancelled (they are spend that already happened);
        the outcome's states then include them."""

    def commit(
        self, reservation_id: str, charges: Sequence[Charge], *, now: float
    ) -> tuple[BucketState, ...]:
        """Drop the reservation and add the real amounts (all of them, even past the limit).

        Idempotent per reservation id (for ``COMMIT_MEMORY_SECONDS``): a commit retried after
        a timeout, or replayed when a fail-open warden reconciles, is never counted twice.
        """

    def release(self, reservation_id: str, *, now: float) -> None:
        """Drop the reservation; nothing is spent."""

    def state(self, key: str, *, now: float, limit: float = 0.0) -> BucketState:
        """A bucket's committed spend and live reservations."""

    def mark_once(self, key: str, *, expires_at: float) -> bool:
        """True the first time ``key`` is marked (until it expires); False afterwards."""

    def cancel(self, target: str, *, reason: str = "") -> None:
        """Set a cancel marker (``run=<id>``, ``user=<value>``...), kept until lifted."""

    def uncancel(self, target: str) -> None:
        """Lift a cancel marker."""

    def cancelled(self, targets: Sequence[str]) -> str | None:
        """The first of ``targets`` that is cancelled, or None."""

    def close(self) -> None:
        """Release connections and files."""

    async def areserve(
        self,
        reservation_id: str,
        charges: Sequence[Charge],
        *,
        now: float,
        lease_until: float,
        watch: Sequence[str] = (),
    ) -> ReserveOutcome:
        """Async twin of ``reserve``."""

    async def acommit(
        self, reservation_id: str, charges: Sequence[Charge], *, now: float
    ) -> tuple[BucketState, ...]:
        """Async twin of ``commit``."""

    async def arelease(self, reservation_id: str, *, now: float) -> None:
        """Async twin of ``release``."""

    async def acancelled(self, targets: Sequence[str]) -> str | None:
        """Async twin of ``cancelled``."""


@runtime_checkable
class SettlingLedger(Ledger, Protocol):
    """A ledger that settles: commits ride along with a reservation, or go several at once.

    Check ``getattr(ledger, "settles", False)`` before using it as one (the class attribute,
    not ``isinstance``: a runtime check cannot see the ``settle=`` keyword)."""

    settles: bool

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
        """``Ledger.reserve``, after applying each settlement as ``commit`` would, in the same
        atomic operation. The settlements stay applied whatever the reservation's outcome
        (refused, cancelled); its states are the buckets after the settlements and it."""

    def settle(self, settlements: Sequence[Settlement], *, now: float) -> tuple[BucketState, ...]:
        """Apply several commits in one atomic operation (each as ``commit`` would); the
        buckets they charged, as they stand after them (the spend of every process: a
        threshold crossed only when deferred commits land is alerted from these)."""

    async def areserve(
        self,
        reservation_id: str,
        charges: Sequence[Charge],
        *,
        now: float,
        lease_until: float,
        watch: Sequence[str] = (),
        settle: Sequence[Settlement] = (),
    ) -> ReserveOutcome:
        """Async twin of ``reserve``."""

    async def asettle(
        self, settlements: Sequence[Settlement], *, now: float
    ) -> tuple[BucketState, ...]:
        """Async twin of ``settle``."""


@runtime_checkable
class ValueStore(Protocol):
    """A ledger that can also keep small named values (pause handles), across processes."""

    def put_value(self, key: str, value: str, *, expires_at: float | None = None) -> None:
        """Store ``value`` under ``key`` (until ``expires_at``, epoch seconds, if given)."""

    def get_value(self, key: str) -> str | None:
        """The value stored under ``key``, or None."""

    def delete_value(self, key: str) -> None:
        """Forget ``key``."""

    def list_values(self, prefix: str) -> list[str]:
        """Every key that starts with ``prefix``."""


class SyncLedger(ABC):
    """Async twins for a ledger whose operations are synchronous.

    ``offload`` runs them in a worker thread (for file I/O that may wait on a lock), so an
    event loop is never blocked; a memory ledger calls them inline.

    A backend that sets ``settles = True`` takes ``settle=`` in ``reserve`` and overrides
    ``settle`` with one atomic operation; one that does not is never given ``settle=``.
    """

    offload: bool = False
    settles: bool = False

    @abstractmethod
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
        """Implemented by every backend (``settle`` only by those with ``settles = True``)."""

    @abstractmethod
    def commit(
        self, reservation_id: str, charges: Sequence[Charge], *, now: float
    ) -> tuple[BucketState, ...]:
        """Implemented by every backend."""

    @abstractmethod
    def release(self, reservation_id: str, *, now: float) -> None:
        """Implemented by every backend."""

    @abstractmethod
    def cancelled(self, targets: Sequence[str]) -> str | None:
        """Implemented by every backend."""

    async def acancelled(self, targets: Sequence[str]) -> str | None:
        """Async twin of ``cancelled``."""
        if self.offload:
            import asyncio

            return await asyncio.to_thread(self.cancelled, targets)
        return self.cancelled(targets)

    def settle(self, settlements: Sequence[Settlement], *, now: float) -> tuple[BucketState, ...]:
        """Apply several commits; the buckets they charged, after them. This default commits
        them one by one; a backend with ``settles = True`` overrides it with one atomic
        operation."""
        states: list[BucketState] = []
        for reservation_id, charges in settlements:
            states += self.commit(reservation_id, charges, now=now)
        return latest_states(states)

    async def areserve(
        self,
        reservation_id: str,
        charges: Sequence[Charge],
        *,
        now: float,
        lease_until: float,
        watch: Sequence[str] = (),
        settle: Sequence[Settlement] = (),
    ) -> ReserveOutcome:
        """Async twin of ``reserve`` (``settle=`` is passed on only when given)."""
        if self.offload:
            import asyncio

            call = functools.partial(
                self.reserve, reservation_id, charges, now=now, lease_until=lease_until, watch=watch
            )
            if settle:
                call = functools.partial(call, settle=settle)
            undo = functools.partial(self._release_granted, reservation_id, now)
            return await _undone_if_cancelled(asyncio.to_thread(call), undo)
        if settle:
            return self.reserve(
                reservation_id,
                charges,
                now=now,
                lease_until=lease_until,
                watch=watch,
                settle=settle,
            )
        return self.reserve(reservation_id, charges, now=now, lease_until=lease_until, watch=watch)

    def _release_granted(self, reservation_id: str, now: float, outcome: ReserveOutcome) -> None:
        """Release a reservation its caller stopped waiting for (see ``areserve``)."""
        if outcome.ok:
            self.release(reservation_id, now=now)

    async def asettle(
        self, settlements: Sequence[Settlement], *, now: float
    ) -> tuple[BucketState, ...]:
        """Async twin of ``settle``."""
        if self.offload:
            import asyncio

            return await asyncio.to_thread(self.settle, settlements, now=now)
        return self.settle(settlements, now=now)

    async def acommit(
        self, reservation_id: str, charges: Sequence[Charge], *, now: float
    ) -> tuple[BucketState, ...]:
        """Async twin of ``commit``."""
        if self.offload:
            import asyncio

            return await asyncio.to_thread(self.commit, reservation_id, charges, now=now)
        return self.commit(reservation_id, charges, now=now)

    async def arelease(self, reservation_id: str, *, now: float) -> None:
        """Async twin of ``release``."""
        if self.offload:
            import asyncio

            await asyncio.to_thread(self.release, reservation_id, now=now)
        else:
            self.release(reservation_id, now=now)


async def _undone_if_cancelled(
    work: Awaitable[ReserveOutcome], undo: Callable[[ReserveOutcome], None]
) -> ReserveOutcome:
    """Await a reservation made in a worker thread. A cancelled caller stops waiting, but
    the thread still makes the reservation: ``undo`` releases it once it is made, rather
    than leave it held, for a call that will not happen, until its lease ends."""
    import asyncio

    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(functools.partial(_undo_when_made, undo))
        raise


def _undo_when_made(
    undo: Callable[[ReserveOutcome], None], done: asyncio.Future[ReserveOutcome]
) -> None:
    if not done.cancelled() and done.exception() is None:
        with contextlib.suppress(Exception):  # best effort: the lease frees it anyway
            undo(done.result())
