"""A warden's pause handles (kept in the ledger, so a paused run survives a restart) and
its waits: the nap until a paused run may go on, and a throttled call's wait."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar, Unpack

from .buckets import escape, matching_buckets
from .events import Notice
from .ledger import Ledger
from .ledger.base import LIMIT_SLACK, BucketState, Charge, ValueStore
from .pause import PauseHandle
from .run_core import cancel_targets
from .warden_faults import LinkArgs
from .warden_ledger import LedgerTrips

__all__ = ["PauseHandles"]

_T = TypeVar("_T")
#: How long a resumed handle's claim is kept, so that no late resume takes it again.
_CLAIM_KEPT_SECONDS = 7 * 86400.0
#: The handle ``nap_and_resume`` is resuming in this context (it holds the claim already).
_resuming: ContextVar[str | None] = ContextVar("budgetwarden_resuming", default=None)


class PauseHandles(LedgerTrips):
    """The layer of ``Warden`` that keeps pause handles and waits: ``sleep`` / ``asleep``
    are how it waits (tests pass their clock's)."""

    #: How long a resume holds its handle against other resumes (``nap_and_resume``): one
    #: that crashed frees it then. Set it above your longest resumed run.
    resume_claim_seconds: float = 3600.0

    def __init__(
        self,
        *,
        sleep: Callable[[float], None],
        asleep: Callable[[float], Awaitable[None]] | None,
        **link: Unpack[LinkArgs],
    ) -> None:
        super().__init__(**link)
        self._sleep = sleep
        self._asleep_fn = asleep

    def save_handle(self, handle: PauseHandle) -> str:
        """Keep a pause handle in the ledger (so it survives a restart); returns its id."""
        self._values().put_value(self._handle_key(handle.id), handle.to_json())
        self._emit_all(
            [
                Notice(
                    ts=self.clock(),
                    run_id=handle.run_id,
                    code="pause",
                    level="warning",
                    message=f"run {handle.run_id} paused at {handle.cap}; handle {handle.id}",
                    data={"handle": handle.id, "cap": handle.cap, "resets_at": handle.resets_at},
                )
            ]
        )
        return handle.id

    async def asave_handle(self, handle: PauseHandle) -> str:
        """Async twin of ``save_handle`` (the ledger write runs in a worker thread)."""
        import asyncio

        return await asyncio.to_thread(self.save_handle, handle)

    def load_handle(self, handle_id: str) -> PauseHandle | None:
        """A saved pause handle, or None if there is none (or it was resumed)."""
        text = self._values().get_value(self._handle_key(handle_id))
        return PauseHandle.from_json(text) if text is not None else None

    def drop_handle(self, handle_id: str) -> None:
        """Forget a pause handle (done by ``nap_and_resume`` once resumed)."""
        self._values().delete_value(self._handle_key(handle_id))

    def paused(self) -> list[PauseHandle]:
        """Every saved pause handle of this namespace."""
        prefix = self._handle_key("")
        store = self._values()
        texts = [store.get_value(key) for key in store.list_values(prefix)]
        return [PauseHandle.from_json(t) for t in texts if t is not None]

    def ready_to_resume(self, handle: PauseHandle) -> bool:
        """True when the window that stopped the run has reset or its budget has room again
        (someone raised it); a run cap is ready at once (a resumed run gets fresh caps)."""
        if not handle.cap.startswith("budget:"):
            if handle.cap != "cancelled":
                return True
            # the run's own cancel, and its user's, workspace's...
            watch = cancel_targets(self.namespace, [handle.run_id], handle.attribution)
            return not self.ledger.cancelled(list(watch))
        now = self.clock()
        if handle.resets_at is not None and now >= handle.resets_at:
            return True
        refs = matching_buckets(
            self.policy.budgets,
            handle.attribution,
            run_id=handle.run_id,
            now=now,
            timezone=self.policy.timezone,
            namespace=self.namespace,
        )
        ref = next((r for r in refs if r.label == handle.cap), None)
        if ref is None:
            return True  # the budget was removed from the policy
        state = self._ledger_call(state_reader(ref.key, now, ref.limit))
        room = ref.limit * self.policy.thresholds.stop - state.committed - state.reserved
        return room >= handle.needed - LIMIT_SLACK if handle.needed > 0 else room > 0

    def wait_until_resumable(
        self, handle: PauseHandle, *, poll_seconds: float = 5.0, timeout: float | None = None
    ) -> bool:
        """Sleep until ``ready_to_resume`` (or ``timeout`` seconds); True when ready."""
        _check_wait(poll_seconds, timeout)
        waited = 0.0
        while not self.ready_to_resume(handle):
            if timeout is not None and waited >= timeout:
                return False
            step = self._nap_length(handle, poll_seconds)
            self._sleep(step)
            waited += step
        return True

    async def await_resumable(
        self, handle: PauseHandle, *, poll_seconds: float = 5.0, timeout: float | None = None
    ) -> bool:
        """Async twin of ``wait_until_resumable`` (never blocks the event loop)."""
        _check_wait(poll_seconds, timeout)
        waited = 0.0
        while not self.ready_to_resume(handle):
            if timeout is not None and waited >= timeout:
                return False
            step = self._nap_length(handle, poll_seconds)
            await self._asleep(step)
            waited += step
        return True

    def nap_and_resume(
        self,
        handle: PauseHandle | str,
        resume: Callable[[PauseHandle], _T],
        *,
        poll_seconds: float = 5.0,
    ) -> _T:
        """Wait until the paused run may go on, then ``resume(handle)`` and forget the handle.

        ``handle`` may be an id saved by ``save_handle`` (e.g. in another process).
        """
        found = self._handle(handle)
        self.wait_until_resumable(found, poll_seconds=poll_seconds)
        with self.resuming(found) as claimed:
            return resume(claimed)

    async def anap_and_resume(
        self,
        handle: PauseHandle | str,
        resume: Callable[[PauseHandle], Awaitable[_T]],
        *,
        poll_seconds: float = 5.0,
    ) -> _T:
        """Async twin of ``nap_and_resume``."""
        found = self._handle(handle)
        await self.await_resumable(found, poll_seconds=poll_seconds)
        with self.resuming(found) as claimed:
            return await resume(claimed)

    @contextmanager
    def resuming(self, handle: PauseHandle | str) -> Iterator[PauseHandle]:
        """Resume ``handle`` once, without waiting: the block is the resume. The handle is
        claimed in the ledger first (a ``KeyError`` when it was resumed, or is being resumed,
        elsewhere), forgotten when the block ends, and given back when it raises. The
        ``resume_*`` functions of the adapters resume inside it; within ``nap_and_resume``,
        which claims the handle itself, it only finds the handle."""
        found = self._handle(handle)
        if _resuming.get() == found.id:
            yield found
            return
        claim = self._claim_handle(found)
        token = _resuming.set(found.id)
        try:
            yield found
        except BaseException:
            self._unclaim_handle(claim)  # it may be resumed again
            raise
        finally:
            _resuming.reset(token)
        self._resumed(found, claim)

    def _claim_handle(self, handle: PauseHandle) -> Charge:
        """Take ``handle`` for this resume, atomically across the processes on the ledger:
        a reservation of its one claim, leased for ``resume_claim_seconds`` (a resume that
        crashed frees it then). A ``KeyError`` when another resume holds or made it."""
        now = self.clock()
        claim = Charge(
            key=f"claim|{escape(self.namespace)}|handle={escape(handle.id)}",
            amount=1.0,
            limit=1.0,
            expires_at=now + _CLAIM_KEPT_SECONDS,
        )
        lease = now + self.resume_claim_seconds
        taken = self.ledger.reserve(claim.key, [claim], now=now, lease_until=lease)
        if not taken.ok or self.load_handle(handle.id) is None:
            if taken.ok:
                self.ledger.release(claim.key, now=now)
            raise KeyError(
                f"pause handle {handle.id!r} is being resumed, or was, elsewhere: a handle is "
                "resumed once"
            )
        return claim

    def _unclaim_handle(self, claim: Charge) -> None:
        self.ledger.release(claim.key, now=self.clock())

    def _resumed(self, handle: PauseHandle, claim: Charge) -> None:
        """Forget the handle; its claim stays spent (no late resume can take it again)."""
        self.drop_handle(handle.id)
        self.ledger.commit(claim.key, [claim], now=self.clock())

    def _handle(self, handle: PauseHandle | str) -> PauseHandle:
        """The saved handle to resume: one resumed already (or never saved, or saved under
        another namespace) is not resumed again."""
        handle_id = handle.id if isinstance(handle, PauseHandle) else handle
        found = self.load_handle(handle_id)
        if found is None:
            raise KeyError(
                f"no pause handle {handle_id!r} in ledger {self.ledger.uri} (namespace "
                f"{self.namespace!r}): it was resumed already, or never saved "
                "(warden.save_handle)"
            )
        return handle if isinstance(handle, PauseHandle) else found

    def _nap_length(self, handle: PauseHandle, poll_seconds: float) -> float:
        if handle.resets_at is None:
            return poll_seconds
        return max(min(handle.resets_at - self.clock(), poll_seconds), 0.01)

    def _handle_key(self, handle_id: str) -> str:
        return f"handle|{self.namespace}|{handle_id}"

    def _values(self) -> ValueStore:
        if not isinstance(self.ledger, ValueStore):
            raise TypeError(f"ledger {self.ledger.uri} cannot keep pause handles")
        return self.ledger

    async def _asleep(self, seconds: float) -> None:
        if self._asleep_fn is not None:
            await self._asleep_fn(seconds)
        elif self._sleep is not time.sleep:
            self._sleep(seconds)  # an injected (test) clock's sleep
        else:
            import asyncio

            await asyncio.sleep(seconds)


def _check_wait(poll_seconds: float, timeout: float | None) -> None:
    """A ``ValueError`` for a poll that would spin (0 or less, NaN) or a meaningless timeout."""
    if not poll_seconds > 0 or poll_seconds == math.inf:
        raise ValueError(f"poll_seconds={poll_seconds!r}: pass a number of seconds above 0")
    if timeout is not None and not timeout >= 0:
        raise ValueError(f"timeout={timeout!r}: pass seconds, 0 or more (or None: no limit)")


def state_reader(key: str, now: float, limit: float) -> Callable[[Ledger], BucketState]:
    return lambda ledger: ledger.state(key, now=now, limit=limit)
