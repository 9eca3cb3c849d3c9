"""The per-run rules: pure functions from counters and policy to a refusal or nothing."""

from __future__ import annotations

import json
import json.encoder
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .ledger.base import LIMIT_SLACK
from .policy import Limits, ToolRules

if TYPE_CHECKING:
    from .usage import Usage

__all__ = [
    "Counters",
    "Refusal",
    "llm_refusal",
    "retries_tool_call",
    "tool_refusal",
    "tool_signature",
]


@dataclass(slots=True)
class Counters:
    """What a run has done and holds so far (children's calls included)."""

    iterations: int = 0
    tool_calls: int = 0
    tool_calls_by_name: dict[str, int] = field(default_factory=dict)
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    overshoot_usd: float = 0.0
    reserved_usd: float = 0.0
    reserved_input_tokens: int = 0
    reserved_output_tokens: int = 0
    retries: int = 0
    errors: int = 0
    #: Failed calls in a row: the failed model calls since the last successful one plus the
    #: failed tool calls since the last successful one (a model that answers and asks again
    #: for a failing tool ends no row; see ``count_tool_result``).
    consecutive_errors: int = 0
    llm_error_streak: int = 0
    tool_error_streak: int = 0
    last_llm_failed: bool = False
    last_tool_signature: str | None = None
    tool_streak: int = 0
    #: the framework's id of the last tool call counted: the same id again after it failed
    #: is a retry of that call (``ToolRetryMiddleware``), not the model repeating itself
    last_tool_call_id: str | None = None

    def hold_llm(self, worst: float, est_in: int, max_out: int, retry: bool) -> None:
        """Count a model call about to be made, and what it holds until it reports."""
        self.iterations += 1
        self.reserved_usd += worst
        self.reserved_input_tokens += est_in
        self.reserved_output_tokens += max_out
        if retry:
            self.retries += 1

    def settle_llm(
        self,
        held: tuple[float, int, int],
        usage: Usage,
        cost: float,
        failed: bool,
    ) -> None:
        """Count a finished model call: free what it held (``held``: dollars, input and
        output tokens; never below zero), add what it used."""
        worst, est_in, max_out = held
        left = self.reserved_usd - worst
        self.reserved_usd = left if left > 0 else 0.0
        left_in = self.reserved_input_tokens - est_in
        self.reserved_input_tokens = left_in if left_in > 0 else 0
        left_out = self.reserved_output_tokens - max_out
        self.reserved_output_tokens = left_out if left_out > 0 else 0
        fields: dict[str, int] = usage.__dict__  # one read of the model (see run_fast)
        self.input_tokens += fields["input_tokens"]
        self.output_tokens += fields["output_tokens"]
        self.cache_read_tokens += fields["cache_read_tokens"]
        self.cache_write_tokens += fields["cache_write_tokens"]
        self.cost_usd += cost
        if cost > worst:
            self.overshoot_usd += cost - worst
        self.last_llm_failed = failed
        if failed:
            self.errors += 1
            self.llm_error_streak += 1
            self.consecutive_errors += 1
        elif self.llm_error_streak:
            self.consecutive_errors -= self.llm_error_streak
            self.llm_error_streak = 0

    def count_tool_result(self, ok: bool) -> None:
        """Count a finished tool call's outcome in the error counters."""
        if not ok:
            self.errors += 1
            self.tool_error_streak += 1
            self.consecutive_errors += 1
        elif self.tool_error_streak:
            self.consecutive_errors -= self.tool_error_streak
            self.tool_error_streak = 0


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a call may not happen: the cap, its limit, what is used, what the call needed."""

    cap: str
    limit: float
    used: float
    requested: float | None = None
    tool_denied: str | None = None  # reason, when a tool rule (not a cap) refused
    depth: int = 0  # whose cap: this run's (0), its parent's (1), ... (what a grant extends)


def _common_refusal(limits: Limits, counters: Counters, elapsed: float) -> Refusal | None:
    if limits.max_wall_seconds is not None and elapsed >= limits.max_wall_seconds:
        return Refusal("max_wall_seconds", limits.max_wall_seconds, round(elapsed, 3))
    cap = limits.max_consecutive_errors
    if cap is not None and counters.consecutive_errors >= cap:
        return Refusal("max_consecutive_errors", cap, counters.consecutive_errors)
    return None


def llm_refusal(
    limits: Limits,
    counters: Counters,
    *,
    elapsed: float,
    input_tokens: int,
    max_output_tokens: int,
    worst_cost: float,
) -> Refusal | None:
    """The first cap that refuses the next model call, or None if it may happen."""
    refusal = _common_refusal(limits, counters, elapsed)
    if refusal is not None:
        return refusal
    if limits.max_iterations is not None and counters.iterations >= limits.max_iterations:
        return Refusal("max_iterations", limits.max_iterations, counters.iterations)
    if (
        limits.max_retries is not None
        and counters.last_llm_failed
        and counters.retries >= limits.max_retries
    ):
        return Refusal("max_retries", limits.max_retries, counters.retries)
    return _spend_refusal(limits, counters, input_tokens, max_output_tokens, worst_cost)


def _spend_refusal(
    limits: Limits, counters: Counters, input_tokens: int, max_output: int, worst_cost: float
) -> Refusal | None:
    cap = limits.max_input_tokens
    if cap is not None:
        used = counters.input_tokens + counters.reserved_input_tokens
        if used + input_tokens > cap:
            return Refusal("max_input_tokens", cap, used, input_tokens)
    cap = limits.max_output_tokens
    if cap is not None:
        used = counters.output_tokens + counters.reserved_output_tokens
        if used + max_output > cap:
            return Refusal("max_output_tokens", cap, used, max_output)
    dollars = limits.max_cost_usd
    if dollars is not None:
        spent = counters.cost_usd + counters.reserved_usd
        if spent + worst_cost > dollars + LIMIT_SLACK:
            return Refusal("max_cost_usd", dollars, round(spent, 9), round(worst_cost, 9))
    return None


_CANONICAL = json.JSONEncoder(sort_keys=True, default=str, separators=(",", ":"))
#: The C encoder itself, made once (``JSONEncoder.encode`` builds one per call); None when
#: the interpreter has no C accelerator (then ``_CANONICAL.encode`` does the same work).
_C_CANONICAL: Any = None
if callable(getattr(json.encoder, "c_make_encoder", None)):
    _C_CANONICAL = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None, str, json.encoder.encode_basestring_ascii, None, ":", ",", True, False, True
    )


def tool_signature(name: str, args: Any) -> str:
    """A canonical text for a tool call, to spot the same call made over and over."""
    try:
        if _C_CANONICAL is not None and isinstance(args, dict):
            text = "".join(_C_CANONICAL(args, 0))  # what _CANONICAL.encode(args) returns
        else:
            text = _CANONICAL.encode(args)
    except (TypeError, ValueError, RecursionError):
        text = repr(args)
    return f"{name}:{text}"


def retries_tool_call(counters: Counters, call_id: str | None) -> bool:
    """Whether a tool call with this id runs again the last one counted, which failed."""
    return (
        call_id is not None
        and call_id == counters.last_tool_call_id
        and counters.tool_error_streak > 0
    )


def tool_rule_refusal(rules: ToolRules, name: str) -> Refusal | None:
    """A refusal by the allow and deny lists, or None."""
    if name in rules.deny:
        return Refusal("tools.deny", 0, 0, tool_denied="it is on the deny list")
    if rules.allow is not None and name not in rules.allow:
        return Refusal("tools.allow", 0, 0, tool_denied="it is not on the allow list")
    return None


def tool_refusal(
    limits: Limits,
    rules: ToolRules,
    counters: Counters,
    *,
    name: str,
    signature: str,
    elapsed: float,
    price: float,
    retry: bool = False,
) -> Refusal | None:
    """The first cap that refuses this tool call, or None if it may happen. A ``retry``
    (the framework running a failed call again) is no repeat of the model's."""
    refusal = _common_refusal(limits, counters, elapsed)
    if refusal is not None:
        return refusal
    if limits.max_tool_calls is not None and counters.tool_calls >= limits.max_tool_calls:
        return Refusal("max_tool_calls", limits.max_tool_calls, counters.tool_calls)
    per_tool = rules.max_calls.get(name)
    used = counters.tool_calls_by_name.get(name, 0)
    if per_tool is not None and used >= per_tool:
        return Refusal(f"max_tool_calls[{name}]", per_tool, used)
    repeat = limits.max_repeated_tool_calls
    if (
        repeat is not None
        and not retry
        and signature == counters.last_tool_signature
        and counters.tool_streak >= repeat
    ):
        return Refusal("max_repeated_tool_calls", repeat, counters.tool_streak)
    if price > 0 and limits.max_cost_usd is not None:
        spent = counters.cost_usd + counters.reserved_usd
        if spent + price > limits.max_cost_usd + LIMIT_SLACK:
            return Refusal("max_cost_usd", limits.max_cost_usd, round(spent, 9), price)
    return None


def final_cap(
    limits: Limits,
    counters: Counters,
    *,
    input_tokens: int,
    max_output_tokens: int,
    worst_cost: float,
) -> str | None:
    """The cap that leaves no room for another call like this one (already counted), or None.

    Used by ``Limits.final_answer``: that call is made the run's last, final-answer call.
    """
    c = limits
    if c.max_iterations is not None and counters.iterations >= c.max_iterations:
        return "max_iterations"
    if (
        c.max_cost_usd is not None
        and c.max_cost_usd - counters.cost_usd - counters.reserved_usd < worst_cost
    ):
        return "max_cost_usd"
    if (
        c.max_input_tokens is not None
        and c.max_input_tokens - counters.input_tokens - counters.reserved_input_tokens
        < input_tokens
    ):
        return "max_input_tokens"
    if (
        c.max_output_tokens is not None
        and c.max_output_tokens - counters.output_tokens - counters.reserved_output_tokens
        < max_output_tokens
    ):
        return "max_output_tokens"
    return None


def usage_ratio(limits: Limits, counters: Counters) -> float:
    """The highest share of a run cap (calls, dollars, tokens) used or held so far."""
    ratios = [0.0]
    if limits.max_iterations:
        ratios.append(counters.iterations / limits.max_iterations)
    if limits.max_cost_usd:
        ratios.append((counters.cost_usd + counters.reserved_usd) / limits.max_cost_usd)
    if limits.max_input_tokens:
        ratios.append(counters.input_tokens / limits.max_input_tokens)
    if limits.max_output_tokens:
        ratios.append(counters.output_tokens / limits.max_output_tokens)
    return max(ratios)


def hint_text(left: dict[str, float]) -> str | None:
    """A short note for the model on what its run has left, e.g. "2 model calls and $0.03
    left: finish now" (only this run's own figures, never another tenant's)."""
    parts = []
    if "model_calls" in left:
        calls = int(left["model_calls"])
        parts.append(f"{calls} model call{'s' if calls != 1 else ''}")
    if "tool_calls" in left:
        tools = int(left["tool_calls"])
        parts.append(f"{tools} tool call{'s' if tools != 1 else ''}")
    if "cost_usd" in left:
        parts.append(f"${left['cost_usd']:.2f}")
    for name in ("input_tokens", "output_tokens"):
        if name in left:
            parts.append(f"{int(left[name])} {name.replace('_', ' ')}")
    if not parts:
        return None
    joined = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"Budget note: {joined} left for this task: finish now."
