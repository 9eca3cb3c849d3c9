"""``RoutedLLM``: a CrewAI LLM that calls, for each call, the model tier the run chose.

CrewAI picks an agent's LLM before any hook runs, so a hook cannot change the model of a
call. ``RoutedLLM`` is that agent's LLM: it asks the guarded kickoff for the call's step
(reserved once, by the pre-call hook, or here for a call no hook saw), delegates to an LLM
built for ``step.model`` (``crewai.LLM(model, is_litellm=True)``, i.e. LiteLLM, or a factory
of your own), and commits the call as soon as it returns.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, ClassVar

from crewai.hooks.llm_hooks import model_call_hooks_dispatched
from crewai.llms.base_llm import BaseLLM, call_stop_override, call_stream_override
from pydantic import Field, PrivateAttr

from ._calls import ModelCall, current_call, outcome_of_error, trackers
from ._state import CrewRunState, active_state, lane_of

#: The model label of a RoutedLLM that leaves the choice to the policy's routing.
ROUTED = "budgetwarden/routed"

LLMFactory = Callable[[str], BaseLLM]


def litellm_factory(**options: Any) -> LLMFactory:
    """A factory that builds CrewAI's LiteLLM-backed ``LLM`` for a model name."""

    def build(model: str) -> BaseLLM:
        from crewai import LLM

        return LLM(model=model, is_litellm=True, **options)

    return build


class RoutedLLM(BaseLLM):
    """An agent LLM whose model is chosen per call by the budgetwarden run (its routing).

    ``model``: the caller's model (routing starts at its tier when it is one), or leave it
    out to let the policy's routing pick (task class, else the cheapest tier). ``factory``
    builds the LLM for a model name (default: ``crewai.LLM`` through LiteLLM, with
    ``options``; ``max_tokens`` and the other ``BaseLLM`` fields among them also set this
    LLM's own, which the reservation reads). Outside a guarded kickoff it calls ``model``.
    """

    #: Its calls go to the model the run's routing chooses (other LLMs call their own).
    routes_calls: ClassVar[bool] = True
    llm_factory: Callable[[str], BaseLLM] | None = Field(default=None, exclude=True)
    llm_options: dict[str, Any] = Field(default_factory=dict)
    _delegates: dict[str, BaseLLM] = PrivateAttr(default_factory=dict)
    _delegates_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __init__(
        self, model: str | None = None, *, factory: LLMFactory | None = None, **options: Any
    ) -> None:
        own = {name: value for name, value in options.items() if name in BaseLLM.model_fields}
        own.pop("model", None)
        super().__init__(model=model or ROUTED, llm_factory=factory, llm_options=options, **own)

    @property
    def requested_model(self) -> str | None:
        """The model the caller asked for, or None when routing decides."""
        return None if self.model == ROUTED else self.model

    def delegate(self, model: str) -> BaseLLM:
        """The LLM that calls ``model`` (built once per model name)."""
        with self._delegates_lock:
            llm = self._delegates.get(model)
            if llm is None:
                factory = self.llm_factory or litellm_factory(**self.llm_options)
                llm = self._delegates[model] = factory(model)
            return llm

    # ------------------------------------------------------------------ calls
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
        """Call the model the run chose for this call, and commit the call."""
        options = {
            "tools": tools or None,  # none at all for a final-answer call (emptied list)
            "callbacks": callbacks,
            "available_functions": available_functions,
            "from_task": from_task,
            "from_agent": from_agent,
            "response_model": response_model,
        }
        state = active_state.get()
        if state is None:
            return self.delegate(self._own_model()).call(messages, **options)
        chat = _as_chat(messages)
        call = self._reserve(state, chat, from_agent)
        llm = self._delegate_for(call)
        try:
            with self._delegating(llm):
                result = llm.call(messages, **options)
        except Exception as error:
            self._finish(call, llm, None, error)
            raise
        self._finish(call, llm, result, None)
        return self._after_hooks(chat, result, from_agent)

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
        """Async twin of ``call``."""
        options = {
            "tools": tools or None,  # none at all for a final-answer call (emptied list)
            "callbacks": callbacks,
            "available_functions": available_functions,
            "from_task": from_task,
            "from_agent": from_agent,
            "response_model": response_model,
        }
        state = active_state.get()
        if state is None:
            return await self.delegate(self._own_model()).acall(messages, **options)
        chat = _as_chat(messages)
        call = self._reserve(state, chat, from_agent)
        llm = self._delegate_for(call)
        try:
            with self._delegating(llm):
                result = await llm.acall(messages, **options)
        except Exception as error:
            self._finish(call, llm, None, error)
            raise
        self._finish(call, llm, result, None)
        return self._after_hooks(chat, result, from_agent)

    # ------------------------------------------------------------------ capabilities
    def supports_function_calling(self) -> bool:
        """Whether the model this LLM would call now supports native tool calls."""
        llm = self._representative()
        check = getattr(llm, "supports_function_calling", None)
        return bool(check()) if callable(check) else False

    def supports_stop_words(self) -> bool:
        """Whether the model this LLM would call now supports stop words."""
        llm = self._representative()
        return llm.supports_stop_words() if llm is not None else super().supports_stop_words()

    def get_context_window_size(self) -> int:
        """The context window of the model this LLM would call now."""
        llm = self._representative()
        if llm is None:
            return super().get_context_window_size()
        return llm.get_context_window_size()

    # ------------------------------------------------------------------ internals
    def _own_model(self) -> str:
        model = self.requested_model
        if model is None:
            raise ValueError(
                "RoutedLLM has no model to call outside a guarded kickoff: give it a model, "
                "or kick off its crew through guard_crew with a policy that has Routing tiers."
            )
        return model

    def _reserve(self, state: CrewRunState, chat: Any, from_agent: Any) -> ModelCall:
        """The call's reservation: the one the pre-call hook made, else one made here.

        The agent executor dispatches the hooks before calling; other CrewAI callers (the
        forced final answer, guardrails) do not, so this LLM dispatches them, as CrewAI's
        providers do. A call no hook reserved (a call nested in another) reserves here.
        """
        self._invoke_before_llm_call_hooks(chat, from_agent)
        call = current_call.get()
        if call is None or call.consumed or call.claimed or call.state is not state:
            lane = lane_of(from_agent)
            call = state.begin_call(self, chat, lane=lane, run=state.run_for(from_agent))
            current_call.set(call)
        call.consumed = True
        return call

    def _delegate_for(self, call: ModelCall) -> BaseLLM:
        model = call.step.model or self.requested_model
        if model is None:
            raise ValueError(
                "RoutedLLM has no model to call: the policy has no Routing tiers and the "
                "RoutedLLM was given no model."
            )
        llm = self.delegate(model)
        trackers.bind(call, llm)
        return llm

    @contextmanager
    def _delegating(self, llm: BaseLLM) -> Iterator[None]:
        """Hand the call to ``llm`` as if it were this LLM: stop words, streaming, hooks."""
        with ExitStack() as stack:
            stack.enter_context(model_call_hooks_dispatched())
            stack.enter_context(call_stop_override(llm, self.stop_sequences or None))
            stream = self._effective_stream()
            if stream is not None:
                stack.enter_context(call_stream_override(llm, stream))
            yield

    def _finish(self, call: ModelCall, llm: BaseLLM, result: Any, error: Exception | None) -> None:
        """Mirror the delegate's usage in this LLM's tracker and commit the call."""
        delta = call.tracker_delta()
        if delta is not None and delta.successful_requests:
            self._track_token_usage_internal(delta.model_dump())
        if error is not None:
            call.outcome = outcome_of_error(error)
        call.returned(result, model=llm.model)
        call.state.settle(call)

    def _after_hooks(self, chat: Any, result: Any, from_agent: Any) -> Any:
        if isinstance(result, str):
            return self._invoke_after_llm_call_hooks(chat, result, from_agent)
        return result

    def _representative(self) -> BaseLLM | None:
        """The LLM that stands for this one when CrewAI asks about capabilities."""
        model = self.requested_model
        state = active_state.get()
        if model is None and state is not None:
            routing = state.run.policy.routing
            model = routing.tiers[0] if routing is not None and routing.tiers else None
        return self.delegate(model) if model is not None else None


def _as_chat(messages: Any) -> Any:
    return [{"role": "user", "content": messages}] if isinstance(messages, str) else messages
