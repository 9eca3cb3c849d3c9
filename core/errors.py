"""Typed errors: what was refused, the figures, and what to change."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .pause import PauseHandle
    from .report import RunReport

__all__ = ["BudgetError", "BudgetExceeded", "LedgerUnavailable", "ModelDenied", "ToolDenied"]


class BudgetError(Exception):
    """Base of every refusal budgetwarden raises at run time."""

    report: RunReport | None = None
    #: The partial output where an adapter has one (the transcript so far, the last text).
    partial: Any = None
    #: A resumable handle when the policy pauses (``on_exceeded="pause"``).
    handle: PauseHandle | None = None


def _figure(value: float) -> str:
    return f"{value:.6g}"


def _advice(cap: str) -> str:
    if cap == "cancelled":
        return "lift it with warden.uncancel(...) to let runs go on"
    if cap.startswith("budget:"):
        return _budget_advice(cap)
    if cap.startswith("max_tool_calls["):
        return "raise ToolRules.max_calls for that tool in the policy"
    if cap == "ledger_unavailable":
        return "bring the ledger back or set Policy.ledger_failure='open'"
    return f"raise Limits.{cap} in the policy if the run needs more"


def _budget_advice(cap: str) -> str:
    """What to change for a budget's bucket (``budget:user=u1/8h``, ``.../total/tokens``): a
    budget that never resets, or counts one run, has no window to wait for."""
    parts = cap.split("/")
    window = parts[-2] if parts[-1] in ("tokens", "requests") else parts[-1]
    if window == "total":
        return "raise the Budget's limit in the policy (a total budget never resets)"
    if window == "run":
        return "raise the Budget's limit in the policy (it counts each run on its own)"
    return "wait for the window to reset or raise the Budget's limit in the policy"


#: Stops that no figure explains: what happened, in words.
_WITHOUT_FIGURES = {
    "cancelled": "it was cancelled from outside (warden.cancel)",
    "ledger_unavailable": "its ledger is unreachable and the policy fails closed",
}


class BudgetExceeded(BudgetError):
    """A call was refused because a cap or a budget has no room left for it.

    ``cap`` names what refused it (a ``Limits`` field such as ``"max_iterations"``, a tool cap
    ``"max_tool_calls[search]"``, or a budget ``"budget:user=u1/8h"``); ``limit`` and ``used``
    are the figures; ``report`` the run so far; ``resets_at`` when a window frees it (epoch
    seconds, else None); ``partial`` the partial output where an adapter has one.
    """

    def __init__(
        self,
        cap: str,
        limit: float,
        used: float,
        report: RunReport | None = None,
        *,
        resets_at: float | None = None,
        partial: Any = None,
        requested: float | None = None,
        run_id: str | None = None,
    ) -> None:
        self.cap = cap
        self.limit = limit
        self.used = used
        self.report = report
        self.resets_at = resets_at
        self.partial = partial
        self.requested = requested
        self.run_id = run_id
        self.handle = None
        super().__init__(self._sentence())

    def _sentence(self) -> str:
        who = f"run {self.run_id}" if self.run_id else "the run"
        need = (
            f", and the next call needs up to {_figure(self.requested)}"
            if self.requested is not None
            else ""
        )
        when = ""
        if self.resets_at is not None:
            stamp = datetime.fromtimestamp(self.resets_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            when = f"; it resets at {stamp}"
        if self.cap in _WITHOUT_FIGURES:
            return f"budgetwarden stopped {who}: {_WITHOUT_FIGURES[self.cap]}; {_advice(self.cap)}."
        return (
            f"budgetwarden stopped {who} at {self.cap}: {_figure(self.used)} of "
            f"{_figure(self.limit)} used{need}{when}; {_advice(self.cap)}."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_exceeded,
            (
                self.cap,
                self.limit,
                self.used,
                self.report,
                self.resets_at,
                self.requested,
                self.run_id,
            ),
        )


def _rebuild_exceeded(
    cap: str,
    limit: float,
    used: float,
    report: Any,
    resets_at: float | None,
    requested: float | None,
    run_id: str | None,
) -> BudgetExceeded:
    return BudgetExceeded(
        cap, limit, used, report, resets_at=resets_at, requested=requested, run_id=run_id
    )


class ToolDenied(BudgetError):
    """A tool call was refused by the policy's tool rules (deny list, allow list, approval)."""

    def __init__(self, tool: str, reason: str, report: RunReport | None = None) -> None:
        self.tool = tool
        self.reason = reason
        self.report = report
        fix = (
            "approve it with Warden(approve=...) (a function given the tool call that "
            "returns True or False), or take it out of Policy.tools.require_approval"
            if "approval" in reason
            else "change Policy.tools (allow, deny, require_approval) to let it run"
        )
        super().__init__(f"budgetwarden denied tool {tool!r}: {reason}; {fix}.")


class ModelDenied(BudgetError):
    """A model call was refused because the model has no price and the policy says deny."""

    def __init__(self, model: str, report: RunReport | None = None) -> None:
        self.model = model
        self.report = report
        super().__init__(
            f"budgetwarden cannot price model {model!r} and Policy.unknown_model is 'deny'; "
            f"add a price: Policy(prices={{{model!r}: {{'input_cost_per_token': ..., "
            "'output_cost_per_token': ...}}) or set unknown_model='fallback'."
        )


class LedgerUnavailable(ConnectionError):
    """A ledger backend could not be reached or failed; the warden applies the policy."""

    def __init__(self, uri: str, cause: BaseException | str) -> None:
        self.uri = uri
        self.cause = cause
        super().__init__(f"budgetwarden cannot reach ledger {uri}: {cause}")
