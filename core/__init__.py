"""budgetwarden: keep LLM agents inside their budgets.

Caps on every run, budgets over time shared across processes, graceful degradation,
routing, and one cost event per call, for LangChain, CrewAI and the OpenAI Agents SDK.
"""

from __future__ import annotations

from .errors import BudgetError, BudgetExceeded, LedgerUnavailable, ModelDenied, ToolDenied
from .events import (
    BudgetAlert,
    CostEvent,
    JSONLSink,
    ListSink,
    Notice,
    RunFinished,
    StructlogSink,
)
from .grants import Grant, LimitReached
from .ledger import Ledger, open_ledger
from .pause import PauseHandle
from .policy import Budget, Limits, Policy, PolicyError, Routing, Thresholds, ToolRules
from .pricing import ModelPrice, PriceBook, UnknownModelError
from .report import RunReport
from .routing import PromptSizeComplexity
from .run import Run, Step, ToolStep
from .usage import Usage
from .warden import Warden

__all__ = [
    "Budget",
    "BudgetAlert",
    "BudgetError",
    "BudgetExceeded",
    "CostEvent",
    "Grant",
    "JSONLSink",
    "Ledger",
    "LedgerUnavailable",
    "LimitReached",
    "Limits",
    "ListSink",
    "ModelDenied",
    "ModelPrice",
    "Notice",
    "PauseHandle",
    "Policy",
    "PolicyError",
    "PriceBook",
    "PromptSizeComplexity",
    "Routing",
    "Run",
    "RunFinished",
    "RunReport",
    "Step",
    "StructlogSink",
    "Thresholds",
    "ToolDenied",
    "ToolRules",
    "ToolStep",
    "UnknownModelError",
    "Usage",
    "Warden",
    "open_ledger",
]

__version__ = "0.1.0"
