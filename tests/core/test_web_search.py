"""Hosted web searches are billed per search, and reserved for.

OpenAI's and Anthropic's hosted web search tools bill $10 to $25 a thousand searches on top
of the tokens. A research agent that searched at every call was counted for its tokens
only: a search is often dearer than the call's tokens, so its caps and budgets let it
spend several times their limit.
"""

from __future__ import annotations

from typing import Any

import pytest

from budgetwarden import BudgetExceeded, Limits, Policy, PriceBook, Usage
from budgetwarden.dispatch import usage_from_litellm
from budgetwarden.usage import searches_offered

from .helpers import make_warden

CLAUDE = "claude-sonnet-4-20250514"


@pytest.mark.parametrize(
    ("model", "price"),
    [("gpt-5", 0.01), ("gpt-4.1", 0.025), (CLAUDE, 0.01), ("gpt-4o", 0.0), ("nope", 0.0)],
)
def test_search_price_is_the_maps_medium_context_price(model: str, price: float) -> None:
    assert PriceBook().search_price(model) == price


@pytest.mark.parametrize("model", ["gpt-5", CLAUDE, "gemini/gemini-2.5-pro"])
def test_each_search_adds_its_price_to_the_calls_cost(model: str) -> None:
    book = PriceBook()
    tokens = Usage(input_tokens=2000, output_tokens=300, cache_read_tokens=500)
    searched = tokens.model_copy(update={"web_search_requests": 3})
    assert book.cost(model, searched) == pytest.approx(
        book.cost(model, tokens) + book.search_cost(model, 3)
    )
    assert book.search_cost(model, 3) >= book.search_price(model) > 0


def test_anthropic_searches_cost_what_litellm_bills_for_them() -> None:
    from litellm.llms.anthropic.cost_calculation import get_cost_for_anthropic_web_search
    from litellm.types.utils import ServerToolUse
    from litellm.types.utils import Usage as LiteLLMUsage
    from litellm.utils import get_model_info

    usage = LiteLLMUsage(
        prompt_tokens=10, completion_tokens=5, server_tool_use=ServerToolUse(web_search_requests=4)
    )
    billed = get_cost_for_anthropic_web_search(get_model_info(CLAUDE), usage)
    assert billed == pytest.approx(4 * PriceBook().search_price(CLAUDE))
    found = usage_from_litellm(usage)
    assert found is not None and found.web_search_requests == 4


def test_the_next_call_holds_the_last_calls_searches() -> None:
    run = make_warden()[0].run()
    book = PriceBook()
    first = run.before_llm_call(CLAUDE, input_tokens=1000, max_tokens=100)
    run.after_llm_call(first, Usage(input_tokens=1000, output_tokens=100, web_search_requests=5))
    second = run.before_llm_call(CLAUDE, input_tokens=1000, max_tokens=100)
    assert second.reserved_usd == pytest.approx(first.reserved_usd + 5 * book.search_price(CLAUDE))
    run.after_llm_call(second, Usage(input_tokens=1000, output_tokens=100))
    third = run.before_llm_call(CLAUDE, input_tokens=1000, max_tokens=100)
    assert third.reserved_usd == pytest.approx(first.reserved_usd)


def test_a_dollar_cap_counts_the_searches() -> None:
    # A call: $0.0045 of tokens and five searches ($0.05). Counted for its tokens only, 22
    # calls fitted in $0.10 and cost $1.21.
    run = make_warden(Policy(limits=Limits(max_cost_usd=0.1)))[0].run()
    calls = 0
    with pytest.raises(BudgetExceeded):
        for _ in range(50):
            step = run.before_llm_call(CLAUDE, input_tokens=1000, max_tokens=100)
            calls += 1
            run.after_llm_call(
                step, Usage(input_tokens=1000, output_tokens=100, web_search_requests=5)
            )
    assert calls == 1
    assert run.report.cost_usd == pytest.approx(0.0045 + 0.05)


@pytest.mark.parametrize(
    ("model", "charges"),
    [
        ("gemini/gemini-2.5-pro", 1),
        ("gemini-3-pro-preview", 3),
        ("vertex_ai/gemini-3-pro-preview", 3),
    ],
)
def test_gemini_grounding_is_billed_per_prompt_or_per_query_as_litellm_bills_it(
    model: str, charges: int
) -> None:
    # Gemini 2.x bills a grounded prompt once, however many queries it ran; Gemini 3 bills
    # each query.
    from litellm.llms.gemini.cost_calculator import cost_per_web_search_request
    from litellm.types.utils import PromptTokensDetailsWrapper
    from litellm.types.utils import Usage as LiteLLMUsage
    from litellm.utils import get_model_info

    usage = LiteLLMUsage(
        prompt_tokens=10,
        completion_tokens=5,
        prompt_tokens_details=PromptTokensDetailsWrapper(web_search_requests=3),
    )
    billed = cost_per_web_search_request(usage, get_model_info(model))
    book = PriceBook()
    assert book.search_cost(model, 3) == pytest.approx(billed)
    assert billed == pytest.approx(charges * book.search_price(model))
    found = usage_from_litellm(usage)
    assert found is not None and found.web_search_requests == 3
    tokens = Usage(input_tokens=10, output_tokens=5)
    searched = tokens.model_copy(update={"web_search_requests": 3})
    assert book.cost(model, searched) == pytest.approx(book.cost(model, tokens) + billed)


@pytest.mark.parametrize(
    ("tools", "searches"),
    [
        ([{"type": "web_search"}], 1),
        ([{"type": "web_search_preview"}, {"type": "function", "function": {"name": "f"}}], 1),
        ([{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}], 5),
        ([{"google_search": {}}], 1),
        ([{"type": "function", "function": {"name": "web_search"}}], 0),  # ours: no fee
        (["web_search"], 0),  # a name says nothing of its kind
        (None, 0),
    ],
)
def test_the_searches_a_calls_tools_may_make(tools: list[object] | None, searches: int) -> None:
    assert searches_offered(tools) == searches


def test_a_runs_first_call_holds_the_searches_its_tools_may_make() -> None:
    run = make_warden()[0].run()
    book = PriceBook()
    plain = PriceBook().worst_case_cost(CLAUDE, 1000, 100)

    run.expect_web_searches(searches_offered([{"type": "web_search_2025", "max_uses": 3}]))
    first = run.before_llm_call(CLAUDE, input_tokens=1000, max_tokens=100)

    assert first.reserved_usd == pytest.approx(plain + 3 * book.search_price(CLAUDE))
    run.expect_web_searches(9)  # too late: the bills say from now on
    run.after_llm_call(first, Usage(input_tokens=1000, output_tokens=100, web_search_requests=1))
    second = run.before_llm_call(CLAUDE, input_tokens=1000, max_tokens=100)
    assert second.reserved_usd == pytest.approx(plain + book.search_price(CLAUDE))


@pytest.mark.parametrize(
    ("model", "options", "held"),
    [
        ("gpt-5", {"tools": [{"type": "web_search", "max_uses": 2}]}, 2),
        ("gpt-4o-search-preview", {"web_search_options": {"search_context_size": "medium"}}, 1),
        ("gpt-5", {}, 0),
    ],
)
def test_complete_holds_the_searches_of_the_first_call(
    model: str, options: dict[str, object], held: int, reserved_steps: list[Any]
) -> None:
    from budgetwarden.dispatch import complete

    run = make_warden()[0].run()
    messages = [{"role": "user", "content": "Where is Paris?"}]
    complete(run, messages, model=model, max_tokens=100, mock_response="Paris.", **options)

    [step] = reserved_steps
    book = PriceBook()
    tokens = book.worst_case_cost(model, step.input_tokens, 100)
    assert step.reserved_usd == pytest.approx(tokens + held * book.search_price(model))
