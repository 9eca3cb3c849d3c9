"""Every cap in Limits refuses the call past it, before the call happens."""

from __future__ import annotations

import pytest

from budgetwarden import (
    BudgetExceeded,
    Limits,
    ModelPrice,
    Policy,
    PriceBook,
    ToolDenied,
    ToolRules,
    Usage,
)

from .helpers import make_warden, usage


def calls_allowed(run, n: int = 50, model: str = "gpt-4o-mini", **after) -> int:
    """Make model calls until refused; return how many were allowed."""
    made = 0
    spent = after.get("usage", usage(50, 20))
    for _ in range(n):
        try:
            step = run.before_llm_call(model, input_tokens=spent.input_tokens, max_tokens=100)
        except BudgetExceeded:
            return made
        made += 1
        run.after_llm_call(step, spent, outcome=after.get("outcome", "ok"))
    return made


def test_max_iterations_allows_exactly_that_many_model_calls() -> None:
    warden, _, _ = make_warden(Policy(limits=Limits(max_iterations=5)))
    run = warden.run(agent="a")
    assert calls_allowed(run) == 5
    with pytest.raises(BudgetExceeded) as info:
        run.before_llm_call("gpt-4o-mini")
    exc = info.value
    assert exc.cap == "max_iterations"
    assert (exc.limit, exc.used) == (5, 5)
    assert exc.report is not None and exc.report.iterations == 5
    assert "max_iterations" in str(exc) and "5 of 5" in str(exc)
    assert "raise Limits.max_iterations" in str(exc)


def test_max_tool_calls_allows_exactly_that_many_tool_calls() -> None:
    warden, _, _ = make_warden(Policy(limits=Limits(max_tool_calls=3)))
    run = warden.run()
    for i in range(3):
        run.after_tool_call(run.before_tool_call("search", {"q": i}))
    with pytest.raises(BudgetExceeded) as info:
        run.before_tool_call("search", {"q": 99})
    assert info.value.cap == "max_tool_calls"
    assert run.report.tool_calls == 3


def test_per_tool_cap_counts_each_tool_apart() -> None:
    warden, _, _ = make_warden(Policy(tools=ToolRules(max_calls={"search": 2})))
    run = warden.run()
    for i in range(2):
        run.after_tool_call(run.before_tool_call("search", {"q": i}))
    run.after_tool_call(run.before_tool_call("fetch", {"u": 1}))
    with pytest.raises(BudgetExceeded) as info:
        run.before_tool_call("search", {"q": 5})
    assert info.value.cap == "max_tool_calls[search]"
    assert run.report.tool_calls_by_name == {"search": 2, "fetch": 1}


def test_wall_clock_cap_refuses_calls_after_the_deadline() -> None:
    warden, _, clock = make_warden(Policy(limits=Limits(max_wall_seconds=10)))
    run = warden.run()
    run.after_llm_call(run.before_llm_call("gpt-4o-mini"), usage())
    clock.advance(9.9)
    run.after_tool_call(run.before_tool_call("t"))
    clock.advance(0.1)
    with pytest.raises(BudgetExceeded) as info:
        run.before_llm_call("gpt-4o-mini")
    assert info.value.cap == "max_wall_seconds"
    with pytest.raises(BudgetExceeded):
        run.before_tool_call("t")


def test_input_token_cap_refuses_a_call_whose_prompt_would_pass_it() -> None:
    warden, _, _ = make_warden(Policy(limits=Limits(max_input_tokens=2500)))
    run = warden.run()
    for _ in range(2):
        step = run.before_llm_call("gpt-4o-mini", input_tokens=1000)
        run.after_llm_call(step, usage(1000, 10))
    with pytest.raises(BudgetExceeded) as info:
        run.before_llm_call("gpt-4o-mini", input_tokens=1000)
    assert (info.value.cap, info.value.used, info.value.requested) == (
        "max_input_tokens",
        2000,
        1000,
    )
    # a smaller prompt still fits
    run.after_llm_call(run.before_llm_call("gpt-4o-mini", input_tokens=400), usage(400, 10))


def test_output_token_cap_reserves_max_tokens() -> None:
    warden, _, _ = make_warden(Policy(limits=Limits(max_output_tokens=300)))
    run = warden.run()
    run.after_llm_call(run.before_llm_call("gpt-4o-mini", max_tokens=100), usage(10, 100))
    run.after_llm_call(run.before_llm_call("gpt-4o-mini", max_tokens=100), usage(10, 100))
    with pytest.raises(BudgetExceeded) as info:
        run.before_llm_call("gpt-4o-mini", max_tokens=101)
    assert info.value.cap == "max_output_tokens"
    run.before_llm_call("gpt-4o-mini", max_tokens=100)  # exactly fits


def test_dollar_cap_is_never_overspent_by_calls_within_their_reservation() -> None:
    prices = PriceBook()
    warden, _, _ = make_warden(Policy(limits=Limits(max_cost_usd=0.05)))
    run = warden.run()
    made = calls_allowed(run, model="gpt-4o", usage=Usage(input_tokens=1000, output_tokens=100))
    per_call = prices.cost("gpt-4o", Usage(input_tokens=1000, output_tokens=100))
    assert made >= 1
    assert run.report.cost_usd <= 0.05
    assert run.report.cost_usd == pytest.approx(made * per_call)
    with pytest.raises(BudgetExceeded) as info:
        run.before_llm_call("gpt-4o", input_tokens=1000, max_tokens=100)
    assert info.value.cap == "max_cost_usd"
    assert info.value.used + info.value.requested > 0.05


def test_retries_cap_counts_calls_made_right_after_a_failed_one() -> None:
    warden, _, _ = make_warden(Policy(limits=Limits(max_retries=2)))
    run = warden.run()
    assert calls_allowed(run, outcome="timeout", usage=Usage()) == 3  # first try + 2 retries
    with pytest.raises(BudgetExceeded) as info:
        run.before_llm_call("gpt-4o-mini")
    assert info.value.cap == "max_retries"
    assert run.report.retries == 2


def test_consecutive_errors_cap_and_a_success_resets_the_streak() -> None:
    warden, _, _ = make_warden(Policy(limits=Limits(max_consecutive_errors=2)))
    run = warden.run()
    run.after_tool_call(run.before_tool_call("t"), ok=False)
    run.after_tool_call(run.before_tool_call("t"), ok=True)
    run.after_tool_call(run.before_tool_call("t"), ok=False)
    run.after_llm_call(run.before_llm_call("gpt-4o-mini"), usage(), outcome="invalid_json")
    with pytest.raises(BudgetExceeded) as info:
        run.before_tool_call("t")
    assert info.value.cap == "max_consecutive_errors"


def test_a_model_that_keeps_calling_a_failing_tool_reaches_the_consecutive_errors_cap() -> None:
    """A successful model call between failed tool calls does not end their row."""
    warden, _, _ = make_warden(Policy(limits=Limits(max_consecutive_errors=3)))
    run = warden.run()
    for _ in range(3):
        run.after_llm_call(run.before_llm_call("gpt-4o-mini"), usage())
        run.after_tool_call(run.before_tool_call("t"), ok=False)
    with pytest.raises(BudgetExceeded) as info:
        run.before_llm_call("gpt-4o-mini")
    assert info.value.cap == "max_consecutive_errors" and info.value.used == 3


def test_a_successful_call_ends_only_the_row_of_its_own_kind() -> None:
    warden, _, _ = make_warden(Policy(limits=Limits(max_consecutive_errors=3)))
    run = warden.run()
    run.after_llm_call(run.before_llm_call("gpt-4o-mini"), usage(), outcome="timeout")
    run.after_tool_call(run.before_tool_call("t"), ok=False)
    run.after_llm_call(run.before_llm_call("gpt-4o-mini"), usage())  # ends the model row
    run.after_tool_call(run.before_tool_call("t"), ok=False)
    run.after_tool_call(run.before_tool_call("t"), ok=True)  # ends the tool row
    run.after_tool_call(run.before_tool_call("t"), ok=False)
    run.after_llm_call(run.before_llm_call("gpt-4o-mini"), usage(), outcome="timeout")
    run.after_tool_call(run.before_tool_call("t"), ok=False)  # 1 model + 2 tool failures
    with pytest.raises(BudgetExceeded) as info:
        run.before_tool_call("t")
    assert info.value.cap == "max_consecutive_errors" and info.value.used == 3
    assert run.report.errors == 6


def test_repeated_identical_tool_calls_are_refused_and_a_different_call_resets() -> None:
    warden, _, _ = make_warden(Policy(limits=Limits(max_repeated_tool_calls=2)))
    run = warden.run()
    for _ in range(2):
        run.after_tool_call(run.before_tool_call("search", {"q": "same"}))
    with pytest.raises(BudgetExceeded) as info:
        run.before_tool_call("search", {"q": "same"})
    assert info.value.cap == "max_repeated_tool_calls"
    run.after_tool_call(run.before_tool_call("search", {"q": "other"}))
    run.after_tool_call(run.before_tool_call("search", {"q": "same"}))


@pytest.mark.parametrize("price", [0.0, 0.01])  # the fast path and the general one
def test_a_retry_of_a_failed_tool_call_is_no_repeat_but_is_counted(price: float) -> None:
    rules = ToolRules(price_usd={"search": price} if price else {})
    warden, _, _ = make_warden(Policy(limits=Limits(max_repeated_tool_calls=1), tools=rules))
    run = warden.run()
    for _ in range(3):  # ToolRetryMiddleware runs the failed call c1 again, twice
        run.after_tool_call(run.before_tool_call("search", {"q": "a"}, call_id="c1"), ok=False)
    run.after_tool_call(run.before_tool_call("search", {"q": "a"}, call_id="c1"))
    assert run.report.tool_calls == 4
    assert run.report.cost_usd == pytest.approx(4 * price)
    # the model asking for the same call again (a new id) is a repeat
    with pytest.raises(BudgetExceeded) as info:
        run.before_tool_call("search", {"q": "a"}, call_id="c2")
    assert info.value.cap == "max_repeated_tool_calls"


def test_the_same_call_id_after_a_success_is_a_repeat() -> None:
    warden, _, _ = make_warden(Policy(limits=Limits(max_repeated_tool_calls=1)))
    run = warden.run()
    run.after_tool_call(run.before_tool_call("search", {"q": "a"}, call_id="c1"))
    with pytest.raises(BudgetExceeded, match="max_repeated_tool_calls"):
        run.before_tool_call("search", {"q": "a"}, call_id="c1")


def test_denied_and_unlisted_tools_raise_tool_denied() -> None:
    warden, _, _ = make_warden(Policy(tools=ToolRules(allow=["search"], deny=["rm"])))
    run = warden.run()
    with pytest.raises(ToolDenied, match="deny list"):
        run.before_tool_call("rm")
    with pytest.raises(ToolDenied, match="not on the allow list"):
        run.before_tool_call("shell")
    run.after_tool_call(run.before_tool_call("search"))


def test_tools_needing_approval_are_denied_without_an_approver() -> None:
    rules = ToolRules(require_approval=["pay"])
    warden, _, _ = make_warden(Policy(tools=rules))
    with pytest.raises(
        ToolDenied,
        match=r"needs approval and none was given; approve it with Warden\(approve=...\)",
    ):
        warden.run().before_tool_call("pay", {"amount": 5})
    asked = []
    approving, _, _ = make_warden(
        Policy(tools=rules), approve=lambda tool, args, run: asked.append(args) or True
    )
    approving.run().before_tool_call("pay", {"amount": 5})
    assert asked == [{"amount": 5}]


@pytest.mark.parametrize("answer", ["no", 1, None, "yes"])
def test_an_approver_must_say_true_or_false(answer: object) -> None:
    rules = ToolRules(require_approval=["pay"])
    warden, _, _ = make_warden(Policy(tools=rules), approve=lambda tool, args, run: answer)
    run = warden.run()
    with pytest.raises(TypeError, match=f"must return True or False for 'pay', got {answer!r}"):
        run.before_tool_call("pay", {"amount": 5})
    assert run.report.tool_calls == 0  # the tool was not counted, let alone run


def test_paid_tools_count_against_the_dollar_cap() -> None:
    policy = Policy(limits=Limits(max_cost_usd=0.025), tools=ToolRules(price_usd={"serp": 0.01}))
    warden, sink, _ = make_warden(policy)
    run = warden.run()
    run.after_tool_call(run.before_tool_call("serp", {"q": 1}))
    run.after_tool_call(run.before_tool_call("serp", {"q": 2}))
    with pytest.raises(BudgetExceeded) as info:
        run.before_tool_call("serp", {"q": 3})
    assert info.value.cap == "max_cost_usd"
    assert run.report.cost_usd == pytest.approx(0.02)
    assert [e.cost_usd for e in sink.cost_events] == [0.01, 0.01]


def test_reservation_is_released_when_the_call_fails_before_usage() -> None:
    warden, _, _ = make_warden(Policy(limits=Limits(max_cost_usd=0.02, max_iterations=2)))
    run = warden.run()
    step = run.before_llm_call("gpt-4o", input_tokens=1000, max_tokens=1000)
    assert run.counters.reserved_usd > 0
    run.release(step)
    assert run.counters.reserved_usd == 0
    assert run.counters.iterations == 0
    run.release(step)  # idempotent
    assert run.counters.iterations == 0


def test_finishing_a_run_releases_what_it_still_holds() -> None:
    warden, _, _ = make_warden(Policy(limits=Limits(max_cost_usd=1)))
    with warden.run() as run:
        run.before_llm_call("gpt-4o", input_tokens=1000)
        assert run.counters.reserved_usd > 0
    assert run.counters.reserved_usd == 0
    assert run.report.stop_reason == "completed"


def test_with_block_ends_gracefully_on_a_cap_when_policy_says_partial() -> None:
    warden, _, _ = make_warden(Policy(limits=Limits(max_iterations=1)))
    with warden.run() as run:
        run.after_llm_call(run.before_llm_call("gpt-4o-mini"), usage())
        run.before_llm_call("gpt-4o-mini")
        raise AssertionError("not reached")  # pragma: no cover
    assert run.report.partial and run.report.stop_reason == "max_iterations"
    raising, _, _ = make_warden(Policy(limits=Limits(max_iterations=1), on_exceeded="raise"))
    with pytest.raises(BudgetExceeded), raising.run() as run2:
        run2.after_llm_call(run2.before_llm_call("gpt-4o-mini"), usage())
        run2.before_llm_call("gpt-4o-mini")


async def test_async_twins_enforce_the_same_caps() -> None:
    warden, sink, _ = make_warden(Policy(limits=Limits(max_iterations=2, max_tool_calls=1)))
    async with warden.run() as run:
        for _ in range(2):
            step = await run.abefore_llm_call("gpt-4o-mini", max_tokens=50)
            await run.aafter_llm_call(step, usage())
        with pytest.raises(BudgetExceeded):
            await run.abefore_llm_call("gpt-4o-mini")
        tstep = await run.abefore_tool_call("t")
        await run.aafter_tool_call(tstep)
        with pytest.raises(BudgetExceeded):
            await run.abefore_tool_call("t")
    assert len(sink.cost_events) == 3


def test_unknown_model_is_priced_as_the_fallback_with_one_warning() -> None:
    warden, sink, _ = make_warden(Policy())
    run = warden.run()
    for _ in range(2):
        event = run.after_llm_call(run.before_llm_call("my-private-model"), usage(1000, 100))
        assert event.cost_usd == pytest.approx(PriceBook().cost("gpt-4o", usage(1000, 100)))
    notices = [e for e in sink.events if getattr(e, "code", None) == "unpriced_model"]
    assert len(notices) == 1


def test_unknown_model_is_refused_when_policy_denies() -> None:
    from budgetwarden import ModelDenied

    warden, _, _ = make_warden(Policy(unknown_model="deny"))
    with pytest.raises(ModelDenied, match="add a price") as info:
        warden.run().before_llm_call("my-private-model")
    fix = str(info.value).split("add a price: ", 1)[1].split(" or set ", 1)[0]
    assert fix.startswith("Policy(prices=")
    compile(fix, "<the fix the message suggests>", "eval")  # the snippet is valid Python


def test_model_known_only_after_the_call_is_priced_with_its_real_name() -> None:
    warden, _, _ = make_warden(Policy())
    run = warden.run()
    step = run.before_llm_call(None, input_tokens=100)
    event = run.after_llm_call(step, usage(1000, 100), model="gpt-4o-mini")
    assert event.model == "gpt-4o-mini"
    assert event.cost_usd == pytest.approx(PriceBook().cost("gpt-4o-mini", usage(1000, 100)))


def test_overshoot_is_committed_and_reported_not_hidden() -> None:
    warden, _, _ = make_warden(Policy(limits=Limits(max_cost_usd=10)))
    run = warden.run()
    step = run.before_llm_call("gpt-4o", input_tokens=10, max_tokens=10)
    event = run.after_llm_call(step, usage(10, 5000))  # provider ignored max_tokens
    assert event.overshoot_usd > 0
    assert run.report.cost_usd == pytest.approx(event.cost_usd)
    assert run.report.overshoot_usd == pytest.approx(event.overshoot_usd)


def test_an_unknown_outcome_is_refused_with_the_outcomes_there_are() -> None:
    warden, sink, _ = make_warden(Policy())
    run = warden.run()
    step = run.before_llm_call("gpt-4o-mini")
    with pytest.raises(ValueError, match="outcome='timout' is not an outcome: use one of ok"):
        run.after_llm_call(step, usage(), outcome="timout")
    assert sink.cost_events == []  # nothing recorded under a misspelt outcome
    run.after_llm_call(step, usage(), outcome="timeout")
    assert [e.outcome for e in sink.cost_events] == ["timeout"]


def test_a_cost_cap_that_exactly_fits_its_last_call_lets_it_run() -> None:
    """Ten calls of $0.001 fit ``max_cost_usd=0.01`` (their float sum is a hair above it)."""
    price = ModelPrice(input_cost_per_token=1e-6, output_cost_per_token=0.0)
    warden, _, _ = make_warden(
        Policy(limits=Limits(max_cost_usd=0.01), prices={"exact-model": price})
    )
    run = warden.run()
    for _ in range(10):
        step = run.before_llm_call("exact-model", input_tokens=1000, max_tokens=1)
        run.after_llm_call(step, Usage(input_tokens=1000, output_tokens=0))
    assert run.counters.iterations == 10
    with pytest.raises(BudgetExceeded):
        run.before_llm_call("exact-model", input_tokens=1, max_tokens=1)
