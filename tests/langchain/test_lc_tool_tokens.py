"""LangChain tools count in the reserved prompt of a call that offers them."""

from __future__ import annotations

from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from lc_fakes import CountedTool, ScriptedChatModel, agent_graph, inputs, make_warden

from budgetwarden import Policy
from budgetwarden.integrations.langchain import BudgetCallbackHandler, BudgetMiddleware
from budgetwarden.usage import (
    estimate_message_tokens,
    estimate_tokens,
    estimate_tool_tokens,
    tool_tokens,
)


@tool
def web_search(query: str, max_results: int = 5) -> str:
    """Search the web for a query and return the top results with titles and URLs."""
    return query


def test_a_base_tool_counts_its_name_description_and_parameters() -> None:
    bare = estimate_tokens(web_search.name + web_search.description)
    assert tool_tokens(web_search) > bare + 10, "the parameter schema is counted too"


def test_the_middleware_reserves_the_tools_definitions_with_the_messages(
    search: CountedTool,
) -> None:
    # The model reports no usage: the recorded input is the reservation's estimate.
    model = ScriptedChatModel(report_usage=False, answer_after=1)
    warden, sink = make_warden(Policy())
    agent = agent_graph(model, [search.tool], middleware=[BudgetMiddleware(warden)])
    agent.invoke(inputs("find the answer"))
    events = [event for event in sink.cost_events if event.kind == "llm"]
    assert len(events) == len(model.prompts) == 2
    definition = tool_tokens(search.tool)
    assert definition > 10
    for event, prompt in zip(events, model.prompts, strict=True):
        assert event.estimated
        assert event.input_tokens == estimate_message_tokens(prompt) + definition


def test_the_callback_handler_reserves_the_bound_tool_schemas(search: CountedTool) -> None:
    model = ScriptedChatModel(report_usage=False, answer_after=1)
    warden, sink = make_warden(Policy())
    agent = agent_graph(model, [search.tool])
    agent.invoke(inputs("find the answer"), config={"callbacks": [BudgetCallbackHandler(warden)]})
    events = [event for event in sink.cost_events if event.kind == "llm"]
    assert len(events) == len(model.prompts) == 2
    definition = estimate_tool_tokens([convert_to_openai_tool(search.tool)])
    assert definition > 10
    for event, prompt in zip(events, model.prompts, strict=True):
        assert event.input_tokens == estimate_message_tokens(prompt) + definition


def test_an_image_in_the_agents_input_is_reserved_as_an_image(search: CountedTool) -> None:
    from langchain_core.messages import HumanMessage

    from budgetwarden.usage import IMAGE_TOKENS

    png = "iVBORw0KGgo" * 40_000  # ~440 KB of base64: 165,000 tokens if read as text
    question = HumanMessage(
        content=[
            {"type": "text", "text": "find the answer"},
            {"type": "image", "base64": png, "mime_type": "image/png"},
        ]
    )
    model = ScriptedChatModel(report_usage=False, answer_after=1)
    warden, sink = make_warden(Policy())
    agent = agent_graph(model, [search.tool], middleware=[BudgetMiddleware(warden)])
    agent.invoke({"messages": [question]})
    first = next(event for event in sink.cost_events if event.kind == "llm")
    assert IMAGE_TOKENS < first.input_tokens < IMAGE_TOKENS + 200
