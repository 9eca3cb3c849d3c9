"""Warden: policy + ledger + prices + router + sinks; opens runs and answers spend queries."""

from __future__ import annotations

import functools
import inspect
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast, get_args

from .buckets import BucketRef, bucket_key, cancel_key, matching_buckets
from .errors import BudgetExceeded, ModelDenied
from .events import Notice, Sink, StructlogSink
from .grants import Grant, LimitReached, OnLimit
from .ledger import Ledger, open_ledger
from .ledger.base import BucketState
from .policy import Budget, Limits, Metric, Policy
from .pricing import PriceBook
from .routing import Complexity
from .run import Run
from .run_core import CANCEL_SCOPES, RunCore
from .run_events import bucket_crossings
from .warden_pause import PauseHandles, state_reader
from .windows import window_at

__all__ = ["Approver", "Warden"]

#: Called for a tool in ``ToolRules.require_approval``: (tool, args, run) -> allow?
Approver = Callable[[str, Any, Run], bool]
#: A policy, the attribution fields its budgets' scopes read (in order), and whether a
#: budget has a "run" window (whose buckets are per root run).
RefPlan = tuple[Policy, tuple[str, ...], bool]
_METRICS = get_args(Metric)
#: Alert marks a warden keeps before it looks for ended windows to forget.
_MARKS_KEPT = 4096
_ATTRIBUTES = ("agent", "user", "workspace", "workflow", "task_class", "key", "thread", "feature")


class Warden(PauseHandles):
    """Keeps every run of an application inside its policy.

    ``Warden(policy, ledger="memory://")`` — ``ledger`` may be ``sqlite:///spend.db`` or
    ``redis://127.0.0.1:6379/0`` to share budgets across processes and hosts; ``clock`` (epoch
    seconds) is how tests move time; ``sinks`` receive every event beside structlog;
    ``approve`` decides tools that need approval (denied when absent); ``on_limit`` is
    asked (sync or async) when a cap or budget is reached and may return a ``Grant``;
    ``sleep`` / ``asleep`` are how throttled calls wait (tests pass their clock's);
    ``namespace`` (``"default"``) keeps the budgets, pause handles and cancels of wardens
    that share one ledger apart (two applications, or staging beside production).

    Its layers, lowest first: ``LedgerLink`` (events out, the fallback while the ledger is
    down: ``ledger_retry_seconds``), ``LedgerTrips`` (reservations, deferred commits, pools
    and cancel checks: ``settle_seconds``, ``cancel_poll_seconds``, ``pool_calls``,
    ``pool_headroom``) and ``PauseHandles`` (pause handles and waits).
    """

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
        sinks = list(sinks)
        _check_parts(ledger, prices, namespace, sinks, clock, sleep, approve, on_limit, asleep)
        resolved = _as_policy(policy)
        super().__init__(
            policy=resolved,
            ledger=open_ledger(ledger),
            clock=clock,
            namespace=namespace,
            sinks=([StructlogSink()] if log_events else []) + sinks,
            sleep=sleep,
            asleep=asleep,
        )
        self.prices = prices or PriceBook(overrides=resolved.prices)
        _check_fallback_model(resolved, self.prices)
        self.approve = approve
        self.complexity = complexity
        self.on_limit = on_limit
        self._warned_models: set[str] = set()
        #: alert marks known crossed here -> when their window ends (then they are forgotten)
        self._marked: dict[str, float] = {}
        self._refs: dict[tuple[Any, ...], tuple[Policy, float, float, tuple[BucketRef, ...]]] = {}
        self._ref_plan: RefPlan | None = None  # what the key of _refs reads (see _bucket_refs)
        #: what runs derive from a bucket set (``RunCore._derived``), by the set's id
        self._bucket_derived: dict[int, tuple[Any, Any, Any]] = {}
        #: on a shared ledger, the buckets this process's runs spend on (ledger key -> the
        #: bucket and the attribution of the last run that opened it), for the alerts of
        #: levels that only deferred commits landing reveal (``_alert_settled``)
        self._alert_buckets: dict[str, tuple[BucketRef, Mapping[str, Any]]] = {}

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
        check_attribution("warden.run", given)
        _check_run_parts(tags, parent, run_id, limits)
        attribution: dict[str, str | None] = {}
        for name in _ATTRIBUTES:
            value = given[name]
            if value is None and parent is not None:
                value = parent.attribution.get(name)
            attribution[name] = value
        for tag, value in (tags or {}).items():
            attribution[f"tag:{tag}"] = value
        return Run(self, attribution=attribution, parent=parent, run_id=run_id, limits=limits)

    def spent(
        self,
        scope: str,
        value: str | None = None,
        window: str | None = None,
        *,
        metric: Metric | None = None,
    ) -> float:
        """Committed spend of ``value`` on ``scope`` in the current window of its budget.

        Dollars, tokens or requests, whichever the budget counts: when budgets on the scope
        count different ones, ``window`` or ``metric`` ("cost", "tokens", "requests") picks;
        when they keep different windows (``8h`` and ``day``), ``window`` picks (else a
        ``ValueError`` says so). 0.0 when no budget on the scope applies to ``value``.
        """
        budgets = self._budgets_on(scope, window, metric)
        windows = sorted({b.window for b in budgets if _applies(b, scope, value)})
        if len(windows) > 1:
            raise ValueError(
                f"budgets on scope {scope!r} keep windows {windows}: pass window= to pick one "
                "(each counts the same spend over its own window)"
            )
        self._flush()
        # budgets on one window count the same calls: one figure (the fullest, should a
        # budget have been added to the policy later than another)
        return max((s.committed for s in self._states(budgets, scope, value)), default=0.0)

    def remaining(
        self,
        scope: str,
        value: str | None = None,
        window: str | None = None,
        *,
        metric: Metric | None = None,
    ) -> float | None:
        """What is left (limit - committed - reserved) of the tightest matching budget, in
        its unit (``window`` or ``metric`` picks when budgets on the scope count different
        units, or a ``ValueError`` says so); None when no budget matches."""
        budgets = self._budgets_on(scope, window, metric)
        self._flush()
        states = self._states(budgets, scope, value)
        if not states:
            return None
        return min(max(s.limit - s.committed - s.reserved, 0.0) for s in states)

    def _budgets_on(self, scope: str, window: str | None, metric: str | None) -> list[Budget]:
        """The policy's budgets on ``scope`` (and ``window``, ``metric`` when given), all
        counting one unit."""
        if metric is not None and metric not in _METRICS:
            raise ValueError(f"metric={metric!r}: use one of {list(_METRICS)}")
        _check_query(scope, window)
        budgets = [
            b
            for b in self.policy.budgets
            if b.scope == scope
            and (window is None or b.window == window)
            and (metric is None or b.metric == metric)
        ]
        metrics = sorted({b.metric for b in budgets})
        if len(metrics) > 1:
            raise ValueError(
                f"budgets on scope {scope!r} count {metrics}: pass window= or metric= to pick one"
            )
        return budgets

    def cancel(
        self,
        run_id: str | None = None,
        *,
        reason: str = "",
        tags: Mapping[str, str] | None = None,
        **scopes: str,
    ) -> list[str]:
        """Stop matching runs from outside, at their next call (across processes sharing the
        ledger). ``warden.cancel(run_id=...)``, ``warden.cancel(user="u1")`` (any scope but
        global) or ``warden.cancel(tags={"team": "t1"})`` (the runs opened with that tag).

        A cancel stops the runs of wardens with this warden's ``namespace`` only. Returns the
        targets set, such as ``["user=u1"]``."""
        targets = _cancel_targets(run_id, scopes, tags)
        keys = [cancel_key(self.namespace, target) for target in targets]
        for key in keys:
            self.ledger.cancel(key, reason=reason)
        self._cancelled_known.update(keys)
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

    def uncancel(
        self, run_id: str | None = None, *, tags: Mapping[str, str] | None = None, **scopes: str
    ) -> list[str]:
        """Lift a cancel set by ``cancel`` (in this warden's ``namespace``)."""
        targets = _cancel_targets(run_id, scopes, tags)
        keys = [cancel_key(self.namespace, target) for target in targets]
        for key in keys:
            self.ledger.uncancel(key)
        self._cancelled_known.difference_update(keys)
        return targets

    def close(self) -> None:
        """Close the ledger and any sink that can be closed."""
        self._settler.stop()  # no background send may run on a connection being closed
        self._pools.close_all()
        self._flush()
        self._last_reconcile()
        self.ledger.close()
        for sink in self.sinks:
            closer = getattr(sink, "close", None)
            if callable(closer):
                closer()

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
            _close(answer)
            raise TypeError("Warden(approve=...) must be a plain function returning bool")
        if not isinstance(answer, bool):  # "no" or 1 must not pass for a yes
            raise TypeError(
                f"Warden(approve=...) must return True or False for {tool!r}, got {answer!r}"
            )
        return answer

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

    def _watch_alerts(self, refs: Sequence[BucketRef], base: Mapping[str, Any]) -> None:
        """A run on a shared ledger spends on ``refs`` (``base``: its event fields)."""
        watched = self._alert_buckets
        if len(watched) > _MARKS_KEPT:
            watched.clear()
        for ref in refs:
            watched[ref.key] = (ref, base)

    def _alert_settled(self, states: Sequence[BucketState]) -> None:
        """Alerts for levels that commits just landed on the ledger carried a budget past.
        A run alerts what its own commit shows, as far as this process knows the bucket;
        spend that several processes deferred (or pooled) shows only when it lands, at
        another call's trip or a flush, maybe after every run on it ended."""
        watched = self._alert_buckets
        if not watched or not states:
            return
        thresholds = self.policy.thresholds
        alerts: list[Any] = []
        for state in states:
            entry = watched.get(state.key)
            if entry is None:
                continue
            ref, base = entry
            alerts += bucket_crossings(
                functools.partial(self._fields_now, base),
                thresholds,
                [state],
                {ref.key: ref},
                self._first_crossing,
            )
        if alerts:
            self._emit_all(alerts)

    def _fields_now(self, base: Mapping[str, Any]) -> dict[str, Any]:
        return {"ts": self.clock(), **base}

    def _first_crossing(self, ref: BucketRef, level: float) -> bool:
        mark = f"alert|{ref.key}|{level}"
        marked = self._marked
        if mark in marked:  # known crossed: no ledger round trip
            return False
        if len(marked) >= _MARKS_KEPT:  # forget the marks of windows that ended
            now = self.clock()
            for old in [m for m, end in marked.items() if end <= now]:
                del marked[old]
        marked[mark] = ref.window.end
        return self._ledger_call(lambda lg: lg.mark_once(mark, expires_at=ref.window.end))

    def _ask(self, question: LimitReached) -> Grant | None:
        if self.on_limit is None:
            return None
        answer = self.on_limit(question)
        if inspect.isawaitable(answer):
            _close(answer)
            raise TypeError("an async on_limit callback needs the async API (ainvoke, arun)")
        return _granted(answer)

    async def _aask(self, question: LimitReached) -> Grant | None:
        if self.on_limit is None:
            return None
        answer = self.on_limit(question)
        if inspect.isawaitable(answer):
            answer = await answer
        return _granted(answer)

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

    def _states(
        self, budgets: Sequence[Budget], scope: str, value: str | None
    ) -> list[BucketState]:
        now = self.clock()
        states = []
        val = "*" if scope == "global" else value
        for budget in budgets:
            if val is None or not _applies(budget, scope, value):
                continue
            occurrence = window_at(budget.window, now, self.policy.timezone)
            key = bucket_key(self.namespace, budget, val, occurrence)
            limit = budget.limit_for(val)
            states.append(self._ledger_call(state_reader(key, now, limit)))
        return states


def _check_parts(
    ledger: object,
    prices: object,
    namespace: object,
    sinks: Sequence[object],
    *callables: object,
) -> None:
    """A ``TypeError`` at construction for a part that would only fail at the first call."""
    if not isinstance(ledger, (str, Ledger)):
        raise TypeError(
            f"Warden(ledger={ledger!r}): pass a URI ('memory://', 'sqlite:///spend.db', "
            "'redis://host:6379/0') or a Ledger"
        )
    if prices is not None and not isinstance(prices, PriceBook):
        raise TypeError(
            f"Warden(prices=...) takes a PriceBook, not {type(prices).__name__}; put your own "
            "prices in Policy(prices={...}) or pass PriceBook(overrides={...})"
        )
    if not isinstance(namespace, str) or not namespace:
        raise TypeError(f"Warden(namespace={namespace!r}): pass a non-empty string")
    for sink in sinks:
        if not callable(getattr(sink, "emit", None)):
            raise TypeError(f"Warden(sinks=...): {sink!r} has no emit(event) method")
    names = ("clock", "sleep", "approve", "on_limit", "asleep")
    for name, value in zip(names, callables, strict=True):
        if value is not None and not callable(value):
            raise TypeError(f"Warden({name}={value!r}): pass a function (or leave it out)")


def _check_fallback_model(policy: Policy, prices: PriceBook) -> None:
    """The model unpriced calls are priced as must have a price itself."""
    if not prices.can_price(policy.fallback_model):
        raise ValueError(
            f"Policy.fallback_model={policy.fallback_model!r} has no price: name a model "
            "LiteLLM prices (e.g. 'gpt-4o') or give it one in Policy(prices={...})"
        )


def require_warden(value: object, where: str) -> Warden:
    """``value`` if it is a ``Warden``; else a ``TypeError`` saying how to make one (an
    adapter given a policy would fail only at its first call, with an AttributeError)."""
    if isinstance(value, Warden):
        return value
    fix = "Warden(policy)" if isinstance(value, (Policy, Mapping, str, Path)) else "a Warden"
    raise TypeError(
        f"{where} needs a budgetwarden.Warden, not {type(value).__name__}: pass {fix} "
        "(one per application: it keeps the ledger and the events)"
    )


def check_attribution(where: str, fields: Mapping[str, object]) -> None:
    """A ``TypeError`` for an attribution (user, workspace, ...) that is not a string: an
    integer user id would otherwise fail deep in the ledger's key escaping."""
    for name, value in fields.items():
        if value is not None and not isinstance(value, str):
            raise TypeError(
                f"{where}: {name}={value!r} must be a string or None (pass str({value!r}))"
            )


def _check_run_parts(
    tags: Mapping[str, str] | None, parent: object, run_id: object, limits: object
) -> None:
    if tags is not None:
        check_attribution("warden.run tags", {f"tag {k!r}": v for k, v in tags.items()})
    if parent is not None and not isinstance(parent, Run):
        raise TypeError(f"warden.run: parent= must be the parent's Run, not {parent!r}")
    if run_id is not None and not isinstance(run_id, str):
        raise TypeError(f"warden.run: run_id={run_id!r} must be a string or None")
    if limits is not None and not isinstance(limits, Limits):
        fix = "Limits(**limits)" if isinstance(limits, Mapping) else "Limits(...)"
        raise TypeError(
            f"warden.run: limits= must be a Limits, not {type(limits).__name__}: pass {fix}"
        )


def _applies(budget: Budget, scope: str, value: str | None) -> bool:
    """Whether ``budget`` (on ``scope``) counts the calls of ``value``."""
    if scope == "global":
        return True
    return value is not None and budget.applies_to(value)


def _check_query(scope: str, window: str | None) -> None:
    """A ``ValueError`` naming a scope or window no budget could have (a typo would else
    read as no spend at all)."""
    try:
        Budget(scope=scope, window=window or "day", max_requests=1)
    except ValueError as exc:  # pydantic's ValidationError, with the field and the fix
        errors = getattr(exc, "errors", None)
        detail = "; ".join(_message(e) for e in errors()) if callable(errors) else str(exc)
        raise ValueError(f"spent/remaining(scope={scope!r}, window={window!r}): {detail}") from None


def _message(error: Mapping[str, Any]) -> str:
    return str(error["msg"]).removeprefix("Value error, ")


def _ref_plan(policy: Policy) -> RefPlan:
    """What a run's buckets depend on under ``policy`` (see ``Warden._bucket_refs``)."""
    scopes = tuple(dict.fromkeys(b.scope for b in policy.budgets if b.scope != "global"))
    return policy, scopes, any(b.window == "run" for b in policy.budgets)


def _granted(answer: object) -> Grant | None:
    """``on_limit``'s answer, which must be a ``Grant`` or None."""
    if answer is None or isinstance(answer, Grant):
        return answer
    raise TypeError(
        f"on_limit must return a Grant (to go on) or None (to stop), got {answer!r}: "
        "return Grant(extra=..., by=...)"
    )


def _close(awaitable: object) -> None:
    close = getattr(awaitable, "close", None)
    if callable(close):
        close()


def _as_policy(policy: Policy | Mapping[str, Any] | str | Path | None) -> Policy:
    if policy is None:
        return Policy()
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, (str, Path)):
        return Policy.from_file(policy)
    return Policy.model_validate(policy)


def _cancel_targets(
    run_id: str | None, scopes: Mapping[str, str], tags: Mapping[str, str] | None
) -> list[str]:
    allowed = CANCEL_SCOPES | {"run_id"}
    unknown = sorted(set(scopes) - allowed)
    if unknown:
        raise ValueError(
            f"cannot cancel by {unknown}: use run_id=, one of {sorted(allowed - {'run_id'})}, "
            "or tags={name: value} for a run's tag"
        )
    check_attribution("warden.cancel", {"run_id": run_id, **scopes})
    if any(value is None for value in scopes.values()):
        raise TypeError(f"warden.cancel({scopes}): a scope's value must be a string, not None")
    if tags is not None:
        _check_run_parts(tags, None, None, None)
    targets = [f"run={run_id}"] if run_id else []
    targets += [f"{scope}={value}" for scope, value in scopes.items()]
    targets += [f"tag:{name}={value}" for name, value in (tags or {}).items()]
    if not targets:
        raise ValueError("warden.cancel needs run_id= or a scope such as user='u1'")
    return targets
