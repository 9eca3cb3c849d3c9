"""The final-answer call on providers that refuse a tool history without tools.

Anthropic ("Requests which include tool_use or tool_result blocks must define tools") and
Bedrock's Converse API refuse such a request; an agent's last call always has tool calls in
its history. The scripted models below refuse it as those APIs do, so a final call made
without tools fails here as it would there.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool
from lc_fakes import CountedTool, ScriptedChatModel, agent_graph, inputs, make_warden
from pydantic import Field

from budgetwarden import Limits, Policy
from budgetwarden.final_call import final_call_tools, note_role
from budgetwarden.integrations.langchain import BudgetMiddleware
from budgetwarden.steps import FINAL_ANSWER_INSTRUCTION

MODES = ["sync", "async"]
CLAUDE = "claude-sonnet-4-20250514"
BEDROCK_CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"


class ToolHistoryRefused(Exception):
    """What Anthropic and Bedrock answer (HTTP 400) to a tool history sent without tools."""


class ProviderModel(ScriptedChatModel):
    """A scripted model with a provider's rules for tools: ``ls_provider`` names it; a
    history of tool calls without tools is refused (``needs_tools``); ``forbid`` is the tool
    choice that makes it answer in text (``None``: the provider has none, and ``obey`` says
    whether the model follows the final-answer instruction or calls a tool anyway)."""

    provider: str = "anthropic"
    forbid: Any = None
    obey: bool = True
    needs_tools: bool = True
    choices: list[Any] = Field(default_factory=list)

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        return {"ls_provider": self.provider, "ls_model_name": self.model_name}

    def bind_tools(self, tools: Any, *, tool_choice: Any = None, **kwargs: Any) -> Any:
        schemas = [convert_to_openai_tool(tool) for tool in tools]
        return self.bind(tools=schemas, tool_choice=tool_choice, **kwargs)

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        return self._answer(messages, kw)

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        return self._answer(messages, kw)

    def _answer(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> ChatResult:
        tools, choice = kwargs.get("tools"), kwargs.get("tool_choice")
        self.choices.append(choice)
        if self.needs_tools and not tools and any(_is_tool_block(m) for m in messages):
            raise ToolHistoryRefused("Requests which include tool_use blocks must define tools.")
        if choice is not None and choice != self.forbid:
            raise ToolHistoryRefused(f"tool_choice {choice!r} is not supported")
        offered = self._offer(tools)
        told = FINAL_ANSWER_INSTRUCTION in messages[-1].text
        answers = choice is not None or (told and self.obey)
        return self._next(messages, tools=offered and not answers)


def _is_tool_block(message: BaseMessage) -> bool:
    return isinstance(message, ToolMessage) or bool(getattr(message, "tool_calls", None))


def run_agent(model: ProviderModel, search: CountedTool, mode: str) -> Any:
    warden, _ = make_warden(Policy(limits=Limits(max_iterations=3, final_answer=True)))
    agent = agent_graph(model, [search.tool], middleware=[BudgetMiddleware(warden)])
    if mode == "sync":
        return agent.invoke(inputs("find the answer"))
    return asyncio.run(agent.ainvoke(inputs("find the answer")))


def final_of(result: Any) -> AIMessage:
    final = result["messages"][-1]
    assert isinstance(final, AIMessage) and not final.tool_calls
    assert final.response_metadata["budgetwarden"]["final_answer"] is True
    return final


@pytest.mark.parametrize("mode", MODES)
def test_chat_anthropic_keeps_its_tools_with_tool_choice_none(
    mode: str, search: CountedTool
) -> None:
    model = ProviderModel(model_name=CLAUDE, forbid={"type": "none"})
    final = final_of(run_agent(model, search, mode))
    assert final.text == "Best answer so far, after 2 tool turns."
    assert model.offered == [["search"]] * 3, "the history's tools are still declared"
    assert model.choices == [None, None, {"type": "none"}]
    assert search.calls == 2


def test_an_openai_style_model_of_claude_gets_the_string_none(search: CountedTool) -> None:
    # LiteLLM, OpenRouter and other OpenAI-style clients say "none"; ChatAnthropic the dict.
    model = ProviderModel(model_name=CLAUDE, provider="litellm", forbid="none")
    assert final_of(run_agent(model, search, "sync")).text.startswith("Best answer so far")
    assert model.choices[-1] == "none"


@pytest.mark.parametrize("mode", MODES)
def test_bedrock_keeps_its_tools_and_the_instruction_asks_for_the_answer(
    mode: str, search: CountedTool
) -> None:
    model = ProviderModel(model_name=BEDROCK_CLAUDE, provider="amazon_bedrock")
    final = final_of(run_agent(model, search, mode))
    assert final.text == "Best answer so far, after 2 tool turns."
    assert model.offered == [["search"]] * 3
    assert model.choices == [None, None, None], "Bedrock has no tool choice 'none'"


def test_a_tool_call_the_final_call_still_makes_is_dropped(search: CountedTool) -> None:
    model = ProviderModel(model_name=BEDROCK_CLAUDE, provider="amazon_bedrock", obey=False)
    final = final_of(run_agent(model, search, "sync"))
    assert search.calls == 2, "the third call's tool call did not run"
    assert "the last call max_iterations allowed gave no answer" in final.text


def test_openai_models_still_get_no_tools_on_the_final_call(search: CountedTool) -> None:
    model = ProviderModel(model_name="gpt-4o-mini", provider="openai", needs_tools=False)
    assert final_of(run_agent(model, search, "sync")).text.startswith("Best answer so far")
    assert model.offered[-1] == []


def test_a_final_call_without_tools_is_what_anthropic_refuses() -> None:
    # The scripted rule this file relies on: it fails where the old final call did.
    model = ProviderModel(model_name=CLAUDE)
    history = [AIMessage("", tool_calls=[{"name": "search", "args": {}, "id": "c1"}])]
    with pytest.raises(ToolHistoryRefused):
        model.invoke([*history, ToolMessage("r", tool_call_id="c1")])


@pytest.mark.parametrize(
    ("model", "provider", "expected"),
    [
        ("gpt-4o-mini", None, "drop"),
        ("gpt-4.1", "openai", "drop"),
        ("gemini/gemini-2.5-pro", None, "drop"),
        ("mistral/mistral-large-latest", None, "drop"),
        (CLAUDE, None, "forbid"),
        ("anthropic/claude-3-5-haiku-latest", None, "forbid"),
        ("vertex_ai/claude-sonnet-4@20250514", None, "forbid"),
        ("my-house-model", "anthropic", "forbid"),
        ("bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0", None, "keep"),
        ("us.anthropic.claude-sonnet-4-20250514-v1:0", None, "keep"),
        ("amazon.nova-pro-v1:0", None, "keep"),
        ("bedrock_converse/meta.llama3-70b-instruct-v1:0", None, "keep"),
        ("claude-sonnet-4", "amazon_bedrock", "keep"),
        ("anything", "bedrock", "keep"),
        (None, None, "drop"),
    ],
)
def test_final_call_tools_by_provider(
    model: str | None, provider: str | None, expected: str
) -> None:
    assert final_call_tools(model, provider) == expected


@pytest.mark.parametrize(
    ("model", "provider", "expected"),
    [
        ("gpt-4o-mini", None, "system"),
        (CLAUDE, None, "user"),
        ("anthropic/claude-3-5-haiku-latest", None, "user"),
        ("my-house-model", "anthropic", "user"),
        (BEDROCK_CLAUDE, None, "system"),
        ("claude-sonnet-4", "bedrock", "system"),
        ("gemini/gemini-2.5-pro", "gemini", "system"),
    ],
)
def test_note_role_by_provider(model: str, provider: str | None, expected: str) -> None:
    assert note_role(model, provider) == expected
