"""The common case of the ``before_*`` and ``record_*`` calls, in one pass each.

What a guard costs an agent step is the Python it runs there (the benchmarks count its
bytecodes per step: every function call and attribute read counts). Most calls are plain:
no routing, no parent run, no final-answer or hint rules, no grant, nothing refused. For
those runs these methods make the same decisions as the general path (``RunCore``: plans,
attempts, waits, grants) with a fraction of the work, and hand over to it (by returning None
or False, having changed nothing) as soon as anything is not plain: a cap that would refuse,
a refused reservation, a trip the ledger must make, a banded price.
``tests/core/test_fast_path.py`` runs both paths side by side and compares everything.

Inside an agent these calls run with cold CPU caches (the framework ran in between), so
what matters is what they touch, and some Python is far dearer there than its bytecode
count says (callgrind, CPython 3.11, in a LangChain agent):

- a C function called with a keyword parses it with ``vgetargskeywords``: ``zip(...,
  strict=True)`` costs about ten times a plain ``zip``. The hot loops zip sequences that are
  built together (one item per bucket), so they use a plain ``zip``;
- a pydantic model's attribute read goes through ``__getattr__`` support and is never
  specialised: the policy figures these paths need are read once per run (or per
  ``Limits``, or per tool name), and a ``Usage`` is read through its ``__dict__`` (where
  pydantic keeps the fields) once per call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from .buckets import BucketRef
from .checks import tool_signature
from .ledger.base import LIMIT_SLACK, Charge, ReserveOutcome, new_charge
from .policy import Limits
from .run_calls import RunCalls
from .run_core import _ids
from .run_events import llm_event
from .steps import Step, ToolStep
from .usage import Usage

__all__ = ["FastPaths"]

_NO_ROUTING = "caller model (no routing policy)"
#: Run-cap figures the fast paths check, in this order (None: no such cap).
LlmCaps = tuple[
    float | None, int | None, int | None, int | None, int | None, int | None, float | None
]
ToolCaps = tuple[float | None, int | None, int | None, int | None]
#: The Limits object read, then each spend cap (0: none) and its lowest alert bar.
CapBars = tuple[Limits, float, float, int, float, int, float]
#: A tool name under the policy's tool rules: free and unrestricted, and its own call cap.
ToolRule = tuple[bool, int | None]
#: A claimed model call: id, model, input estimate, max output, worst cost, buckets, retry,
#: charges, and the same as plain amounts for the in-process ledger (else None).
LlmClaim = tuple[
    str,
    str | None,
    int,
    int,
    float,
    tuple[BucketRef, ...],
    bool,
    Sequence[Charge],
    list[float] | None,
]
#: A claimed tool call, and the repeat streak before it (restored if it is refused).
ToolClaim = tuple[ToolStep, tuple[int, str | None, str | None]]


def _plain_step(
    rid: str,
    model: str | None,
    pressed: bool,
    max_out: int,
    est_in: int,
    worst: float,
    now: float,
    retry: bool,
    refs: tuple[BucketRef, ...],
) -> Step:
    """The Step of a plain run's model call: the caller's model, no routing, no final-answer
    or hint rule; ``pressed``: a cap or budget is at the degrade level (compress)."""
    return Step(
        rid,
        model,
        model,
        None,
        _NO_ROUTING,
        pressed,
        max_out,
        est_in,
        worst,
        now,
        retry,
        buckets=refs,
    )


class FastPaths(RunCalls):
    """One-pass ``before`` steps for plain runs (see the module docstring)."""

    __slots__ = ()

    def _plain(self) -> bool:
        """A run the fast paths can serve: no routing, no parent, no final-answer or hint
        rules, no grant to add to its budgets (kept in ``_fast_ok``; a grant clears it)."""
        policy = self.policy
        return (
            policy.routing is None
            and self.parent is None
            and not self.limits.final_answer
            and not policy.budget_hints
            and not self._extras
        )

    def _llm_caps(self) -> LlmCaps:
        """This run's model-call caps, read once per ``Limits`` object (a grant replaces it)."""
        cached = self._fast_llm_caps
        if cached is not None and cached[0] is self.limits:
            return cast(LlmCaps, cached[1])
        lim, held = self.limits, self._held_limits()
        caps: LlmCaps = (
            lim.max_wall_seconds,
            lim.max_consecutive_errors,
            lim.max_iterations,
            lim.max_retries,
            held.max_input_tokens,
            held.max_output_tokens,
            held.max_cost_usd,
        )
        self._fast_llm_caps = (lim, caps)
        return caps

    def _tool_caps(self) -> ToolCaps:
        """This run's tool-call caps, read once per ``Limits`` object."""
        cached = self._fast_tool_caps
        if cached is not None and cached[0] is self.limits:
            return cast(ToolCaps, cached[1])
        lim = self.limits
        caps: ToolCaps = (
            lim.max_wall_seconds,
            lim.max_consecutive_errors,
            lim.max_tool_calls,
            lim.max_repeated_tool_calls,
        )
        self._fast_tool_caps = (lim, caps)
        return caps

    def _rates(self, model: str | None) -> tuple[float, float] | None:
        """Worst-case USD per input and output token of ``model`` (None: banded prices)."""
        rates = self._fast_rates.get(model)
        if rates is None:
            warden = self.warden
            model_priced = warden._pricing_model(model, self)
            rates = warden.prices.worst_case_rates(model_priced, self._service_tier)
            if rates is not None:
                self._fast_rates[model] = rates
        return rates

    def _llm_call(
        self, model: str | None, max_tokens: int | None, est_in: int
    ) -> tuple[int, int, float, float, tuple[BucketRef, ...], bool] | None:
        """A plain run's next model call (``est_in``: its prompt's tokens) as the fast paths
        see it: input estimate, output limit, worst cost, time, current buckets, and whether
        it retries a failed call. None: a banded price (the general path prices it)."""
        rates = self._fast_rates.get(model) or self._rates(model)
        if rates is None:
            return None
        max_out = max_tokens if max_tokens is not None else self._default_max_out
        now = self.warden.clock()
        since, until, refs = self._bucket_cache
        if not since <= now < until:
            refs = self._buckets(now)
        worst = est_in * rates[0] + max_out * rates[1]
        if self._searches:
            worst += self._search_hold(model)
        return est_in, max_out, worst, now, refs, self.counters.last_llm_failed

    def _caps_refuse(
        self, est_in: int, max_out: int, worst: float, now: float, retry: bool
    ) -> bool:
        """Whether one of the run's own caps refuses this model call (under the run's lock;
        the general path then says which, and may wait or ask)."""
        cached = self._fast_llm_caps
        if cached is not None and cached[0] is self.limits:
            caps: LlmCaps = cached[1]
        else:
            caps = self._llm_caps()
        wall, errors, iterations, retries, cap_in, cap_out, cap_cost = caps
        c = self.counters
        return (
            (wall is not None and now - self.started_at >= wall)
            or (errors is not None and c.consecutive_errors >= errors)
            or (iterations is not None and c.iterations >= iterations)
            or (retries is not None and retry and c.retries >= retries)
            or (cap_in is not None and c.input_tokens + c.reserved_input_tokens + est_in > cap_in)
            or (
                cap_out is not None
                and c.output_tokens + c.reserved_output_tokens + max_out > cap_out
            )
            or (
                cap_cost is not None
                and c.cost_usd + c.reserved_usd + worst > cap_cost + LIMIT_SLACK
            )
        )

    def _local_llm_step(
        self, model: str | None, max_tokens: int | None, est_in: int
    ) -> Step | None:
        """``before_llm_call`` for a plain run whose budgets are held in the in-process
        ledger or in an open pool, or that has no budgets, in one pass and one lock: check,
        reserve, count. None: take the other paths (nothing was changed), which go to the
        ledger or say why a cap or budget refuses."""
        call = self._llm_call(model, max_tokens, est_in)
        if call is None:
            return None
        est_in, max_out, worst, now, refs, retry = call
        c = self.counters
        with self._lock:
            if self._caps_refuse(est_in, max_out, worst, now, retry):
                return None
            rid = f"{self._rid_prefix}{next(_ids)}"
            keys, held, ends, _, pairs = self._bucket_plan
            amounts = self._amounts_of(worst, float(est_in + max_out))
            local = self._local
            committed: list[float] | ReserveOutcome | None
            if local is not None:
                committed = local.reserve_amounts(
                    rid,
                    keys,
                    amounts,
                    held,
                    ends,
                    now=now,
                    lease_until=now + self._lease_seconds,
                    watch=self._watch,
                )
            elif self._has_budgets:
                committed = self.warden._serve_pooled_now(rid, pairs, keys, amounts, self._watch)
            else:  # nothing to hold: only the cancel check, when it needs no one
                committed = [] if self._nothing_cancelled() else None
            if type(committed) is not list:
                return None  # refused, cancelled or a trip to the ledger: the general path
            c.hold_llm(worst, est_in, max_out, retry)
            ratios = self._ratios
            for ref, spent in zip(refs, committed):  # noqa: B905 (one per bucket)
                if ref.limit > 0:
                    ratios[ref.label] = spent / ref.limit
            pressed = (
                bool(ratios)
                and max(ratios.values()) >= self._degrade_at
                and self._compress_pays(model, False)
            )
            step = _plain_step(rid, model, pressed, max_out, est_in, worst, now, retry, refs)
            self._pending[rid] = step
        return step

    def _local_step(self, step: Step) -> bool:
        """A pending step of a plain run on its current buckets, held in the in-process
        ledger or in a pool, or of a plain run without budgets."""
        return (
            self._one_pass
            and step.buckets is self._bucket_cache[2]
            and self._fast_ok
            and self._pending.get(step.id) is step  # open, and this run's
            and (
                self._local is not None
                or not self._has_budgets
                or self.warden._pools.holds(step.id)
            )
        )

    def _nothing_cancelled(self) -> bool:
        """Whether a cancel check of this run would find nothing without asking anyone: on
        the in-process ledger while nothing is cancelled in this process, on a shared one
        between polls (``_between_polls``)."""
        ledger = self._in_process
        if ledger is not None:
            return not ledger._cancels
        return self.warden._between_polls(self._watch)

    def _local_llm_record(
        self,
        step: Step,
        usage: Usage,
        model: str | None,
        latency_s: float | None,
        outcome: str,
        output_text: str | None,
        prompt_text: str | None,
    ) -> None:
        """``record_llm_call`` of a step ``_local_llm_step`` made, while its buckets are the
        current ones: commit, count, and (only when something is near a threshold, or a sink
        wants the CostEvent) the alerts and the event."""
        real_model = model or step.model
        bill = self._bills.get(real_model)
        cost = bill(usage) if bill is not None else self._price_result(step, usage, model, None)[2]
        keys, _, ends, _, _ = self._bucket_plan
        fields = usage.__dict__
        tokens = float(fields["input_tokens"] + fields["output_tokens"])
        failed = outcome != "ok"
        worst = step.reserved_usd
        amounts = self._amounts_of(cost, tokens)
        with self._lock:
            local = self._local
            if local is not None:
                committed = local.commit_amounts(
                    step.id, keys, amounts, ends, now=self.warden.clock()
                )
            elif keys:
                committed = self.warden._finish_pooled(step.id, keys, amounts)
            else:  # no budgets: nothing to commit
                committed = []
            self._pending.pop(step.id, None)
            step.done = step.recorded = True
            c = self.counters
            c.settle_llm((worst, step.input_tokens, step.max_tokens), usage, cost, failed)
            if fields["output_tokens"] > self._default_max_out:  # as _learn_output, inline
                self._default_max_out = fields["output_tokens"]
            gap = step.prompt_gap  # as _learn_prompt, inline (no final answer on plain runs)
            if (
                gap is not None
                and fields["input_tokens"]
                and not (step.compress or fields["estimated"])
            ):
                missed = fields["input_tokens"] - step.input_tokens + gap
                self._prompt_gap = missed if missed > 0 else 0
            if (
                fields["service_tier"] != self._service_tier
                or self._searches != fields["web_search_requests"]
            ):  # as _learn_bill
                self._learn_bill(usage)
            if real_model and real_model not in self._models:
                self._models.append(real_model)
            if self._near_alert(committed):
                alerts = self._after_commit(committed, step.buckets)
            else:
                alerts = []
            if self._wants_cost:
                record = self.policy.record_content
                alerts.append(
                    llm_event(
                        self._event_base,
                        self.warden.clock(),
                        step,
                        usage,
                        real_model,
                        cost,
                        latency_s=latency_s,
                        outcome=outcome,
                        retries=c.retries,
                        ratios=dict(self._ratios),
                        prompt=prompt_text if record else None,
                        response=output_text if record else None,
                    )
                )
        if alerts:
            self.warden._emit_all(alerts)

    def _near_alert(self, committed: list[float]) -> bool:
        """Refresh the pressure ratios after a commit of the cached buckets (``committed``,
        their spend) by a plain run; True when a budget or a spend cap reached the lowest
        alert level (``_after_commit`` then says which alerts that crosses)."""
        ratios, near = self._ratios, False
        for (label, limit, bar), spent in zip(self._bucket_bars, committed):  # noqa: B905
            if limit > 0:
                ratios[label] = spent / limit
                if spent >= bar:
                    near = True
        c, bars = self.counters, self._cap_bars
        if bars is None or bars[0] is not self.limits:
            bars = self._read_cap_bars()
        _, cap_cost, bar_cost, cap_in, bar_in, cap_out, bar_out = bars
        if cap_cost:
            ratios["run:max_cost_usd"] = c.cost_usd / cap_cost
            near = near or c.cost_usd >= bar_cost
        if cap_in:
            ratios["run:max_input_tokens"] = c.input_tokens / cap_in
            near = near or c.input_tokens >= bar_in
        if cap_out:
            ratios["run:max_output_tokens"] = c.output_tokens / cap_out
            near = near or c.output_tokens >= bar_out
        return near

    def _read_cap_bars(self) -> CapBars:
        """The spend caps of the run's ``Limits`` (0: none) and their lowest alert bars,
        read once per ``Limits`` object (a grant replaces it)."""
        lim = self.limits
        cost, tokens_in, tokens_out = (
            lim.max_cost_usd or 0.0,
            lim.max_input_tokens or 0,
            lim.max_output_tokens or 0,
        )
        bars: CapBars = (
            lim,
            cost,
            self._bar(cost),
            tokens_in,
            self._bar(tokens_in),
            tokens_out,
            self._bar(tokens_out),
        )
        self._cap_bars = bars
        return bars

    def _quick_llm_claim(
        self, model: str | None, max_tokens: int | None, est_in: int
    ) -> LlmClaim | None:
        """The checks and counts of ``before_llm_call`` for a plain run, before its ledger
        reservation; None: take the general path (nothing was changed)."""
        if not self._fast_ok:
            return None
        call = self._llm_call(model, max_tokens, est_in)
        if call is None:
            return None
        est_in, max_out, worst, now, refs, retry = call
        warden, c = self.warden, self.counters
        with self._lock:
            if self._caps_refuse(est_in, max_out, worst, now, retry):
                return None  # a cap refuses: the general path says which, and may wait or ask
            c.hold_llm(worst, est_in, max_out, retry)
        charges: Sequence[Charge] = ()
        amounts: list[float] | None = None
        if refs and (warden._in_process or warden._pools.enabled):  # as plain amounts
            amounts = self._amounts_of(worst, float(est_in + max_out))
        elif refs:
            charges = self._charges(refs, worst, est_in + max_out)
        return (self._next_id(), model, est_in, max_out, worst, refs, retry, charges, amounts)

    def _quick_llm_reserve(self, claim: LlmClaim) -> ReserveOutcome | list[float]:
        """The claimed call's reservation: through the warden, or (in-process ledger) as
        plain amounts, answered by each bucket's committed spend."""
        warden, amounts = self.warden, claim[8]
        if amounts is None:
            return warden._reserve(claim[7], claim[0], self._watch)
        if warden._in_process:
            return warden._reserve_amounts(claim[0], self._bucket_plan, amounts, self._watch)
        served = warden._serve_pooled(claim[0], self._bucket_plan, amounts, self._watch)
        if served is not None:
            return served
        return warden._reserve(self._amount_charges(amounts), claim[0], self._watch)

    async def _quick_llm_areserve(self, claim: LlmClaim) -> ReserveOutcome | list[float]:
        """Async twin of ``_quick_llm_reserve`` (ledger trips are awaited)."""
        warden, amounts = self.warden, claim[8]
        if amounts is None:
            return await warden._areserve(claim[7], claim[0], self._watch)
        if warden._in_process:
            return warden._reserve_amounts(claim[0], self._bucket_plan, amounts, self._watch)
        served = await warden._aserve_pooled(claim[0], self._bucket_plan, amounts, self._watch)
        if served is not None:
            return served
        return await warden._areserve(self._amount_charges(amounts), claim[0], self._watch)

    def _amount_charges(self, amounts: Sequence[float]) -> list[Charge]:
        """The charges of plain amounts on the cached buckets (for a trip to the ledger)."""
        keys, held, ends, _, _ = self._bucket_plan
        return [
            new_charge(key, amount, limit, end)
            for key, amount, limit, end in zip(keys, amounts, held, ends, strict=True)
        ]

    def _quick_llm_hold(
        self, claim: LlmClaim, outcome: ReserveOutcome | list[float]
    ) -> Step | None:
        """The Step of a claimed call the ledger reserved; None (uncounted) if it refused."""
        rid, model, est_in, max_out, worst, refs, retry, _, _ = claim
        with self._lock:
            if isinstance(outcome, list):  # granted: the buckets' committed spend
                self._committed_ratios(refs, outcome)
            elif not outcome.ok:
                self._count_llm(worst, retry, est_in, max_out, -1)
                return None
            elif outcome.states:
                self._bucket_ratios(outcome.states, refs)
            pressed = self._pressure() is not None and self._compress_pays(model, False)
            now = self.warden.clock()
            step = _plain_step(rid, model, pressed, max_out, est_in, worst, now, retry, refs)
            self._pending[rid] = step
        return step

    def _quick_tool_claim(self, name: str, args: Any, call_id: str | None) -> ToolClaim | None:
        """The checks and counts of ``before_tool_call`` for a free, unrestricted tool of a
        plain run, before its cancel check; None: take the general path (tool rules, a
        price, a refusal)."""
        if not self._fast_ok or self.final_cap is not None:
            return None
        rule = self._free_tools.get(name) or self._tool_rule(name)
        if not rule[0]:
            return None
        per_tool = rule[1]
        cached = self._fast_tool_caps
        if cached is not None and cached[0] is self.limits:
            caps: ToolCaps = cached[1]
        else:
            caps = self._tool_caps()
        wall, errors, tool_calls, repeat = caps
        signature = tool_signature(name, args) if repeat is not None else name
        warden, c = self.warden, self.counters
        now = warden.clock()
        with self._lock:
            used = c.tool_calls_by_name.get(name, 0)
            streak = (c.tool_streak, c.last_tool_signature, c.last_tool_call_id)
            same = signature == streak[1]
            if (
                (c.tool_error_streak and call_id == streak[2])  # a retry: the general path
                or (wall is not None and now - self.started_at >= wall)
                or (errors is not None and c.consecutive_errors >= errors)
                or (tool_calls is not None and c.tool_calls >= tool_calls)
                or (per_tool is not None and used >= per_tool)
                or (repeat is not None and same and c.tool_streak >= repeat)
            ):
                return None
            step = ToolStep(f"{self._rid_prefix}{next(_ids)}", name, call_id, signature, 0.0, now)
            c.tool_calls += 1
            c.tool_calls_by_name[name] = used + 1
            c.tool_streak = c.tool_streak + 1 if same else 1
            c.last_tool_signature = signature
            c.last_tool_call_id = call_id
            self._pending[step.id] = step
        return step, streak

    def _tool_rule(self, name: str) -> ToolRule:
        """Whether the policy's tool rules leave ``name`` free and unrestricted (no price,
        deny, approval, or allow list without it), and its own call cap; read once per name."""
        rules = self.policy.tools
        free = not (
            name in rules.price_usd
            or name in rules.deny
            or name in rules.require_approval
            or (rules.allow is not None and name not in rules.allow)
        )
        rule: ToolRule = (free, rules.max_calls.get(name) if rules.max_calls else None)
        self._free_tools[name] = rule
        return rule

    def _local_tool_step(self, name: str, args: Any, call_id: str | None) -> ToolStep | None:
        """``before_tool_call`` of a free tool in a plain run when its cancel check would
        find nothing without asking anyone: on the in-process ledger while nothing is
        cancelled in this process, on a shared one between polls (``_between_polls``)."""
        if not self._nothing_cancelled():
            return None
        claim = self._quick_tool_claim(name, args, call_id)
        return claim[0] if claim is not None else None

    def _local_tool_record(self, step: ToolStep | str, ok: bool) -> bool:
        """``record_tool_call`` of a free tool's pending step in a plain run when no sink
        wants the CostEvent: count its outcome. False: nothing done (take the general path)."""
        if (
            type(step) is not ToolStep
            or step.price_usd
            or step.done
            or not self._fast_ok
            or self._wants_cost
        ):
            return False
        with self._lock:
            if self._pending.get(step.id) is not step:
                return False  # another run's step: the general path says so
            del self._pending[step.id]
            step.done = step.recorded = True
            self.counters.count_tool_result(ok)
        return True

    def _quick_tool_checked(self, claim: ToolClaim, outcome: ReserveOutcome) -> ToolStep | None:
        """The claimed tool step if its run was not cancelled; None (uncounted) if it was."""
        step, streak = claim
        if outcome.ok:
            return step
        with self._lock:
            self._pending.pop(step.id, None)
            self._count_tool(step, -1)
            c = self.counters
            # the general path counts it again
            c.tool_streak, c.last_tool_signature, c.last_tool_call_id = streak
        return None
