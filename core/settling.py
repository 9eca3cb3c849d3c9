"""Deferred commits: on a shared ledger, a call's real cost rides on the next trip there.

On SQLite or Redis every ledger operation is a round trip; committing each call on its own
would double them. Instead a warden keeps the commit of call N and sends it with the
reservation of call N+1, in the same atomic operation (``Ledger.reserve(settle=...)``). A
commit waits at most until the warden's next ledger trip, the end of its run, any read of
spend (``Warden.spent`` / ``remaining``), ``Warden.close``, the interpreter's exit, or about
``max_age`` seconds (a background thread sends what has waited that long). Meanwhile the
ledger still holds the call's reservation, its worst case: other processes see no less than
was spent, so no budget can be overspent by the delay.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence

from .ledger.base import BucketState, Charge, Settlement, new_state

__all__ = ["Settler"]

_KNOWN_LIMIT = 4096
#: This process's id, kept current across forks (asked at every deferred commit).
_process = [os.getpid()]
if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=lambda: _process.__setitem__(0, os.getpid()))


class Settler:
    """The commits a warden has not sent yet, and the buckets as its ledger last showed them."""

    def __init__(self, *, enabled: bool, max_age: float) -> None:
        self.enabled = enabled
        self.max_age = max_age
        self._queue: list[Settlement] = []
        self._since = 0.0  # monotonic time of the oldest queued commit
        self._lock = threading.Lock()
        self._known: dict[str, tuple[float, float]] = {}  # key -> (committed, reserved)
        self._ticker_pid = 0  # the process whose background thread sends old commits
        self._ticker: threading.Thread | None = None
        self._stopping = threading.Event()
        self._exit_hook: Callable[[], None] | None = None

    def watch(self, flush: Callable[[], None], last: Callable[[], None]) -> None:
        """Make sure old commits get sent even when no call comes: a daemon thread that
        calls ``flush`` every ``max_age`` seconds, and ``last`` at the interpreter's exit
        (which must send everything: idle pools too). Both are held weakly (bound methods of
        the warden): a dropped warden stops them."""
        if self._ticker_pid == _process[0]:
            return
        self._ticker_pid = _process[0]  # a forked child starts its own
        ref = weakref.WeakMethod(flush)  # type: ignore[arg-type]
        self._ticker = threading.Thread(
            target=_tick,
            args=(ref, self.max_age, self._stopping),
            name="budgetwarden-settle",
            daemon=True,
        )
        self._ticker.start()
        self._exit_hook = functools.partial(_last_flush, weakref.WeakMethod(last))  # type: ignore[arg-type]
        atexit.register(self._exit_hook)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the background thread and wait for a send it is making (the warden closes
        its ledger next: a connection must not close under a send)."""
        ticker, self._ticker = self._ticker, None
        self._stopping.set()
        if self._exit_hook is not None:  # closed: nothing left to send at exit
            atexit.unregister(self._exit_hook)
            self._exit_hook = None
        if ticker is not None and ticker is not threading.current_thread():
            ticker.join(timeout)
        self._stopping = threading.Event()  # a later watch() starts afresh
        self._ticker_pid = 0

    def defer(self, reservation_id: str, charges: Sequence[Charge]) -> tuple[BucketState, ...]:
        """Queue a commit; the bucket states it will leave, as far as this process knows."""
        self.queue((reservation_id, charges))
        return self.project(charges)

    def queue(self, settlement: Settlement) -> None:
        """Queue a commit for the next trip (its spend was projected already)."""
        with self._lock:
            if not self._queue:
                self._since = time.monotonic()
            self._queue.append(settlement)

    def put_back(self, settlements: Sequence[Settlement]) -> None:
        """Queue again commits taken for a trip that may not have made them (a cancelled
        task): a ledger applies a commit once, so sending one twice adds nothing."""
        for settlement in settlements:
            self.queue(settlement)

    def project_amounts(self, keys: Sequence[str], amounts: Sequence[float]) -> list[float]:
        """``project`` for amounts given by key: each bucket's committed spend after them."""
        with self._lock:
            known, committed = self._known, []
            for key, amount in zip(keys, amounts, strict=True):
                spent, reserved = known.get(key, (0.0, 0.0))
                spent += amount
                known[key] = (spent, reserved)
                committed.append(spent)
            return committed

    def project(self, charges: Sequence[Charge]) -> tuple[BucketState, ...]:
        """Count real amounts in the buckets as this process knows them; their states."""
        with self._lock:
            known, states = self._known, []
            for charge in charges:
                committed, reserved = known.get(charge.key, (0.0, 0.0))
                committed += charge.amount
                known[charge.key] = (committed, reserved)
                states.append(new_state(charge.key, committed, reserved, charge.limit))
            return tuple(states)

    @property
    def known(self) -> dict[str, tuple[float, float]]:
        """Bucket key -> (committed, reserved), as last reported (plus projections)."""
        return self._known

    def take(self) -> list[Settlement]:
        """Every queued commit (the queue is left empty): send them on the next trip."""
        if not self._queue:
            return []
        with self._lock:
            queued, self._queue = self._queue, []
            return queued

    @property
    def due(self) -> bool:
        """True when the oldest queued commit has waited ``max_age`` seconds or more."""
        return bool(self._queue) and time.monotonic() - self._since >= self.max_age

    @property
    def pending(self) -> int:
        """How many commits are queued."""
        return len(self._queue)

    def saw(self, states: Sequence[BucketState]) -> None:
        """Remember buckets as the ledger just reported them."""
        if not self.enabled or not states:
            return
        known = self._known
        if len(known) > _KNOWN_LIMIT:
            known.clear()
        for state in states:
            known[state.key] = (state.committed, state.reserved)


def _tick(
    ref: weakref.WeakMethod[Callable[[], None]], every: float, stopping: threading.Event
) -> None:
    """Send due commits every ``every`` seconds until the warden is gone or stops it."""
    while not stopping.wait(every):
        flush = ref()
        if flush is None:
            return
        with contextlib.suppress(Exception):  # a ledger fault already fell back to local
            flush()
        del flush


def _last_flush(ref: weakref.WeakMethod[Callable[[], None]]) -> None:
    """At exit: send whatever still waits (a clean exit loses no commit)."""
    flush = ref()
    if flush is not None:
        with contextlib.suppress(Exception):
            flush()
