"""LangChain and LangGraph adapters: a callback handler for any Runnable, middleware for agents.

``BudgetCallbackHandler`` governs any Runnable (legacy agents, LangGraph graphs,
``create_agent``) through its callbacks and raises ``BudgetExceeded`` out of ``invoke``.
``BudgetMiddleware`` governs a LangChain 1.x ``create_agent`` agent, routes and compresses
its model calls, and ends it with an honest final message when a cap is reached (or pauses
it, resumed later by ``resume_langgraph``).
"""

from __future__ import annotations

try:
    import langchain.agents  # noqa: F401
    import langchain_core  # noqa: F401
    import langgraph  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "budgetwarden.integrations.langchain needs langchain: pip install 'budgetwarden[langchain]'"
    ) from exc

from ._pause import aresume_langgraph, resume_langgraph
from ._retry import retryable
from .handler import BudgetCallbackHandler
from .middleware import BudgetMiddleware, BudgetState

__all__ = [
    "BudgetCallbackHandler",
    "BudgetMiddleware",
    "BudgetState",
    "aresume_langgraph",
    "resume_langgraph",
    "retryable",
]
