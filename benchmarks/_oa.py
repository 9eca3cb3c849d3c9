"""OpenAI Agents SDK agents for the overhead benchmark: a scripted model, do-nothing hooks."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from agents import Agent, RunHooks, Runner, function_tool, set_tracing_disabled
from agents.items import ModelResponse
from agents.models.interface import Model
from agents.usage import Usage as AgentsUsage
from agents.usage import _make_input_tokens_details
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)
from openai.types.responses.response_usage import OutputTokensDetails

from .texts import prose

set_tracing_disabled(True)
QUESTION = "Research why LLM agents overspend and cite sources. " + prose(400)
RESULT = prose(600)
_ids = itertools.count()


def _usage() -> AgentsUsage:
    return AgentsUsage(
        requests=1,
        input_tokens=600,
        output_tokens=40,
        total_tokens=640,
        input_tokens_details=_make_input_tokens_details(cached_tokens=0),
        output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
    )


class ScriptedModel(Model):
    """Calls ``search`` on turns 1..steps of each run, then answers (turns counted from input)."""

    def __init__(self, steps: int, model: str = "gpt-4o-mini") -> None:
        self.steps = steps
        self.model = model

    async def get_response(
        self, system_instructions: Any, input: Any, *args: Any, **kw: Any
    ) -> Any:
        turn = 1 + sum(
            1 for item in input if isinstance(item, dict) and item.get("type") == "function_call"
        )
        n = next(_ids)
        output: list[Any]
        if turn > self.steps:
            text = ResponseOutputText(
                type="output_text", text="Nothing counts in the loop.", annotations=[]
            )
            output = [
                ResponseOutputMessage(
                    id=f"msg_{n}",
                    type="message",
                    role="assistant",
                    status="completed",
                    content=[text],
                )
            ]
        else:
            output = [
                ResponseFunctionToolCall(
                    type="function_call",
                    id=f"fc_{n}",
                    call_id=f"call_{n}",
                    name="search",
                    arguments=json.dumps({"q": f"step {turn}"}),
                )
            ]
        return ModelResponse(output=output, usage=_usage(), response_id=None)

    def stream_response(self, *args: Any, **kw: Any) -> AsyncIterator[Any]:
        raise NotImplementedError


@function_tool
def search(q: str) -> str:
    """Search the web for q."""
    return f"{q}: {RESULT}"


class NoopHooks(RunHooks[Any]):
    """The run hooks BudgetRunHooks implements, doing nothing."""

    async def on_agent_start(self, context: Any, agent: Any) -> None:
        pass

    async def on_llm_start(self, context: Any, agent: Any, system_prompt: Any, items: Any) -> None:
        pass

    async def on_llm_end(self, context: Any, agent: Any, response: Any) -> None:
        pass

    async def on_tool_start(self, context: Any, agent: Any, tool: Any) -> None:
        pass

    async def on_tool_end(self, context: Any, agent: Any, tool: Any, result: Any) -> None:
        pass

    async def on_handoff(self, context: Any, from_agent: Any, to_agent: Any) -> None:
        pass

    async def on_agent_end(self, context: Any, agent: Any, output: Any) -> None:
        pass


def make_agent(steps: int) -> Agent[Any]:
    """A real Agents SDK agent over the scripted model."""
    return Agent(
        name="researcher",
        instructions="Research.",
        model=ScriptedModel(steps),
        tools=[search],
    )


def invoker(
    loop: asyncio.AbstractEventLoop,
    steps: int,
    hooks: Callable[[], RunHooks[Any] | None],
    agent: Agent[Any] | None = None,
) -> Callable[[], int]:
    """One ``Runner.run`` of ``agent`` (default: over the scripted model) on ``loop``;
    returns its model calls (checked)."""
    agent = agent or make_agent(steps)

    def invoke() -> int:
        result = loop.run_until_complete(
            Runner.run(agent, QUESTION, hooks=hooks(), max_turns=steps + 5)
        )
        calls = len(result.raw_responses)
        if calls != steps + 1:
            raise AssertionError(f"expected {steps + 1} model calls, saw {calls}")
        return calls

    return invoke


def make_openai_client_agent(steps: int) -> Agent[Any]:
    """The same agent over the SDK's own ``OpenAIChatCompletionsModel`` and the real
    ``AsyncOpenAI`` client, answered by a canned HTTP endpoint (``_openai_http``)."""
    import httpx
    from agents import OpenAIChatCompletionsModel
    from openai import AsyncOpenAI

    from ._openai_http import BASE_URL, transport

    client = AsyncOpenAI(
        api_key="sk-bench-offline",
        base_url=BASE_URL,
        http_client=httpx.AsyncClient(transport=transport(steps, "search", "q")),
        max_retries=0,
    )
    model = OpenAIChatCompletionsModel(model="gpt-4o-mini", openai_client=client)
    return Agent(name="researcher", instructions="Research.", model=model, tools=[search])
