"""Scripted Agents SDK models for the adapter's tests: only the LLM is fake."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from agents.agent_output import AgentOutputSchemaBase
from agents.handoffs import Handoff
from agents.items import ModelResponse, TResponseInputItem, TResponseOutputItem
from agents.model_settings import ModelSettings
from agents.models.interface import Model, ModelProvider, ModelTracing
from agents.tool import Tool
from agents.usage import Usage as AgentsUsage
from agents.usage import _make_input_tokens_details
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseFunctionToolCall,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseUsage,
)
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

Turn = list[TResponseOutputItem] | BaseException | Callable[[int], list[TResponseOutputItem]]

_ids = itertools.count()


def tool_call(name: str, args: dict[str, Any] | None = None) -> ResponseFunctionToolCall:
    """A function-call output item with a fresh call id."""
    n = next(_ids)
    return ResponseFunctionToolCall(
        type="function_call",
        id=f"fc_{n}",
        call_id=f"call_{n}",
        name=name,
        arguments=json.dumps(args or {}),
    )


def message(text: str) -> ResponseOutputMessage:
    """An assistant message output item."""
    return ResponseOutputMessage(
        id=f"msg_{next(_ids)}",
        type="message",
        role="assistant",
        status="completed",
        content=[ResponseOutputText(type="output_text", text=text, annotations=[])],
    )


def agents_usage(
    input_tokens: int, output_tokens: int, cached: int = 0, reasoning: int = 0
) -> AgentsUsage:
    """One request's usage as the Agents SDK reports it."""
    return AgentsUsage(
        requests=1,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=input_tokens + output_tokens,
        input_tokens_details=_make_input_tokens_details(cached_tokens=cached),
        output_tokens_details=OutputTokensDetails(reasoning_tokens=reasoning),
    )


class ScriptedModel(Model):
    """Plays its scripted turns, then calls ``loop_tool`` forever (or answers ``final_text``).

    Offered no tool, it answers ``final_text`` instead of looping (as a real model must).
    Each turn reports ``usage``; ``calls`` counts the model calls that really happened,
    ``inputs`` keeps what each one was sent and ``tools`` the tool names it was offered.
    """

    def __init__(
        self,
        turns: Sequence[Turn] = (),
        *,
        loop_tool: str | None = "search",
        same_args: bool = False,
        final_text: str = "done",
        usage: tuple[int, int, int, int] = (100, 20, 0, 0),
        model: str | None = "gpt-4o-mini",
    ) -> None:
        self.turns = list(turns)
        self.loop_tool = loop_tool
        self.same_args = same_args
        self.final_text = final_text
        self.usage = usage
        self.model = model  # the name budgetwarden prices this model by (None: unknown)
        self.settings: list[ModelSettings] = []
        self.calls = 0
        self.inputs: list[list[TResponseInputItem]] = []
        self.instructions: list[str | None] = []
        self.tools: list[list[str]] = []

    def _next_output(self) -> list[TResponseOutputItem]:
        index = self.calls
        self.calls += 1
        if self.turns:
            turn = self.turns.pop(0)
            if isinstance(turn, BaseException):
                raise turn
            return turn(index) if callable(turn) else turn
        if self.loop_tool is None or not self.tools[-1]:
            return [message(self.final_text)]
        args = {"q": "same"} if self.same_args else {"q": f"query {index}"}
        return [tool_call(self.loop_tool, args)]

    def _record(
        self,
        system_instructions: str | None,
        input: str | list[Any],
        settings: ModelSettings,
        tools: list[Tool],
        handoffs: list[Handoff],
    ) -> None:
        self.tools.append([tool.name for tool in tools] + [h.tool_name for h in handoffs])
        self.settings.append(settings)
        self.instructions.append(system_instructions)
        self.inputs.append(list(input) if isinstance(input, list) else [input])

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
        self._record(system_instructions, input, model_settings, tools, handoffs)
        output = self._next_output()
        return ModelResponse(output=output, usage=agents_usage(*self.usage), response_id=None)

    async def stream_response(
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
    ) -> AsyncIterator[Any]:
        self._record(system_instructions, input, model_settings, tools, handoffs)
        output = self._next_output()
        for index, item in enumerate(output):
            yield ResponseOutputItemDoneEvent(
                type="response.output_item.done",
                item=item,
                output_index=index,
                sequence_number=index,
            )
        inp, out, cached, reasoning = self.usage
        response = Response(
            id=f"resp_{next(_ids)}",
            created_at=0,
            model=self.model or "scripted",
            object="response",
            output=output,
            tool_choice="auto",
            tools=[],
            top_p=None,
            parallel_tool_calls=False,
            usage=ResponseUsage(
                input_tokens=inp,
                output_tokens=out,
                total_tokens=inp + out,
                input_tokens_details=InputTokensDetails(cached_tokens=cached, cache_write_tokens=0),
                output_tokens_details=OutputTokensDetails(reasoning_tokens=reasoning),
            ),
        )
        yield ResponseCompletedEvent(
            type="response.completed", response=response, sequence_number=len(output)
        )


class ScriptedProvider(ModelProvider):
    """Maps model names to scripted models (what a routed tier resolves to in tests)."""

    def __init__(self, models: dict[str, Model]) -> None:
        self.models = models
        self.requested: list[str | None] = []

    def get_model(self, model_name: str | None) -> Model:
        self.requested.append(model_name)
        return self.models[model_name or ""]
