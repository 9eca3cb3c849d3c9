"""budgetwarden for the OpenAI Agents SDK: run hooks, routed models and a guarded runner.

``Runner.run(agent, "task", hooks=BudgetRunHooks(warden, user="u1"))`` keeps a run (and its
handoffs) inside the policy: ``run_sync`` and ``run_streamed`` take the hooks the same way.
``BudgetModelProvider`` routes each call to the tier the policy chose; ``run_guarded``
returns the partial result instead of raising when a cap stops the run (with the model's own
final answer under ``Limits(final_answer=True)``), ``run_guarded_streamed`` does the same for
a streamed run, and ``resume_openai_agents`` continues a run that
``Policy(on_exceeded="pause")`` paused.
"""

from __future__ import annotations

try:
    import agents  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "budgetwarden.integrations.openai_agents needs openai-agents: "
        "pip install 'budgetwarden[openai-agents]'"
    ) from exc

from ._errors import AgentsBudgetExceeded, AgentsToolDenied
from ._final import GuardedModel, noting_agent
from ._guarded import (
    GuardedResult,
    resume_openai_agents,
    resume_openai_agents_sync,
    run_guarded,
    run_guarded_sync,
)
from ._hooks import BudgetRunHooks
from ._routing import BudgetModelProvider, RoutedModel
from ._streamed import GuardedStream, run_guarded_streamed

__all__ = [
    "AgentsBudgetExceeded",
    "AgentsToolDenied",
    "BudgetModelProvider",
    "BudgetRunHooks",
    "GuardedModel",
    "GuardedResult",
    "GuardedStream",
    "RoutedModel",
    "noting_agent",
    "resume_openai_agents",
    "resume_openai_agents_sync",
    "run_guarded",
    "run_guarded_streamed",
    "run_guarded_sync",
]
