"""CrewAI crews for the overhead benchmark: a scripted LLM, a tool, do-nothing scoped hooks."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

from crewai import Agent, Crew, Process, Task
from crewai.events.types.llm_events import LLMCallType
from crewai.hooks.dispatch import InterceptionPoint, register_scoped, scoped_hooks
from crewai.llms.base_llm import BaseLLM, llm_call_context
from crewai.tools import BaseTool
from pydantic import PrivateAttr

from .texts import prose

RESULT = prose(600)


class ScriptedLLM(BaseLLM):
    """A CrewAI LLM that asks for ``search`` ``steps`` times, then gives its final answer.

    Like CrewAI's own providers it emits the LLM call events with usage and tracks usage in
    its token tracker.
    """

    model: str = "gpt-4o-mini"
    steps: int = 8
    _calls: int = PrivateAttr(default=0)

    def __init__(self, model: str = "gpt-4o-mini", **fields: Any) -> None:
        super().__init__(model=model, **fields)

    @property
    def calls(self) -> int:
        """Calls that reached this model."""
        return self._calls

    def supports_function_calling(self) -> bool:
        return False

    def call(
        self,
        messages: Any,
        tools: Any = None,
        callbacks: Any = None,
        available_functions: Any = None,
        from_task: Any = None,
        from_agent: Any = None,
        response_model: Any = None,
    ) -> Any:
        with llm_call_context():
            self._emit_call_started_event(
                messages=messages, tools=tools, from_task=from_task, from_agent=from_agent
            )
            self._calls += 1
            usage = {"prompt_tokens": 600, "completion_tokens": 40, "total_tokens": 640}
            self._track_token_usage_internal(usage)
            if self._calls > self.steps:
                text = "Thought: I know enough.\nFinal Answer: nothing counts in the loop."
            else:
                args = json.dumps({"query": f"q{self._calls}"})
                text = f"Thought: I need more.\nAction: search\nAction Input: {args}"
            self._emit_call_completed_event(
                response=text,
                call_type=LLMCallType.LLM_CALL,
                from_task=from_task,
                from_agent=from_agent,
                messages=messages,
                usage=usage,
            )
            return text


class SearchTool(BaseTool):
    """Answers at once."""

    name: str = "search"
    description: str = "Search the web for a query."

    def _run(self, query: str = "") -> str:
        return f"{query}: {RESULT}"


def make_crew(steps: int) -> tuple[Crew, ScriptedLLM]:
    """A one-agent, one-task sequential crew over the scripted LLM."""
    llm = ScriptedLLM(steps=steps)
    agent = Agent(
        role="researcher",
        goal="find out why agents overspend",
        backstory="a careful researcher",
        llm=llm,
        tools=[SearchTool()],
        max_iter=steps + 5,
        verbose=False,
    )
    task = Task(description="research agent overspend", expected_output="facts", agent=agent)
    return Crew(agents=[agent], tasks=[task], process=Process.sequential, verbose=False), llm


def _noop(ctx: Any) -> None:
    return None


@contextlib.contextmanager
def noop_hooks() -> Iterator[None]:
    """Scoped model and tool hooks that do nothing, registered as guard_crew registers its own."""
    with scoped_hooks():
        for point in (
            InterceptionPoint.PRE_MODEL_CALL,
            InterceptionPoint.POST_MODEL_CALL,
            InterceptionPoint.PRE_TOOL_CALL,
            InterceptionPoint.POST_TOOL_CALL,
        ):
            register_scoped(point, _noop)
        yield


class Kickoff:
    """One kickoff of a fresh crew: ``setup`` builds it (untimed), calling it kicks it off."""

    def __init__(self, steps: int, kickoff: Callable[[Crew], Any]) -> None:
        self.steps = steps
        self.kickoff = kickoff
        self.crew: Crew | None = None
        self.llm: ScriptedLLM | None = None

    def setup(self) -> None:
        """Build the crew to kick off next."""
        self.crew, self.llm = make_crew(self.steps)

    def __call__(self) -> int:
        assert self.crew is not None and self.llm is not None
        self.kickoff(self.crew)
        if self.llm.calls != self.steps + 1:
            raise AssertionError(f"expected {self.steps + 1} model calls, saw {self.llm.calls}")
        return self.llm.calls
