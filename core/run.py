"""Run: one agent run's counters, caps and decisions.

Adapters call ``before_llm_call`` / ``after_llm_call`` / ``before_tool_call`` /
``after_tool_call`` (or their ``a``-prefixed async twins) around each call. The ``before``
methods refuse a call that must not happen by raising ``BudgetExceeded`` or ``ToolDenied``;
the decisions themselves are pure functions (``checks``, ``routing``); this module holds the
state, and the ledger I/O (and any wait or approval) sits at the edges of small loops, so
sync and async share one implementation of the rules.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from .errors import BudgetExceeded
from .events import CostEvent
from .pause import PauseHandle
from .policy import OUTCOMES
from .pricing import billed_tier
from .run_fast import FastPaths
from .run_limits import _Attempt
from .steps import FINAL_ANSWER_INSTRUCTION, Step, ToolStep
from .usage import Usage

__all__ = ["FINAL_ANSWER_INSTRUCTION", "Run", "Step", "ToolStep"]


def token_counts(max_tokens: object, input_tokens: object) -> tuple[int | None, int | None]:
    """``(max_tokens, input_tokens)`` as ints; a ``ValueError`` unless each given count is a
    whole number of tokens, 0 or more: a negative or NaN count would reserve less than
    nothing and let other runs overspend a shared budget."""
    return _count("max_tokens", max_tokens), _count("input_tokens", input_tokens)


def _count(name: str, value: object) -> int | None:
    if value is None or (type(value) is int and value >= 0):
        return value
    count = -1 if isinstance(value, bool) else _whole(value)  # numpy's integers too
    if count >= 0:
        return count
    default = "the policy's default_max_output_tokens" if name == "max_tokens" else "an estimate"
    raise ValueError(
        f"{name}={value!r}: pass a whole number of tokens, 0 or more (or None for {default})"
    )


def _whole(value: object) -> int:
    """``value`` as an int if it is an integer of any kind (not a float), else -1."""
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return -1


def _stamped(step: Step, tool_tokens: int, gap: int | None) -> Step:
    """``step`` with what its prompt's estimate holds: the tools' part and the prompt gap."""
    step.tool_tokens, step.prompt_gap = tool_tokens, gap
    return step


class Run(FastPaths):
    """One agent run: counters, caps, routing state and reservations. Made by ``Warden.run``.

    Call ``before_llm_call`` / ``after_llm_call`` and ``before_tool_call`` /
    ``after_tool_call`` around each call (``a``-prefixed twins in async code), then
    ``finish`` (or use the run as a ``with`` / ``async with`` block).
    """

    __slots__ = ()

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

    def _finished_error(self, method: str) -> RuntimeError:
        return RuntimeError(
            f"run {self.id} is finished (stop_reason={self.stop_reason!r}): {method} needs an "
            "open run; open a new one with warden.run(...)"
        )

    def _check_recordable(self, step: Step | ToolStep) -> None:
        """Refuse to record a call twice, or a call another run reserved: either would count
        it again in this run while the ledger (idempotent per call) counts it once."""
        kind = "model" if isinstance(step, Step) else "tool"
        if step.recorded:
            raise ValueError(
                f"{kind} call {step.id} is recorded already: record each step once "
                f"(after_{'llm' if kind == 'model' else 'tool'}_call or record_*)"
            )
        if step.id.rpartition(":")[0] != self.id:
            raise ValueError(
                f"{kind} call {step.id} was reserved by another run, not run {self.id}: "
                "record a step on the run whose before_* call returned it"
            )

    # ------------------------------------------------------------------ model calls
    def expect_service_tier(self, tier: str | None) -> None:
        """The service tier this run's calls ask for (OpenAI's and Gemini's ``"priority"``
        or ``"flex"``), for the reservations made before any bill: without it a run's first
        call is reserved at the standard prices, and a priority call costs twice those.
        From the first reservation on, the bills say which tier served the calls; a tier
        given then changes nothing. Adapters pass the tier the model or request names."""
        if self.counters.iterations:
            return
        billed = billed_tier(tier)
        if billed != self._service_tier:
            self._service_tier = billed
            self._fast_rates.clear()  # worst-case rates of the other tier

    def expect_web_searches(self, count: int) -> None:
        """The hosted web searches this run's first call may make (``searches_offered`` of
        the tools it offers), held by the reservations made before any bill; from the first
        reservation on, each bill says how many the last call made."""
        if not self.counters.iterations and count > 0:
            self._searches = count

    def before_llm_call(
        self,
        model: str | None = None,
        messages: Any = None,
        *,
        max_tokens: int | None = None,
        input_tokens: int | None = None,
        tools: Sequence[Any] | None = None,
        route: bool = True,
    ) -> Step:
        """Reserve the worst case of the next model call, or refuse it with BudgetExceeded.

        ``messages`` are estimated unless ``input_tokens`` is given; ``max_tokens`` bounds the
        output (default: the policy's ``default_max_output_tokens``); ``tools`` are the tools
        offered: schema dicts, framework tool objects or names. Their definitions count in
        the estimate (``estimate_tool_tokens``; a name counts 0), and routing's complexity
        heuristic counts them; an ``input_tokens`` given is the whole prompt, tools included.
        A budget with ``when_exhausted="wait"`` holds the call (sleeping) until its window
        frees it; ``Warden(on_limit=...)`` may grant more before a refusal.

        ``route=False`` says the caller will call ``model`` whatever the step names (hooks
        that only watch a framework call its own model): the policy's routing is not applied,
        and the call is reserved, and then priced, as ``model``.

        A negative or non-integer token count is a ``ValueError``; a call on a finished run
        is a ``RuntimeError``.
        """
        if max_tokens is not None or input_tokens is not None:
            max_tokens, input_tokens = token_counts(max_tokens, input_tokens)
        if self.finished_at is not None:
            raise self._finished_error("before_llm_call")
        tool_tokens, gap = 0, None
        if input_tokens is None:
            input_tokens, tool_tokens, gap = self._estimate_prompt(messages, tools)
        if self._one_pass and self._fast_ok:
            local = self._local_llm_step(model, max_tokens, input_tokens)
            if local is not None:  # as _stamped, inline
                local.tool_tokens, local.prompt_gap = tool_tokens, gap
                return local
        claim = self._quick_llm_claim(model, max_tokens, input_tokens)
        if claim is not None:
            outcome = self._quick_llm_reserve(claim)
            if (step := self._quick_llm_hold(claim, outcome)) is not None:
                return _stamped(step, tool_tokens, gap)
        request = self._llm_request(model, max_tokens, input_tokens, tools)
        attempt = _Attempt(self._llm_plans(request, route))
        while True:
            plan = attempt.plan
            refusal = self._claim(plan, request)
            if refusal is None:
                outcome = self.warden._reserve(plan.charges, plan.id, self._watch)
                if outcome.ok and self._routed_blind(plan, outcome, request):
                    self._uncount(plan, request)
                    self.warden._release(plan.id)
                    attempt.plans, attempt.index = self._llm_plans(request, route), 0
                    continue
                if outcome.ok:
                    step = self._hold_llm(plan, outcome, request)
                    return _stamped(step, tool_tokens, gap)
                refusal = self._unclaim(plan, request, outcome)
            move = self._next_move(attempt, refusal)
            if move.kind == "wait":
                self.warden._sleep(move.seconds)
            elif move.kind == "ask" and move.question is not None:
                if not self._apply_grant(self.warden._ask(move.question), refusal):
                    raise self._refuse(refusal)
            elif move.kind == "refuse":
                raise self._refuse(refusal)
            if move.kind != "next":
                attempt.plans, attempt.index = self._llm_plans(request, route), 0

    async def abefore_llm_call(
        self,
        model: str | None = None,
        messages: Any = None,
        *,
        max_tokens: int | None = None,
        input_tokens: int | None = None,
        tools: Sequence[Any] | None = None,
        route: bool = True,
    ) -> Step:
        """Async twin of ``before_llm_call`` (waits await; they never block the loop)."""
        if max_tokens is not None or input_tokens is not None:
            max_tokens, input_tokens = token_counts(max_tokens, input_tokens)
        if self.finished_at is not None:
            raise self._finished_error("abefore_llm_call")
        tool_tokens, gap = 0, None
        if input_tokens is None:
            input_tokens, tool_tokens, gap = self._estimate_prompt(messages, tools)
        if self._one_pass and self._fast_ok:
            local = self._local_llm_step(model, max_tokens, input_tokens)
            if local is not None:  # as _stamped, inline
                local.tool_tokens, local.prompt_gap = tool_tokens, gap
                return local
        claim = self._quick_llm_claim(model, max_tokens, input_tokens)
        if claim is not None:
            outcome = await self._quick_llm_areserve(claim)
            if (step := self._quick_llm_hold(claim, outcome)) is not None:
                return _stamped(step, tool_tokens, gap)
        request = self._llm_request(model, max_tokens, input_tokens, tools)
        attempt = _Attempt(self._llm_plans(request, route))
        while True:
            plan = attempt.plan
            refusal = self._claim(plan, request)
            if refusal is None:
                outcome = await self.warden._areserve(plan.charges, plan.id, self._watch)
                if outcome.ok and self._routed_blind(plan, outcome, request):
                    self._uncount(plan, request)
                    await self.warden._arelease(plan.id)
                    attempt.plans, attempt.index = self._llm_plans(request, route), 0
                    continue
                if outcome.ok:
                    step = self._hold_llm(plan, outcome, request)
                    return _stamped(step, tool_tokens, gap)
                refusal = self._unclaim(plan, request, outcome)
            move = self._next_move(attempt, refusal)
            if move.kind == "wait":
                await self.warden._asleep(move.seconds)
            elif move.kind == "ask" and move.question is not None:
                if not self._apply_grant(await self.warden._aask(move.question), refusal):
                    raise self._refuse(refusal)
            elif move.kind == "refuse":
                raise self._refuse(refusal)
            if move.kind != "next":
                attempt.plans, attempt.index = self._llm_plans(request, route), 0

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
        """Commit the real cost of a model call, release the rest, and emit its CostEvent.

        ``model`` is the real model when only known after the call (it is priced with that);
        without ``usage`` the output is estimated from ``output_text`` and marked estimated.
        """
        if outcome not in _OUTCOMES:
            raise _unknown_outcome(outcome)
        event = self._finish_llm(
            step, usage, model, latency_s, outcome, output_text, prompt_text, want=True
        )
        assert event is not None
        return event

    def record_llm_call(
        self,
        step: Step,
        usage: Usage | None = None,
        *,
        model: str | None = None,
        latency_s: float | None = None,
        outcome: str = "ok",
        output_text: str | None = None,
        prompt_text: str | None = None,
    ) -> None:
        """``after_llm_call`` for callers that do not use the CostEvent (adapters): it is
        then built only when a sink wants it, which saves work on every call."""
        if outcome not in _OUTCOMES:
            raise _unknown_outcome(outcome)
        if usage is not None and self._local_step(step):
            self._local_llm_record(step, usage, model, latency_s, outcome, output_text, prompt_text)
            return
        self._finish_llm(
            step, usage, model, latency_s, outcome, output_text, prompt_text, want=False
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
        if outcome not in _OUTCOMES:
            raise _unknown_outcome(outcome)
        event = await self._afinish_llm(
            step, usage, model, latency_s, outcome, output_text, prompt_text, want=True
        )
        assert event is not None
        return event

    async def arecord_llm_call(
        self,
        step: Step,
        usage: Usage | None = None,
        *,
        model: str | None = None,
        latency_s: float | None = None,
        outcome: str = "ok",
        output_text: str | None = None,
        prompt_text: str | None = None,
    ) -> None:
        """Async twin of ``record_llm_call``."""
        if outcome not in _OUTCOMES:
            raise _unknown_outcome(outcome)
        if usage is not None and self._local_step(step):
            self._local_llm_record(step, usage, model, latency_s, outcome, output_text, prompt_text)
            return
        await self._afinish_llm(
            step, usage, model, latency_s, outcome, output_text, prompt_text, want=False
        )

    def _finish_llm(
        self,
        step: Step,
        usage: Usage | None,
        model: str | None,
        latency_s: float | None,
        outcome: str,
        output_text: str | None,
        prompt_text: str | None,
        *,
        want: bool,
    ) -> CostEvent | None:
        """Price, commit and count a finished model call (``after_llm_call``'s work)."""
        self._check_recordable(step)
        usage, real_model, cost = self._price_result(step, usage, model, output_text)
        states = self._commit_llm(step, usage, cost)
        return self._record_llm(
            step,
            usage,
            real_model,
            cost,
            states,
            latency_s,
            outcome,
            output_text,
            prompt_text,
            want,
        )

    async def _afinish_llm(
        self,
        step: Step,
        usage: Usage | None,
        model: str | None,
        latency_s: float | None,
        outcome: str,
        output_text: str | None,
        prompt_text: str | None,
        *,
        want: bool,
    ) -> CostEvent | None:
        """Async twin of ``_finish_llm``."""
        self._check_recordable(step)
        usage, real_model, cost = self._price_result(step, usage, model, output_text)
        states = await self._acommit_llm(step, usage, cost)
        return self._record_llm(
            step,
            usage,
            real_model,
            cost,
            states,
            latency_s,
            outcome,
            output_text,
            prompt_text,
            want,
        )

    def release(self, step: Step | ToolStep) -> None:
        """The call did not happen: free its reservation and uncount it."""
        if self._unhold(step) and self._held_in_ledger(step):
            self.warden._release(step.id)

    async def arelease(self, step: Step | ToolStep) -> None:
        """Async twin of ``release``."""
        if self._unhold(step) and self._held_in_ledger(step):
            await self.warden._arelease(step.id)

    # ------------------------------------------------------------------ tool calls
    def before_tool_call(
        self, name: str, args: Any = None, *, call_id: str | None = None
    ) -> ToolStep:
        """Check a tool call against the tool rules and caps; reserve its price if it has one
        (a call on a finished run is a ``RuntimeError``)."""
        if self.finished_at is not None:
            raise self._finished_error("before_tool_call")
        if (local := self._local_tool_step(name, args, call_id)) is not None:
            return local
        claim = self._quick_tool_claim(name, args, call_id)
        if claim is not None:
            outcome = self.warden._reserve((), claim[0].id, self._watch, poll=True)
            if (quick := self._quick_tool_checked(claim, outcome)) is not None:
                return quick
        asked: set[str] = set()
        while True:
            step = self._plan_tool(name, args, call_id)
            if isinstance(step, ToolStep):
                charges = self._tool_charges(step)
                outcome = self.warden._reserve(charges, step.id, self._watch, poll=True)
                if outcome.ok:
                    return step
                refusal = self._unplan_tool(step, outcome)
            else:
                refusal = step
            question = self._question(refusal, asked)
            if question is None or not self._apply_grant(self.warden._ask(question), refusal):
                raise self._refuse(refusal)

    async def abefore_tool_call(
        self, name: str, args: Any = None, *, call_id: str | None = None
    ) -> ToolStep:
        """Async twin of ``before_tool_call``."""
        if self.finished_at is not None:
            raise self._finished_error("abefore_tool_call")
        if (local := self._local_tool_step(name, args, call_id)) is not None:
            return local
        claim = self._quick_tool_claim(name, args, call_id)
        if claim is not None:
            outcome = self.warden._cancel_now_known(self._watch, True)  # a free tool call
            if outcome is None:
                outcome = await self.warden._apoll_cancel(self._watch)
            if (quick := self._quick_tool_checked(claim, outcome)) is not None:
                return quick
        asked: set[str] = set()
        while True:
            step = self._plan_tool(name, args, call_id)
            if isinstance(step, ToolStep):
                charges = self._tool_charges(step)
                outcome = await self.warden._areserve(charges, step.id, self._watch, poll=True)
                if outcome.ok:
                    return step
                refusal = self._unplan_tool(step, outcome)
            else:
                refusal = step
            question = self._question(refusal, asked)
            if question is None or not self._apply_grant(
                await self.warden._aask(question), refusal
            ):
                raise self._refuse(refusal)

    def after_tool_call(
        self,
        step: ToolStep | str,
        *,
        ok: bool = True,
        latency_s: float | None = None,
        error: BaseException | str | None = None,
    ) -> CostEvent:
        """Record a finished tool call (its price is spent whether it worked or not)."""
        event = self._finish_tool(step, ok and error is None, latency_s, want=True)
        assert event is not None
        return event

    def record_tool_call(
        self,
        step: ToolStep | str,
        *,
        ok: bool = True,
        latency_s: float | None = None,
        error: BaseException | str | None = None,
    ) -> None:
        """``after_tool_call`` for callers that do not use the CostEvent (see
        ``record_llm_call``)."""
        if not self._local_tool_record(step, ok and error is None):
            self._finish_tool(step, ok and error is None, latency_s, want=False)

    async def aafter_tool_call(
        self,
        step: ToolStep | str,
        *,
        ok: bool = True,
        latency_s: float | None = None,
        error: BaseException | str | None = None,
    ) -> CostEvent:
        """Async twin of ``after_tool_call``."""
        event = await self._afinish_tool(step, ok and error is None, latency_s, want=True)
        assert event is not None
        return event

    async def arecord_tool_call(
        self,
        step: ToolStep | str,
        *,
        ok: bool = True,
        latency_s: float | None = None,
        error: BaseException | str | None = None,
    ) -> None:
        """Async twin of ``record_tool_call``."""
        if not self._local_tool_record(step, ok and error is None):
            await self._afinish_tool(step, ok and error is None, latency_s, want=False)

    def _finish_tool(
        self, step: ToolStep | str, ok: bool, latency_s: float | None, *, want: bool
    ) -> CostEvent | None:
        """Commit a finished tool call's price and count it (``after_tool_call``'s work)."""
        tool_step = self._tool_step(step)
        self._check_recordable(tool_step)
        states = self.warden._commit(tool_step.id, self._tool_charges(tool_step))
        return self._record_tool(tool_step, ok, latency_s, states, want)

    async def _afinish_tool(
        self, step: ToolStep | str, ok: bool, latency_s: float | None, *, want: bool
    ) -> CostEvent | None:
        """Async twin of ``_finish_tool``."""
        tool_step = self._tool_step(step)
        self._check_recordable(tool_step)
        states = await self.warden._acommit(tool_step.id, self._tool_charges(tool_step))
        return self._record_tool(tool_step, ok, latency_s, states, want)

    # ------------------------------------------------------------------ end of run
    def finish(
        self,
        stop_reason: str | None = None,
        *,
        error: BaseException | None = None,
        success: bool | None = None,
    ) -> None:
        """End the run: release what it still holds, set its stop reason (and ``success``
        when the caller or a validator knows it), and emit one ``RunFinished`` event."""
        leftovers, ended = self._end(stop_reason, error, success)
        for step in leftovers:
            if self._held_in_ledger(step):
                self.warden._release(step.id)
        self.warden._flush(pools=False)  # its deferred commits land by its end (pools: soon)
        self._emit_finished(ended)

    async def afinish(
        self,
        stop_reason: str | None = None,
        *,
        error: BaseException | None = None,
        success: bool | None = None,
    ) -> None:
        """Async twin of ``finish``."""
        leftovers, ended = self._end(stop_reason, error, success)
        for step in leftovers:
            if self._held_in_ledger(step):
                await self.warden._arelease(step.id)
        await self.warden._aflush(pools=False)
        self._emit_finished(ended)

    def resume(self) -> None:
        """Go on after a pause: forget the refusal that stopped the run (its counters stay)."""
        with self._lock:
            self.stopped = None
            self.stop_reason = None
            self.finished_at = None

    def pause_handle(self, framework: str, state: dict[str, Any] | None = None) -> PauseHandle:
        """A resumable handle for this run, stopped by ``self.stopped`` (see ``PauseHandle``)."""
        stopped = self.stopped
        return PauseHandle(
            run_id=self.id,
            framework=framework,
            cap=stopped.cap if stopped else (self.stop_reason or "paused"),
            resets_at=stopped.resets_at if stopped else None,
            needed=(stopped.requested or 0.0) if stopped else 0.0,
            created_at=self.warden.clock(),
            attribution=dict(self.attribution),
            report=self.report,
            state=state or {},
        )


_OUTCOMES = frozenset(OUTCOMES)


def _unknown_outcome(outcome: str) -> ValueError:
    return ValueError(f"outcome={outcome!r} is not an outcome: use one of {', '.join(OUTCOMES)}")
