"""Compression at the degrade level, weighed against the provider's prompt cache.

A compressed prompt is billed at the full input price; the whole prompt, mostly read from
the cache, at the cache-read price. So a run whose calls hit the cache keeps its context
when compressing would cost more.
"""

from __future__ import annotations

import pytest

from budgetwarden import Budget, Limits, Policy, PriceBook, Routing, Usage

from .helpers import make_warden

CLAUDE = "claude-sonnet-4-20250514"  # cache reads at 0.1x the input price
GPT_4O = "gpt-4o"  # cache reads at 0.5x
LIMITS = Limits(max_input_tokens=10_000)


def tenth_call(
    model: str, cached_share: float, written_share: float = 0.0, **policy: object
) -> bool:
    """Nine calls of 1,000 prompt tokens, ``cached_share`` of each read from the cache and
    ``written_share`` written to it, then the tenth at 90 % of ``max_input_tokens``: whether
    it is told to compress."""
    warden, _, _ = make_warden(Policy(limits=LIMITS, **policy))  # type: ignore[arg-type]
    run = warden.run(user="u1")
    for _ in range(9):
        step = run.before_llm_call(model, input_tokens=1000, max_tokens=10)
        cached, written = int(1000 * cached_share), int(1000 * written_share)
        usage = Usage(
            input_tokens=1000,
            output_tokens=10,
            cache_read_tokens=cached,
            cache_write_tokens=written,
        )
        run.after_llm_call(step, usage)
    return run.before_llm_call(model, input_tokens=1000, max_tokens=10).compress


def test_without_cache_hits_the_degrade_level_compresses() -> None:
    assert tenth_call(CLAUDE, 0.0) is True


def test_a_run_that_reads_its_prompt_from_the_cache_keeps_it_whole() -> None:
    # 90 % cached at a tenth of the price: 0.19 of the full price whole, 0.5 compressed.
    assert tenth_call(CLAUDE, 0.9) is False


def test_a_small_cache_discount_still_compresses() -> None:
    # GPT-4o reads the cache at half price: 0.55 whole against 0.5 compressed.
    assert tenth_call(GPT_4O, 0.9) is True


@pytest.mark.parametrize(("share", "compress"), [(0.9, False), (0.8, True)])
def test_the_break_even_follows_compress_ratio(share: float, compress: bool) -> None:
    # Keeping a fifth: whole costs 1 - 0.9 x share of the full price, compressed 0.2.
    assert tenth_call(CLAUDE, share, compress_ratio=0.2) is compress


def test_a_budget_run_on_the_general_path_weighs_the_cache_too() -> None:
    budgets = [Budget(scope="user", window="day", max_requests=1000)]
    assert tenth_call(CLAUDE, 0.9, budgets=budgets) is False
    assert tenth_call(CLAUDE, 0.0, budgets=budgets) is True


def test_a_call_routed_one_tier_down_compresses_its_cold_cache() -> None:
    routing = Routing(tiers=["claude-3-5-haiku-20241022", CLAUDE], task_classes={"hard": 1})
    warden, _, _ = make_warden(Policy(limits=LIMITS, routing=routing))
    run = warden.run(task_class="hard")
    for _ in range(9):
        step = run.before_llm_call(None, input_tokens=1000, max_tokens=10)
        run.after_llm_call(step, Usage(input_tokens=1000, output_tokens=10, cache_read_tokens=900))
    tenth = run.before_llm_call(None, input_tokens=1000, max_tokens=10)
    assert tenth.model == "claude-3-5-haiku-20241022" and tenth.route_reason.startswith("downgrade")
    assert tenth.compress is True


def test_at_the_cheapest_tier_a_routed_run_weighs_the_cache() -> None:
    routing = Routing(tiers=[CLAUDE, "claude-opus-4-20250514"])
    warden, _, _ = make_warden(Policy(limits=LIMITS, routing=routing))
    run = warden.run()
    for _ in range(9):
        step = run.before_llm_call(None, input_tokens=1000, max_tokens=10)
        run.after_llm_call(step, Usage(input_tokens=1000, output_tokens=10, cache_read_tokens=900))
    tenth = run.before_llm_call(None, input_tokens=1000, max_tokens=10)
    assert tenth.model == CLAUDE and tenth.compress is False


@pytest.mark.parametrize(
    ("read", "written", "compress"),
    [
        # Whole: 1 - 0.78 x 0.9 + 0.10 x 0.25 = 0.323 of the full price; compressed to 0.28,
        # a new prefix written at 1.25: 0.35. Without the write premium 0.28 < 0.298 said
        # compress.
        (0.78, 0.10, False),
        # Whole: 1 - 0.7 x 0.9 + 0.2 x 0.25 = 0.42; compressed: 0.35.
        (0.70, 0.20, True),
    ],
)
def test_a_run_that_writes_the_cache_pays_its_premium_on_a_compressed_prompt(
    read: float, written: float, compress: bool
) -> None:
    assert tenth_call(CLAUDE, read, written, compress_ratio=0.28) is compress


def test_writes_without_a_premium_change_nothing() -> None:
    # GPT-4o writes its cache at the input price: as if nothing were written.
    for read in (0.5, 0.9):
        assert tenth_call(GPT_4O, read, 0.1) is tenth_call(GPT_4O, read)


@pytest.mark.parametrize(
    ("model", "premium"),
    [(CLAUDE, 0.25), (GPT_4O, 0.0), ("no-such-model", 0.0)],
)
def test_cache_write_premium(model: str, premium: float) -> None:
    assert PriceBook().cache_write_premium(model) == pytest.approx(premium)


@pytest.mark.parametrize(
    ("model", "discount"),
    [(CLAUDE, 0.9), (GPT_4O, 0.5), ("no-such-model", 0.0)],
)
def test_cache_discount(model: str, discount: float) -> None:
    assert PriceBook().cache_discount(model) == pytest.approx(discount)
