"""A ``retry_on`` rule for LangChain's retry middleware that leaves budgetwarden's refusals be."""

from __future__ import annotations

from langchain_core.exceptions import ModelError

from budgetwarden import BudgetError

__all__ = ["retryable"]


def retryable(exc: BaseException) -> bool:
    """LangChain's default retry rule, except for budgetwarden's refusals.

    Pass it as ``ModelRetryMiddleware(retry_on=retryable)`` (or ``ToolRetryMiddleware``):
    their default retries every ``Exception``, so a ``BudgetExceeded`` raised by the callback
    handler, or by the middleware under ``on_exceeded="raise"``, would be retried (refused
    again) and then swallowed into a "failed after N attempts" message. A refusal stays
    refused until a window resets, so it is raised at once instead.
    """
    if isinstance(exc, BudgetError) or not isinstance(exc, Exception):
        return False
    if isinstance(exc, ModelError):
        return bool(exc.is_retryable)
    return True
