"""A scripted tool-calling chat model: drives real agents in tests and the demo, offline."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolCall
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field

from budgetwarden.usage import estimate_message_tokens

__all__ = ["ScriptedChatModel"]

_ANSWER_AFTER = re.compile(r"answer after (\d+)")


class ScriptedChatModel(BaseChatModel):
    """A chat model that asks for a tool on every turn, never stopping unless told to.

    The turn is the number of AI messages already in the conversation plus one, so one
    instance can serve concurrent conversations. A human message containing
    ``"answer after N"`` makes turn N+1 answer in text (as does ``answer_after``); a call
    made without tools (a final-answer call) answers in text too.
    ``input_tokens=None`` reports the prompt's estimated size, so usage grows with context.
    """

    model_name: str = "gpt-4o-mini"
    tool: str = "search"
    parallel: int = 1
    answer_after: int | None = None
    repeat_args: bool = False
    input_tokens: int | None = 100
    output_tokens: int = 20
    max_tokens: int | None = None
    report_usage: bool = True
    fail_calls: frozenset[int] = frozenset()
    calls: int = 0
    prompts: list[list[BaseMessage]] = Field(default_factory=list)
    offered: list[list[str]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted-chat-model"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "max_tokens": self.max_tokens}

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind the tools as a provider would; the script decides which one to call."""
        return self.bind(tools=[convert_to_openai_tool(tool) for tool in tools], **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._next(messages, tools=self._offer(kwargs.get("tools")))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._next(messages, tools=self._offer(kwargs.get("tools")))

    def _offer(self, tools: list[dict[str, Any]] | None) -> bool:
        """Record the names of the tools this call offers; True when there are some."""
        self.offered.append([tool["function"]["name"] for tool in tools or ()])
        return bool(tools)

    def _next(self, messages: list[BaseMessage], *, tools: bool = True) -> ChatResult:
        self.calls += 1
        self.prompts.append(list(messages))
        if self.calls in self.fail_calls:
            raise RuntimeError(f"scripted provider error on call {self.calls}")
        turn = 1 + sum(isinstance(m, AIMessage) for m in messages)
        limit = _answer_after(messages, self.answer_after)
        if limit is not None and turn > limit:
            message = AIMessage(content=f"Done after {turn - 1} tool turns.")
        elif not tools:
            message = AIMessage(content=f"Best answer so far, after {turn - 1} tool turns.")
        else:
            message = AIMessage(content="", tool_calls=self._tool_calls(turn))
        if self.report_usage:
            prompt = self.input_tokens
            if prompt is None:
                prompt = estimate_message_tokens(messages)
            message.usage_metadata = {
                "input_tokens": prompt,
                "output_tokens": self.output_tokens,
                "total_tokens": prompt + self.output_tokens,
            }
        message.response_metadata = {"model_name": self.model_name}
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _tool_calls(self, turn: int) -> list[ToolCall]:
        return [
            ToolCall(
                name=self.tool,
                args={"query": "same" if self.repeat_args else f"step {turn}.{i}"},
                id=f"call_{uuid.uuid4().hex[:12]}",
                type="tool_call",
            )
            for i in range(self.parallel)
        ]


def _answer_after(messages: list[BaseMessage], default: int | None) -> int | None:
    for message in messages:
        if isinstance(message, HumanMessage):
            found = _ANSWER_AFTER.search(message.text)
            if found:
                return int(found.group(1))
    return default
