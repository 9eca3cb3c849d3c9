"""What a run does when a cap or budget is reached: try the next plan, wait for a window,
ask ``on_limit`` for a grant, or refuse with an error that says which cap and what to do."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .buckets import BucketRef
from .checks import Refusal, final_cap, hint_text, usage_ratio
from .errors import BudgetError, BudgetExceeded, ToolDenied
from .events import Notice
from .grants import Grant, LimitReached, extend_limits, grantable
from .ledger.base import ReserveOutcome
from .run_core import RATIO_TOLERANCE, RunCore
from .steps import Plan

__all__ = ["RunLimits"]

_SPEND_CAPS = ("max_cost_usd",)


@dataclass(slots=True)
class _Attempt:
    """Where one ``before_llm_call`` stands: its plans, the one tried, what it waited."""

    plans: list[Plan]
    index: int = 0
    waited: float = 0.0
    asked: set[str] = field(default_factory=set)

    @property
    def plan(self) -> Plan:
        return self.plans[self.index]


@dataclass(frozen=True, slots=True)
class _Move:
    """What to do after a refusal: try the next plan, wait, ask for a grant, or give up."""

    kind: str  # "next" | "wait" | "ask" | "refuse"
    seconds: float = 0.0
    question: LimitReached | None = None


class RunLimits(RunCore):
    """The layer of ``Run`` that answers a refusal: the next move, the question for
    ``on_limit`` and its grant, and the error a refused call raises."""

    __slots__ = ()

    def _next_move(self, attempt: _Attempt, refusal: Refusal) -> _Move:
        """After a refusal: a cheaper plan, a wait for the window, a grant, or the end."""
        spend = refusal.cap in _SPEND_CAPS or (
            refusal.cap.startswith("budget:") and self._budget_of(refusal.cap) == "cost"
        )
        if spend and attempt.index + 1 < len(attempt.plans):
            attempt.index += 1
            return _Move("next")
        seconds = self._throttle_seconds(refusal, attempt.waited)
        if seconds is not None:
            attempt.waited += seconds
            self._emit_wait(refusal, seconds)
            return _Move("wait", seconds=seconds)
        question = self._question(refusal, attempt.asked)
        return _Move("ask", question=question) if question else _Move("refuse")

    def _budget_of(self, label: str) -> str | None:
        ref = self._ref_of(label)
        return ref.budget.metric if ref else None

    def _ref_of(self, label: str) -> BucketRef | None:
        return next((r for r in self._buckets(self.warden.clock()) if r.label == label), None)

    def _throttle_seconds(self, refusal: Refusal, waited: float) -> float | None:
        """How long to hold a call refused by a ``when_exhausted="wait"`` budget, or None."""
        ref = self._ref_of(refusal.cap) if refusal.cap.startswith("budget:") else None
        if ref is None or ref.budget.when_exhausted != "wait" or ref.window.resets_at is None:
            return None
        span = ref.window.end - ref.window.start
        jitter = random.uniform(0.0, min(0.1 * span, 0.5))  # spread the herd at the edge
        seconds = max(ref.window.end - self.warden.clock(), 0.0) + jitter
        if waited + seconds > ref.budget.max_wait_seconds:
            return None
        return seconds

    def _emit_wait(self, refusal: Refusal, seconds: float) -> None:
        self.warden._emit_all(
            [
                Notice(
                    **self._event_fields(),
                    code="wait",
                    level="info",
                    message=f"{refusal.cap} is exhausted: waiting {seconds:.2f}s for its window",
                    data={"cap": refusal.cap, "seconds": seconds},
                )
            ]
        )

    def _question(self, refusal: Refusal, asked: set[str]) -> LimitReached | None:
        """The question for ``on_limit``, once per cap per call, when a grant could help
        (a parent's cap of the same name is another cap; the question names whose it is)."""
        key = f"{refusal.cap}@{refusal.depth}"
        if self.warden.on_limit is None or not grantable(refusal.cap) or key in asked:
            return None
        asked.add(key)
        return LimitReached(
            cap=refusal.cap,
            limit=refusal.limit,
            used=refusal.used,
            requested=refusal.requested,
            run_id=self._lineage[refusal.depth].id,
            report=self.report,
            resets_at=self._resets_at(refusal.cap),
        )

    def _apply_grant(self, grant: Grant | None, refusal: Refusal) -> bool:
        """Extend the refused cap by a grant (and say so in an event); False if none."""
        if grant is None:
            return False
        with self._lock:
            self._fast_ok = False  # granted runs take the general path (it adds the grants)
            if refusal.cap.startswith("budget:"):
                self._extras[refusal.cap] = self._extras.get(refusal.cap, 0.0) + grant.extra
            else:  # the run whose cap refused (the question named it), and no other
                run = self._lineage[refusal.depth]
                run.limits = extend_limits(run.limits, refusal.cap, grant.extra)
            if self.final_cap == refusal.cap:  # its final-answer call was made for this cap,
                self.final_cap = None  # which now has room: the run goes on, tools included
        self.warden._emit_all(
            [
                Notice(
                    **self._event_fields(),
                    code="grant",
                    level="warning",
                    message=f"{grant.by} granted {grant.extra:g} more of {refusal.cap}",
                    data={
                        "cap": refusal.cap,
                        "extra": grant.extra,
                        "by": grant.by,
                        "note": grant.note,
                    },
                )
            ]
        )
        return True

    def _final_cap(
        self, plan: Plan, outcome: ReserveOutcome, est_in: int, max_out: int
    ) -> str | None:
        """The cap this call is the last call of, when ``Limits.final_answer`` is on: no room
        would be left for the next call, whose prompt has grown by this call's answer and
        its tool results (as much as the last call's grew, at least ``max_out``)."""
        chain = self._lineage
        if not any(run.limits.final_answer for run in chain):
            return None
        next_in = self._next_prompt(est_in, max_out)
        warden = self.warden
        model = warden._pricing_model(plan.choice.model, self)
        next_cost = warden.prices.worst_case_cost(model, next_in, max_out, self._service_tier)
        if self._searches:
            next_cost += self._search_hold(plan.choice.model)
        for run in chain:
            cap = final_cap(
                run._held_limits(),
                run.counters,
                input_tokens=next_in,
                max_output_tokens=max_out,
                worst_cost=next_cost,
            )
            if cap is not None:
                return cap
        labels = {ref.key: ref.label for ref in plan.refs}
        following = self._charges(plan.refs, next_cost, next_in + max_out)
        for state, charge in zip(outcome.states, following, strict=False):
            if (
                charge.amount > 0
                and charge.limit - state.committed - state.reserved < charge.amount
            ):
                return labels.get(state.key, state.key)
        return None

    def _next_prompt(self, est_in: int, max_out: int) -> int:
        """The next call's prompt tokens, foreseen from this one's (see ``_final_cap``); the
        growth is the estimate's, without the prompt gap, which moves when a bill comes."""
        messages = est_in - self._prompt_gap
        last, self._last_prompt = self._last_prompt, messages
        growth = messages - last if last is not None else 0
        return est_in + max(growth, max_out)

    def _compress_pays(self, model: str | None, downgraded: bool) -> bool:
        """Whether a call at the degrade level should compress its context: whether sending
        ``Policy.compress_ratio`` of the prompt is expected to cost less than all of it.

        A provider's prompt cache bills the part of a prompt it saw before at its cache-read
        price (a tenth of the input price for Claude and GPT-5). A compressed prompt differs
        from the last one right after the task, so it is billed at the full input price: with
        half the prompt kept and 90 % of it cached, compressing costs 2.6 times more. So it
        compresses when ``compress_ratio`` of the full price is less than the whole prompt's
        share of it, ``1 - read share x discount``, the shares being the run's so far (of
        its input tokens). A run that writes the cache (Anthropic's ``cache_control``) pays
        the write premium on its written share of a whole prompt, and on all of a compressed
        one, which is a new prefix. A call routed one tier down goes to a model whose cache
        is cold, and always compresses.
        """
        c = self.counters
        if downgraded or not c.cache_read_tokens or model is None or not c.input_tokens:
            return True
        prices = self.warden.prices
        whole = 1.0 - c.cache_read_tokens / c.input_tokens * prices.cache_discount(model)
        compressed = self.policy.compress_ratio
        if c.cache_write_tokens:
            premium = prices.cache_write_premium(model)
            whole += c.cache_write_tokens / c.input_tokens * premium
            compressed *= 1.0 + premium
        return compressed < whole

    def _hint(self) -> str | None:
        """A note on what is left, past the warn level, when the policy enables hints."""
        if not self.policy.budget_hints:
            return None
        warn = self.policy.thresholds.warn - RATIO_TOLERANCE
        if usage_ratio(self.limits, self.counters) < warn:
            return None
        return hint_text(self.remaining())

    def _ledger_refusal(self, outcome: ReserveOutcome) -> Refusal:
        if outcome.cancelled is not None:
            return Refusal("cancelled", 0, 0)
        state = outcome.refused
        assert state is not None
        return Refusal(
            self._label_of(state.key),
            state.limit,
            round(state.committed + state.reserved, 9),
            round(outcome.refused_amount, 9),
        )

    def _label_of(self, key: str) -> str:
        ref = next((r for r in self._buckets(self.warden.clock()) if r.key == key), None)
        return ref.label if ref else key

    def _resets_at(self, cap: str) -> float | None:
        ref = self._ref_of(cap) if cap.startswith("budget:") else None
        return ref.window.resets_at if ref else None

    def _refuse(self, refusal: Refusal) -> BudgetError:
        """Record a refusal and build the exception that says so."""
        if refusal.tool_denied is not None:
            return ToolDenied(refusal.cap, refusal.tool_denied, self.report)
        exc = BudgetExceeded(
            refusal.cap,
            refusal.limit,
            refusal.used,
            None,
            resets_at=self._resets_at(refusal.cap),
            requested=refusal.requested,
            run_id=self.id,
        )
        with self._lock:
            self.stopped = exc
        exc.report = self.report
        self.warden._emit_refusal(self, exc)
        return exc

    def _after_final_refusal(self) -> Refusal:
        cap = self.final_cap or "final_answer"
        limit = getattr(self.limits, cap, None) if cap.startswith("max_") else None
        used = {
            "max_iterations": self.counters.iterations,
            "max_cost_usd": self.counters.cost_usd,
        }.get(cap, 0)
        return Refusal(cap, float(limit or 0), float(used))
