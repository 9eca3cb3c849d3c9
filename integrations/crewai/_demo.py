"""``budgetwarden demo`` rows for CrewAI: a real crew, a scripted model that never finishes."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

from crewai import Agent, Crew, Task
from crewai.events.types.llm_events import LLMCallType
from crewai.llms.base_llm import BaseLLM, llm_call_context
from crewai.tools import BaseTool
from crewai.utilities.types import LLMMessage
from pydantic import PrivateAttr

from budgetwarden import Limits, Policy, RunReport, Warden
from budgetwarden.steps import FINAL_ANSWER_INSTRUCTION
from budgetwarden.usage import estimate_message_tokens

from .guard import guard_crew

__all__ = ["run_demo"]

MODEL = "gpt-4o"
ANSWER = "They loop, retry and re-send their whole context (from 3 searches; more unread)."
PAGE = "Agents overspend because they loop, retry and re-send their whole context. " * 12


class _LoopingLLM(BaseLLM):
    """A model that always wants one more search (its prompt grows with the context), unless
    budgetwarden's final-answer instruction asks it to answer."""

    _calls: int = PrivateAttr(default=0)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def call(
        self,
        messages: Any,
        tools: Any = None,
        callbacks: Any = None,
        available_functions: Any = None,
        from_task: Any = None,
        from_agent: Any = None,
        response_model: Any = None,
    ) -> str:
        """Answer like a provider: events with usage, the token tracker, the hooks."""
        chat: list[LLMMessage] = (
            [{"role": "user", "content": messages}] if isinstance(messages, str) else messages
        )
        with llm_call_context():
            self._emit_call_started_event(messages=chat, from_task=from_task, from_agent=from_agent)
            self._invoke_before_llm_call_hooks(chat, from_agent)
            with self._lock:
                self._calls += 1
                n = self._calls
            if any(FINAL_ANSWER_INSTRUCTION in str(m.get("content")) for m in chat):
                text = f"Thought: time to answer.\nFinal Answer: {ANSWER}"
            else:
                query = json.dumps({"query": f"why agents overspend, part {n}"})
                text = f"Thought: I should search more.\nAction: web_search\nAction Input: {query}"
            usage = {"prompt_tokens": estimate_message_tokens(chat), "completion_tokens": 40}
            self._track_token_usage_internal(usage)
            self._emit_call_completed_event(
                response=text,
                call_type=LLMCallType.LLM_CALL,
                from_task=from_task,
                from_agent=from_agent,
                messages=chat,
                usage=usage,
            )
            return text


class _SearchTool(BaseTool):
    name: str = "web_search"
    description: str = "Search the web (scripted: always the same long page)."

    def _run(self, query: str = "") -> str:
        return PAGE


def _crew() -> Crew:
    agent = Agent(
        role="researcher",
        goal="Find out why LLM agents overspend",
        backstory="A meticulous researcher who always wants one more source.",
        llm=_LoopingLLM(model=MODEL, max_tokens=256),
        tools=[_SearchTool()],
        max_iter=10,
        verbose=False,
    )
    task = Task(description="Why do agents overspend?", expected_output="a report", agent=agent)
    return Crew(agents=[agent], tasks=[task], verbose=False)


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


def _kickoff(name: str, limits: Limits) -> dict[str, Any]:
    warden = Warden(Policy(limits=limits), log_events=False)
    result = guard_crew(_crew(), warden, workflow="demo").kickoff()
    # This crew never finishes by itself: without a cap, CrewAI's max_iter ends it.
    if result.stopped and result.budget_error is None:
        return _row(name, result.report, f"{result.cap}: answered")
    return _row(name, result.report, result.cap or "CrewAI max_iter")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """CrewAI prints listener errors and event warnings when a hook stops a crew: hide them."""
    crewai_logger = logging.getLogger("crewai")
    level = crewai_logger.level
    crewai_logger.setLevel(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        crewai_logger.setLevel(level)


def run_demo() -> list[dict[str, Any]]:
    """Rows for the demo table: the same looping crew without caps, then guarded (the last
    one answering from its final allowed call)."""
    with _quiet():
        return [
            _kickoff("CrewAI crew, no caps (max_iter=10)", Limits()),
            _kickoff("CrewAI crew, guard_crew ($0.02)", Limits(max_cost_usd=0.02)),
            _kickoff("CrewAI crew, guard_crew (4 tool calls)", Limits(max_tool_calls=4)),
            _kickoff(
                "CrewAI crew, guard_crew final answer (4 calls)",
                Limits(max_iterations=4, final_answer=True),
            ),
        ]
