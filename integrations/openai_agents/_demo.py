"""``budgetwarden demo`` rows for the Agents SDK: a real Runner, a scripted looping model."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

from agents import Agent, Runner, function_tool
from agents.agent_output import AgentOutputSchemaBase
from agents.exceptions import MaxTurnsExceeded
from agents.handoffs import Handoff
from agents.items import ModelResponse, TResponseInputItem
from agents.model_settings import ModelSettings
from agents.models.interface import Model, ModelTracing
from agents.run_config import RunConfig
from agents.tool import Tool
from agents.usage import Usage as AgentsUsage
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)

from budgetwarden import BudgetExceeded, Limits, Policy, RunReport, Warden

from ._guarded import run_guarded_sync
from ._hooks import BudgetRunHooks
from ._translate import estimate_messages

__all__ = ["run_demo"]

MODEL = "gpt-4o"
RESULT = "Agents overspend because they loop, retry and re-send their whole context. " * 12


@function_tool
def web_search(q: str) -> str:
    """Search the web (scripted: always the same long page)."""
    return RESULT


class _LoopingModel(Model):
    """A model that never stops searching; its usage grows with its context, as real ones do."""

    model = MODEL

    def __init__(self) -> None:
        self._ids = itertools.count()

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None = None,
        conversation_id: str | None = None,
        prompt: Any | None = None,
    ) -> ModelResponse:
        n = next(self._ids)
        text = "".join(m["content"] for m in estimate_messages(system_instructions, input))
        prompt_tokens = len(text) // 4 + 20
        usage = AgentsUsage(
            requests=1,
            input_tokens=prompt_tokens,
            output_tokens=40,
            total_tokens=prompt_tokens + 40,
        )
        if not tools:  # the final-answer call: no tool to call, so it answers
            return ModelResponse(output=[_answer(n)], usage=usage, response_id=None)
        call = ResponseFunctionToolCall(
            type="function_call",
            id=f"fc_{n}",
            call_id=f"call_{n}",
            name="web_search",
            arguments=json.dumps({"q": f"why agents overspend, part {n}"}),
        )
        return ModelResponse(output=[call], usage=usage, response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError("the demo model does not stream")


def _answer(n: int) -> ResponseOutputMessage:
    text = "They loop, retry and re-send their context; caps and budgets stop that."
    return ResponseOutputMessage(
        id=f"msg_{n}",
        type="message",
        role="assistant",
        status="completed",
        content=[ResponseOutputText(type="output_text", text=text, annotations=[])],
    )


def _agent() -> Agent[Any]:
    return Agent(
        name="researcher",
        instructions="Research why LLM agents overspend.",
        model=_LoopingModel(),
        tools=[web_search],
        model_settings=ModelSettings(max_tokens=256),
    )


def _row(name: str, report: RunReport | None, stop: str) -> dict[str, Any]:
    report = report or RunReport(run_id="-")
    return {
        "agent": name,
        "model_calls": report.iterations,
        "tool_calls": report.tool_calls,
        "input_tokens": report.input_tokens,
        "output_tokens": report.output_tokens,
        "cost_usd": report.cost_usd,
        "stop": stop,
    }


def _unguarded() -> dict[str, Any]:
    hooks = BudgetRunHooks(Warden(Policy(), log_events=False), workflow="demo")
    config = RunConfig(tracing_disabled=True)
    try:
        Runner.run_sync(_agent(), "Why do agents overspend?", hooks=hooks, run_config=config)
    except MaxTurnsExceeded as exc:
        hooks.close(exc)
    return _row("Agents SDK agent, no caps (SDK max_turns=10)", hooks.report, "max_turns")


def _hooked() -> dict[str, Any]:
    warden = Warden(Policy(limits=Limits(max_tool_calls=4)), log_events=False)
    hooks = BudgetRunHooks(warden, workflow="demo")
    config = RunConfig(tracing_disabled=True)
    try:
        Runner.run_sync(_agent(), "Why do agents overspend?", hooks=hooks, run_config=config)
    except BudgetExceeded as exc:
        return _row("Agents SDK agent, BudgetRunHooks (4 tool calls)", exc.report, exc.cap)
    return _row("Agents SDK agent, BudgetRunHooks (4 tool calls)", hooks.report, "completed")


def _guarded() -> dict[str, Any]:
    warden = Warden(Policy(limits=Limits(max_cost_usd=0.02)), log_events=False)
    result = run_guarded_sync(
        _agent(),
        "Why do agents overspend?",
        warden,
        workflow="demo",
        run_config=RunConfig(tracing_disabled=True),
    )
    return _row("Agents SDK agent, run_guarded ($0.02)", result.report, result.cap or "completed")


def _final_answer() -> dict[str, Any]:
    warden = Warden(Policy(limits=Limits(max_iterations=4, final_answer=True)), log_events=False)
    result = run_guarded_sync(
        _agent(),
        "Why do agents overspend?",
        warden,
        workflow="demo",
        run_config=RunConfig(tracing_disabled=True),
    )
    stop = f"{result.cap}: answered" if result.final_cap else (result.cap or "completed")
    return _row("Agents SDK agent, run_guarded final answer (4 calls)", result.report, stop)


def run_demo() -> list[dict[str, Any]]:
    """Rows for the demo table: the same looping agent unguarded, under hooks, guarded, and
    guarded with a final-answer call."""
    return [_unguarded(), _hooked(), _guarded(), _final_answer()]
