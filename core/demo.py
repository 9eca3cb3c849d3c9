"""``budgetwarden demo``: a runaway research agent, unguarded and guarded, offline.

The agent re-sends its whole, growing context every step (as agents do) through LiteLLM with
a scripted ``mock_response`` whose token counts are real (``litellm.token_counter``). Without
a guard it runs all its steps; with one it stops at its cap with a partial result. Adapters
add their own rows (a real LangChain, CrewAI and Agents SDK agent) when their framework is
installed.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

from .dispatch import complete
from .errors import BudgetExceeded
from .policy import Limits, Policy
from .report import RunReport
from .warden import Warden

__all__ = ["DemoRow", "research_agent", "run_demo"]

DemoRow = dict[str, Any]
SEARCH_RESULT = (
    "Result: budgets for LLM agents must live in the agent loop, because agents retry, "
    "loop and re-send their whole context at every step. "
) * 12
ADAPTERS = ("langchain", "openai_agents", "crewai")


def _scripted_reply(model: str, messages: list[dict[str, str]], step: int) -> dict[str, Any]:
    """A LiteLLM mock response with real token counts for this prompt and reply."""
    import litellm

    text = f"Step {step}: I should search more before answering. " * 4
    prompt = litellm.token_counter(model=model, messages=messages)
    completion = litellm.token_counter(model=model, text=text, count_response_tokens=True)
    return {
        "model": model,
        "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def research_agent(warden: Warden, *, steps: int = 30, model: str = "gpt-4o") -> RunReport:
    """Run the scripted research agent for up to ``steps`` steps under ``warden``."""
    messages = [
        {"role": "system", "content": "You are a meticulous research agent."},
        {"role": "user", "content": "Find out why agents overspend, with sources."},
    ]
    with warden.run(agent="researcher", workflow="demo", task_class="research") as run:
        for step in range(1, steps + 1):
            reply = _scripted_reply(model, messages, step)
            response = complete(
                run, messages, model=model, max_tokens=256, mock_response=reply, attempts=1
            )
            messages.append({"role": "assistant", "content": response.choices[0].message.content})
            tool = run.before_tool_call("search", {"q": f"agent overspend {step}"})
            messages.append({"role": "user", "content": SEARCH_RESULT})
            run.after_tool_call(tool)
    return run.report


def _row(name: str, report: RunReport) -> DemoRow:
    return {
        "agent": name,
        "model_calls": report.iterations,
        "tool_calls": report.tool_calls,
        "input_tokens": report.input_tokens,
        "output_tokens": report.output_tokens,
        "cost_usd": report.cost_usd,
        "stop": report.stop_reason or "completed",
    }


def core_rows() -> list[DemoRow]:
    """The unguarded agent against the same agent under a $0.05 / 12-call policy."""
    unguarded = research_agent(Warden(Policy(), log_events=False))
    guard = Policy(limits=Limits(max_cost_usd=0.05, max_iterations=12, max_tool_calls=12))
    guarded = research_agent(Warden(guard, log_events=False))
    return [
        _row("research agent, no guard", unguarded),
        _row("research agent, guarded ($0.05)", guarded),
    ]


def adapter_rows(progress: Callable[[str], None] | None = None) -> list[DemoRow]:
    """Rows from each installed adapter's own demo (skipped when its framework is missing)."""
    rows: list[DemoRow] = []
    for name in ADAPTERS:
        target = f"budgetwarden.integrations.{name}._demo"
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            if exc.name != target:  # the framework is missing, or too old
                why = str(exc).splitlines()[0] if str(exc) else f"{exc.name} is missing"
                rows.append({"agent": f"{name} (skipped: {why})", "stop": "skipped"})
            continue
        if progress:
            progress(name)
        rows.extend(module.run_demo())
    return rows


def run_demo(progress: Callable[[str], None] | None = None) -> list[DemoRow]:
    """Every demo row: the core research agent, then each adapter's agent."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    if progress:
        progress("research agent")
    try:
        rows = core_rows()
    except BudgetExceeded as exc:  # pragma: no cover - the guarded run ends gracefully
        rows = [{"agent": "research agent", "stop": exc.cap}]
    return rows + adapter_rows(progress)
