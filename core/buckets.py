"""Which budget buckets a run's calls count against, and what each call charges them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from .ledger.base import Charge
from .policy import Budget
from .windows import Window, window_at

__all__ = ["BucketRef", "bucket_key", "matching_buckets", "scope_value"]


@dataclass(frozen=True, slots=True)
class BucketRef:
    """One budget's bucket for one scope value in the current window."""

    budget: Budget
    value: str
    key: str  # ledger key
    label: str  # the cap name in errors and events, e.g. "budget:user=u1/8h"
    limit: float
    window: Window
    metric: str = "cost"  # the budget's, read once: what a call charges this bucket

    def charge(self, amount: float, stop_level: float = 1.0) -> Charge:
        """A charge of ``amount`` against this bucket, within ``stop_level`` of its limit."""
        return Charge(self.key, amount, self.limit * stop_level, self.window.end)


def escape(value: str) -> str:
    """Percent-escape a scope value so no value can collide with another key's separators."""
    return quote(value, safe="")


def cancel_key(namespace: str, target: str) -> str:
    """The ledger key of a cancel of ``target`` (``run=<id>``, ``user=<value>``...) set in
    ``namespace``."""
    return f"{escape(namespace)}|{target}"


def bucket_key(namespace: str, budget: Budget, value: str, window: Window) -> str:
    """The ledger key of a bucket: namespace, budget, escaped scope value, window start."""
    return (
        f"{escape(namespace)}|{escape(budget.key)}|{escape(budget.scope)}={escape(value)}"
        f"|{int(window.start)}"
    )


def bucket_label(budget: Budget, value: str) -> str:
    """How people see a bucket: ``budget:user=u1/8h`` (plus the metric when not dollars)."""
    metric = "" if budget.metric == "cost" else f"/{budget.metric}"
    name = f"{budget.name}:" if budget.name else ""
    return f"budget:{name}{budget.scope}={value}/{budget.window}{metric}"


def scope_value(budget: Budget, attribution: Mapping[str, str | None]) -> str | None:
    """The value of the budget's scope for a run, or None when the run has none."""
    if budget.scope == "global":
        return "*"
    return attribution.get(budget.scope)


def matching_buckets(
    budgets: Sequence[Budget],
    attribution: Mapping[str, str | None],
    *,
    run_id: str,
    now: float,
    timezone: str,
    namespace: str,
) -> list[BucketRef]:
    """Every bucket a call of this run counts against, in the windows that contain ``now``."""
    refs = []
    for budget in budgets:
        value = scope_value(budget, attribution)
        if not budget.applies_to(value):
            continue
        assert value is not None
        window = window_at(budget.window, now, timezone)
        key_value = f"{value}@run:{run_id}" if budget.window == "run" else value
        refs.append(
            BucketRef(
                budget=budget,
                value=value,
                key=bucket_key(namespace, budget, key_value, window),
                label=bucket_label(budget, value),
                limit=budget.limit_for(value),
                window=window,
                metric=budget.metric,
            )
        )
    return refs
