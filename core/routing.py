"""Routing decisions: which model a call may use, and why. Pure functions of state and policy.

A run's task class picks its starting tier; failure signals move one tier up for the next
call (at most ``max_escalations``); outage signals move along the model's fallback chain;
budget pressure moves one tier down (never more than one below the starting tier).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

from .policy import Routing

__all__ = [
    "Complexity",
    "PromptSizeComplexity",
    "RouteChoice",
    "RouteState",
    "after_outcome",
    "choose",
    "fallback_exhausted",
    "start_state",
]


@dataclass(frozen=True, slots=True)
class RouteState:
    """Where a run stands in its routing: starting tier, escalations, pending fallback."""

    start_tier: int | None = None
    escalations: int = 0
    fallback_from: str | None = None  # model whose outage asks for a fallback
    fallback_index: int = 0
    fallback_reason: str | None = None
    last_reason: str | None = None


@dataclass(frozen=True, slots=True)
class RouteChoice:
    """The model for one call, its tier (None when unrouted) and the reason, for events."""

    model: str | None
    tier: int | None
    reason: str
    downgraded: bool = False
    fallback: bool = False  # a fallback after an outage (see ``back_from_fallback``)


class Complexity(Protocol):
    """Picks a starting tier for a run without a task class (replace with a classifier)."""

    def tier_for(self, routing: Routing, prompt_tokens: int, tool_count: int) -> int | None:
        """A tier index, or None to keep the caller's model."""


@dataclass(frozen=True, slots=True)
class PromptSizeComplexity:
    """A simple heuristic: long prompts or many tools start one or two tiers up."""

    long_prompt_tokens: int = 4000
    many_tools: int = 5

    def tier_for(self, routing: Routing, prompt_tokens: int, tool_count: int) -> int | None:
        """Tier 0, +1 for a long prompt, +1 for many tools, bounded by the top tier."""
        if not routing.tiers:
            return None
        score = int(prompt_tokens >= self.long_prompt_tokens) + int(tool_count >= self.many_tools)
        return min(score, len(routing.tiers) - 1)


def start_state(
    routing: Routing,
    *,
    task_class: str | None,
    requested_model: str | None,
    prompt_tokens: int = 0,
    tool_count: int = 0,
    complexity: Complexity | None = None,
) -> RouteState:
    """The routing state of a run at its first call."""
    if not routing.tiers:
        return RouteState()
    if task_class is not None and task_class in routing.task_classes:
        tier = routing.task_classes[task_class]
        index = tier if isinstance(tier, int) else routing.tiers.index(tier)
        return RouteState(start_tier=index, last_reason=f"task_class={task_class}")
    known = routing.tier_of(requested_model)
    if known is not None:
        return RouteState(start_tier=known, last_reason=f"caller model {requested_model}")
    if complexity is not None and (requested_model is None or routing.override_caller_model):
        guess = complexity.tier_for(routing, prompt_tokens, tool_count)
        if guess is not None:
            return RouteState(start_tier=guess, last_reason=f"complexity: tier {guess}")
    if requested_model is None or routing.override_caller_model:
        return RouteState(start_tier=0, last_reason="default: cheapest tier")
    return RouteState()


def choose(
    routing: Routing,
    state: RouteState,
    *,
    requested_model: str | None,
    pressure: str | None = None,
    step_down: int = 0,
) -> RouteChoice:
    """The model for the next call.

    ``pressure`` names the cap at or past the degrade level (e.g. ``cost 91% of user=u1/day``),
    which moves one tier down. ``step_down`` (0 or 1) asks for one tier down because the
    chosen tier's reservation did not fit. A run never goes below ``start_tier - 1``.
    """
    if state.fallback_from is not None:
        chain = routing.fallbacks.get(state.fallback_from, [])
        if state.fallback_index < len(chain):
            model = chain[state.fallback_index]
            reason = f"fallback: {state.fallback_reason} from {state.fallback_from}"
            return RouteChoice(model, routing.tier_of(model), reason, fallback=True)
    if state.start_tier is None:
        return RouteChoice(requested_model, None, "caller model (unrouted)")
    top = len(routing.tiers) - 1
    tier = min(state.start_tier + state.escalations, top)
    reason = state.last_reason or f"tier {tier}"
    floor = max(state.start_tier - 1, 0)
    down = 1 if (pressure and routing.downgrade_on_pressure) or step_down else 0
    if down and tier > floor:
        tier -= 1
        reason = f"downgrade: {pressure}" if pressure else "downgrade: reservation did not fit"
        return RouteChoice(routing.tiers[tier], tier, reason, downgraded=True)
    return RouteChoice(routing.tiers[tier], tier, reason)


def back_from_fallback(
    routing: Routing, state: RouteState, *, requested_model: str | None, fallback: str | None
) -> RouteChoice:
    """The model to try when the fallback ``choose`` gave cannot be afforded: the run's own
    route, one tier down where it can go (a retry of the model that failed, rather than a
    refusal while the budget still has room for it)."""
    back = choose(
        routing,
        replace(state, fallback_from=None, fallback_index=0),
        requested_model=requested_model,
        step_down=1,
    )
    return replace(back, reason=f"fallback {fallback} did not fit; {back.reason}")


def after_outcome(
    routing: Routing, state: RouteState, *, outcome: str, model: str | None
) -> RouteState:
    """The routing state after a call ended with ``outcome`` on ``model``. A run on the
    caller's own model (unrouted) walks that model's fallback chain too, when it has one."""
    if outcome in routing.fallback_on and model is not None:
        if state.fallback_from is not None:
            return replace(state, fallback_index=state.fallback_index + 1, fallback_reason=outcome)
        if state.start_tier is not None or model in routing.fallbacks:
            return replace(state, fallback_from=model, fallback_index=0, fallback_reason=outcome)
        return state
    if state.start_tier is None:
        if outcome == "ok" and state.fallback_from is not None:
            return replace(state, fallback_from=None, fallback_index=0)
        return state
    if outcome in routing.escalate_on:
        if state.escalations < routing.max_escalations:
            top = len(routing.tiers) - 1
            if state.start_tier + state.escalations < top:
                return replace(
                    state,
                    escalations=state.escalations + 1,
                    fallback_from=None,
                    last_reason=f"escalate: {outcome}",
                )
        return replace(state, fallback_from=None)
    if outcome == "ok" and state.fallback_from is not None:
        return replace(state, fallback_from=None, fallback_index=0)
    return state


def fallback_exhausted(routing: Routing, state: RouteState) -> bool:
    """True when an outage asked for a fallback and the chain has no model left."""
    if state.fallback_from is None:
        return False
    return state.fallback_index >= len(routing.fallbacks.get(state.fallback_from, ()))
