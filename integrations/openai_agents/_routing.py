"""Routed models: each model call goes to the model budgetwarden's routing chose for it.

The SDK resolves an agent's ``Model`` before ``on_llm_start`` runs, so the hooks cannot swap
it. Instead a :class:`BudgetModelProvider` hands the SDK a :class:`RoutedModel`, which finds
the reservation ``on_llm_start`` made for this very call (the SDK passes the same input list
object to the hook and to the model) and dispatches to the model of that step: any
LiteLLM model by default, so any provider's model can be a tier.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from agents.agent_output import AgentOutputSchemaBase
from agents.handoffs import Handoff
from agents.items import ModelResponse, TResponseInputItem
from agents.model_settings import ModelSettings
from agents.models.default_models import get_default_model
from agents.models.interface import Model, ModelProvider, ModelTracing
from agents.retry import ModelRetryAdvice, ModelRetryAdviceRequest
from agents.tool import Tool

from budgetwarden import BudgetError
from budgetwarden.dispatch import classify_error

from ._final import final_arguments, final_response
from ._translate import compress_input, model_name

if TYPE_CHECKING:
    from ._hooks import BudgetRunHooks
    from ._state import LlmCall

__all__ = ["BudgetModelProvider", "RoutedModel", "litellm_model", "outcome_of"]

ModelFactory = Callable[[str], Model]

#: How many times one model call may move along a fallback chain before giving up.
_MAX_FALLBACK_HOPS = 4


def _with_usage(settings: ModelSettings) -> ModelSettings:
    """A streamed call asks for its usage chunk (``include_usage``: chat-completions and
    LiteLLM models send none otherwise, and the call is then only estimated), unless the
    agent chose; Responses models always report it."""
    if settings.include_usage is not None:
        return settings
    return settings.resolve(ModelSettings(include_usage=True))


def litellm_model(name: str) -> Model:
    """The default model factory: any LiteLLM model name (``anthropic/...``, ``gpt-4o``...)."""
    from agents.extensions.models.litellm_model import LitellmModel

    return LitellmModel(name)


def outcome_of(exc: BaseException) -> str:
    """The core's outcome for a failed model call (an unknown error counts as provider_error)."""
    return classify_error(exc) or "provider_error"


def _compressed(
    call: LlmCall | None, input: str | list[TResponseInputItem], server_side: bool
) -> str | list[TResponseInputItem]:
    """The input to send: shrunk when the step asks for it (not when the server keeps it)."""
    if call is None or not call.step.compress or server_side or not isinstance(input, list):
        return input
    target = call.step.compress_target(call.state.run.policy.compress_ratio)
    return compress_input(call.system_prompt, input, target)


class RoutedModel(Model):
    """A Model that calls, per turn, the model budgetwarden chose for that turn's reservation."""

    def __init__(
        self,
        hooks: BudgetRunHooks,
        requested_model: str | None,
        resolve: ModelFactory,
        *,
        default: Model | None = None,
    ) -> None:
        self.hooks = hooks
        self.requested_model = requested_model
        self._resolve = resolve
        self._default = default
        self._last: Model | None = None

    def _model_for(self, chosen: str | None) -> tuple[str, Model]:
        target = chosen or self.requested_model
        if self._default is not None and (target is None or target == self.requested_model):
            return target or "", self._default
        name = target or get_default_model()
        return name, self._resolve(name)

    def _settings(self, settings: ModelSettings, call: LlmCall | None) -> ModelSettings:
        step_max = getattr(call.step, "max_tokens", None) if call is not None else None
        if settings.max_tokens is None and step_max:
            return settings.resolve(ModelSettings(max_tokens=step_max))
        return settings

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
        """Dispatch to the chosen model; on an outage, move along the routing's fallbacks.

        The last call a cap allows goes without tools, and keeps only its text.
        """
        call = await self.hooks.begin_dispatch(input)
        for _ in range(_MAX_FALLBACK_HOPS + 1):
            name, model = self._model_for(call.step.model if call is not None else None)
            self._last = model
            if call is not None:
                call.dispatched_model = name
            offered, offered_handoffs, settings = final_arguments(
                call, tools, handoffs, model_settings, name or model_name(model)
            )
            try:
                response = await model.get_response(
                    system_instructions,
                    _compressed(call, input, bool(previous_response_id or conversation_id)),
                    self._settings(settings, call),
                    offered,
                    output_schema,
                    offered_handoffs,
                    tracing,
                    previous_response_id=previous_response_id,
                    conversation_id=conversation_id,
                    prompt=prompt,
                )
            except BudgetError:
                raise
            except Exception as exc:
                if call is None or not await self.hooks.fail_dispatch(call, exc, retry=True):
                    raise
            else:
                return final_response(call, response)
        raise RuntimeError("unreachable: fallback hops exhausted")  # pragma: no cover

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
        """Stream from the chosen model; fall back only while nothing has been streamed yet."""
        call = await self.hooks.begin_dispatch(input)
        for _ in range(_MAX_FALLBACK_HOPS + 1):
            name, model = self._model_for(call.step.model if call is not None else None)
            self._last = model
            if call is not None:
                call.dispatched_model = name
            offered, offered_handoffs, settings = final_arguments(
                call, tools, handoffs, model_settings, name or model_name(model)
            )
            streamed = False
            try:
                async for event in model.stream_response(
                    system_instructions,
                    _compressed(call, input, bool(previous_response_id or conversation_id)),
                    _with_usage(self._settings(settings, call)),
                    offered,
                    output_schema,
                    offered_handoffs,
                    tracing,
                    previous_response_id=previous_response_id,
                    conversation_id=conversation_id,
                    prompt=prompt,
                ):
                    streamed = True
                    yield event
                return
            except BudgetError:
                raise
            except Exception as exc:
                if call is None or not await self.hooks.fail_dispatch(
                    call, exc, retry=not streamed
                ):
                    raise

    def get_retry_advice(self, request: ModelRetryAdviceRequest) -> ModelRetryAdvice | None:
        """Never retry a budget refusal; otherwise ask the model that was called."""
        if isinstance(request.error, BudgetError):
            return ModelRetryAdvice(suggested=False, reason="budgetwarden refused the call")
        return self._last.get_retry_advice(request) if self._last is not None else None

    async def close(self) -> None:
        """Close the models this one dispatched to."""
        if self._default is not None:
            await self._default.close()


class BudgetModelProvider(ModelProvider):
    """A ModelProvider whose models follow the policy's ``Routing`` call by call.

    ``Runner.run(agent, input, hooks=hooks, run_config=RunConfig(
    model_provider=BudgetModelProvider(hooks)))``. Each call goes to the model the core chose
    (``step.model``: the task class's tier, one up after a failure signal, one down under
    budget pressure, the fallback after an outage), made by ``model_factory`` (default:
    ``LitellmModel(name)``) or, when given, ``base_provider.get_model(name)``. Tests map tier
    names to scripted models through ``model_factory``.
    """

    def __init__(
        self,
        hooks: BudgetRunHooks,
        *,
        model_factory: ModelFactory | None = None,
        base_provider: ModelProvider | None = None,
    ) -> None:
        self.hooks = hooks
        hooks.use_routing()
        if model_factory is not None:
            self._factory: ModelFactory = model_factory
        elif base_provider is not None:
            self._factory = base_provider.get_model
        else:
            self._factory = litellm_model
        self._models: dict[str, Model] = {}

    def model(self, name: str) -> Model:
        """The (cached) model that serves ``name``."""
        if name not in self._models:
            self._models[name] = self._factory(name)
        return self._models[name]

    def get_model(self, model_name: str | None) -> Model:
        """A routed model for an agent that asked for ``model_name`` (None: the default)."""
        return RoutedModel(self.hooks, model_name, self.model)

    def wrap(self, model: Model) -> RoutedModel:
        """Route an agent whose ``model`` is a Model instance (unrouted calls still use it)."""
        name = getattr(model, "model", None)
        return RoutedModel(
            self.hooks, name if isinstance(name, str) else None, self.model, default=model
        )

    async def aclose(self) -> None:
        """Close every model this provider made."""
        for model in self._models.values():
            await model.close()
