"""The machinery behind ``Run``, in layers, each a class on the one below:

- ``RunCore`` (here): a run's state (counters, routing state, pending reservations), its
  buckets and pressure ratios, and what every call counts;
- ``RunLimits`` (``run_limits``): what a refused call does next (wait, ask, grant, refuse);
- ``RunCalls`` (``run_calls``): each model and tool call on the general path (plan, hold,
  commit, record);
- ``FastPaths`` (``run_fast``): the common cases in one pass;
- ``Run`` (``run.py``): the public API adapters call.

They turn the pure rules (``checks``, ``routing``) and the ledger's answers into steps,
refusals, waits and grants.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from . import routing as routes
from .buckets import BucketRef, cancel_key
from .checks import Counters
from .errors import BudgetError, BudgetExceeded, ToolDenied
from .events import CostEvent
from .ledger.base import BucketState, Charge, new_charge
from .ledger.memory import MemoryLedger
from .policy import SCOPES, Limits
from .report import RunReport
from .run_events import alert_levels, bucket_crossings, cap_crossings
from .steps import Step, ToolStep
from .usage import (
    TokenCache,
    Usage,
    estimate_message_tokens,
    estimate_tokens,
    estimate_tool_tokens,
)

if TYPE_CHECKING:
    from .warden import Warden


__all__ = ["RunCore"]

_ids = itertools.count(1)
#: This process's tag in reservation ids (``<run id>:<tag>-<n>``, ``RunCore._rid_prefix``):
#: ``_ids`` starts at 1 in every process, a run resumed in another process keeps its id, and
#: a ledger adds nothing for a commit whose reservation id it has seen (commits are
#: idempotent), so without it the resumed run's spend was dropped. Renewed in a forked child.
_process_tag = [os.urandom(4).hex()]
if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=lambda: _process_tag.__setitem__(0, os.urandom(4).hex()))
Request = tuple[str | None, int, int, int]  # model, input tokens, max output tokens, tools
#: The cached buckets' keys, held limits, window ends, metrics, and (key, held limit) pairs.
BucketPlan = tuple[
    tuple[str, ...],
    tuple[float, ...],
    tuple[float, ...],
    tuple[str, ...],
    tuple[tuple[str, float], ...],
]
#: Per bucket set: refs by key, the bucket plan, (label, limit, alert bar) and metric picks.
BucketDerived = tuple[
    dict[str, BucketRef],
    BucketPlan,
    tuple[tuple[str, float, float], ...],
    tuple[int, ...],
]
#: What a commit reports: bucket states, or (in-process ledger) committed spend per bucket.
Committed = tuple[BucketState, ...] | list[float]
#: Which of (dollars, tokens, one request) a bucket of each metric counts.
_METRIC_INDEX = {"cost": 0, "tokens": 1, "requests": 2}
_RUN_LABELS = {
    cap: f"run:{cap}" for cap in ("max_cost_usd", "max_input_tokens", "max_output_tokens")
}


def _floor(value: _N) -> _N:
    """``value``, or zero when negative (counters of what is held never go below zero)."""
    return value if value > 0 else value - value  # 0 or 0.0 (never -0.0)


_N = TypeVar("_N", int, float)


#: Ratios this close below a level count as reaching it ($0.3 x 3 of $1.00 is 90%).
RATIO_TOLERANCE = 1e-9


class RunCore:
    """State and private machinery of a run; see ``Run`` for the API."""

    # Slots, not a ``__dict__``: a run has more attributes than CPython 3.11 keeps in a
    # class's shared keys (30), so without slots every run's ``__dict__`` is a real dict and
    # the interpreter cannot specialise ``self.method()`` (a type and a dict lookup per call)
    __slots__ = (
        "__weakref__",
        "_alerted",
        "_amounts",
        "_bills",
        "_bucket_bars",
        "_bucket_cache",
        "_bucket_plan",
        "_by_key",
        "_cap_bars",
        "_default_max_out",
        "_degrade_at",
        "_event_base",
        "_extras",
        "_fast_llm_caps",
        "_fast_ok",
        "_fast_rates",
        "_fast_tool_caps",
        "_free_tools",
        "_has_budgets",
        "_held",
        "_in_process",
        "_last_prompt",
        "_lease_seconds",
        "_lineage",
        "_local",
        "_lock",
        "_lowest_level",
        "_metric_picks",
        "_models",
        "_one_pass",
        "_pending",
        "_prompt_gap",
        "_ratios",
        "_rid_prefix",
        "_route",
        "_routed",
        "_searches",
        "_service_tier",
        "_stop_level",
        "_token_cache",
        "_tools_seen",
        "_wants_cost",
        "_watch",
        "attribution",
        "children",
        "counters",
        "final_cap",
        "finished_at",
        "id",
        "limits",
        "parent",
        "policy",
        "started_at",
        "stop_reason",
        "stopped",
        "success",
        "warden",
    )

    def __init__(
        self,
        warden: Warden,
        *,
        attribution: dict[str, str | None],
        parent: RunCore | None = None,
        run_id: str | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.warden = warden
        self.policy = warden.policy
        self.id = run_id or new_run_id()
        self._rid_prefix = f"{self.id}:{_process_tag[0]}-"  # see _process_tag
        self.parent = parent
        self._lineage: tuple[RunCore, ...] = (self, *(parent._lineage if parent else ()))
        self.attribution = attribution
        self.limits = limits or self.policy.limits
        self.counters = Counters()
        self.started_at = warden.clock()
        self.finished_at: float | None = None
        self.stopped: BudgetExceeded | None = None
        self.stop_reason: str | None = None
        self.success: bool | None = None
        self.children: list[RunCore] = []
        self.final_cap: str | None = None
        self._lock = threading.RLock()
        self._route = routes.RouteState()
        self._routed = False
        self._ratios: dict[str, float] = {}
        self._alerted: set[tuple[str, float]] = set()
        self._extras: dict[str, float] = {}
        self._bucket_cache: tuple[float, float, tuple[BucketRef, ...]] = (0.0, 0.0, ())
        self._by_key: dict[str, BucketRef] = {}  # ledger key -> bucket, of the cached buckets
        # the cached buckets' keys, held limits, window ends and metrics (for plain amounts)
        self._bucket_plan: BucketPlan = ((), (), (), (), ())
        # the cached buckets' labels, limits and lowest alert bars (see _local_llm_record)
        self._bucket_bars: tuple[tuple[str, float, float], ...] = ()
        self._metric_picks: tuple[int, ...] = ()  # see _amounts
        self._token_cache: TokenCache = {}
        self._tools_seen: tuple[Any, int] | None = None  # the last tools offered, their tokens
        self._prompt_gap = 0  # what the last estimate missed of its billed prompt (_learn_prompt)
        self._service_tier: str | None = None  # the last bill's, for reservations (_learn_bill)
        self._searches = 0  # hosted web searches of the last bill, for reservations
        self._models: list[str] = []
        self._pending: dict[str, Step | ToolStep] = {}
        self._lowest_level = alert_levels(self.policy.thresholds)[0]
        self._degrade_at = self.policy.thresholds.degrade - RATIO_TOLERANCE
        self._stop_level = self.policy.thresholds.stop
        self._held: tuple[Limits, Limits] | None = None  # (limits, held at the stop level)
        self._last_prompt: int | None = None  # for a final answer's foresight (run_limits)
        self._has_budgets = bool(self.policy.budgets)
        self._fast_llm_caps: tuple[Limits, Any] | None = None  # see run_fast
        self._fast_tool_caps: tuple[Limits, Any] | None = None
        self._cap_bars: tuple[Limits, float, float, int, float, int, float] | None = None
        self._fast_rates: dict[str | None, tuple[float, float]] = {}
        self._bills: dict[str | None, Callable[[Usage], float]] = {}
        # policy figures the fast paths read per call, as plain attributes: a pydantic
        # model's attribute read is not specialised by the interpreter (see run_fast)
        self._default_max_out = self.policy.default_max_output_tokens
        self._lease_seconds = self.policy.lease_seconds
        self._free_tools: dict[str, tuple[bool, int | None]] = {}  # see _tool_rule
        self._watch = self._cancel_targets()
        # its own id, when made here, cannot have been cancelled before the run began
        warden._start_poll_clock(self._watch, self._watch[0] if run_id is None else None)
        self._event_base = {
            "run_id": self.id,
            "parent_run_id": parent.id if parent else None,
            **{k: v for k, v in attribution.items() if not k.startswith("tag:")},
        }
        if parent is not None:
            parent.children.append(self)
        self._fast_ok = self._plain()  # see run_fast
        # the in-process ledger, for plain amounts (see run_fast), when there are budgets
        in_process = cast(MemoryLedger, warden.ledger) if warden._in_process else None
        self._in_process = in_process
        self._local = in_process if self._has_budgets else None
        # plain amounts on the in-process ledger or from pools (see run_fast), with budgets
        self._amounts = self._has_budgets and (in_process is not None or warden._pools.enabled)
        # the one-pass paths of run_fast serve it: plain amounts, or no budgets at all
        self._one_pass = self._amounts or not self._has_budgets
        if not self._has_budgets:  # no window ever turns: the buckets are always none
            self._bucket_cache = (-math.inf, math.inf, ())
        self._wants_cost = warden._wants(CostEvent)  # asked once per run: see Sink.wants

    def _plain(self) -> bool:
        return False  # the general path only (FastPaths says when a run is plain)

    # ================================================================== internals
    def _held_limits(self) -> Limits:
        """The run's limits with the spend caps held at the policy's stop level (the figures
        calls are checked against), read once per ``Limits`` object (a grant replaces it)."""
        lim, held = self.limits, self._held
        if held is None or held[0] is not lim:
            held = self._held = (lim, lim.held_at(self._stop_level))
        return held[1]

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

    @property
    def prompt_gap(self) -> int:
        """The tokens the run's last estimated model call missed of the prompt its provider
        billed (0 until a bill comes; never below 0), added to the run's next estimates.

        What the estimate cannot see is billed again at the next call: a provider's
        tool-use system prompt, tools listed after the hooks (MCP servers), a tokenizer
        that counts more than the estimate. An adapter that passes its own ``input_tokens``
        to ``before_llm_call`` (which adds nothing to a count) may add this figure and put
        it on the step (``Step.prompt_gap``) so the next bill teaches the run again."""
        return self._prompt_gap

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

    def _next_id(self) -> str:
        return f"{self._rid_prefix}{next(_ids)}"

    def _cancel_targets(self) -> tuple[str, ...]:
        lineage = [run.id for run in self._lineage]
        return cancel_targets(self.warden.namespace, lineage, self.attribution)

    def _estimate_prompt(self, messages: Any, tools: Sequence[Any] | None) -> tuple[int, int, int]:
        """Our estimate of a call's prompt, with the tools' part and the run's prompt gap.

        The estimate is the messages, the tools' definitions (``_prompt_with_tools``) and
        what the run's last estimated call missed of its billed prompt (``_learn_prompt``):
        parts the estimate cannot see (a provider's tool-use system prompt, tools listed
        after the hooks, a tokenizer that counts more) are billed again at the next call."""
        gap = self._prompt_gap
        if tools:
            tokens, tool_tokens = self._prompt_with_tools(messages, tools)
        else:
            tokens, tool_tokens = estimate_message_tokens(messages, self._token_cache), 0
        return tokens + gap, tool_tokens, gap

    def _prompt_with_tools(self, messages: Any, tools: Sequence[Any]) -> tuple[int, int]:
        """The prompt's estimated tokens with the tools' definitions, and theirs alone (tools
        equal to the last call's, the same objects in the same order: their count, without
        a look at each; frameworks rebuild the list, or its dicts, at every call)."""
        seen = self._tools_seen
        if seen is not None and seen[0] == tools:
            tool_tokens = seen[1]
        else:
            tool_tokens = estimate_tool_tokens(tools)
            self._tools_seen = (tools.copy() if type(tools) is list else tools, tool_tokens)
        return estimate_message_tokens(messages, self._token_cache) + tool_tokens, tool_tokens

    def _llm_request(
        self, model: str | None, max_tokens: int | None, est_in: int, tools: Sequence[Any] | None
    ) -> Request:
        out = max_tokens if max_tokens is not None else self._default_max_out
        return model, est_in, out, len(tools or ())

    def _learn_output(self, output_tokens: int) -> None:
        """Reserve at least what the run's largest answer used for its calls that name no
        ``max_tokens`` (``Policy.default_max_output_tokens`` is where it starts). A reasoning
        model given no limit answers in thousands of tokens, reasoning included: reserving
        the default 1,024 every time held a fraction of each call."""
        if output_tokens > self._default_max_out:
            self._default_max_out = output_tokens

    def _learn_prompt(self, step: Step, usage: Usage) -> None:
        """Keep what ``step``'s estimate missed of the prompt the provider billed, to add to
        the run's next estimates (``prompt_gap``; never below 0: an estimate above the bill,
        as for images, stays as it is). Only a call reserved with a prompt gap (an
        estimate, not a count), sent whole (not compressed, not the final answer's), and
        billed (usage the provider reported) teaches anything."""
        gap = step.prompt_gap
        if gap is None or usage.estimated or not usage.input_tokens or step.compress or step.final:
            return
        missed = usage.input_tokens - (step.input_tokens - gap)
        self._prompt_gap = missed if missed > 0 else 0

    def _learn_bill(self, usage: Usage) -> None:
        """Reserve the next calls at the prices of the service tier the provider billed this
        one at (``Usage.service_tier``: OpenAI's priority tier costs twice the standard
        prices), and for as many hosted web searches; a call without a bill (estimated
        usage) says nothing of either."""
        if usage.estimated:
            return
        self._searches = usage.web_search_requests
        tier = usage.service_tier
        if tier != self._service_tier:
            self._service_tier = tier
            self._fast_rates.clear()  # worst-case rates of the other tier

    def _search_hold(self, model: str | None) -> float:
        """What the last bill's hosted web searches would cost on ``model``, held by the
        next call's reservation (a search is billed per search, not per token)."""
        warden = self.warden
        return warden.prices.search_cost(warden._pricing_model(model, self), self._searches)

    def _buckets(self, now: float) -> tuple[BucketRef, ...]:
        """The buckets this run's calls count against now (kept until a window turns)."""
        if not self._has_budgets:
            return ()
        since, until, refs = self._bucket_cache
        if since <= now < until:
            return refs
        self._bucket_cache = self.warden._bucket_refs(self.attribution, self._lineage[-1].id, now)
        refs = self._bucket_cache[2]
        if not self.warden._in_process:  # its commits may land later, with others'
            self.warden._watch_alerts(refs, self._event_base)
        self._by_key, self._bucket_plan, self._bucket_bars, self._metric_picks = self._derived(refs)
        return refs

    def _derived(self, refs: tuple[BucketRef, ...]) -> BucketDerived:
        """What the hot paths read of ``refs`` (keys, held limits, ends, metrics, alert bars),
        computed once per bucket set and shared, read-only, by the warden's runs."""
        cache = self.warden._bucket_derived
        levels = (self._stop_level, self._lowest_level)
        hit = cache.get(id(refs))
        if hit is not None and hit[0] is refs and hit[1] == levels:
            return cast(BucketDerived, hit[2])
        held = tuple(ref.limit * self._stop_level for ref in refs)
        derived: BucketDerived = (
            {ref.key: ref for ref in refs},
            (
                tuple(ref.key for ref in refs),
                held,
                tuple(ref.window.end for ref in refs),
                tuple(ref.metric for ref in refs),
                tuple((ref.key, limit) for ref, limit in zip(refs, held, strict=True)),
            ),
            tuple((ref.label, ref.limit, self._bar(ref.limit)) for ref in refs),
            tuple(_METRIC_INDEX.get(ref.metric, 2) for ref in refs),
        )
        if len(cache) > 4096:
            cache.clear()
        cache[id(refs)] = (refs, levels, derived)
        return derived

    def _amounts_of(self, cost: float, tokens: float) -> list[float]:
        """What a call of ``cost`` dollars and ``tokens`` tokens counts in each cached bucket
        (dollars, tokens or one request), in the order of the bucket plan."""
        return list(map((cost, tokens, 1.0).__getitem__, self._metric_picks))

    def _bar(self, limit: float) -> float:
        """The spend at which ``limit`` reaches the lowest alert level (within rounding)."""
        bar = self._lowest_level * limit
        return bar - 1e-9 * (bar if bar > 1.0 else 1.0)

    def _committed_ratios(self, refs: Sequence[BucketRef], committed: Sequence[float]) -> None:
        """Refresh the budgets' ratios from their committed spend, in the order of ``refs``."""
        ratios = self._ratios
        for ref, spent in zip(refs, committed):  # noqa: B905 (see run_fast)
            if ref.limit > 0:
                ratios[ref.label] = spent / ref.limit

    def _keyed(self, refs: tuple[BucketRef, ...]) -> dict[str, BucketRef]:
        """``refs`` by ledger key (the cached mapping when they are the cached buckets)."""
        if refs is self._bucket_cache[2]:
            return self._by_key
        return {ref.key: ref for ref in refs}

    def _charges(
        self, refs: Sequence[BucketRef], cost: float, tokens: int, *, held: bool = True
    ) -> list[Charge]:
        """What a call of ``cost`` dollars and ``tokens`` tokens charges each bucket (dollars,
        tokens, or one request): a reservation (``held``) within the stop level plus any
        grant to this run, a commit against the plain limit."""
        stop, extras = self._stop_level, self._extras
        charges = []
        for ref in refs:
            metric = ref.metric
            amount = cost if metric == "cost" else float(tokens) if metric == "tokens" else 1.0
            limit = ref.limit
            if held:
                limit *= stop
                if extras:
                    limit += extras.get(ref.label, 0.0)
            charges.append(new_charge(ref.key, amount, limit, ref.window.end))
        return charges

    def _pressure(self) -> str | None:
        """The first cap or budget at the degrade level, as "label at 91%", or None."""
        ratios, degrade = self._ratios, self._degrade_at
        if not ratios or max(ratios.values()) < degrade:
            return None
        for label, ratio in ratios.items():
            if ratio >= degrade:
                return f"{label} at {ratio:.0%}"
        return None

    def _count_llm(self, worst: float, retry: bool, est_in: int, max_out: int, sign: int) -> None:
        for run in self._lineage:
            c = run.counters
            c.iterations += sign
            c.reserved_usd = _floor(c.reserved_usd + sign * worst)
            c.reserved_input_tokens = _floor(c.reserved_input_tokens + sign * est_in)
            c.reserved_output_tokens = _floor(c.reserved_output_tokens + sign * max_out)
            if retry:
                c.retries += sign

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
        bill = self._bills.get(real_model)
        if bill is None:  # the pricing model's bill, kept per run (unpriced ones warn once)
            warden = self.warden
            bill = warden.prices.biller(warden._pricing_model(real_model, self))
            self._bills[real_model] = bill
        return usage, real_model, bill(usage)

    def _after_commit(self, states: Committed, refs: tuple[BucketRef, ...]) -> list[Any]:
        """Update pressure ratios and return the alerts this commit crossed (none, without
        building anything, while no cap or bucket has reached the lowest alert level)."""
        ratios, lowest, near = self._ratios, self._lowest_level, False
        pairs: list[tuple[BucketRef | None, float]]
        if isinstance(states, list):  # committed spend in the order of refs (in-process)
            pairs = list(zip(refs, states, strict=True))
        else:
            by_key = self._keyed(refs) if states else self._by_key
            pairs = [(by_key.get(state.key), state.committed) for state in states]
        for ref, spent in pairs:
            if ref is not None and ref.limit > 0:
                ratios[ref.label] = spent / ref.limit
                bar = lowest * ref.limit
                near = near or spent >= bar - 1e-9 * (bar if bar > 1.0 else 1.0)
        caps = self._run_cap_ratios()
        for _, used, limit in caps:
            bar = lowest * limit
            near = near or used >= bar - 1e-9 * (bar if bar > 1.0 else 1.0)
        if not near:
            return []
        thresholds = self.policy.thresholds
        alerts = cap_crossings(self._event_fields, thresholds, caps, self._alerted)
        crossed = [
            (ref, BucketState(ref.key, spent, 0.0, ref.limit))
            for ref, spent in pairs
            if ref is not None
        ]
        if crossed:
            alerts += bucket_crossings(
                self._event_fields,
                thresholds,
                [state for _, state in crossed],
                {ref.key: ref for ref, _ in crossed},
                self.warden._first_crossing,
            )
        return alerts

    def _event_fields(self) -> dict[str, Any]:
        return {"ts": self.warden.clock(), **self._event_base}

    def _bucket_ratios(
        self,
        states: Sequence[BucketState],
        refs: tuple[BucketRef, ...],
        by_key: dict[str, BucketRef] | None = None,
    ) -> None:
        """Refresh the budgets' committed/limit ratios that decide pressure."""
        if not states:
            return
        by_key = by_key if by_key is not None else self._keyed(refs)
        ratios = self._ratios
        for state in states:
            ref = by_key.get(state.key)
            if ref is not None and ref.limit > 0:
                ratios[ref.label] = state.committed / ref.limit

    def _run_cap_ratios(self) -> list[tuple[str, float, float]]:
        """Refresh the run caps' ratios (this run's and its parents'); this run's caps."""
        own = self._spend_caps()
        ratios = self._ratios
        for cap, used, limit in own:
            ratios[_RUN_LABELS[cap]] = used / limit  # "run:max_cost_usd", ...
        if len(self._lineage) == 1:
            return own
        if len(self._lineage) > 1:
            for run in self._lineage[1:]:
                for cap, used, limit in run._spend_caps():
                    ratios[f"parent:{cap}"] = used / limit
        return own

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

    # ------------------------------------------------------------------ tool internals
    def _count_tool(self, step: ToolStep, sign: int) -> None:
        for run in self._lineage:
            c = run.counters
            c.tool_calls += sign
            c.tool_calls_by_name[step.name] = c.tool_calls_by_name.get(step.name, 0) + sign
            c.reserved_usd = max(c.reserved_usd + sign * step.price_usd, 0.0)
            if sign > 0:
                c.last_tool_call_id = step.call_id
                if step.retry:  # the same call again, not the model repeating itself
                    continue
                same = step.signature == c.last_tool_signature
                c.tool_streak = c.tool_streak + 1 if same else 1
                c.last_tool_signature = step.signature

    # ------------------------------------------------------------------ ending
    def _stop_reason_for(self, error: BaseException | None) -> str:
        if isinstance(error, BudgetExceeded):
            return error.cap
        if isinstance(error, _CANCELS):  # a stream closed by its reader, a task cancelled
            return "cancelled"
        if isinstance(error, ToolDenied):  # raised out of the agent (callbacks, SDK hooks)
            return "tool_denied"
        if error is not None and not isinstance(error, BudgetError):
            return "error"
        if self.stopped is not None:
            return self.stopped.cap
        return self.final_cap or "completed"

    def _drop_hold(self, step: Step | ToolStep) -> None:
        """Forget a call's reservation (it was committed, or will never be)."""
        self._pending.pop(step.id, None)
        step.done = True
        if isinstance(step, ToolStep):
            if step.price_usd:
                for run in self._lineage:
                    run.counters.reserved_usd = _floor(run.counters.reserved_usd - step.price_usd)
            return
        for run in self._lineage:
            c = run.counters
            c.reserved_usd = _floor(c.reserved_usd - step.reserved_usd)
            c.reserved_input_tokens = _floor(c.reserved_input_tokens - step.input_tokens)
            c.reserved_output_tokens = _floor(c.reserved_output_tokens - step.max_tokens)


def new_run_id() -> str:
    """A new run's id: 48 random bits, as ``uuid4()[:12]`` (an adapter that must know a
    run's id before it opens passes one made here as ``warden.run(run_id=...)``)."""
    return f"run-{os.urandom(6).hex()}"


#: Errors that end a run because its caller stopped it, not because anything failed.
_CANCELS = (GeneratorExit, asyncio.CancelledError)


def cancel_targets(
    namespace: str, run_ids: Sequence[str], attribution: Mapping[str, str | None]
) -> tuple[str, ...]:
    """What a cancel of these runs or of their attribution is kept under in the ledger, in
    the warden's namespace (a cancel in one namespace stops no run of another)."""
    targets = [f"run={run_id}" for run_id in run_ids]
    for scope, value in attribution.items():
        if value is not None and (scope in CANCEL_SCOPES or scope.startswith("tag:")):
            targets.append(f"{scope}={value}")
    return tuple(cancel_key(namespace, target) for target in targets)


#: The attributes a run can be cancelled by (with its id and its tags): every budget scope
#: but global, which a cancel cannot name. ``Warden.cancel`` accepts these, and a run
#: watches these: one set, so no scope is accepted that no run watches.
CANCEL_SCOPES = frozenset(SCOPES) - {"global"}
