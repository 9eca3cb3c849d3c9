"""Building a run's events: CostEvents for calls, BudgetAlerts for threshold crossings."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any, Literal

from .buckets import BucketRef
from .events import BudgetAlert, CostEvent, trusted
from .ledger.base import BucketState
from .policy import Thresholds
from .steps import Step, ToolStep
from .usage import Usage

__all__ = ["alert_levels", "bucket_crossings", "cap_crossings", "llm_event", "tool_event"]

Action = Literal["alert", "warn", "degrade", "stop"]
_PROVIDERS = (
    ("gpt", "openai"),
    ("o1", "openai"),
    ("o3", "openai"),
    ("o4", "openai"),
    ("claude", "anthropic"),
    ("gemini", "gemini"),
    ("mistral", "mistral"),
    ("command", "cohere"),
)


@lru_cache(maxsize=512)
def provider_of(model: str | None) -> str | None:
    """The provider a model name belongs to (its ``provider/`` prefix, or a known family)."""
    if not model:
        return None
    if "/" in model:
        return model.split("/", 1)[0]
    return next((p for prefix, p in _PROVIDERS if model.startswith(prefix)), None)


def reached(used: float, threshold: float) -> bool:
    """``used >= threshold``, forgiving float rounding ($0.3 x 3 reaches $0.9)."""
    return used >= threshold - 1e-9 * max(abs(threshold), 1.0)


def alert_levels(thresholds: Thresholds) -> list[float]:
    """Every level that raises a BudgetAlert, ascending: the alert levels, warn, degrade, stop."""
    cached = _LEVELS.get(id(thresholds))
    if cached is None or cached[0] is not thresholds:
        if len(_LEVELS) > 256:
            _LEVELS.clear()
        levels = sorted({*thresholds.alerts, thresholds.warn, thresholds.degrade, thresholds.stop})
        cached = _LEVELS[id(thresholds)] = (thresholds, levels)
    return cached[1]


_LEVELS: dict[int, tuple[Thresholds, list[float]]] = {}


def action_of(thresholds: Thresholds, level: float) -> Action:
    """What a level means: stop, degrade, warn, or a plain alert."""
    if level >= thresholds.stop:
        return "stop"
    if level >= thresholds.degrade:
        return "degrade"
    return "warn" if level >= thresholds.warn else "alert"


def make_alert(
    base: dict[str, Any],
    thresholds: Thresholds,
    cap: str,
    level: float,
    used: float,
    limit: float,
    resets_at: float | None,
) -> BudgetAlert:
    """A BudgetAlert for one crossing."""
    return BudgetAlert(
        **base,
        cap=cap,
        level=level,
        action=action_of(thresholds, level),
        ratio=used / limit,
        used=used,
        limit=limit,
        resets_at=resets_at,
    )


def cap_crossings(
    base: Callable[[], dict[str, Any]],
    thresholds: Thresholds,
    caps: Iterable[tuple[str, float, float]],
    seen: set[tuple[str, float]],
) -> list[BudgetAlert]:
    """Alerts for run caps (name, used, limit) that crossed a level not yet in ``seen``
    (``base`` gives the events' common fields, built only when one is needed)."""
    alerts = []
    levels = alert_levels(thresholds)
    for cap, used, limit in caps:
        for level in levels:  # ascending: stop at the first level not reached
            if not reached(used, level * limit):
                break
            if (cap, level) not in seen:
                seen.add((cap, level))
                alerts.append(make_alert(base(), thresholds, cap, level, used, limit, None))
    return alerts


def bucket_crossings(
    base: Callable[[], dict[str, Any]],
    thresholds: Thresholds,
    states: Sequence[BucketState],
    by_key: Mapping[str, BucketRef],
    first_time: Callable[[BucketRef, float], bool],
) -> list[BudgetAlert]:
    """Alerts for budget buckets (``by_key``: ledger key -> bucket) that crossed a level for
    the first time in their window."""
    levels = alert_levels(thresholds)
    alerts = []
    for state in states:
        ref = by_key.get(state.key)
        if ref is None or ref.limit <= 0:
            continue
        for level in levels:  # ascending: stop at the first level not reached
            if not reached(state.committed, level * ref.limit):
                break
            if first_time(ref, level):
                alerts.append(
                    make_alert(
                        base(),
                        thresholds,
                        ref.label,
                        level,
                        state.committed,
                        ref.limit,
                        ref.window.resets_at,
                    )
                )
    return alerts


def llm_event(
    base: dict[str, Any],
    ts: float,
    step: Step,
    usage: Usage,
    model: str | None,
    cost: float,
    *,
    latency_s: float | None,
    outcome: str,
    retries: int,
    ratios: dict[str, float],
    prompt: str | None,
    response: str | None,
) -> CostEvent:
    """The CostEvent of one model call (``base``: the run's attribution fields)."""
    failed = outcome != "ok"
    fields = {  # every field: becomes the event's own dict
        **base,
        "ts": ts,
        "kind": "llm",
        "provider": provider_of(model),
        "model": model,
        "tool": None,
        "requested_model": step.requested_model,
        "tier": step.tier,
        "route": f"tier {step.tier}: {step.model}" if step.tier is not None else step.model,
        "route_reason": step.route_reason,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "estimated": usage.estimated,
        "service_tier": usage.service_tier,
        "web_search_requests": usage.web_search_requests,
        "cost_usd": cost,
        "reserved_usd": step.reserved_usd,
        "overshoot_usd": cost - step.reserved_usd if cost > step.reserved_usd else 0.0,
        "latency_s": None if latency_s is None else float(latency_s),
        "retries": retries,
        "retry": step.retry,
        "outcome": outcome,
        "validation": "failed" if outcome in ("invalid_json", "validation_failed") else None,
        "status": "error" if failed else "ok",
        "budget_ratios": ratios,
        "success": None,
        "prompt": prompt,
        "response": response,
    }
    return trusted(CostEvent, fields)


def tool_event(
    base: dict[str, Any],
    ts: float,
    step: ToolStep,
    *,
    ok: bool,
    latency_s: float | None,
    ratios: dict[str, float],
) -> CostEvent:
    """The CostEvent of one tool call."""
    fields = dict(
        base,
        ts=ts,
        kind="tool",
        tool=step.name,
        cost_usd=step.price_usd,
        reserved_usd=step.price_usd,
        latency_s=None if latency_s is None else float(latency_s),
        outcome="ok" if ok else "error",
        status="ok" if ok else "error",
        budget_ratios=ratios,
    )
    return trusted(CostEvent, fields)
