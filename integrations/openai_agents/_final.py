"""The final-answer call and budget hints: what one model call is sent, when a cap nears.

``add_notes`` puts the step's budget hint and, for the last call a cap allows, the final-answer
instruction into the model input the SDK hands to ``Model.get_response`` (one call only: the
SDK builds a fresh input list every turn). Dropping the tools for that call needs a model in
between: :class:`GuardedModel` (what ``run_guarded`` installs) or the routed model.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from agents.agent import Agent
from agents.agent_output import AgentOutputSchemaBase
from agents.exceptions import UserError
from agents.handoffs import Handoff
from agents.items import ModelResponse, TResponseInputItem, TResponseOutputItem
from agents.model_settings import ModelSettings
from agents.models.interface import Model, ModelProvider, ModelTracing
from agents.retry import ModelRetryAdvice, ModelRetryAdviceRequest
from agents.run_config import CallModelData, CallModelInputFilter, ModelInputData
from agents.tool import Tool
from openai.types.responses import ResponseOutputMessage, ResponseReasoningItem

from budgetwarden import BudgetError
from budgetwarden.final_call import final_call_tools, note_role
from budgetwarden.steps import FINAL_ANSWER_INSTRUCTION

from ._translate import model_name

if TYPE_CHECKING:
    from ._hooks import BudgetRunHooks
    from ._state import LlmCall

__all__ = [
    "GuardedModel",
    "add_notes",
    "final_arguments",
    "final_response",
    "noting_agent",
]

_calling_agent: ContextVar[Agent[Any] | None] = ContextVar(
    "budgetwarden_calling_agent", default=None
)


def notes_for(step: Any) -> list[str]:
    """The notes one step asks for: its budget hint, then the final-answer instruction."""
    notes = [step.hint] if getattr(step, "hint", None) else []
    if getattr(step, "final", False):
        notes.append(FINAL_ANSWER_INSTRUCTION)
    return notes


def add_notes(input_items: object, step: Any, model: str | None = None) -> None:
    """Append the step's notes to the very input list the model gets: at the end, so the
    prompt's cached prefix stays as it was, as system messages (user messages for Anthropic
    models: ``budgetwarden.final_call.note_role``)."""
    if not isinstance(input_items, list):
        return
    role = note_role(model)
    for note in notes_for(step):
        input_items.append({"role": role, "content": note})


def final_arguments(
    call: LlmCall | None,
    tools: list[Tool],
    handoffs: list[Handoff],
    settings: ModelSettings,
    model: str | None = None,
) -> tuple[list[Tool], list[Handoff], ModelSettings]:
    """For a final call to ``model``: no tools, no handoffs, no tool choice; any other call
    as it was. Anthropic and Bedrock refuse a history of tool calls without tools
    (``budgetwarden.final_call``): there the tools and handoffs stay, with the tool choice
    ``"none"`` (Anthropic) or left to the model (Bedrock has no ``"none"``), and
    :func:`final_response` drops a tool call the model still makes."""
    if call is None or not call.final:
        return tools, handoffs, settings
    mode = final_call_tools(model or call.step.model or call.model)
    if mode == "drop":
        return [], [], dataclasses.replace(settings, tool_choice=None, parallel_tool_calls=None)
    choice = "none" if mode == "forbid" else None
    return tools, handoffs, dataclasses.replace(settings, tool_choice=choice)


def final_response(call: LlmCall | None, response: ModelResponse) -> ModelResponse:
    """A final call's response keeps only its text (a tool call it still made is dropped)."""
    if call is None or not call.final:
        return response
    kept: list[TResponseOutputItem] = [
        item
        for item in response.output
        if isinstance(item, (ResponseOutputMessage, ResponseReasoningItem))
    ]
    if len(kept) == len(response.output):
        return response
    return dataclasses.replace(response, output=kept)


def noting_agent(inner: CallModelInputFilter | None) -> CallModelInputFilter:
    """A ``call_model_input_filter`` that notes which agent is calling (then runs ``inner``).

    The SDK awaits the filter in the task that then calls the model, so :class:`GuardedModel`
    reads the agent from a context variable, in nested runs too.
    """

    async def note_agent(data: CallModelData[Any]) -> ModelInputData:
        _calling_agent.set(data.agent)
        if inner is None:
            return data.model_data
        updated = inner(data)
        return await updated if inspect.isawaitable(updated) else updated

    return note_agent


class GuardedModel(Model):
    """``RunConfig.model`` for guarded runs: each call goes to the calling agent's own model,
    and the last call a cap allows goes there without tools.

    It resolves models the way the SDK does (``RunConfig.model``, else the agent's ``Model``,
    else the provider's model for the agent's model name); it needs the
    :func:`noting_agent` filter in the same ``RunConfig``.
    """

    def __init__(
        self, hooks: BudgetRunHooks, config_model: str | Model | None, provider: ModelProvider
    ) -> None:
        self.hooks = hooks
        self._config_model = config_model
        self._provider = provider
        self._models: dict[str | None, Model] = {}
        self._last: Model | None = None

    def _by_name(self, name: str | None) -> Model:
        if name not in self._models:
            self._models[name] = self._provider.get_model(name)
        return self._models[name]

    def _target(self) -> Model:
        self._last = self._resolve()
        return self._last

    def _resolve(self) -> Model:
        if isinstance(self._config_model, Model):
            return self._config_model
        if isinstance(self._config_model, str):
            return self._by_name(self._config_model)
        agent = _calling_agent.get()
        if agent is None:
            raise UserError(
                "GuardedModel needs RunConfig(call_model_input_filter=noting_agent(...)) "
                "to know which agent is calling"
            )
        return agent.model if isinstance(agent.model, Model) else self._by_name(agent.model)

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
        """Call the agent's model; a final call without tools (``final_arguments``), keeping
        only its text."""
        call = self.hooks.call_for_input(input)
        target = self._target()
        tools, handoffs, model_settings = final_arguments(
            call, tools, handoffs, model_settings, model_name(target)
        )
        response = await target.get_response(
            system_instructions,
            input,
            model_settings,
            tools,
            output_schema,
            handoffs,
            tracing,
            previous_response_id=previous_response_id,
            conversation_id=conversation_id,
            prompt=prompt,
        )
        return final_response(call, response)

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
        """Stream from the agent's model; a final call is offered no tools."""
        call = self.hooks.call_for_input(input)
        target = self._target()
        tools, handoffs, model_settings = final_arguments(
            call, tools, handoffs, model_settings, model_name(target)
        )
        async for event in target.stream_response(
            system_instructions,
            input,
            model_settings,
            tools,
            output_schema,
            handoffs,
            tracing,
            previous_response_id=previous_response_id,
            conversation_id=conversation_id,
            prompt=prompt,
        ):
            yield event

    def get_retry_advice(self, request: ModelRetryAdviceRequest) -> ModelRetryAdvice | None:
        """Never retry a budget refusal; otherwise ask the model that was called last."""
        if isinstance(request.error, BudgetError):
            return ModelRetryAdvice(suggested=False, reason="budgetwarden refused the call")
        return self._last.get_retry_advice(request) if self._last is not None else None
