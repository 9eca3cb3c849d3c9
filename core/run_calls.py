"""A run's model and tool calls, step by step on the general path: plan (route, reserve),
hold, commit the real usage, record the event, release what a failed call held."""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any

from . import routing as routes
from .checks import (
    Refusal,
    llm_refusal,
    retries_tool_call,
    tool_refusal,
    tool_rule_refusal,
    tool_signature,
)
from .events import CostEvent, RunFinished, trusted
from .ledger.base import BucketState, Charge, ReserveOutcome
from .run_core import Committed, Request
from .run_events import llm_event, tool_event
from .run_limits import RunLimits
from .steps import Plan, Step, ToolStep
from .usage import Usage

__all__ = ["RunCalls"]


@functools.lru_cache(maxsize=256)
def _caller_choice(model: str | None) -> routes.RouteChoice:
    """The route of a call without a routing policy: the caller's own model."""
    return routes.RouteChoice(model, None, "caller model (no routing policy)")


@functools.lru_cache(maxsize=256)
def _fixed_choice(model: str | None) -> routes.RouteChoice:
    """The route of a call whose caller cannot switch models (``route=False``)."""
    return routes.RouteChoice(model, None, "caller model (the caller cannot switch models)")


class RunCalls(RunLimits):
    """The layer of ``Run`` that plans, holds, commits and records each call (the fast paths
    in ``run_fast`` take the common cases in one pass)."""

    __slots__ = ()

    def _llm_plans(self, request: Request, route: bool = True) -> list[Plan]:
        """Plans to try in order: the routed model, then one tier down when routing allows
        (``route=False``: the caller's model only, see ``before_llm_call``)."""
        _, est_in, max_out, _ = request
        with self._lock:
            choices = self._choices(request, route)
        refs = self._buckets(self.warden.clock())
        retry = self.counters.last_llm_failed
        warden = self.warden
        plans = []
        for choice in choices:
            worst = warden.prices.worst_case_cost(
                warden._pricing_model(choice.model, self), est_in, max_out, self._service_tier
            )
            if self._searches:
                worst += self._search_hold(choice.model)
            charges = self._charges(refs, worst, est_in + max_out) if refs else []
            plans.append(Plan(self._next_id(), choice, worst, refs, retry, charges))
        return plans

    def _choices(self, request: Request, route: bool) -> list[routes.RouteChoice]:
        """The models a call may go to, in order (routing starts at the run's first routed
        call: its task class, prompt and tools pick the starting tier)."""
        model, est_in, _, tool_count = request
        routing = self.policy.routing
        if routing is not None and not route:
            return [_fixed_choice(model)]
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
        return self._route_choices(model)

    def _route_choices(self, model: str | None) -> list[routes.RouteChoice]:
        routing = self.policy.routing
        if routing is None:
            return [_caller_choice(model)]
        first = routes.choose(
            routing, self._route, requested_model=model, pressure=self._pressure()
        )
        choices = [first]
        if not routing.skip_unaffordable or first.downgraded:
            return choices
        if first.fallback:
            lower = routes.back_from_fallback(
                routing, self._route, requested_model=model, fallback=first.model
            )
        elif first.tier is not None:
            lower = routes.choose(routing, self._route, requested_model=model, step_down=1)
        else:
            return choices
        if lower.model != first.model:
            choices.append(lower)
        return choices

    def _claim(self, plan: Plan, request: Request) -> Refusal | None:
        """Check the run's own caps (and its parents') and count the call, atomically."""
        _, est_in, max_out, _ = request
        now = self.warden.clock()
        with self._lock:
            for depth, run in enumerate(self._lineage):
                refusal = llm_refusal(
                    run._held_limits(),
                    run.counters,
                    elapsed=now - run.started_at,
                    input_tokens=est_in,
                    max_output_tokens=max_out,
                    worst_cost=plan.worst_cost,
                )
                if refusal is not None:
                    return replace(refusal, depth=depth) if depth else refusal
            self._count_llm(plan.worst_cost, plan.retry, est_in, max_out, +1)
            return None

    def _unclaim(self, plan: Plan, request: Request, outcome: ReserveOutcome) -> Refusal:
        self._uncount(plan, request)
        return self._ledger_refusal(outcome)

    def _uncount(self, plan: Plan, request: Request) -> None:
        _, est_in, max_out, _ = request
        with self._lock:
            self._count_llm(plan.worst_cost, plan.retry, est_in, max_out, -1)

    def _routed_blind(self, plan: Plan, outcome: ReserveOutcome, request: Request) -> bool:
        """Whether a routed call was granted on a tier that the budgets' real spend, which
        its reservation just showed, would have moved one tier down: the run's first call
        knows no spend yet, and other runs spend meanwhile. The caller then releases the
        reservation and plans the call again (once: the next plan is downgraded)."""
        routing, choice = self.policy.routing, plan.choice
        if (
            routing is None
            or not routing.downgrade_on_pressure
            or choice.downgraded
            or choice.tier is None
            or not outcome.states
        ):
            return False
        with self._lock:
            if self._pressure() is not None:
                return False  # it was routed knowing the pressure
            self._bucket_ratios(outcome.states, plan.refs)
            pressure = self._pressure()
            if pressure is None:
                return False
            lower = routes.choose(
                routing, self._route, requested_model=request[0], pressure=pressure
            )
            return lower.model != choice.model

    def _hold_llm(self, plan: Plan, outcome: ReserveOutcome, request: Request) -> Step:
        model, est_in, max_out, _ = request
        with self._lock:
            self._bucket_ratios(outcome.states, plan.refs)
            final = self._final_cap(plan, outcome, est_in, max_out)
            step = Step(
                id=plan.id,
                model=plan.choice.model,
                requested_model=model,
                tier=plan.choice.tier,
                route_reason=plan.choice.reason,
                compress=self._pressure() is not None
                and self._compress_pays(plan.choice.model, plan.choice.downgraded),
                max_tokens=max_out,
                input_tokens=est_in,
                reserved_usd=plan.worst_cost,
                started_at=self.warden.clock(),
                retry=plan.retry,
                final=final is not None,
                final_cap=final,
                hint=self._hint(),
                buckets=plan.refs,
            )
            if final is not None:
                self.final_cap = final
            self._pending[step.id] = step
            return step

    def _commit_llm(self, step: Step, usage: Usage, cost: float) -> Committed:
        """Commit a model call's real amounts: plain amounts to the in-process ledger when
        the step's buckets are the current ones, else charges through the warden."""
        refs, warden = step.buckets, self.warden
        if refs and refs is self._bucket_cache[2]:
            direct = warden._in_process
            if direct or warden._pools.holds(step.id):
                keys, _, ends, _, _ = self._bucket_plan
                amounts = self._amounts_of(cost, float(usage.input_tokens + usage.output_tokens))
                if direct:
                    return warden._commit_amounts(step.id, keys, amounts, ends)
                return warden._finish_pooled(step.id, keys, amounts)
        return warden._commit(step.id, self._llm_commit_charges(step, usage, cost))

    async def _acommit_llm(self, step: Step, usage: Usage, cost: float) -> Committed:
        """Async twin of ``_commit_llm``."""
        warden = self.warden
        if step.buckets and (warden._in_process or warden._pools.holds(step.id)):
            return self._commit_llm(step, usage, cost)  # nothing to await
        return await self.warden._acommit(step.id, self._llm_commit_charges(step, usage, cost))

    def _llm_commit_charges(self, step: Step, usage: Usage, cost: float) -> list[Charge]:
        """The real amounts of a model call against the buckets it reserved on."""
        if not step.buckets:
            return []
        tokens = usage.input_tokens + usage.output_tokens
        return self._charges(step.buckets, cost, tokens, held=False)

    def _record_llm(
        self,
        step: Step,
        usage: Usage,
        model: str | None,
        cost: float,
        states: Committed,
        latency_s: float | None,
        outcome: str,
        output_text: str | None,
        prompt_text: str | None,
        want: bool = True,
    ) -> CostEvent | None:
        """Count a finished model call and emit its events; its CostEvent, built only when
        the caller (``want``) or a sink wants it."""
        failed = outcome != "ok"
        held = (step.reserved_usd, step.input_tokens, step.max_tokens)
        with self._lock:
            self._pending.pop(step.id, None)  # the reservation is settled: drop its hold
            step.done = step.recorded = True
            for run in self._lineage:
                run.counters.settle_llm(held, usage, cost, failed)
            self._learn_output(usage.output_tokens)
            self._learn_prompt(step, usage)
            self._learn_bill(usage)
            if model and model not in self._models:
                self._models.append(model)
            if self.policy.routing is not None:
                self._route = routes.after_outcome(
                    self.policy.routing, self._route, outcome=outcome, model=step.model
                )
            alerts = self._after_commit(states, step.buckets)
            wanted = self._wants_cost  # by a sink: then it is emitted too
            if not want and not wanted:
                event = None
            else:
                record = self.policy.record_content
                event = llm_event(
                    self._event_base,
                    self.warden.clock(),
                    step,
                    usage,
                    model,
                    cost,
                    latency_s=latency_s,
                    outcome=outcome,
                    retries=self.counters.retries,
                    ratios=dict(self._ratios),
                    prompt=prompt_text if record else None,
                    response=output_text if record else None,
                )
                if wanted:
                    alerts.append(event)
        if alerts:
            self.warden._emit_all(alerts)
        return event

    def _plan_tool(self, name: str, args: Any, call_id: str | None) -> ToolStep | Refusal:
        """A counted ToolStep, or the cap that refuses it; tool rules raise ToolDenied."""
        rules = self.policy.tools
        rule = tool_rule_refusal(rules, name)
        if rule is not None:
            raise self._refuse(replace(rule, cap=name))
        if name in rules.require_approval and not self.warden._approve(name, args, self):
            raise self._refuse(
                Refusal(name, 0, 0, tool_denied="it needs approval and none was given")
            )
        if self.final_cap is not None:  # the final-answer call was made: no tools after it
            return self._after_final_refusal()
        now = self.warden.clock()
        watched = any(run.limits.max_repeated_tool_calls is not None for run in self._lineage)
        signature = tool_signature(name, args) if watched else name  # only a repeat cap looks
        price = rules.price_usd.get(name, 0.0)
        with self._lock:
            retry = retries_tool_call(self.counters, call_id)
            for depth, run in enumerate(self._lineage):
                refusal = tool_refusal(
                    run._held_limits(),
                    rules,
                    run.counters,
                    name=name,
                    signature=signature,
                    elapsed=now - run.started_at,
                    price=price,
                    retry=retry,
                )
                if refusal is not None:
                    return replace(refusal, depth=depth) if depth else refusal
            step = ToolStep(
                self._next_id(),
                name,
                call_id,
                signature,
                price,
                now,
                self._buckets(now) if price > 0 else (),
                retry=retry,
            )
            self._count_tool(step, +1)
            self._pending[step.id] = step
        return step

    def _unplan_tool(self, step: ToolStep, outcome: ReserveOutcome) -> Refusal:
        with self._lock:
            self._pending.pop(step.id, None)
            self._count_tool(step, -1)
        return self._ledger_refusal(outcome)

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

    def _tool_charges(self, step: ToolStep) -> list[Charge]:
        """A priced tool call's dollars against the run's dollar budgets."""
        refs = [ref for ref in step.buckets if ref.metric == "cost"]
        return self._charges(refs, step.price_usd, 0) if refs else []

    def _record_tool(
        self,
        step: ToolStep,
        ok: bool,
        latency_s: float | None,
        states: tuple[BucketState, ...],
        want: bool = True,
    ) -> CostEvent | None:
        """Count a finished tool call and emit its events (see ``_record_llm``)."""
        with self._lock:
            self._drop_hold(step)
            step.recorded = True
            for run in self._lineage:
                c = run.counters
                c.cost_usd += step.price_usd
                c.count_tool_result(ok)
            alerts = self._after_commit(states, step.buckets) if step.price_usd else []
            event, wanted = None, self._wants_cost
            if want or wanted:
                event = tool_event(
                    self._event_base,
                    self.warden.clock(),
                    step,
                    ok=ok,
                    latency_s=latency_s,
                    ratios=dict(self._ratios),
                )
                if wanted:
                    alerts.append(event)
        if alerts:
            self.warden._emit_all(alerts)
        return event

    def _unhold(self, step: Step | ToolStep) -> bool:
        with self._lock:
            if step.done or self._pending.pop(step.id, None) is None:
                return False
            step.done = True
            if isinstance(step, ToolStep):
                self._count_tool(step, -1)
            else:
                self._count_llm(
                    step.reserved_usd, step.retry, step.input_tokens, step.max_tokens, -1
                )
            return True

    def _end(
        self, stop_reason: str | None, error: BaseException | None, success: bool | None
    ) -> tuple[list[Step | ToolStep], bool]:
        """Mark the run ended; the calls it still holds, and whether this is its first end."""
        with self._lock:
            first = self.finished_at is None
            if first:
                self.finished_at = self.warden.clock()
            self.stop_reason = stop_reason or self._stop_reason_for(error)
            if success is not None:
                self.success = success
            leftovers = [s for s in self._pending.values() if not s.done]
            for step in leftovers:  # calls that never reported back: free what they hold
                self._drop_hold(step)
            return leftovers, first

    def _emit_finished(self, first: bool) -> None:
        """One ``RunFinished`` event per run, at its first end (built only if a sink wants
        it: the structlog sink logs it at debug level)."""
        if not first or not self.warden._wants(RunFinished):
            return
        with self._lock:
            c = self.counters
            end = self.finished_at if self.finished_at is not None else self.warden.clock()
            reason = self.stop_reason or (self.stopped.cap if self.stopped else None)
            fields = dict(
                self._event_fields(),
                stop_reason=reason,
                partial=reason not in (None, "completed", "error"),
                success=self.success,
                iterations=c.iterations,
                tool_calls=c.tool_calls,
                input_tokens=c.input_tokens,
                output_tokens=c.output_tokens,
                cost_usd=round(c.cost_usd, 12),
                wall_seconds=round(max(end - self.started_at, 0.0), 6),
            )  # the figures of ``self.report``, without building it
        self.warden._emit_all([trusted(RunFinished, fields)])

    def _held_in_ledger(self, step: Step | ToolStep) -> bool:
        """True when the step's reservation holds something in the ledger to release."""
        if isinstance(step, ToolStep):
            return bool(self._tool_charges(step))
        return bool(step.buckets)
