"""Scripted CrewAI LLMs and tools for the CrewAI adapter tests: the real framework, a fake model."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from crewai import Agent, Crew, Process, Task
from crewai.events.types.llm_events import LLMCallType
from crewai.llms.base_llm import BaseLLM, llm_call_context
from crewai.tools import BaseTool
from pydantic import PrivateAttr

from budgetwarden.steps import FINAL_ANSWER_INSTRUCTION

#: The size of a streamed answer's chunks (characters).
CHUNK = 8


class ScriptedLLM(BaseLLM):
    """A CrewAI LLM that never finishes: every answer asks for a tool, like a looping agent.

    It behaves like CrewAI's own providers: it emits the LLM call events with usage, tracks
    usage in its token tracker and dispatches the model-call hooks for calls made outside an
    agent executor. ``native=True`` answers with native tool calls instead of ReAct text;
    ``delay`` makes every call slow. Asked for a final answer (budgetwarden's instruction in
    its messages) it gives one: "best answer N", in CrewAI's ReAct format unless ``native``
    or ``final_plain`` (or, ``obey=False`` with native tools offered, calls a tool anyway).
    ``needs_tools`` refuses a history of tool calls sent without tools, as Anthropic's and
    Bedrock's APIs do. ``report_usage=False`` counts no usage (a custom LLM);
    ``emit_tool_calls`` emits the completed event of a native tool-call answer too. With
    ``stream`` set (CrewAI sets it on a streaming crew's LLMs) a text
    answer is also emitted as stream chunks of ``CHUNK`` characters, as the providers do.
    """

    model: str = "gpt-4o-mini"
    tool_names: list[str] = ["search"]
    native: bool = False
    delay: float = 0.0
    prompt_tokens: int = 100
    completion_tokens: int = 20
    finish_after: int | None = None
    tool_args: dict[str, Any] | None = None
    final_plain: bool = False
    needs_tools: bool = False
    obey: bool = True
    report_usage: bool = True
    emit_tool_calls: bool = False
    _calls: int = PrivateAttr(default=0)
    _tools: list[Any] = PrivateAttr(default_factory=list)
    _started: list[float] = PrivateAttr(default_factory=list)
    _seen: list[list[dict[str, Any]]] = PrivateAttr(default_factory=list)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __init__(self, model: str = "gpt-4o-mini", **fields: Any) -> None:
        super().__init__(model=model, **fields)

    @property
    def calls(self) -> int:
        """How many calls reached this model."""
        return self._calls

    @property
    def seen(self) -> list[list[dict[str, Any]]]:
        """The messages each call received."""
        return list(self._seen)

    @property
    def tools_seen(self) -> list[Any]:
        """The tools each call was offered (None or a list of schemas)."""
        return list(self._tools)

    @property
    def started(self) -> list[float]:
        """When each call started (``time.time()``)."""
        return list(self._started)

    def supports_function_calling(self) -> bool:
        return self.native

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
            msgs = (
                [{"role": "user", "content": messages}] if isinstance(messages, str) else messages
            )
            self._invoke_before_llm_call_hooks(msgs, from_agent)
            if self.needs_tools and not tools and _has_tool_history(msgs):
                raise ToolHistoryRefused("Requests which include tool_use blocks must define tools")
            with self._lock:
                self._calls += 1
                self._started.append(time.time())
                self._seen.append([dict(m) for m in msgs])
                self._tools.append(list(tools) if tools is not None else None)
                number = self._calls
            if self.delay:
                time.sleep(self.delay)
            usage: dict[str, Any] | None = {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
            }
            if self.report_usage:
                self._track_token_usage_internal(usage)
            else:
                usage = None  # a custom LLM that counts nothing
            if _asks_final(msgs) and (self.obey or not (self.native and tools)):
                text = self._final_text(number)
            elif self.finish_after is not None and number > self.finish_after:
                answer = f"answer {number} from {self.model}"
                text = answer if self.native else f"Thought: done\nFinal Answer: {answer}"
            elif self.native and tools:
                calls = [self._tool_call(number)]
                if self.emit_tool_calls:  # as CrewAI's native providers do
                    self._emit_call_completed_event(
                        response=calls,
                        call_type=LLMCallType.TOOL_CALL,
                        from_task=from_task,
                        from_agent=from_agent,
                        messages=messages,
                        usage=usage,
                    )
                return calls
            else:
                args = json.dumps(self._args_for(number))
                tool = self._tool_for(number)
                text = f"Thought: I need more.\nAction: {tool}\nAction Input: {args}"
            if self.stream:
                self._stream_chunks(text, from_task, from_agent)
            self._emit_call_completed_event(
                response=text,
                call_type=LLMCallType.LLM_CALL,
                from_task=from_task,
                from_agent=from_agent,
                messages=messages,
                usage=usage,
            )
            return text

    async def acall(
        self,
        messages: Any,
        tools: Any = None,
        callbacks: Any = None,
        available_functions: Any = None,
        from_task: Any = None,
        from_agent: Any = None,
        response_model: Any = None,
    ) -> Any:
        return self.call(messages, tools, callbacks, available_functions, from_task, from_agent)

    def _stream_chunks(self, text: str, from_task: Any, from_agent: Any) -> None:
        for start in range(0, len(text), CHUNK):
            self._emit_stream_chunk_event(
                text[start : start + CHUNK],
                from_task=from_task,
                from_agent=from_agent,
                call_type=LLMCallType.LLM_CALL,
            )

    def _final_text(self, number: int) -> str:
        answer = f"best answer {number} from {self.model}"
        if self.native or self.final_plain:
            return answer
        return f"Thought: I must answer now.\nFinal Answer: {answer}"

    def _args_for(self, number: int) -> dict[str, Any]:
        return self.tool_args or {"query": f"q{number}"}

    def _tool_for(self, number: int) -> str:
        return self.tool_names[(number - 1) % len(self.tool_names)]

    def _tool_call(self, number: int) -> dict[str, Any]:
        return {
            "id": f"call_{number}",
            "type": "function",
            "function": {
                "name": self._tool_for(number),
                "arguments": json.dumps(self._args_for(number)),
            },
        }


class ToolHistoryRefused(Exception):
    """What Anthropic and Bedrock answer (HTTP 400) to a tool history sent without tools."""


def _has_tool_history(messages: list[dict[str, Any]]) -> bool:
    return any(m.get("role") == "tool" or m.get("tool_calls") for m in messages)


def _asks_final(messages: list[dict[str, Any]]) -> bool:
    return any(FINAL_ANSWER_INSTRUCTION in str(m.get("content")) for m in messages)


def notes_in(messages: list[dict[str, Any]]) -> list[str]:
    """The system notes budgetwarden added after the conversation's first message."""
    return [str(m["content"]) for m in messages[1:] if m.get("role") == "system"]


class SearchTool(BaseTool):
    """A tool that answers at once and counts its runs."""

    name: str = "search"
    description: str = "Search the web for a query."
    runs: int = 0

    def _run(self, query: str = "") -> str:
        self.runs += 1
        return f"{self.name} results for {query}"


def lookup_tool() -> SearchTool:
    """A second counting tool, named lookup."""
    return SearchTool(name="lookup", description="Look a term up in the encyclopedia.")


def make_crew(
    llms: list[BaseLLM],
    *,
    tools: list[BaseTool] | None = None,
    max_iter: int = 25,
) -> Crew:
    """A sequential crew with one agent and one task per LLM."""
    agents = [
        Agent(
            role=f"researcher {i}",
            goal="find facts",
            backstory="a careful researcher",
            llm=llm,
            tools=list(tools or []),
            max_iter=max_iter,
            verbose=False,
        )
        for i, llm in enumerate(llms)
    ]
    tasks = [
        Task(description=f"research topic {i}", expected_output="facts", agent=agent)
        for i, agent in enumerate(agents)
    ]
    return Crew(agents=agents, tasks=tasks, process=Process.sequential, verbose=False)
