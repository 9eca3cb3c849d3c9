"""Warden: policy + ledger + prices + router + sinks; opens runs and answers spend queries."""

from __future__ import annotations

import inspect
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

from .buckets import BucketRef, bucket_key, matching_buckets
from .errors import BudgetExceeded, LedgerUnavailable, ModelDenied
from .events import Event, Notice, Sink, StructlogSink
from .grants import Grant, LimitReached, OnLimit
from .ledger import Ledger, open_ledger
from .ledger.base import (
    BucketState,
    Charge,
    ReserveOutcome,
    Settlement,
    SettlingLedger,
    ValueStore,
    granted_outcome,
)
from .ledger.memory import MemoryLedger
from .pause import PauseHandle
from .policy import SCOPES, Limits, Policy
from .pools import PoolKey, Pools, projected
from .pricing import PriceBook
from .routing import Complexity
from .run import Run
from .run_core import RunCore
from .settling import Settler
from .windows import window_at

__all__ = ["Approver", "Warden"]

#: Called for a tool in ``ToolRules.require_approval``: (tool, args, run) -> allow?
Approver = Callable[[str, Any, Run], bool]
#: A policy, the attribution fields its budgets' scopes read (in order), and whether a
#: budget has a "run" window (whose buckets are per root run).
RefPlan = tuple[Policy, tuple[str, ...], bool]
_log = logging.getLogger("budgetwarden")
_T = TypeVar("_T")
_ATTRIBUTES = ("agent", "user", "workspace", "workflow", "task_class", "key", "thread", "feature")


class Warden:
    """Keeps every run of an application inside its policy.

    ``Warden(policy, ledger="memory://")`` — ``ledger`` may be ``sqlite:///spend.db`` or
    ``redis://127.0.0.1:6379/0`` to share budgets across processes and hosts; ``clock`` (epoch
    seconds) is how tests move time; ``sinks`` receive every event beside structlog;
    ``approve`` decides tools that need approval (denied when absent); ``on_limit`` is
    asked (sync or async) when a cap or budget is reached and may return a ``Grant``;
    ``sleep`` / ``asleep`` are how throttled calls wait (tests pass their clock's).
    """

    #: While the ledger is unreachable, how often (seconds) to try it again and reconcile.
    ledger_retry_seconds: float = 5.0
    #: On a shared ledger (SQLite, Redis), the longest a call's commit waits for the next
    #: ledger trip to ride on (checked at the next call; see ``budgetwarden.settling``).
    settle_seconds: float = 1.0
    #: On a shared ledger, how often a tool call with nothing to reserve asks the ledger
    #: whether its run was cancelled from another process (model calls always ask; cancels
    #: made through this warden are seen at once).
    cancel_poll_seconds: float = 0.25
    #: On a shared ledger, a budget with at least ``pool_headroom`` calls' worth left is
    #: reserved ``pool_calls`` calls at a time and served here (see ``budgetwarden.pools``);
    #: ``pool_calls = 0`` sends every call to the ledger.
    pool_calls: int = 32
    pool_headroom: float = 1000.0

    def __init__(
        self,
        policy: Policy | Mapping[str, Any] | str | Path | None = None,
        *,
        ledger: str | Ledger = "memory://",
        clock: Callable[[], float] = time.time,
        sinks: Iterable[Sink] = (),
        prices: PriceBook | None = None,
        approve: Approver | None = None,
        complexity: Complexity | None = None,
        namespace: str = "default",
        log_events: bool = True,
        on_limit: OnLimit | None = None,
        sleep: Callable[[float], None] = time.sleep,
        asleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.policy = _as_policy(policy)
        self.clock = clock
        self.namespace = namespace
        self.ledger: Ledger = open_ledger(ledger)
        self.prices = prices or PriceBook(overrides=self.policy.prices)
        self.approve = approve
        self.complexity = complexity
        self.sinks: list[Sink] = ([StructlogSink()] if log_events else []) + list(sinks)
        self._fallback_ledger: _LocalLedger | None = None
        self._failover_lock = threading.Lock()
        self._next_probe = 0.0
        self._warned_models: set[str] = set()
        self._marked: set[str] = set()
        self._refs: dict[tuple[Any, ...], tuple[Policy, float, float, tuple[BucketRef, ...]]] = {}
        self._ref_plan: RefPlan | None = None  # what the key of _refs reads (see _bucket_refs)
        #: what runs derive from a bucket set (``RunCore._derived``), by the set's id
        self._bucket_derived: dict[int, tuple[Any, Any, Any]] = {}
        self.on_limit = on_limit
        self._sleep = sleep
        self._asleep_fn = asleep
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
        self._next_cancel_poll = 0.0

    # ------------------------------------------------------------------ public API
    def run(
        self,
        *,
        agent: str | None = None,
        user: str | None = None,
        workspace: str | None = None,
        workflow: str | None = None,
        task_class: str | None = None,
        key: str | None = None,
        thread: str | None = None,
        feature: str | None = None,
        tags: Mapping[str, str] | None = None,
        parent: Run | None = None,
        run_id: str | None = None,
        limits: Limits | None = None,
    ) -> Run:
        """Open a run with its attribution; use it as a (sync or async) context manager.

        A run opened with ``parent=`` inherits the parent's attribution where it gives none,
        counts all its spend for the parent too, and may never exceed what the parent has left.
        """
        given = {
            "agent": agent,
            "user": user,
            "workspace": workspace,
            "workflow": workflow,
            "task_class": task_class,
            "key": key,
            "thread": thread,
            "feature": feature,
        }
        attribution: dict[str, str | None] = {}
        for name in _ATTRIBUTES:
            value = given[name]
            if value is None and parent is not None:
                value = parent.attribution.get(name)
            attribution[name] = value
        for tag, value in (tags or {}).items():
            attribution[f"tag:{tag}"] = value
        return Run(self, attribution=attribution, parent=parent, run_id=run_id, limits=limits)

    def spent(self, scope: str, value: str | None = None, window: str | None = None) -> float:
        """Committed spend of every budget on ``scope`` (for ``value``) in the current window.

        ``window`` picks one budget when several share the scope. Dollars, tokens or requests,
        whichever the budget counts.
        """
        self._one_unit(scope, window)
        self._flush()
        return sum(s.committed for s in self._states(scope, value, window))

    def remaining(
        self, scope: str, value: str | None = None, window: str | None = None
    ) -> float | None:
        """What is left (limit - committed - reserved) of the tightest matching budget.

        Budgets on one scope may count different units (dollars, tokens, requests): then
        ``window`` must pick one, or a ``ValueError`` says so.
        """
        self._one_unit(scope, window)
        self._flush()
        states = list(self._states(scope, value, window))
        if not states:
            return None
        return min(max(s.limit - s.committed - s.reserved, 0.0) for s in states)

    def _one_unit(self, scope: str, window: str | None) -> None:
        metrics = {
            b.metric
            for b in self.policy.budgets
            if b.scope == scope and (window is None or b.window == window)
        }
        if len(metrics) > 1:
            raise ValueError(
                f"budgets on scope {scope!r} count {sorted(metrics)}: pass window= to pick one"
            )

    def cancel(self, run_id: str | None = None, *, reason: str = "", **scopes: str) -> list[str]:
        """Stop matching runs from outside, at their next call (across processes sharing the
        ledger). ``warden.cancel(run_id=...)`` or ``warden.cancel(user="u1")``."""
        targets = _cancel_targets(run_id, scopes)
        for target in targets:
            self.ledger.cancel(target, reason=reason)
        self._cancelled_known.update(targets)
        self._emit_all(
            [
                Notice(
                    ts=self.clock(),
                    code="cancel",
                    message=f"cancelled {targets}",
                    level="warning",
                    data={"targets": targets, "reason": reason},
                )
            ]
        )
        return targets

    def uncancel(self, run_id: str | None = None, **scopes: str) -> list[str]:
        """Lift a cancel set by ``cancel``."""
        targets = _cancel_targets(run_id, scopes)
        for target in targets:
            self.ledger.uncancel(target)
        self._cancelled_known.difference_update(targets)
        return targets

    # ------------------------------------------------------------------ pause and resume
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
            return handle.cap != "cancelled" or not self.ledger.cancelled([f"run={handle.run_id}"])
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
        state = self._ledger_call(_state_reader(ref.key, now, ref.limit))
        return state.committed + state.reserved < ref.limit * self.policy.thresholds.stop

    def wait_until_resumable(
        self, handle: PauseHandle, *, poll_seconds: float = 5.0, timeout: float | None = None
    ) -> bool:
        """Sleep until ``ready_to_resume`` (or ``timeout`` seconds); True when ready."""
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
        result = resume(found)
        self.drop_handle(found.id)
        return result

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
        result = await resume(found)
        self.drop_handle(found.id)
        return result

    def _handle(self, handle: PauseHandle | str) -> PauseHandle:
        if isinstance(handle, PauseHandle):
            return handle
        found = self.load_handle(handle)
        if found is None:
            raise KeyError(f"no pause handle {handle!r} in ledger {self.ledger.uri}")
        return found

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

    def emit(self, event: Event) -> None:
        """Send one event to every sink (a failing sink is reported, never raised)."""
        self._emit_all([event])

    def close(self) -> None:
        """Close the ledger and any sink that can be closed."""
        self._flush()
        self._last_reconcile()
        self.ledger.close()
        for sink in self.sinks:
            closer = getattr(sink, "close", None)
            if callable(closer):
                closer()

    # ------------------------------------------------------------------ used by Run
    def _pricing_model(self, model: str | None, run: RunCore) -> str:
        """The model whose prices apply: the model itself, or the fallback when unpriced."""
        if model is None:
            return self.policy.fallback_model
        if self.prices.can_price(model):
            return model
        if self.policy.unknown_model == "deny":
            raise ModelDenied(model, run.report)
        if model not in self._warned_models:
            self._warned_models.add(model)
            self._emit_all(
                [
                    Notice(
                        ts=self.clock(),
                        run_id=run.id,
                        code="unpriced_model",
                        message=f"no price for {model!r}; priced as {self.policy.fallback_model} "
                        f"(add Policy.prices[{model!r}] to fix)",
                        data={"model": model, "priced_as": self.policy.fallback_model},
                    )
                ]
            )
        return self.policy.fallback_model

    def _approve(self, tool: str, args: Any, run: RunCore) -> bool:
        if self.approve is None:
            return False
        answer = self.approve(tool, args, cast(Run, run))
        if inspect.isawaitable(answer):
            raise TypeError("Warden(approve=...) must be a plain function returning bool")
        return bool(answer)

    def _bucket_refs(
        self, attribution: Mapping[str, str | None], root_run_id: str, now: float
    ) -> tuple[float, float, tuple[BucketRef, ...]]:
        """The buckets runs with this attribution count against now, and the span of time
        they hold for; shared until a window turns by every run with the same values of
        the scopes the budgets use (a thread or task nobody budgets does not split them)."""
        policy = self.policy  # a warden whose policy is replaced must not reuse old buckets
        plan = self._ref_plan
        if plan is None or plan[0] is not policy:
            plan = self._ref_plan = _ref_plan(policy)
        _, scopes, per_run = plan
        key = (*map(attribution.get, scopes), root_run_id if per_run else None)
        cached = self._refs.get(key)
        if cached is not None and cached[0] is policy and cached[1] <= now < cached[2]:
            return cached[1:]
        refs = tuple(
            matching_buckets(
                policy.budgets,
                attribution,
                run_id=root_run_id,
                now=now,
                timezone=policy.timezone,
                namespace=self.namespace,
            )
        )
        since = max((r.window.start for r in refs), default=-math.inf)
        until = min((r.window.end for r in refs), default=math.inf)
        if len(self._refs) > 4096:
            self._refs.clear()
        self._refs[key] = (policy, since, until, refs)
        return since, until, refs

    def _first_crossing(self, ref: BucketRef, level: float) -> bool:
        mark = f"alert|{ref.key}|{level}"
        if mark in self._marked:  # known crossed: no ledger round trip
            return False
        self._marked.add(mark)
        return self._ledger_call(lambda lg: lg.mark_once(mark, expires_at=ref.window.end))

    async def _asleep(self, seconds: float) -> None:
        if self._asleep_fn is not None:
            await self._asleep_fn(seconds)
        elif self._sleep is not time.sleep:
            self._sleep(seconds)  # an injected (test) clock's sleep
        else:
            import asyncio

            await asyncio.sleep(seconds)

    def _ask(self, question: LimitReached) -> Grant | None:
        if self.on_limit is None:
            return None
        answer = self.on_limit(question)
        if inspect.isawaitable(answer):
            _close(answer)
            raise TypeError("an async on_limit callback needs the async API (ainvoke, arun)")
        return answer

    async def _aask(self, question: LimitReached) -> Grant | None:
        if self.on_limit is None:
            return None
        answer = self.on_limit(question)
        if inspect.isawaitable(answer):
            return await answer
        return answer

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
        )
        self._settler.saw(outcome.states)
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
            or time.monotonic() >= self._next_cancel_poll
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
        self._settler.watch(self._flush_due)
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
            return self._reserve_trip(rid, charges, (now, lease), watch, settle, refused_for)
        self._settler.saw(outcome.states)
        return outcome

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
        if not self._cancel_poll_due(poll):
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

    def _cancel_poll_due(self, poll: bool) -> bool:
        """Whether to ask the ledger now: always on a local ledger and for model calls."""
        if not poll or not self._settler.enabled:
            return True
        tick = time.monotonic()
        if tick < self._next_cancel_poll and not self._settler.due:
            return False
        self._next_cancel_poll = tick + self.cancel_poll_seconds
        return True

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
            self._settler.watch(self._flush_due)
            return self._settler.project(charges), False
        if self._settler.enabled and self._fallback_ledger is None:
            states = self._settler.defer(rid, charges)
            self._settler.watch(self._flush_due)
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

    def _flush(self, *, pools: bool = True) -> None:
        """Send every deferred commit to the ledger now (one trip), with the spend of idle
        pools (closed) unless ``pools=False``."""
        if pools:
            self._pools.close_idle()
        settle = self._settler.take()
        if settle:
            now = self.clock()
            self._ledger_call(lambda lg: _settle_on(lg, settle, now))

    async def _aflush(self, *, pools: bool = True) -> None:
        """Async twin of ``_flush``."""
        if pools:
            self._pools.close_idle()
        settle = self._settler.take()
        if not settle:
            return
        now = self.clock()
        ledger = self._active()
        try:
            if getattr(ledger, "settles", False):
                await cast(SettlingLedger, ledger).asettle(settle, now=now)
            else:
                for rid, charges in settle:
                    await ledger.acommit(rid, charges, now=now)
        except LedgerUnavailable as exc:
            self._fail_over(exc)
            self._ledger_call(lambda lg: _settle_on(lg, settle, now))

    def _settle_locally(self, settle: Sequence[Settlement]) -> None:
        """Commit deferred commits in the local ledger (the real one is down)."""
        if settle:
            now = self.clock()
            _settle_on(self._active(), settle, now)

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
        self._ledger_call(lambda lg: lg.release(rid, now=now))

    async def _arelease(self, rid: str) -> None:
        if self._pools.holds(rid):
            self._pools.release(rid)
            return
        now = self.clock()
        try:
            await self._active().arelease(rid, now=now)
        except LedgerUnavailable as exc:
            self._fail_over(exc)

    def _emit_refusal(self, run: RunCore, exc: BudgetExceeded) -> None:
        """A refused call is a warning Notice (threshold crossings are BudgetAlerts)."""
        data = {
            "cap": exc.cap,
            "limit": exc.limit,
            "used": exc.used,
            "requested": exc.requested,
            "resets_at": exc.resets_at,
        }
        self._emit_all(
            [
                Notice(
                    ts=self.clock(),
                    **run._event_base,
                    code="refused",
                    level="warning",
                    message=str(exc),
                    data=data,
                )
            ]
        )

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

    # ------------------------------------------------------------------ ledger faults
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
    ) -> _T:
        """``op`` on the active ledger; on a fault, fail over and run it locally, unless it is
        a reservation (``refused`` given) and the policy fails closed: then ``refused()``,
        after committing locally the deferred commits ``op`` carried (``settle``)."""
        ledger = self._active()
        if refused is not None and self._refusing():
            self._settle_locally(settle)
            return refused()
        try:
            return op(ledger)
        except LedgerUnavailable as exc:
            self._fail_over(exc)
            if refused is not None and self._refusing():
                self._settle_locally(settle)
                return refused()
            return op(self._active())

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
                        "counted locally was not recorded in it",
                        data={"uri": self.ledger.uri, "unreconciled": local.owed},
                    )
                ]
            )

    # ------------------------------------------------------------------ queries
    def _states(self, scope: str, value: str | None, window: str | None) -> list[BucketState]:
        now = self.clock()
        states = []
        for budget in self.policy.budgets:
            if budget.scope != scope or (window is not None and budget.window != window):
                continue
            val = "*" if scope == "global" else value
            if val is None or not budget.applies_to(val):
                continue
            occurrence = window_at(budget.window, now, self.policy.timezone)
            key = bucket_key(self.namespace, budget, val, occurrence)
            limit = budget.limit_for(val)
            states.append(self._ledger_call(_state_reader(key, now, limit)))
        return states


class _LocalLedger(MemoryLedger):
    """Where a warden counts while its ledger is unreachable: remembers every commit made
    in it, to replay them into the real ledger once it is back."""

    def __init__(self) -> None:
        super().__init__("memory://fallback")
        self._commits: list[tuple[str, list[Charge]]] = []
        self._replayed: list[tuple[str, list[Charge]]] = []
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

    def hand_over(self, ledger: Ledger, now: float) -> dict[str, float]:
        """Replay every local commit into ``ledger`` under its own reservation id (so one the
        ledger already applied before it timed out is not counted twice); later commits go
        there. A fault midway leaves the rest to replay at the next try."""
        with self._handover:
            ledger.state("reconcile-probe", now=now)
            while self._commits:
                rid, charges = self._commits[0]
                ledger.commit(rid, charges, now=now)  # also frees a hold made there before
                self._commits.pop(0)
                self._replayed.append((rid, charges))
            self._successor = ledger
            replayed, self._replayed = self._replayed, []
        return _per_bucket(replayed)


def _ref_plan(policy: Policy) -> RefPlan:
    """What a run's buckets depend on under ``policy`` (see ``Warden._bucket_refs``)."""
    scopes = tuple(dict.fromkeys(b.scope for b in policy.budgets if b.scope != "global"))
    return policy, scopes, any(b.window == "run" for b in policy.budgets)


def _per_bucket(commits: Sequence[tuple[str, Sequence[Charge]]]) -> dict[str, float]:
    owed: dict[str, float] = {}
    for _, charges in commits:
        for charge in charges:
            owed[charge.key] = owed.get(charge.key, 0.0) + charge.amount
    return owed


_NOT_CANCELLED = ReserveOutcome(ok=True)
_NO_SPEND = (0.0, 0.0)


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
    _settle_on(ledger, settle, now)
    return ledger.reserve(rid, charges, now=now, lease_until=lease, watch=watch)


def _settle_on(ledger: Ledger, settle: Sequence[Settlement], now: float) -> None:
    if not settle:
        return
    if getattr(ledger, "settles", False):
        cast(SettlingLedger, ledger).settle(settle, now=now)
        return
    for rid, charges in settle:
        ledger.commit(rid, charges, now=now)


def _cancelled_on(
    ledger: Ledger, watch: Sequence[str], settle: Sequence[Settlement], now: float
) -> str | None:
    """A cancel check, with deferred commits riding along when there are some."""
    if settle and getattr(ledger, "settles", False):
        outcome = cast(SettlingLedger, ledger).reserve(
            "", (), now=now, lease_until=now, watch=watch, settle=settle
        )
        return outcome.cancelled
    _settle_on(ledger, settle, now)
    return ledger.cancelled(watch)


def _unavailable(charges: Sequence[Charge]) -> ReserveOutcome:
    """A reservation refused because the ledger is down and the policy fails closed."""
    state = BucketState("ledger_unavailable", 0.0, 0.0, 0.0)
    amount = max((c.amount for c in charges), default=0.0)
    return ReserveOutcome.refusal(state, amount)


def _close(awaitable: object) -> None:
    close = getattr(awaitable, "close", None)
    if callable(close):
        close()


def _state_reader(key: str, now: float, limit: float) -> Callable[[Ledger], BucketState]:
    return lambda ledger: ledger.state(key, now=now, limit=limit)


def _as_policy(policy: Policy | Mapping[str, Any] | str | Path | None) -> Policy:
    if policy is None:
        return Policy()
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, (str, Path)):
        return Policy.from_file(policy)
    return Policy.model_validate(policy)


def _cancel_targets(run_id: str | None, scopes: Mapping[str, str]) -> list[str]:
    allowed = {s for s in SCOPES if s != "global"} | {"run_id"}
    unknown = sorted(set(scopes) - allowed)
    if unknown:
        raise ValueError(
            f"cannot cancel by {unknown}: use run_id= or one of {sorted(allowed - {'run_id'})}"
        )
    targets = [f"run={run_id}"] if run_id else []
    targets += [f"{scope}={value}" for scope, value in scopes.items()]
    if not targets:
        raise ValueError("warden.cancel needs run_id= or a scope such as user='u1'")
    return targets
