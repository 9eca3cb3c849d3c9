"""PriceBook gives litellm.cost_per_token's figure for every priced model, without litellm.

The reference is ``litellm.cost_per_token(model, prompt_tokens, completion_tokens,
usage_object=Usage(...))`` with the usage object litellm's own ``cost_per_token`` builds from
``cache_read_input_tokens`` / ``cache_creation_input_tokens``, plus ``reasoning_tokens``: that
keyword-only call has no way to pass reasoning tokens. Without reasoning tokens both calls agree
(checked below), so the figure is also the plain keyword call's.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pricing_cases import (
    ALIASES,
    LITELLM_CANNOT_PRICE,
    NEVER_CALL_PREFIXES,
    UNKNOWN,
    compared_models,
    cost_map,
    priced_chat_models,
    provider_prefixed_aliases,
    usages_for,
)
from pydantic import ValidationError

from budgetwarden.pricing import ModelPrice, PriceBook, UnknownModelError
from budgetwarden.usage import Usage

Tokens = tuple[int, int, int, int, int]


@pytest.fixture(scope="module")
def litellm() -> Iterator[ModuleType]:
    """litellm, imported once for this module (it takes seconds), offline."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # conftest sets it too
    import litellm

    quiet = litellm.suppress_debug_info
    litellm.suppress_debug_info = True
    yield litellm
    litellm.suppress_debug_info = quiet


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return PriceBook()


def usage(tokens: Tokens) -> Usage:
    i, o, r, w, z = tokens
    return Usage(
        input_tokens=i,
        output_tokens=o,
        cache_read_tokens=r,
        cache_write_tokens=w,
        reasoning_tokens=z,
    )


def litellm_cost(
    litellm: ModuleType,
    model: str,
    tokens: Tokens,
    service_tier: str | None = None,
    one_hour: int = 0,
) -> float:
    """``prompt_cost + completion_cost`` from ``litellm.cost_per_token`` for this usage
    (``one_hour``: of its cache writes, those to a one-hour cache)."""
    from litellm.types.utils import CacheCreationTokenDetails, PromptTokensDetailsWrapper
    from litellm.types.utils import Usage as LiteLLMUsage

    i, o, r, w, z = tokens
    lifetimes: dict[str, Any] = {}
    if one_hour:
        details = CacheCreationTokenDetails(
            ephemeral_5m_input_tokens=w - one_hour, ephemeral_1h_input_tokens=one_hour
        )
        lifetimes["prompt_tokens_details"] = PromptTokensDetailsWrapper(
            cached_tokens=r, cache_creation_tokens=w, cache_creation_token_details=details
        )
    block = LiteLLMUsage(
        prompt_tokens=i,
        completion_tokens=o,
        total_tokens=i + o,
        cache_read_input_tokens=r,
        cache_creation_input_tokens=w,
        reasoning_tokens=z,
        **lifetimes,
    )
    prompt, completion = litellm.cost_per_token(
        model=model,
        prompt_tokens=i,
        completion_tokens=o,
        usage_object=block,
        service_tier=service_tier,
    )
    return float(prompt + completion)


def same(ours: float, reference: float) -> bool:
    return math.isclose(ours, reference, rel_tol=1e-12, abs_tol=0.0)


def mismatches(litellm: ModuleType, book: PriceBook, model: str, cases: Any) -> list[str]:
    found = []
    for tokens in cases:
        try:
            reference = litellm_cost(litellm, model, tokens)
        except Exception as exc:
            pytest.fail(f"litellm cannot price {model}: {exc!r}; list it in LITELLM_CANNOT_PRICE")
        ours = book.cost(model, usage(tokens))
        if not same(ours, reference):
            found.append(f"{tokens}: PriceBook {ours!r} != litellm {reference!r}")
    return found


# ----------------------------------------------------------------- parity with litellm


SERVICE_TIERS = ("priority", "flex", "fast", "ultrafast", "default", "auto")


def tiered_models() -> list[str]:
    """The compared models with prices of a service tier of their own (OpenAI, Azure, Gemini)."""
    tiered = ("_priority", "_flex", "_ultrafast")
    entries = cost_map()
    return [m for m in compared_models() if any(k.endswith(tiered) for k in entries.get(m, {}))]


@pytest.mark.parametrize("model", tiered_models())
def test_service_tiers_cost_as_litellm_bills_them(
    litellm: ModuleType, book: PriceBook, model: str
) -> None:
    """OpenAI's priority tier costs twice the standard prices, flex half: a run served at
    priority was counted at half its cost."""
    wrong = []
    for tier in SERVICE_TIERS:
        for tokens in usages_for(model):
            reference = litellm_cost(litellm, model, tokens, tier)
            ours = book.cost(model, usage(tokens).model_copy(update={"service_tier": tier}))
            if not same(ours, reference):
                wrong.append(f"{tier} {tokens}: {ours!r} != {reference!r}")
    assert not wrong, f"{model}:\n" + "\n".join(wrong)


def one_hour_cache_models() -> list[str]:
    """The compared models with a price for writes to a one-hour cache (Claude's)."""
    entries = cost_map()
    key = "cache_creation_input_token_cost_above_1hr"
    return [m for m in compared_models() if key in entries.get(m, {})]


@pytest.mark.parametrize("model", one_hour_cache_models())
def test_one_hour_cache_writes_cost_as_litellm_bills_them(
    litellm: ModuleType, book: PriceBook, model: str
) -> None:
    """Claude bills a write to its one-hour cache at twice the input price (1.25x for five
    minutes): such writes were billed at the five-minute price."""
    wrong = []
    for i, o, r, w, h in [(10_000, 500, 2_000, 3_000, 1_000), (300_000, 500, 0, 3_000, 3_000)]:
        reference = litellm_cost(litellm, model, (i, o, r, w, 0), one_hour=h)
        ours = book.cost(
            model,
            Usage(
                input_tokens=i,
                output_tokens=o,
                cache_read_tokens=r,
                cache_write_tokens=w,
                cache_write_1h_tokens=h,
            ),
        )
        if not same(ours, reference):
            wrong.append(f"{(i, o, r, w, h)}: {ours!r} != {reference!r}")
    assert not wrong, f"{model}:\n" + "\n".join(wrong)


def test_priority_costs_twice_and_reserves_twice_the_standard(book: PriceBook) -> None:
    standard = Usage(input_tokens=10_000, output_tokens=1_000)
    priority = standard.model_copy(update={"service_tier": "priority"})
    assert book.cost("gpt-5", priority) == pytest.approx(2 * book.cost("gpt-5", standard))
    assert book.worst_case_cost("gpt-5", 10_000, 1_000, "priority") == pytest.approx(
        2 * book.worst_case_cost("gpt-5", 10_000, 1_000)
    )
    # a tier the model has no prices of is billed at the standard ones
    assert book.cost("gpt-4o-mini", standard.model_copy(update={"service_tier": "flex"})) == (
        book.cost("gpt-4o-mini", standard)
    )


@pytest.mark.parametrize("model", compared_models())
def test_cost_matches_litellm_for_every_priced_model(
    litellm: ModuleType, book: PriceBook, model: str
) -> None:
    wrong = mismatches(litellm, book, model, usages_for(model))
    # the plain keyword call, for a usage without reasoning tokens
    prompt, completion = litellm.cost_per_token(
        model=model,
        prompt_tokens=6_000,
        completion_tokens=700,
        cache_read_input_tokens=3_000,
        cache_creation_input_tokens=1_000,
    )
    keyword_call = book.cost(model, usage((6_000, 700, 3_000, 1_000, 0)))
    if not same(keyword_call, prompt + completion):
        wrong.append(f"keyword call: PriceBook {keyword_call!r} != litellm {prompt + completion!r}")
    assert not wrong, f"{model}:\n" + "\n".join(wrong)


def test_litellm_cannot_price_the_listed_models_and_pricebook_prices_their_entries(
    litellm: ModuleType, book: PriceBook
) -> None:
    priced = set(priced_chat_models())
    never_called = sorted(m for m in priced if m.startswith(NEVER_CALL_PREFIXES))
    print(
        f"\ncompared {len(compared_models())} of {len(priced)} priced chat models; "
        f"excluded {len(LITELLM_CANNOT_PRICE)} litellm cannot price and "
        f"{len(never_called)} it would log in for: {never_called}"
    )
    assert len(LITELLM_CANNOT_PRICE) == 68
    assert set(LITELLM_CANNOT_PRICE) <= priced
    for model in LITELLM_CANNOT_PRICE:
        with pytest.raises(Exception):  # noqa: B017 - litellm raises several kinds
            litellm.cost_per_token(model=model, prompt_tokens=10, completion_tokens=10)
        entry = cost_map()[model]
        expected = 1_000 * entry["input_cost_per_token"] + 500 * entry["output_cost_per_token"]
        assert same(book.cost(model, usage((1_000, 500, 0, 0, 0))), expected), model


@pytest.mark.parametrize("name", ALIASES)
def test_aliases_resolve_as_litellm_resolves_them(
    litellm: ModuleType, book: PriceBook, name: str
) -> None:
    cases = [(1_000, 500, 0, 0, 0), (5_000, 800, 3_000, 1_000, 300), (300_000, 200, 0, 0, 0)]
    assert not mismatches(litellm, book, name, cases)


def test_provider_prefixed_names_resolve_as_litellm_resolves_them(
    litellm: ModuleType, book: PriceBook
) -> None:
    """``<provider>/<bare key>`` and ``<key minus prefix>``: equal wherever litellm prices."""
    cases = [(1_000, 500, 0, 0, 0), (210_000, 300, 1_000, 1_000, 50)]
    wrong, compared = [], 0
    for name in provider_prefixed_aliases():
        try:
            references = [litellm_cost(litellm, name, tokens) for tokens in cases]
        except Exception:
            continue  # litellm cannot price this name; PriceBook may or may not
        try:
            ours = [book.cost(name, usage(tokens)) for tokens in cases]
        except UnknownModelError:
            if any(references):  # only a silent zero from litellm may become an error
                wrong.append(f"{name}: unknown to PriceBook, litellm gives {references}")
            continue
        compared += 1
        wrong += [
            f"{name}: {a} != {b}" for a, b in zip(ours, references, strict=True) if not same(a, b)
        ]
    assert compared > 250
    assert not wrong, "\n".join(wrong)


# --------------------------------------------------------------- rules, named and shown


def test_xai_prompt_exactly_at_threshold_takes_higher_tier(book: PriceBook) -> None:
    entry = cost_map()["xai/grok-3"]
    at = book.cost("xai/grok-3", usage((200_000, 0, 0, 0, 0)))
    assert at == 200_000 * entry["input_cost_per_token_above_200k_tokens"]


def test_other_providers_take_higher_tier_only_above_threshold(book: PriceBook) -> None:
    entry = cost_map()["claude-sonnet-4-5"]
    at = book.cost("claude-sonnet-4-5", usage((200_000, 0, 0, 0, 0)))
    above = book.cost("claude-sonnet-4-5", usage((200_001, 0, 0, 0, 0)))
    assert at == 200_000 * entry["input_cost_per_token"]
    assert above == 200_001 * entry["input_cost_per_token_above_200k_tokens"]


def test_perplexity_ignores_above_200k_rates_and_cache_prices(book: PriceBook) -> None:
    model = next(
        m
        for m in priced_chat_models()
        if m.startswith("perplexity/")
        and any(k.endswith("_above_200k_tokens") for k in cost_map()[m])
    )
    entry = cost_map()[model]
    cost = book.cost(model, usage((300_000, 1_000, 100_000, 0, 0)))
    assert same(
        cost, 300_000 * entry["input_cost_per_token"] + 1_000 * entry["output_cost_per_token"]
    )


def test_bare_bedrock_converse_key_is_priced_from_its_bedrock_entry(book: PriceBook) -> None:
    own, bedrock = cost_map()["moonshotai.kimi-k2.5"], cost_map()["bedrock/moonshotai.kimi-k2.5"]
    assert own["output_cost_per_token"] != bedrock["output_cost_per_token"]
    cost = book.cost("moonshotai.kimi-k2.5", usage((0, 1_000, 0, 0, 0)))
    assert cost == 1_000 * bedrock["output_cost_per_token"]


def test_reasoning_tokens_use_the_reasoning_rate_where_the_map_has_one(book: PriceBook) -> None:
    entry = cost_map()["dashscope/qwen-turbo"]
    cost = book.cost("dashscope/qwen-turbo", usage((0, 1_000, 0, 0, 400)))
    expected = 600 * entry["output_cost_per_token"] + 400 * entry["output_cost_per_reasoning_token"]
    assert same(cost, expected)


def test_vertex_above_128k_pricing_matches_litellm_handler(litellm: ModuleType) -> None:
    """No Vertex entry has above_128k rates today; the rule is checked against litellm's."""
    from litellm.llms.vertex_ai.cost_calculator import _handle_128k_pricing
    from litellm.types.utils import Usage as LiteLLMUsage

    from budgetwarden.pricing import _entry_rule, _Rule

    info: Any = {
        "input_cost_per_token": 1e-6,
        "output_cost_per_token": 2e-6,
        "input_cost_per_token_above_128k_tokens": 3e-6,
        "output_cost_per_token_above_128k_tokens": 5e-6,
        "cache_read_input_token_cost": 1e-7,
    }
    rule = _entry_rule("vertex_ai", info)
    assert isinstance(rule, _Rule)
    for i, o in [(1_000, 500), (128_000, 128_000), (128_001, 10), (10, 128_001)]:
        prompt, completion = _handle_128k_pricing(
            model_info=info, usage=LiteLLMUsage(prompt_tokens=i, completion_tokens=o)
        )
        assert same(rule.bill(usage((i, o, min(i, 500), 0, 0))), prompt + completion)


# ------------------------------------------------------------ overrides, errors, API


def test_per_token_override_matches_litellm_custom_pricing(litellm: ModuleType) -> None:
    from litellm.types.utils import Usage as LiteLLMUsage

    prices = {
        "input_cost_per_token": 2e-6,
        "output_cost_per_token": 8e-6,
        "cache_read_input_token_cost": 5e-7,
        "cache_creation_input_token_cost": 2.5e-6,
    }
    book = PriceBook(overrides={"my-model": prices})  # a plain mapping works too
    i, o, r, w = 10_000, 2_000, 4_000, 1_000
    block = LiteLLMUsage(
        prompt_tokens=i,
        completion_tokens=o,
        total_tokens=i + o,
        prompt_tokens_details={"cached_tokens": r, "cache_creation_tokens": w},
    )
    prompt, completion = litellm.cost_per_token(
        model="my-model",
        prompt_tokens=i,
        completion_tokens=o,
        usage_object=block,
        custom_cost_per_token=prices,
    )
    assert same(book.cost("my-model", usage((i, o, r, w, 0))), prompt + completion)


def test_override_without_cache_prices_bills_cache_tokens_at_input_price() -> None:
    price = ModelPrice(input_cost_per_token=1e-6, output_cost_per_token=3e-6)
    book = PriceBook(overrides={"m": price})
    assert same(book.cost("m", usage((1_000, 100, 600, 300, 50))), 1_000 * 1e-6 + 100 * 3e-6)
    assert book.price("m") is price


def test_override_wins_over_the_map() -> None:
    book = PriceBook(
        overrides={"gpt-4o": ModelPrice(input_cost_per_token=0, output_cost_per_token=1)}
    )
    assert book.cost("gpt-4o", usage((1_000, 2, 0, 0, 0))) == 2.0
    assert PriceBook().cost("gpt-4o", usage((1_000, 2, 0, 0, 0))) != 2.0


def test_gpu_override_derives_one_per_token_price_from_hourly_cost_and_throughput() -> None:
    price = ModelPrice(gpu_usd_per_hour=7.2, tokens_per_second=2_000)
    assert price.input_cost_per_token == price.output_cost_per_token == 7.2 / 3600 / 2_000
    book = PriceBook(
        overrides={"llama-selfhosted": {"gpu_usd_per_hour": 7.2, "tokens_per_second": 2_000}}
    )
    assert same(
        book.cost("llama-selfhosted", usage((3_000, 1_000, 0, 0, 0))), 4_000 * 7.2 / 3600 / 2_000
    )
    assert ModelPrice.model_validate(price.model_dump()) == price  # round-trips


@pytest.mark.parametrize(
    "fields",
    [
        {"input_cost_per_token": 1e-6},
        {"gpu_usd_per_hour": 2.0},
        {
            "input_cost_per_token": 1e-6,
            "output_cost_per_token": 1e-6,
            "gpu_usd_per_hour": 2.0,
            "tokens_per_second": 100,
        },
        {},
    ],
)
def test_model_price_needs_per_token_prices_or_gpu_figures(fields: dict[str, float]) -> None:
    with pytest.raises(ValidationError) as caught:
        ModelPrice.model_validate(fields)
    message = str(caught.value)
    assert "input_cost_per_token and output_cost_per_token" in message
    assert "gpu_usd_per_hour and tokens_per_second" in message


def test_model_price_rejects_negative_prices_and_zero_throughput() -> None:
    with pytest.raises(ValidationError, match="input_cost_per_token"):
        ModelPrice(input_cost_per_token=-1, output_cost_per_token=0)
    with pytest.raises(ValidationError, match="tokens_per_second"):
        ModelPrice(gpu_usd_per_hour=1, tokens_per_second=0)


@pytest.mark.parametrize("name", UNKNOWN)
def test_unknown_model_raises_with_how_to_add_a_price(book: PriceBook, name: str) -> None:
    assert not book.can_price(name)
    with pytest.raises(UnknownModelError) as caught:
        book.cost(name, usage((10, 10, 0, 0, 0)))
    error = caught.value
    assert error.model == name
    assert isinstance(error, LookupError)
    message = str(error)
    assert repr(name) in message
    assert "PriceBook(overrides=" in message and "Policy(prices=" in message
    for method in (book.price, lambda m: book.worst_case_cost(m, 10, 10)):
        with pytest.raises(UnknownModelError):
            method(name)


def test_models_priced_per_second_or_character_raise_a_clear_error(book: PriceBook) -> None:
    with pytest.raises(UnknownModelError, match="priced per second, not per token"):
        book.cost("whisper-1", usage((10, 10, 0, 0, 0)))
    with pytest.raises(UnknownModelError, match="priced per character"):
        book.cost("tts-1", usage((10, 10, 0, 0, 0)))


def test_price_gives_the_base_tier(book: PriceBook) -> None:
    entry = cost_map()["claude-sonnet-4-5"]
    price = book.price("claude-sonnet-4-5")
    assert price.input_cost_per_token == entry["input_cost_per_token"]
    assert price.output_cost_per_token == entry["output_cost_per_token"]
    assert price.cache_read_input_token_cost == entry["cache_read_input_token_cost"]
    assert price.cache_creation_input_token_cost == entry["cache_creation_input_token_cost"]
    lowest = cost_map()["dashscope/qwen3-max"]["tiered_pricing"][0]
    assert book.price("dashscope/qwen3-max").input_cost_per_token == lowest["input_cost_per_token"]


def test_models_lists_every_priced_chat_model(book: PriceBook) -> None:
    models = book.models()
    assert models == priced_chat_models()
    assert "gpt-4o" in models and "text-embedding-3-small" not in models
    assert all(book.can_price(m) for m in models)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_worst_case_cost_bounds_every_usage_within_its_limits(data: st.DataObject) -> None:
    book = PriceBook(
        overrides={
            "custom": ModelPrice(
                input_cost_per_token=1e-6,
                output_cost_per_token=2e-6,
                cache_creation_input_token_cost=5e-6,
            )
        }
    )
    model = data.draw(st.sampled_from(["custom", *priced_chat_models()]))
    limit_in = data.draw(st.integers(0, 1_200_000) | st.sampled_from([128_000, 200_000, 272_000]))
    limit_out = data.draw(st.integers(0, 200_000))
    i = data.draw(st.integers(0, limit_in))
    o = data.draw(st.integers(0, limit_out))
    r = data.draw(st.integers(0, i))
    w = data.draw(st.integers(0, i - r))
    z = data.draw(st.integers(0, o))
    worst = book.worst_case_cost(model, limit_in, limit_out)
    assert book.cost(model, usage((i, o, r, w, z))) <= worst * (1 + 1e-12)


def test_importing_pricing_neither_imports_litellm_nor_reads_the_map() -> None:
    code = (
        "import sys, budgetwarden.pricing as p\n"
        "assert 'litellm' not in sys.modules\n"
        "assert p._INDEX is None\n"
        "from budgetwarden.usage import Usage\n"
        "assert p.PriceBook().cost('gpt-4o', Usage(input_tokens=10)) > 0\n"
        "assert 'litellm' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_cost_of_a_cached_model_takes_microseconds(book: PriceBook) -> None:
    import timeit

    tokens = usage((12_000, 800, 4_000, 0, 200))
    book.cost("claude-sonnet-4-5", tokens)
    seconds = min(
        timeit.repeat(lambda: book.cost("claude-sonnet-4-5", tokens), number=2_000, repeat=5)
    )
    assert seconds / 2_000 < 20e-6  # ~1 µs here; generous for slow CI machines
