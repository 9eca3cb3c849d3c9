"""Chat models for routed model names: built once per name, by a factory people can replace."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable

from langchain_core.language_models import BaseChatModel

__all__ = ["ModelCache", "ModelFactory", "default_model_factory"]

ModelFactory = Callable[[str], BaseChatModel]
"""Builds the chat model for a model name the policy routed to (e.g. ``"gpt-4o-mini"``)."""


def default_model_factory(name: str) -> BaseChatModel:
    """LiteLLM's chat model when ``langchain-litellm`` is installed, else ``init_chat_model``.

    LiteLLM takes budgetwarden's (LiteLLM's) model names as they are; ``init_chat_model``
    needs the provider's LangChain package and reads ``provider/model`` as ``provider:model``.
    """
    if importlib.util.find_spec("langchain_litellm") is not None:
        from langchain_litellm import ChatLiteLLM

        chat: BaseChatModel = ChatLiteLLM(model=name)
        return chat
    from langchain.chat_models import init_chat_model

    provider, _, model = name.partition("/")
    if model:
        return init_chat_model(model, model_provider=provider)
    return init_chat_model(name)


class ModelCache:
    """One chat model per routed name, built on first use."""

    def __init__(self, factory: ModelFactory | None = None) -> None:
        self._factory = factory or default_model_factory
        self._models: dict[str, BaseChatModel] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> BaseChatModel:
        """The chat model for ``name``."""
        with self._lock:
            model = self._models.get(name)
            if model is None:
                model = self._models[name] = self._factory(name)
            return model
