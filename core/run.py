"""Run: one agent run's counters, caps and decisions.

Adapters call ``before_llm_call`` / ``after_llm_call`` / ``before_tool_call`` /
``after_tool_call`` (or their ``a``-prefixed async twins) around each call. The ``before``
methods refuse a call that must not happen by raising ``BudgetExceeded`` or ``ToolDenied``;
the decisions themselves are pure functions (``checks``, ``routing``); this module holds the
state, and the ledger I/O sits at the edges (``_reserve`` / ``_commit``), so sync and async
share one implementation of the rules.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from . import routing as routes
from .buckets import BucketRef, llm_amount, matching_buckets, usage_tokens
from .checks import Counters, Refusal, llm_refusal, tool_refusal, tool_rule_refusal, tool_signature
from .errors import BudgetError, BudgetExceeded, ToolDenied
from .events import BudgetAlert, CostEvent
from .ledger.base import BucketState, Charge, ReserveOutcome
from .policy import Limits
from .report import RunReport
from .usage import Usage, estimate_message_tokens, estimate_tokens

if TYPE_CHECKING:
    from .warden import Warden

__all__ = ["Run", "Step", "ToolStep"]

_ids = itertools.count(1)


@dataclass(slots=True)
class Step:
    """A model call that may happen now: which model, how much was reserved, what to do."""

    id: str
    model: str | None
    requested_model: str | None
    tier: int | None
    route_reason: str
    compress: bool
    max_tokens: int
    input_tokens: int
    reserved_usd: float
    started_at: float
    retry: bool = False
    final: bool = False
    hint: str | None = None
    buckets: tuple[BucketRef, ...] = ()
    done: bool = False


@dataclass(slots=True)
class ToolStep:
    """A tool call that may happen now."""

    id: str
    name: str
    call_id: str | None
    signature: str
    price_usd: float
    started_at: float
    buckets: tuple[BucketRef, ...] = ()
    done: bool = False


@dataclass(slots=True)
class _Plan:
    id: str
    choice: routes.RouteChoice
    worst_cost: float
    refs: tuple[BucketRef, ...]
    retry: bool
    charges: list[Charge]


class Run:
    """One agent run: counters, caps, routing state and reservations. Made by ``Warden.run``."""

    def __init__(
        self,
        warden: Warden,
        *,
        attribution: dict[str, str | None],
        parent: Run | None = None,
        run_id: str | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.warden = warden
        self.policy = warden.policy
        self.id = run_id or f"run-{uuid.uuid4().hex[:12]}"
        self.parent = parent
        self.attribution = attribution
        self.limits = limits or self.policy.limits
        self.counters = Counters()
        self.started_at = warden.clock()
        self.finished_at: float | None = None
        self.stopped: BudgetExceeded | None = None
        self.stop_reason: str | None = None
        self.success: bool | None = None
        self.children: list[Run] = []
        self._lock = threading.RLock()
        self._route = routes.RouteState()
        self._routed = False
        self._ratios: dict[str, float] = {}
        self._alerted: set[tuple[str, float]] = set()
        self._models: list[str] = []
        self._pending: dict[str, Step | ToolStep] = {}
        self._watch = self._cancel_targets()
        self._event_base = {
            "run_id": self.id,
            "parent_run_id": parent.id if parent else None,
            **{k: v for k, v in attribution.items() if not k.startswith("tag:")},
        }
        if parent is not None:
            parent.children.append(self)

    # ------------------------------------------------------------------ context managers
    def __enter__(self) -> Run:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        self.finish(error=exc)
        return isinstance(exc, BudgetExceeded) and self.policy.on_exceeded == "partial"

    async def __aenter__(self) -> Run:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        await self.afinish(error=exc)
        return isinstance(exc, BudgetExceeded) and self.policy.on_exceeded == "partial"

    # ------------------------------------------------------------------ model calls
    def before_llm_call(
        self,
        model: str | None = None,
        messages: Any = None,
        *,
        max_tokens: int | None = None,
        input_tokens: int | None = None,
        tools: Sequence[Any] | None = None,
    ) -> Step:
        """Reserve the worst case of the next model call, or refuse it with BudgetExceeded."""
        request = self._llm_request(model, messages, max_tokens, input_tokens, tools)
        refusal: Refusal | None = None
        for plan in self._llm_plans(*request):
            refusal = self._claim(plan, request)
            if refusal is not None:
                if refusal.cap == "max_cost_usd":
                    continue  # a cheaper tier may still fit
                break
            outcome = self.warden._reserve(plan.charges, plan.id, self._watch)
            if outcome.ok:
                return self._hold_llm(plan, outcome, request)
            refusal = self._unclaim(plan, request, outcome)
            if outcome.cancelled is not None:
                break
        raise self._refuse(self._first(refusal))

    async def abefore_llm_call(
        self,
        model: str | None = None,
        messages: Any = None,
        *,
        max_tokens: int | None = None,
        input_tokens: int | None = None,
        tools: Sequence[Any] | None = None,
    ) -> Step:
        """Async twin of ``before_llm_call``."""
        request = self._llm_request(model, messages, max_tokens, input_tokens, tools)
        refusal: Refusal | None = None
        for plan in self._llm_plans(*request):
            refusal = self._claim(plan, request)
            if refusal is not None:
                if refusal.cap == "max_cost_usd":
                    continue  # a cheaper tier may still fit
                break
            outcome = await self.warden._areserve(plan.charges, plan.id, self._watch)
            if outcome.ok:
                return self._hold_llm(plan, outcome, request)
            refusal = self._unclaim(plan, request, outcome)
            if outcome.cancelled is not None:
                break
        raise self._refuse(self._first(refusal))

    def after_llm_call(
        self,
        step: Step,
        usage: Usage | None = None,
        *,
        model: str | None = None,
        latency_s: float | None = None,
        outcome: str = "ok",
        output_text: str | None = None,
        prompt_text: str | None = None,
    ) -> CostEvent:
        """Commit the real cost of a model call, release the rest, and emit its CostEvent."""
        usage, real_model, cost = self._price_result(step, usage, model, output_text)
        charges = self._llm_commit_charges(step, usage, cost)
        states = self.warden._commit(step.id, charges)
        return self._record_llm(
            step, usage, real_model, cost, states, latency_s, outcome, output_text, prompt_text
        )

    async def aafter_llm_call(
        self,
        step: Step,
        usage: Usage | None = None,
        *,
        model: str | None = None,
        latency_s: float | None = None,
        outcome: str = "ok",
        output_text: str | None = None,
        prompt_text: str | None = None,
    ) -> CostEvent:
        """Async twin of ``after_llm_call``."""
        usage, real_model, cost = self._price_result(step, usage, model, output_text)
        charges = self._llm_commit_charges(step, usage, cost)
        states = await self.warden._acommit(step.id, charges)
        return self._record_llm(
            step, usage, real_model, cost, states, latency_s, outcome, output_text, prompt_text
        )

    def release(self, step: Step | ToolStep) -> None:
        """The call did not happen: free its reservation and uncount it."""
        if self._unhold(step):
            self.warden._release(step.id)

    async def arelease(self, step: Step | ToolStep) -> None:
        """Async twin of ``release``."""
        if self._unhold(step):
            await self.warden._arelease(step.id)

    # ------------------------------------------------------------------ tool calls
    def before_tool_call(
        self, name: str, args: Any = None, *, call_id: str | None = None
    ) -> ToolStep:
        """Check a tool call against the tool rules and caps; reserve its price if it has one."""
        step = self._plan_tool(name, args, call_id)
        outcome = self.warden._reserve(self._tool_charges(step), step.id, self._watch)
        return self._settle_tool(step, outcome)

    async def abefore_tool_call(
        self, name: str, args: Any = None, *, call_id: str | None = None
    ) -> ToolStep:
        """Async twin of ``before_tool_call``."""
        step = self._plan_tool(name, args, call_id)
        outcome = await self.warden._areserve(self._tool_charges(step), step.id, self._watch)
        return self._settle_tool(step, outcome)

    def after_tool_call(
        self,
        step: ToolStep | str,
        *,
        ok: bool = True,
        latency_s: float | None = None,
        error: BaseException | str | None = None,
    ) -> CostEvent:
        """Record a finished tool call (its price is spent whether it worked or not)."""
        tool_step = self._tool_step(step)
        states = self.warden._commit(tool_step.id, self._tool_charges(tool_step))
        return self._record_tool(tool_step, ok and error is None, latency_s, states)

    async def aafter_tool_call(
        self,
        step: ToolStep | str,
        *,
        ok: bool = True,
        latency_s: float | None = None,
        error: BaseException | str | None = None,
    ) -> CostEvent:
        """Async twin of ``after_tool_call``."""
        tool_step = self._tool_step(step)
        states = await self.warden._acommit(tool_step.id, self._tool_charges(tool_step))
        return self._record_tool(tool_step, ok and error is None, latency_s, states)

    # ------------------------------------------------------------------ end of run
    def finish(self, stop_reason: str | None = None, *, error: BaseException | None = None) -> None:
        """End the run: release what it still holds and set its stop reason."""
        for step in self._end(stop_reason, error):
            self.warden._release(step.id)

    async def afinish(
        self, stop_reason: str | None = None, *, error: BaseException | None = None
    ) -> None:
        """Async twin of ``finish``."""
        for step in self._end(stop_reason, error):
            await self.warden._arelease(step.id)

    @property
    def report(self) -> RunReport:
        """What the run did so far (children included), and why it stopped."""
        with self._lock:
            c = self.counters
            end = self.finished_at if self.finished_at is not None else self.warden.clock()
            reason = self.stop_reason or (self.stopped.cap if self.stopped else None)
            return RunReport(
                run_id=self.id,
                parent_run_id=self.parent.id if self.parent else None,
                agent=self.attribution.get("agent"),
                iterations=c.iterations,
                tool_calls=c.tool_calls,
                tool_calls_by_name=dict(c.tool_calls_by_name),
                input_tokens=c.input_tokens,
                output_tokens=c.output_tokens,
                cache_read_tokens=c.cache_read_tokens,
                cache_write_tokens=c.cache_write_tokens,
                cost_usd=round(c.cost_usd, 12),
                overshoot_usd=round(c.overshoot_usd, 12),
                retries=c.retries,
                errors=c.errors,
                wall_seconds=round(max(end - self.started_at, 0.0), 6),
                models=list(self._models),
                stop_reason=reason,
                partial=reason not in (None, "completed", "error"),
                success=self.success,
                children=[child.report for child in self.children],
            )

    def remaining(self) -> dict[str, float]:
        """What this run's own caps still allow (calls, tokens, dollars), for hints and people."""
        with self._lock:
            c, lim = self.counters, self.limits
            left: dict[str, float] = {}
            if lim.max_iterations is not None:
                left["model_calls"] = max(lim.max_iterations - c.iterations, 0)
            if lim.max_tool_calls is not None:
                left["tool_calls"] = max(lim.max_tool_calls - c.tool_calls, 0)
            if lim.max_cost_usd is not None:
                left["cost_usd"] = max(lim.max_cost_usd - c.cost_usd - c.reserved_usd, 0.0)
            if lim.max_input_tokens is not None:
                left["input_tokens"] = max(lim.max_input_tokens - c.input_tokens, 0)
            if lim.max_output_tokens is not None:
                left["output_tokens"] = max(lim.max_output_tokens - c.output_tokens, 0)
            return left

    # ================================================================== internals
    def _next_id(self) -> str:
        return f"{self.id}:{next(_ids)}"

    def _chain(self) -> list[Run]:
        runs: list[Run] = []
        node: Run | None = self
        while node is not None:
            runs.append(node)
            node = node.parent
        return runs

    def _cancel_targets(self) -> tuple[str, ...]:
        targets = [f"run={run.id}" for run in self._chain()]
        for scope in ("user", "workspace", "key", "agent", "thread", "workflow"):
            value = self.attribution.get(scope)
            if value is not None:
                targets.append(f"{scope}={value}")
        return tuple(targets)

    def _llm_request(
        self,
        model: str | None,
        messages: Any,
        max_tokens: int | None,
        input_tokens: int | None,
        tools: Sequence[Any] | None,
    ) -> tuple[str | None, int, int, int]:
        estimate = input_tokens if input_tokens is not None else estimate_message_tokens(messages)
        out = max_tokens if max_tokens is not None else self.policy.default_max_output_tokens
        return model, estimate, out, len(tools or ())

    def _buckets(self, now: float) -> tuple[BucketRef, ...]:
        policy = self.policy
        if not policy.budgets:
            return ()
        return tuple(
            matching_buckets(
                policy.budgets,
                self.attribution,
                run_id=self._root().id,
                now=now,
                timezone=policy.timezone,
                namespace=self.warden.namespace,
            )
        )

    def _root(self) -> Run:
        return self._chain()[-1]

    def _pressure(self) -> str | None:
        degrade = self.policy.thresholds.degrade
        for label, ratio in self._ratios.items():
            if ratio >= degrade:
                return f"{label} at {ratio:.0%}"
        return None

    def _llm_plans(
        self, model: str | None, est_in: int, max_out: int, tool_count: int
    ) -> list[_Plan]:
        """Plans to try in order: the routed model, then one tier down when routing allows."""
        now = self.warden.clock()
        with self._lock:
            routing = self.policy.routing
            if routing is not None and not self._routed:
                self._route = routes.start_state(
                    routing,
                    task_class=self.attribution.get("task_class"),
                    requested_model=model,
                    prompt_tokens=est_in,
                    tool_count=tool_count,
                    complexity=self.warden.complexity,
                )
                self._routed = True
            choices = self._route_choices(model)
        refs = self._buckets(now)
        retry = self.counters.last_llm_failed
        stop = self.policy.thresholds.stop
        plans = []
        for choice in choices:
            pricing_model = self.warden._pricing_model(choice.model, self)
            worst = self.warden.prices.worst_case_cost(pricing_model, est_in, max_out)
            charges = [ref.charge(llm_amount(ref, worst, est_in + max_out), stop) for ref in refs]
            plans.append(_Plan(self._next_id(), choice, worst, refs, retry, charges))
        return plans

    def _claim(self, plan: _Plan, request: tuple[str | None, int, int, int]) -> Refusal | None:
        """Check the run's own caps (and its parents') and count the call, atomically."""
        _, est_in, max_out, _ = request
        now = self.warden.clock()
        with self._lock:
            for run in self._chain():
                refusal = llm_refusal(
                    run.limits,
                    run.counters,
                    elapsed=now - run.started_at,
                    input_tokens=est_in,
                    max_output_tokens=max_out,
                    worst_cost=plan.worst_cost,
                )
                if refusal is not None:
                    return refusal
            self._count_llm(plan, est_in, max_out, +1)
            return None

    def _count_llm(self, plan: _Plan | Step, est_in: int, max_out: int, sign: int) -> None:
        worst = plan.worst_cost if isinstance(plan, _Plan) else plan.reserved_usd
        for run in self._chain():
            c = run.counters
            c.iterations += sign
            c.reserved_usd = max(c.reserved_usd + sign * worst, 0.0)
            c.reserved_input_tokens = max(c.reserved_input_tokens + sign * est_in, 0)
            c.reserved_output_tokens = max(c.reserved_output_tokens + sign * max_out, 0)
            if plan.retry:
                c.retries += sign

    def _unclaim(
        self, plan: _Plan, request: tuple[str | None, int, int, int], outcome: ReserveOutcome
    ) -> Refusal:
        _, est_in, max_out, _ = request
        with self._lock:
            self._count_llm(plan, est_in, max_out, -1)
        return self._ledger_refusal(outcome)

    def _first(self, refusal: Refusal | None) -> Refusal:
        assert refusal is not None, "a routing policy produced no model to try"
        return refusal

    def _hold_llm(
        self, plan: _Plan, outcome: ReserveOutcome, request: tuple[str | None, int, int, int]
    ) -> Step:
        model, est_in, max_out, _ = request
        with self._lock:
            self._update_ratios(outcome.states, plan.refs)
            step = Step(
                id=plan.id,
                model=plan.choice.model,
                requested_model=model,
                tier=plan.choice.tier,
                route_reason=plan.choice.reason,
                compress=self._pressure() is not None,
                max_tokens=max_out,
                input_tokens=est_in,
                reserved_usd=plan.worst_cost,
                started_at=self.warden.clock(),
                retry=plan.retry,
                buckets=plan.refs,
            )
            self._pending[step.id] = step
            return step

    def _route_choices(self, model: str | None) -> list[routes.RouteChoice]:
        routing = self.policy.routing
        if routing is None:
            return [routes.RouteChoice(model, None, "caller model (no routing policy)")]
        pressure = self._pressure()
        first = routes.choose(routing, self._route, requested_model=model, pressure=pressure)
        choices = [first]
        if routing.skip_unaffordable and not first.downgraded and first.tier is not None:
            lower = routes.choose(routing, self._route, requested_model=model, step_down=1)
            if lower.model != first.model:
                choices.append(lower)
        return choices

    def _ledger_refusal(self, outcome: ReserveOutcome) -> Refusal:
        if outcome.cancelled is not None:
            return Refusal("cancelled", 0, 0)
        state = outcome.refused
        assert state is not None
        return Refusal(
            self._label_of(state.key),
            state.limit,
            round(state.committed, 9),
            round(outcome.refused_amount, 9),
        )

    def _label_of(self, key: str) -> str:
        for ref in self._buckets(self.warden.clock()):
            if ref.key == key:
                return ref.label
        return key

    def _resets_at(self, cap: str) -> float | None:
        for ref in self._buckets(self.warden.clock()):
            if ref.label == cap:
                return ref.window.resets_at
        return None

    def _refuse(self, refusal: Refusal) -> BudgetError:
        """Record a refusal and build the exception that says so."""
        if refusal.tool_denied is not None:
            return ToolDenied(refusal.cap, refusal.tool_denied, self.report)
        exc = BudgetExceeded(
            refusal.cap,
            refusal.limit,
            refusal.used,
            None,
            resets_at=self._resets_at(refusal.cap) if refusal.cap.startswith("budget:") else None,
            requested=refusal.requested,
            run_id=self.id,
        )
        with self._lock:
            self.stopped = exc
        exc.report = self.report
        self.warden._emit_refusal(self, exc)
        return exc

    def _price_result(
        self, step: Step, usage: Usage | None, model: str | None, output_text: str | None
    ) -> tuple[Usage, str | None, float]:
        if usage is None:
            usage = Usage(
                input_tokens=step.input_tokens,
                output_tokens=estimate_tokens(output_text or ""),
                estimated=True,
            )
        real_model = model or step.model
        pricing_model = self.warden._pricing_model(real_model, self)
        return usage, real_model, self.warden.prices.cost(pricing_model, usage)

    def _llm_commit_charges(self, step: Step, usage: Usage, cost: float) -> list[Charge]:
        tokens = usage_tokens(usage)
        return [ref.charge(llm_amount(ref, cost, tokens)) for ref in step.buckets]

    def _record_llm(
        self,
        step: Step,
        usage: Usage,
        model: str | None,
        cost: float,
        states: tuple[BucketState, ...],
        latency_s: float | None,
        outcome: str,
        output_text: str | None,
        prompt_text: str | None,
    ) -> CostEvent:
        failed = outcome != "ok"
        overshoot = max(cost - step.reserved_usd, 0.0)
        with self._lock:
            self._pending.pop(step.id, None)
            step.done = True
            for run in self._chain():
                c = run.counters
                c.reserved_usd = max(c.reserved_usd - step.reserved_usd, 0.0)
                c.reserved_input_tokens = max(c.reserved_input_tokens - step.input_tokens, 0)
                c.reserved_output_tokens = max(c.reserved_output_tokens - step.max_tokens, 0)
                c.input_tokens += usage.input_tokens
                c.output_tokens += usage.output_tokens
                c.cache_read_tokens += usage.cache_read_tokens
                c.cache_write_tokens += usage.cache_write_tokens
                c.cost_usd += cost
                c.overshoot_usd += overshoot
                c.last_llm_failed = failed
                c.errors += int(failed)
                c.consecutive_errors = c.consecutive_errors + 1 if failed else 0
            if model and model not in self._models:
                self._models.append(model)
            if self.policy.routing is not None:
                self._route = routes.after_outcome(
                    self.policy.routing, self._route, outcome=outcome, model=step.model
                )
            self._update_ratios(states, step.buckets)
            alerts = self._crossings(states, step.buckets)
            ratios = dict(self._ratios)
        event = CostEvent.model_construct(
            None,
            **self._event_fields(),
            kind="llm",
            provider=_provider_of(model),
            model=model,
            tier=step.tier,
            route=f"tier {step.tier}: {step.model}" if step.tier is not None else step.model,
            route_reason=step.route_reason,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            estimated=usage.estimated,
            cost_usd=cost,
            reserved_usd=step.reserved_usd,
            overshoot_usd=overshoot,
            latency_s=latency_s,
            retries=self.counters.retries,
            retry=step.retry,
            outcome=outcome,
            validation=_validation_of(outcome),
            status="error" if failed else "ok",
            budget_ratios=ratios,
            success=None,
            prompt=prompt_text if self.policy.record_content else None,
            response=output_text if self.policy.record_content else None,
        )
        self.warden._emit_all([*alerts, event])
        return event

    def _event_fields(self) -> dict[str, Any]:
        return {"ts": self.warden.clock(), **self._event_base}

    def _update_ratios(self, states: Sequence[BucketState], refs: Sequence[BucketRef]) -> None:
        labels = {ref.key: ref for ref in refs}
        for state in states:
            ref = labels.get(state.key)
            if ref is not None and ref.limit > 0:
                self._ratios[ref.label] = state.committed / ref.limit
        for run in self._chain():
            for cap, used, limit in run._spend_caps():
                self._ratios[f"run:{cap}" if run is self else f"parent:{cap}"] = used / limit

    def _spend_caps(self) -> list[tuple[str, float, float]]:
        c, lim = self.counters, self.limits
        caps: list[tuple[str, float, float]] = []
        if lim.max_cost_usd:
            caps.append(("max_cost_usd", c.cost_usd, lim.max_cost_usd))
        if lim.max_input_tokens:
            caps.append(("max_input_tokens", c.input_tokens, lim.max_input_tokens))
        if lim.max_output_tokens:
            caps.append(("max_output_tokens", c.output_tokens, lim.max_output_tokens))
        return caps

    def _crossings(
        self, states: Sequence[BucketState], refs: Sequence[BucketRef]
    ) -> list[BudgetAlert]:
        """Alerts for every level this commit crossed, once per cap, level and window."""
        thresholds = self.policy.thresholds
        levels = sorted({*thresholds.alerts, thresholds.warn, thresholds.degrade, thresholds.stop})
        alerts: list[BudgetAlert] = []
        for cap, used, limit in self._spend_caps():
            for level in levels:
                if used >= level * limit and (cap, level) not in self._alerted:
                    self._alerted.add((cap, level))
                    alerts.append(self._alert(cap, level, used, limit, None))
        by_key = {ref.key: ref for ref in refs}
        for state in states:
            ref = by_key.get(state.key)
            if ref is None or ref.limit <= 0:
                continue
            for level in levels:
                if state.committed >= level * ref.limit and self.warden._first_crossing(ref, level):
                    alerts.append(
                        self._alert(
                            ref.label, level, state.committed, ref.limit, ref.window.resets_at
                        )
                    )
        return alerts

    def _alert(
        self, cap: str, level: float, used: float, limit: float, resets_at: float | None
    ) -> BudgetAlert:
        t = self.policy.thresholds
        action: Literal["alert", "warn", "degrade", "stop"] = (
            "stop"
            if level >= t.stop
            else "degrade"
            if level >= t.degrade
            else "warn"
            if level >= t.warn
            else "alert"
        )
        return BudgetAlert.model_construct(
            None,
            **self._event_fields(),
            cap=cap,
            level=level,
            action=action,
            ratio=used / limit,
            used=used,
            limit=limit,
            resets_at=resets_at,
        )

    # ------------------------------------------------------------------ tool internals
    def _plan_tool(self, name: str, args: Any, call_id: str | None) -> ToolStep:
        rules = self.policy.tools
        rule = tool_rule_refusal(rules, name)
        if rule is not None:
            raise self._refuse(replace(rule, cap=name))
        if name in rules.require_approval and not self.warden._approve(name, args, self):
            raise self._refuse(
                Refusal(name, 0, 0, tool_denied="it needs approval and none was given")
            )
        now = self.warden.clock()
        signature = tool_signature(name, args)
        price = rules.price_usd.get(name, 0.0)
        with self._lock:
            for run in self._chain():
                refusal = tool_refusal(
                    run.limits,
                    rules,
                    run.counters,
                    name=name,
                    signature=signature,
                    elapsed=now - run.started_at,
                    price=price,
                )
                if refusal is not None:
                    raise self._refuse(refusal)
            step = ToolStep(
                self._next_id(),
                name,
                call_id,
                signature,
                price,
                now,
                self._buckets(now) if price > 0 else (),
            )
            self._count_tool(step, +1)
            self._pending[step.id] = step
        return step

    def _count_tool(self, step: ToolStep, sign: int) -> None:
        for run in self._chain():
            c = run.counters
            c.tool_calls += sign
            c.tool_calls_by_name[step.name] = c.tool_calls_by_name.get(step.name, 0) + sign
            c.reserved_usd = max(c.reserved_usd + sign * step.price_usd, 0.0)
            if sign > 0:
                same = step.signature == c.last_tool_signature
                c.tool_streak = c.tool_streak + 1 if same else 1
                c.last_tool_signature = step.signature

    def _tool_charges(self, step: ToolStep) -> list[Charge]:
        return [ref.charge(step.price_usd) for ref in step.buckets if ref.budget.metric == "cost"]

    def _settle_tool(self, step: ToolStep, outcome: ReserveOutcome) -> ToolStep:
        if outcome.ok:
            return step
        with self._lock:
            self._pending.pop(step.id, None)
            self._count_tool(step, -1)
        raise self._refuse(self._ledger_refusal(outcome))

    def _tool_step(self, step: ToolStep | str) -> ToolStep:
        if isinstance(step, ToolStep):
            return step
        with self._lock:
            for pending in self._pending.values():
                if isinstance(pending, ToolStep) and pending.name == step:
                    return pending
        raise KeyError(
            f"no pending call of tool {step!r} in run {self.id}: pass the ToolStep "
            "that before_tool_call returned"
        )

    def _record_tool(
        self, step: ToolStep, ok: bool, latency_s: float | None, states: tuple[BucketState, ...]
    ) -> CostEvent:
        with self._lock:
            self._pending.pop(step.id, None)
            step.done = True
            for run in self._chain():
                c = run.counters
                c.reserved_usd = max(c.reserved_usd - step.price_usd, 0.0)
                c.cost_usd += step.price_usd
                c.errors += int(not ok)
                c.consecutive_errors = 0 if ok else c.consecutive_errors + 1
            self._update_ratios(states, step.buckets)
            alerts = self._crossings(states, step.buckets) if step.price_usd else []
            ratios = dict(self._ratios)
        event = CostEvent.model_construct(
            None,
            **self._event_fields(),
            kind="tool",
            tool=step.name,
            cost_usd=step.price_usd,
            reserved_usd=step.price_usd,
            latency_s=latency_s,
            outcome="ok" if ok else "error",
            status="ok" if ok else "error",
            budget_ratios=ratios,
        )
        self.warden._emit_all([*alerts, event])
        return event

    # ------------------------------------------------------------------ ending
    def _unhold(self, step: Step | ToolStep) -> bool:
        with self._lock:
            if step.done or self._pending.pop(step.id, None) is None:
                return False
            step.done = True
            if isinstance(step, ToolStep):
                self._count_tool(step, -1)
                return True
            self._count_llm(step, step.input_tokens, step.max_tokens, -1)
            return True

    def _end(self, stop_reason: str | None, error: BaseException | None) -> list[Step | ToolStep]:
        with self._lock:
            if self.finished_at is None:
                self.finished_at = self.warden.clock()
            if stop_reason is None:
                if isinstance(error, BudgetExceeded):
                    stop_reason = error.cap
                elif error is not None and not isinstance(error, BudgetError):
                    stop_reason = "error"
                elif self.stopped is not None:
                    stop_reason = self.stopped.cap
                else:
                    stop_reason = "completed"
            self.stop_reason = stop_reason
            leftovers = [s for s in self._pending.values() if not s.done]
            for step in leftovers:
                self._unhold_locked_for_end(step)
            return leftovers

    def _unhold_locked_for_end(self, step: Step | ToolStep) -> None:
        # A call still pending at the end never reported back: free what it holds.
        self._pending.pop(step.id, None)
        step.done = True
        for run in self._chain():
            c = run.counters
            if isinstance(step, ToolStep):
                c.reserved_usd = max(c.reserved_usd - step.price_usd, 0.0)
            else:
                c.reserved_usd = max(c.reserved_usd - step.reserved_usd, 0.0)
                c.reserved_input_tokens = max(c.reserved_input_tokens - step.input_tokens, 0)
                c.reserved_output_tokens = max(c.reserved_output_tokens - step.max_tokens, 0)


def _provider_of(model: str | None) -> str | None:
    if not model:
        return None
    if "/" in model:
        return model.split("/", 1)[0]
    for prefix, provider in (
        ("gpt", "openai"),
        ("o1", "openai"),
        ("o3", "openai"),
        ("o4", "openai"),
        ("claude", "anthropic"),
        ("gemini", "gemini"),
        ("mistral", "mistral"),
        ("command", "cohere"),
    ):
        if model.startswith(prefix):
            return provider
    return None


def _validation_of(outcome: str) -> str | None:
    if outcome in ("invalid_json", "validation_failed"):
        return "failed"
    return None
