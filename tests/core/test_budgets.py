"""Budgets over time on the memory ledger: scopes, overrides, queries, cancel, nesting."""

from __future__ import annotations

from typing import Any

import pytest

from budgetwarden import Budget, BudgetExceeded, Limits, Policy, PriceBook, ToolRules

from .helpers import make_warden, usage


def test_budget_is_shared_by_every_run_of_the_same_scope_value() -> None:
    policy = Policy(budgets=[Budget(scope="workspace", window="month", max_cost_usd=0.01)])
    warden, _, _ = make_warden(policy)
    spent = 0.0
    with pytest.raises(BudgetExceeded) as info:
        for _ in range(100):
            run = warden.run(workspace="acme")
            step = run.before_llm_call("gpt-4o-mini", input_tokens=1000, max_tokens=200)
            spent += run.after_llm_call(step, usage(1000, 200)).cost_usd
    assert info.value.cap == "budget:workspace=acme/month"
    assert spent <= 0.01
    assert warden.spent("workspace", "acme") == pytest.approx(spent)
    remaining = warden.remaining("workspace", "acme")
    assert remaining is not None and remaining < PriceBook().worst_case_cost(
        "gpt-4o-mini", 1000, 200
    )


def test_override_gives_a_named_value_its_own_limit() -> None:
    policy = Policy(
        budgets=[Budget(scope="user", window="day", max_requests=1, overrides={"vip": 3})]
    )
    warden, _, _ = make_warden(policy)
    vip = warden.run(user="vip")
    for _ in range(3):
        vip.after_llm_call(vip.before_llm_call("gpt-4o-mini"), usage())
    with pytest.raises(BudgetExceeded):
        vip.before_llm_call("gpt-4o-mini")
    assert warden.remaining("user", "vip") == 0


def test_runs_without_the_scope_value_are_not_counted() -> None:
    policy = Policy(budgets=[Budget(scope="user", max_requests=1)])
    warden, _, _ = make_warden(policy)
    run = warden.run()  # no user
    for _ in range(3):
        run.after_llm_call(run.before_llm_call("gpt-4o-mini"), usage())


def test_scope_values_cannot_collide_with_other_keys() -> None:
    policy = Policy(budgets=[Budget(scope="user", max_requests=1)])
    warden, _, _ = make_warden(policy)
    tricky = warden.run(user="a|user=b")
    tricky.after_llm_call(tricky.before_llm_call("gpt-4o-mini"), usage())
    plain = warden.run(user="b")
    plain.after_llm_call(plain.before_llm_call("gpt-4o-mini"), usage())
    assert warden.spent("user", "b") == 1
    assert warden.spent("user", "a|user=b") == 1


def test_tag_scopes_budget_custom_attributes() -> None:
    policy = Policy(budgets=[Budget(scope="tag:team", max_requests=2)])
    warden, _, _ = make_warden(policy)
    run = warden.run(tags={"team": "search"})
    for _ in range(2):
        run.after_llm_call(run.before_llm_call("gpt-4o-mini"), usage())
    with pytest.raises(BudgetExceeded, match="tag:team=search"):
        run.before_llm_call("gpt-4o-mini")


def test_runs_share_buckets_unless_a_budgeted_scope_differs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run's buckets depend only on the scopes the budgets use: runs of one user in new
    threads (no thread budget) reuse them, a thread budget splits them per thread."""
    import budgetwarden.warden as warden_module

    computed: list[dict[str, str | None]] = []
    real = warden_module.matching_buckets

    def counting(budgets: Any, attribution: Any, **kwargs: Any) -> Any:
        computed.append(dict(attribution))
        return real(budgets, attribution, **kwargs)

    monkeypatch.setattr(warden_module, "matching_buckets", counting)
    per_user = Policy(budgets=[Budget(scope="user", max_requests=100)])
    warden, _, _ = make_warden(per_user)
    for thread in ("t1", "t2", "t3"):
        run = warden.run(user="u1", thread=thread, task_class=f"task {thread}")
        run.after_llm_call(run.before_llm_call("gpt-4o-mini"), usage())
    assert len(computed) == 1  # one user, three threads: the same buckets
    run = warden.run(user="u2", thread="t1")
    run.after_llm_call(run.before_llm_call("gpt-4o-mini"), usage())
    assert len(computed) == 2 and warden.spent("user", "u1") == 3

    per_thread = Policy(budgets=[Budget(scope="thread", max_requests=1)])
    warden, _, _ = make_warden(per_thread)
    for thread in ("t1", "t2"):
        run = warden.run(user="u1", thread=thread)
        run.after_llm_call(run.before_llm_call("gpt-4o-mini"), usage())
    assert warden.spent("thread", "t1") == 1 and warden.spent("thread", "t2") == 1
    with pytest.raises(BudgetExceeded, match="thread=t1"):
        warden.run(user="u1", thread="t1").before_llm_call("gpt-4o-mini")


def test_cancel_stops_matching_runs_at_their_next_call_until_lifted() -> None:
    warden, _, _ = make_warden(Policy())
    run = warden.run(user="u1")
    bystander = warden.run(user="u2")
    warden.cancel(user="u1", reason="runaway")
    with pytest.raises(BudgetExceeded) as info:
        run.before_llm_call("gpt-4o-mini")
    assert info.value.cap == "cancelled"
    assert f"stopped run {run.id}: it was cancelled from outside" in str(info.value)
    assert "0 of 0" not in str(info.value) and "warden.uncancel" in str(info.value)
    with pytest.raises(BudgetExceeded):
        run.before_tool_call("search")
    bystander.before_llm_call("gpt-4o-mini")
    warden.uncancel(user="u1")
    run.before_llm_call("gpt-4o-mini")
    by_id = warden.run()
    warden.cancel(run_id=by_id.id)
    with pytest.raises(BudgetExceeded):
        by_id.before_llm_call("gpt-4o-mini")


def test_child_run_cannot_spend_past_what_its_parent_has_left() -> None:
    warden, _, _ = make_warden(Policy(limits=Limits(max_iterations=3)))
    parent = warden.run(agent="manager", user="u1")
    parent.after_llm_call(parent.before_llm_call("gpt-4o-mini"), usage())
    child = warden.run(agent="worker", parent=parent)
    assert child.attribution["user"] == "u1"
    child.after_llm_call(child.before_llm_call("gpt-4o-mini"), usage())
    child.after_llm_call(child.before_llm_call("gpt-4o-mini"), usage())
    with pytest.raises(BudgetExceeded) as info:
        child.before_llm_call("gpt-4o-mini")  # the child's own cap allows 3, the parent's 0
    assert info.value.cap == "max_iterations"
    report = parent.report
    assert report.iterations == 3
    assert report.children[0].iterations == 2
    assert report.children[0].parent_run_id == parent.id


def test_spent_and_remaining_refuse_to_mix_units() -> None:
    policy = Policy(
        budgets=[
            Budget(scope="user", window="8h", max_cost_usd=5),
            Budget(scope="user", window="1m", max_requests=30),
        ]
    )
    warden, _, _ = make_warden(policy)
    run = warden.run(user="u1")
    run.after_llm_call(run.before_llm_call("gpt-4o-mini"), usage())
    with pytest.raises(ValueError, match="pass window="):
        warden.remaining("user", "u1")
    with pytest.raises(ValueError, match="pass window="):
        warden.spent("user", "u1")
    assert warden.spent("user", "u1", "1m") == 1
    assert warden.remaining("user", "u1", "1m") == 29


def test_a_priced_tool_spends_from_dollar_budgets_and_is_refused_past_them() -> None:
    policy = Policy(
        budgets=[
            Budget(scope="user", window="day", max_cost_usd=0.025),
            Budget(scope="global", window="day", max_requests=100),
        ],
        tools=ToolRules(price_usd={"serp": 0.01}),
    )
    warden, _, _ = make_warden(policy)
    run = warden.run(user="u1")
    for _ in range(2):
        run.after_tool_call(run.before_tool_call("serp", {"q": "x"}))
    assert warden.spent("user", "u1") == pytest.approx(0.02)
    assert warden.spent("global") == 0  # a tool call is not a model request
    with pytest.raises(BudgetExceeded) as info:
        run.before_tool_call("serp", {"q": "y"})
    assert info.value.cap == "budget:user=u1/day"
    assert run.report.tool_calls == 2


def test_spend_queries_pick_a_unit_by_metric_when_one_window_counts_several() -> None:
    budgets = [
        Budget(scope="user", window="day", max_cost_usd=5.0),
        Budget(scope="user", window="day", max_requests=100),
    ]
    warden, _, _ = make_warden(Policy(budgets=budgets))
    run = warden.run(user="u1")
    cost = run.after_llm_call(run.before_llm_call("gpt-4o-mini"), usage()).cost_usd
    with pytest.raises(ValueError, match="or metric= to pick one"):
        warden.spent("user", "u1")
    assert warden.spent("user", "u1", metric="requests") == 1
    assert warden.spent("user", "u1", "day", metric="cost") == pytest.approx(cost)
    assert warden.remaining("user", "u1", metric="requests") == 99
    with pytest.raises(ValueError, match="use one of"):
        warden.remaining("user", "u1", metric="dollars")  # type: ignore[arg-type]


def test_spent_needs_the_window_when_budgets_on_the_scope_keep_several() -> None:
    """``user/8h`` and ``user/day`` count the same call: their sum was twice the spend."""
    from budgetwarden import Usage, Warden

    policy = Policy(
        budgets=[
            Budget(scope="user", window="8h", max_cost_usd=1.0),
            Budget(scope="user", window="day", max_cost_usd=5.0),
        ]
    )
    warden = Warden(policy, log_events=False)
    with warden.run(user="u1") as run:
        step = run.before_llm_call("gpt-4o", input_tokens=100, max_tokens=10)
        cost = run.after_llm_call(step, Usage(input_tokens=100, output_tokens=10)).cost_usd
    assert warden.spent("user", "u1", "8h") == warden.spent("user", "u1", "day") == cost
    with pytest.raises(ValueError, match=r"keep windows \['8h', 'day'\]: pass window="):
        warden.spent("user", "u1")
    assert warden.spent("user", "u2", "8h") == 0.0
    for scope, window in (("users", None), ("user", "8 hours"), ("user", "8H")):
        typo = scope if window is None else window
        with pytest.raises(ValueError, match=f"unknown (scope|window) '{typo}'"):
            warden.spent(scope, "u1", window)
        with pytest.raises(ValueError, match="unknown"):
            warden.remaining(scope, "u1", window)
