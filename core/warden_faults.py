"""A warden's link to its ledger: the events it sends, and what it does while the ledger
is unreachable (count locally, admit or refuse as the policy says, hand the spend over once
the ledger is back)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypedDict, TypeVar, Unpack, cast

from .errors import LedgerUnavailable
from .events import Event, Notice, Sink
from .ledger import Ledger
from .ledger.base import BucketState, Charge, Settlement, SettlingLedger, latest_states
from .ledger.memory import MemoryLedger
from .policy import Policy

__all__ = ["LedgerLink", "LinkArgs"]

_log = logging.getLogger("budgetwarden")
_T = TypeVar("_T")


class LinkArgs(TypedDict):
    """What every layer of a ``Warden`` is built from (see ``LedgerLink``)."""

    policy: Policy
    ledger: Ledger
    clock: Callable[[], float]
    namespace: str
    sinks: list[Sink]


class LedgerLink:
    """The lowest layer of ``Warden``: its policy, clock, ledger and sinks, events out, and
    the fallback to a local ledger while the real one is down."""

    #: While the ledger is unreachable, how often (seconds) to try it again and reconcile.
    ledger_retry_seconds: float = 5.0

    def __init__(self, **link: Unpack[LinkArgs]) -> None:
        self.policy = link["policy"]
        self.clock = link["clock"]
        self.namespace = link["namespace"]
        self.ledger = link["ledger"]
        self.sinks = link["sinks"]
        self._fallback_ledger: _LocalLedger | None = None
        self._failover_lock = threading.Lock()
        self._next_probe = 0.0

    def emit(self, event: Event) -> None:
        """Send one event to every sink (a failing sink is reported, never raised)."""
        self._emit_all([event])

    def _wants(self, kind: type[Event]) -> bool:
        """Whether a sink would take an event of this type now (one without ``wants``
        takes all)."""
        for sink in self.sinks:
            wants = getattr(sink, "wants", None)
            if wants is None or wants(kind):
                return True
        return False

    def _emit_all(self, events: Sequence[Event]) -> None:
        for event in events:
            for sink in self.sinks:
                try:
                    sink.emit(event)
                except Exception:  # a sink must never break a run
                    _log.exception("budgetwarden sink %s failed", type(sink).__name__)

    def _active(self) -> Ledger:
        """The real ledger, or the local one while the real one is down (tried again now and
        then: see ``_try_recover``)."""
        local = self._fallback_ledger
        if local is not None and time.monotonic() >= self._next_probe:
            self._try_recover(local)
        return self._fallback_ledger or self.ledger

    def _refusing(self) -> bool:
        """True while the ledger is down and the policy fails closed: reservations are refused."""
        return self._fallback_ledger is not None and not self._fails_open()

    def _fails_open(self) -> bool:
        hard = any(b.hard for b in self.policy.budgets)
        return self.policy.ledger_failure == "open" or not hard

    def _ledger_call(
        self,
        op: Callable[[Ledger], _T],
        refused: Callable[[], _T] | None = None,
        *,
        settle: Sequence[Settlement] = (),
        holds: str | None = None,
    ) -> _T:
        """``op`` on the active ledger; on a fault, fail over and run it locally, unless it is
        a reservation (``refused`` given) and the policy fails closed: then ``refused()``,
        after committing locally the deferred commits ``op`` carried (``settle``).

        ``holds``: the reservation id ``op`` reserves. A fault may come after the ledger made
        it (a reply that timed out): when the call is refused, the id is released there on
        recovery (a call released locally is, too: see ``_LocalLedger.release``)."""
        ledger = self._active()
        if refused is not None and self._refusing():
            self._settle_locally(settle)
            return refused()
        try:
            return op(ledger)
        except LedgerUnavailable as exc:
            self._fail_over(exc)
            if refused is not None and self._refusing():
                self._doubt(holds)
                self._settle_locally(settle)
                return refused()
            return op(self._active())

    def _doubt(self, reservation_id: str | None) -> None:
        """A reservation whose reply never came, for a call that will not happen: release it
        in the real ledger once it is back (else it would hold its amount until its lease)."""
        local = self._fallback_ledger
        if reservation_id is not None and local is not None:
            local.doubt(reservation_id)

    def _fail_over(self, exc: LedgerUnavailable) -> None:
        """Count on a local memory ledger until the real one answers again.

        Fail open: calls reserve and commit locally. Fail closed (the default with hard
        budgets): reservations are refused (cap ``ledger_unavailable``), but calls that already
        happened still commit, locally. The local spend goes into the real ledger once it is
        back; committed spend is never dropped.
        """
        with self._failover_lock:
            if self._fallback_ledger is not None:
                return
            self._fallback_ledger = _LocalLedger()
            self._next_probe = time.monotonic() + self.ledger_retry_seconds
        open_ = self._fails_open()
        self._emit_all(
            [
                Notice(
                    ts=self.clock(),
                    code="ledger_unavailable",
                    level="error",
                    message=f"ledger {self.ledger.uri} unavailable ({exc.cause}); "
                    + (
                        "counting locally"
                        if open_
                        else "refusing new calls, counting finished ones locally"
                    ),
                    data={"uri": self.ledger.uri, "mode": "open" if open_ else "closed"},
                )
            ]
        )

    def _try_recover(self, local: _LocalLedger) -> None:
        """If the real ledger answers, commit the local spend into it and switch back to it."""
        with self._failover_lock:
            if self._fallback_ledger is not local or time.monotonic() < self._next_probe:
                return
            self._next_probe = time.monotonic() + self.ledger_retry_seconds
            try:
                owed = local.hand_over(self.ledger, self.clock())
            except LedgerUnavailable:
                return
            self._fallback_ledger = None
        self._emit_all(
            [
                Notice(
                    ts=self.clock(),
                    code="ledger_recovered",
                    message=f"ledger {self.ledger.uri} is back; committed the spend counted "
                    f"locally meanwhile into it ({len(owed)} buckets)",
                    data={"uri": self.ledger.uri, "reconciled": owed},
                )
            ]
        )

    def _last_reconcile(self) -> None:
        """On close, a last try to hand local spend over; say so if it has to be dropped."""
        local = self._fallback_ledger
        if local is None:
            return
        self._next_probe = 0.0
        self._try_recover(local)
        if self._fallback_ledger is not None and local.owed:
            self._emit_all(
                [
                    Notice(
                        ts=self.clock(),
                        code="ledger_unreconciled",
                        level="error",
                        message=f"ledger {self.ledger.uri} still unavailable at close: spend "
                        "counted locally may be missing from it (a commit whose reply timed "
                        "out may still have landed)",
                        data={"uri": self.ledger.uri, "unreconciled": local.owed},
                    )
                ]
            )

    def _settle_locally(self, settle: Sequence[Settlement]) -> None:
        """Commit deferred commits in the local ledger (the real one is down)."""
        if settle:
            now = self.clock()
            settle_on(self._active(), settle, now)


class _LocalLedger(MemoryLedger):
    """Where a warden counts while its ledger is unreachable: remembers every commit made
    in it, to replay them into the real ledger once it is back."""

    def __init__(self) -> None:
        super().__init__("memory://fallback")
        self._commits: list[tuple[str, list[Charge]]] = []
        self._replayed: list[tuple[str, list[Charge]]] = []
        self._doubtful: list[str] = []  # reserved or released in the real ledger, or not
        self._handover = threading.Lock()
        self._successor: Ledger | None = None

    @property
    def owed(self) -> dict[str, float]:
        """Spend committed here and not yet in the real ledger, per bucket key."""
        with self._handover:
            return _per_bucket(self._commits)

    def commit(
        self, reservation_id: str, charges: Sequence[Charge], *, now: float
    ) -> tuple[BucketState, ...]:
        """Commit locally and remember it (or, once handed over, commit into the real ledger)."""
        with self._handover:
            if self._successor is not None:
                return self._successor.commit(reservation_id, charges, now=now)
            self._commits.append((reservation_id, list(charges)))
            return super().commit(reservation_id, charges, now=now)

    def release(self, reservation_id: str, *, now: float) -> None:
        """Release locally, and in the real ledger on hand-over: it may hold the call too
        (its reservation's reply timed out there), and nobody will commit it now."""
        with self._handover:
            if self._successor is not None:
                self._successor.release(reservation_id, now=now)
                return
            self._doubtful.append(reservation_id)
        super().release(reservation_id, now=now)

    def doubt(self, reservation_id: str) -> None:
        """Remember a reservation the real ledger may hold (its reply never came)."""
        with self._handover:
            self._doubtful.append(reservation_id)

    def hand_over(self, ledger: Ledger, now: float) -> dict[str, float]:
        """Replay every local commit into ``ledger`` under its own reservation id (so one the
        ledger already applied before it timed out is not counted twice), then release there
        the reservations left in doubt by a fault; later commits go there. A fault midway
        leaves the rest to the next try."""
        with self._handover:
            ledger.state("reconcile-probe", now=now)
            while self._commits:
                rid, charges = self._commits[0]
                ledger.commit(rid, charges, now=now)  # also frees a hold made there before
                self._commits.pop(0)
                self._replayed.append((rid, charges))
            while self._doubtful:
                ledger.release(self._doubtful[0], now=now)  # a hold nobody will commit
                self._doubtful.pop(0)
            self._successor = ledger
            replayed, self._replayed = self._replayed, []
        return _per_bucket(replayed)


def _per_bucket(commits: Sequence[tuple[str, Sequence[Charge]]]) -> dict[str, float]:
    owed: dict[str, float] = {}
    for _, charges in commits:
        for charge in charges:
            owed[charge.key] = owed.get(charge.key, 0.0) + charge.amount
    return owed


def settle_on(ledger: Ledger, settle: Sequence[Settlement], now: float) -> tuple[BucketState, ...]:
    """Send deferred commits to ``ledger``; the buckets they charged, after them (none from
    a settling ledger that says nothing back)."""
    if not settle:
        return ()
    if getattr(ledger, "settles", False):
        return cast(SettlingLedger, ledger).settle(settle, now=now) or ()
    states: list[BucketState] = []
    for rid, charges in settle:
        states += ledger.commit(rid, charges, now=now)
    return latest_states(states)
