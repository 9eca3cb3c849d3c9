"""Policies: valid ones load from YAML, TOML and env; every invalid field is named."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from budgetwarden import (
    Budget,
    BudgetExceeded,
    Limits,
    ModelPrice,
    Policy,
    PolicyError,
    Routing,
    Thresholds,
    ToolRules,
)
from budgetwarden.alerts import AlertRules

from .helpers import make_warden, usage


def test_policy_defaults_are_safe() -> None:
    policy = Policy()
    assert policy.on_exceeded == "partial"
    assert policy.unknown_model == "fallback"
    assert policy.default_max_output_tokens == 1024
    assert policy.thresholds.alerts == [0.5, 0.8]
    assert policy.limits.max_iterations is None


@pytest.mark.parametrize(
    ("build", "field", "hint"),
    [
        (lambda: Limits(max_iterations=-1), "max_iterations", "greater than or equal to 0"),
        (lambda: Limits(max_cost_usd=-0.5), "max_cost_usd", "greater than or equal to 0"),
        (lambda: Limits(max_wall_seconds=0), "max_wall_seconds", "greater than 0"),
        (lambda: Limits(max_repeated_tool_calls=0), "max_repeated_tool_calls", "greater than"),
        (lambda: Thresholds(warn=0.95, degrade=0.9), "", "ordered warn <= degrade <= stop"),
        (lambda: Thresholds(alerts=[0.8, 0.5]), "", "ascending"),
        (lambda: Thresholds(alerts=[1.5]), "", "fractions"),
        (lambda: Budget(scope="user", window="3x", max_cost_usd=1), "window", "unknown window"),
        (lambda: Budget(scope="team", max_cost_usd=1), "scope", "tag:<name>"),
        (lambda: Budget(scope="user"), "", "exactly one of max_cost_usd"),
        (lambda: Budget(scope="user", max_cost_usd=1, max_tokens=5), "", "exactly one"),
        (lambda: Routing(tiers=["a"], task_classes={"x": 3}), "", "out of range"),
        (lambda: Routing(tiers=["a"], task_classes={"x": "b"}), "", "not one of tiers"),
        (lambda: ToolRules(max_calls={"search": -1}), "", "max_calls must be >= 0"),
        (lambda: Policy(timezone="Mars/Olympus"), "timezone", "IANA"),
        (lambda: Policy(on_exceeded="explode"), "on_exceeded", "'partial', 'raise' or 'pause'"),
        (lambda: Policy(limits={"max_iteration": 3}), "max_iteration", "Extra inputs"),
    ],
)
def test_invalid_policy_values_are_rejected_naming_the_field(build, field, hint) -> None:
    with pytest.raises(ValidationError) as info:
        build()
    text = str(info.value)
    assert field in text
    assert hint in text


def test_duplicate_budgets_need_distinct_names() -> None:
    with pytest.raises(ValidationError, match="distinct name"):
        Policy(budgets=[Budget(scope="user", max_cost_usd=1), Budget(scope="user", max_cost_usd=2)])


def test_policy_is_frozen() -> None:
    policy = Policy()
    with pytest.raises(ValidationError):
        policy.on_exceeded = "raise"  # type: ignore[misc]


def test_policy_loads_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "limits:\n  max_iterations: 7\n  max_cost_usd: 0.5\n"
        "budgets:\n  - {scope: user, window: 8h, max_cost_usd: 5}\n"
        "routing:\n  tiers: [gpt-4o-mini, gpt-4o]\n  task_classes: {extraction: 0}\n"
    )
    policy = Policy.from_file(path, env=False)
    assert policy.limits.max_iterations == 7
    assert policy.budgets[0].window == "8h"
    assert policy.routing is not None and policy.routing.tiers == ["gpt-4o-mini", "gpt-4o"]


def test_policy_loads_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(
        "on_exceeded = 'raise'\n[limits]\nmax_tool_calls = 4\n"
        "[[budgets]]\nscope = 'workspace'\nwindow = 'month'\nmax_tokens = 100000\n"
    )
    policy = Policy.from_file(path, env=False)
    assert policy.on_exceeded == "raise"
    assert policy.limits.max_tool_calls == 4
    assert policy.budgets[0].metric == "tokens"


def test_bad_value_in_a_file_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("budgets:\n  - {scope: user, window: 3x, max_cost_usd: 5}\n")
    with pytest.raises(ValidationError) as info:
        Policy.from_file(path, env=False)
    assert "budgets.0.window" in str(info.value)


def test_environment_overrides_file_values(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("limits:\n  max_iterations: 7\n")
    monkeypatch.setenv("BUDGETWARDEN_LIMITS__MAX_ITERATIONS", "3")
    monkeypatch.setenv("BUDGETWARDEN_ON_EXCEEDED", "raise")
    monkeypatch.setenv("BUDGETWARDEN_LEDGER", "sqlite:///x.db")  # not a policy field: ignored
    policy = Policy.from_file(path)
    assert policy.limits.max_iterations == 3
    assert policy.on_exceeded == "raise"


def test_budget_overrides_and_only_pick_limits_per_value() -> None:
    budget = Budget(scope="user", max_cost_usd=1, overrides={"vip": 10}, only=["vip", "a"])
    assert budget.limit_for("vip") == 10
    assert budget.limit_for("a") == 1
    assert budget.applies_to("a") and not budget.applies_to("b")
    assert budget.key == "user/day/cost"


def test_model_fields_name_their_defaults_for_type_checkers() -> None:
    # dataclass_transform (PEP 681) only sees `default=`: a type checker without the pydantic
    # plugin takes `Field(None, ...)` for a required field (`make typecheck` checks the
    # README's code that way, tests/typing/readme_usage.py)
    core = Path(__file__).resolve().parents[2] / "core"
    positional = [
        f"{path.name}:{node.lineno}"
        for path in sorted(core.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "Field"
        and node.args
    ]
    assert not positional, f"give these Field() defaults as default=...: {positional}"


def test_prices_take_a_model_price_or_its_fields() -> None:
    from budgetwarden.pricing import ModelPrice

    fields = {"input_cost_per_token": 2e-7, "output_cost_per_token": 6e-7}
    policy = Policy(prices={"my-llama": fields, "my-gpu": ModelPrice(**fields)})
    assert policy.prices["my-llama"] == ModelPrice(**fields) == policy.prices["my-gpu"]
    with pytest.raises(ValidationError, match=r"prices\.my-llama"):
        Policy(prices={"my-llama": {"input_cost_per_token": 2e-7}})


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("build", "hint"),
    [
        # NaN compares false with everything: a NaN override let 'vip' through max_requests=2
        (lambda: Budget(scope="user", max_requests=2, overrides={"vip": NAN}), "NaN is not a"),
        (lambda: Budget(scope="user", max_cost_usd=1, overrides={"vip": NAN}), "NaN is not a"),
        (lambda: Budget(scope="user", max_cost_usd=1, overrides={"vip": -1}), "limits >= 0"),
        # a token or request budget counts whole units, its overrides too (as max_requests=2.5)
        (lambda: Budget(scope="user", max_requests=2, overrides={"vip": 2.5}), "such as 2,"),
        (lambda: Budget(scope="user", max_tokens=9, overrides={"vip": INF}), "whole number"),
        (lambda: ToolRules(price_usd={"search": NAN}), "finite dollars >= 0"),
        (lambda: ToolRules(price_usd={"search": INF}), "list it in deny"),
        (lambda: ToolRules(price_usd={"search": -0.01}), "finite dollars >= 0"),
    ],
)
def test_nan_and_fractional_limits_are_refused_at_construction(build, hint) -> None:
    with pytest.raises(ValidationError) as info:
        build()
    text = str(info.value)
    assert hint in text
    assert "overrides" in text or "price_usd" in text


def test_an_infinite_dollar_override_lifts_the_limit_as_max_cost_usd_inf_does() -> None:
    # max_cost_usd takes inf (no limit), so a dollar budget's override takes it too
    assert Budget(scope="user", max_cost_usd=INF).limit == INF
    budget = Budget(scope="user", max_cost_usd=1, overrides={"vip": INF, "a": 2})
    assert budget.limit_for("vip") == INF and budget.limit_for("a") == 2
    assert Budget(scope="user", max_requests=2, overrides={"vip": 3.0}).limit_for("vip") == 3


def test_nan_in_a_yaml_policy_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "budgets:\n  - {scope: user, max_requests: 2, overrides: {vip: .nan}}\n"
        "tools:\n  price_usd: {search: .inf}\n"
    )
    with pytest.raises(ValidationError) as info:
        Policy.from_file(path, env=False)
    text = str(info.value)
    assert "budgets.0.overrides" in text and "tools.price_usd" in text


@pytest.mark.parametrize(
    ("window", "hint"),
    [
        ("8h\n", "unknown window"),  # `$` matched before the newline; the first call failed
        ("1d ", "unknown window"),
        ("999999999999999999999d", "longer than 3650d"),  # OverflowError at the first refusal
        ("3651d", "longer than 3650d"),
        ("87601h", "'total' for a budget that never resets"),
    ],
)
def test_windows_are_whole_strings_of_at_most_ten_years(window: str, hint: str) -> None:
    with pytest.raises(ValidationError) as info:
        Budget(scope="user", window=window, max_cost_usd=1)
    assert "window" in str(info.value) and hint in str(info.value)


def test_a_tag_scope_is_a_whole_string() -> None:
    with pytest.raises(ValidationError, match="unknown scope"):
        Budget(scope="tag:team\n", max_cost_usd=1)


def test_the_longest_window_refuses_with_its_reset_time() -> None:
    policy = Policy(budgets=[Budget(scope="user", window="3650d", max_cost_usd=0.01)])
    warden, _, _ = make_warden(policy, log_events=False)
    run = warden.run(user="u1")
    with pytest.raises(BudgetExceeded, match="resets at"):
        for _ in range(3):
            run.after_llm_call(run.before_llm_call("gpt-4o"), usage())


@pytest.mark.parametrize(
    ("fields", "hint"),
    [
        ({"window": "1s"}, "needs max_wait_seconds > 0"),  # the default 0 never waited
        ({"window": "1s", "max_wait_seconds": 0}, "e.g. max_wait_seconds=30"),
        ({"window": "total", "max_wait_seconds": 5}, "'total' never does"),
        ({"window": "run", "max_wait_seconds": 5}, "window that resets"),
    ],
)
def test_wait_mode_needs_time_to_wait_and_a_window_that_resets(fields, hint) -> None:
    with pytest.raises(ValidationError, match="when_exhausted='wait'") as info:
        Budget(scope="key", max_requests=5, when_exhausted="wait", **fields)
    assert hint in str(info.value)
    assert Budget(
        scope="key", window="1s", max_requests=5, when_exhausted="wait", max_wait_seconds=3
    )


@pytest.mark.parametrize(
    ("build", "field", "hint"),
    [
        (lambda: Routing(tiers=["gpt-4o-mini", "gpt-4o", "gpt-4o-mini"]), "tiers", "twice"),
        (lambda: Routing(tiers=["gpt-4o-mini", ""]), "tiers", "tiers[1] is an empty model"),
        (lambda: ToolRules(allow=["search", "shell"], deny=["shell"]), "", "both allow and deny"),
        (lambda: Budget(scope="user", max_cost_usd=1, only=[]), "only", "applies the budget to no"),
        (lambda: Budget(scope="global", max_cost_usd=1, only=["u1"]), "", "scope='global'"),
        (
            lambda: Budget(scope="global", max_cost_usd=1, overrides={"*": 5}),
            "",
            "overrides cannot apply to scope='global'",
        ),
        # pydantic takes True for 1: a bool where a number goes is a typo, not a cap of one
        (lambda: Limits(max_iterations=True), "", "max_iterations must be a number"),
        (lambda: Limits(max_cost_usd=False), "", "not a boolean"),
        (lambda: Budget(scope="user", max_requests=True), "", "max_requests must be a number"),
        (lambda: Budget(scope="user", max_requests=5, overrides={"vip": True}), "", "['vip']"),
        (lambda: ToolRules(max_calls={"search": True}), "", "max_calls['search']"),
        (lambda: Routing(tiers=["a", "b"], task_classes={"x": True}), "", "task_classes['x']"),
        (lambda: Thresholds(alerts=[0.5, True]), "", "alerts[1]"),
        (lambda: Policy(limits={"max_tool_calls": True}), "limits", "max_tool_calls must be"),
    ],
)
def test_settings_that_would_do_nothing_or_something_else_are_refused(build, field, hint) -> None:
    with pytest.raises(ValidationError) as info:
        build()
    text = str(info.value)
    assert field in text
    assert hint in text


def test_booleans_still_go_where_a_boolean_goes() -> None:
    policy = Policy(
        limits={"final_answer": True, "max_iterations": 3},
        budgets=[{"scope": "user", "max_cost_usd": 1, "hard": False}],
        routing={"tiers": ["a"], "downgrade_on_pressure": False},
        record_content=True,
    )
    assert policy.limits.final_answer and not policy.budgets[0].hard
    assert policy.routing is not None and not policy.routing.downgrade_on_pressure


@pytest.mark.parametrize(
    ("name", "text", "hint"),
    [
        # YAML and JSON kept the last of two keys: the first limits were silently dropped
        ("p.yaml", "limits:\n  max_iterations: 7\nlimits:\n  max_cost_usd: 1\n", "lines 1 and 3"),
        ("p.yaml", "limits: {max_iterations: 7, max_iterations: 70}\n", "'max_iterations'"),
        ("p.json", '{"limits": {"max_iterations": 7}, "limits": {}}', "'limits' is given twice"),
        ("p.toml", "[limits]\nmax_iterations = 7\n[limits]\nmax_cost_usd = 1\n", "TOML"),
    ],
)
def test_a_key_given_twice_in_a_file_is_refused_with_the_file(
    tmp_path: Path, name: str, text: str, hint: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        Policy.from_file(path, env=False)
    assert str(path) in str(info.value) and hint in str(info.value)


def test_a_yaml_merge_key_may_still_be_overridden(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "budgets:\n"
        "  - &user {scope: user, window: 8h, max_cost_usd: 5}\n"
        "  - {<<: *user, window: day, max_cost_usd: 20}\n"
    )
    budgets = Policy.from_file(path, env=False).budgets
    assert [(b.window, b.limit) for b in budgets] == [("8h", 5), ("day", 20)]


@pytest.mark.parametrize(
    ("name", "text", "hint"),
    [
        ("p.yaml", "limits: {max_iterations: 7\n", "invalid YAML"),
        ("p.json", '{"limits": ', "invalid JSON"),
        ("p.toml", "[limits\n", "invalid TOML"),
        ("p.yaml", "- just\n- a list\n", "mapping at its top level"),
    ],
)
def test_an_unreadable_file_is_a_policy_error_naming_it(
    tmp_path: Path, name: str, text: str, hint: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        Policy.from_file(path, env=False)
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith(str(path)) and hint in str(info.value)


def test_invalid_values_in_a_file_name_the_file_and_the_fields(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("budgets:\n  - {scope: user, window: 3x, max_cost_usd: 5}\n")
    with pytest.raises(ValidationError) as info:
        Policy.from_file(path, env=False)
    assert f"for Policy from {path}\nbudgets.0.window" in str(info.value)
    monkeypatch.setenv("BUDGETWARDEN_LIMITS__MAX_COST_USD", "-1")
    with pytest.raises(ValidationError) as info:
        Policy.from_file(path)
    text = str(info.value)
    assert f"from {path} and BUDGETWARDEN_LIMITS__MAX_COST_USD" in text
    assert "limits.max_cost_usd" in text and "budgets.0.window" in text


@pytest.mark.parametrize(
    ("variable", "meant"),
    [
        ("BUDGETWARDEN_LIMIT__MAX_COST_USD", "BUDGETWARDEN_LIMITS__MAX_COST_USD"),
        ("BUDGETWARDEN_LIMITS_MAX_COST_USD", "BUDGETWARDEN_LIMITS__MAX_COST_USD"),
        ("BUDGETWARDEN_LIMITS__MAX_COST", "BUDGETWARDEN_LIMITS__MAX_COST_USD"),
        ("BUDGETWARDEN_THRESHOLDS__WARM", "BUDGETWARDEN_THRESHOLDS__WARN"),
        ("BUDGETWARDEN_LEDGR", "BUDGETWARDEN_LEDGER"),
    ],
)
def test_a_variable_that_names_no_field_is_refused_with_the_nearest_name(
    monkeypatch, variable: str, meant: str
) -> None:
    monkeypatch.setenv(variable, "2")
    with pytest.raises(PolicyError) as info:
        Policy.from_mapping({})
    assert f"{variable} names no policy field: did you mean {meant}?" in str(info.value)
    assert Policy.from_mapping({}, env=False) == Policy()


def test_variables_budgetwarden_reads_elsewhere_are_not_policy_fields(monkeypatch) -> None:
    for name in ("POLICY", "EVENTS", "LEDGER", "NAMESPACE", "REQUIRE_SERVICES"):
        monkeypatch.setenv(f"BUDGETWARDEN_{name}", "x")
    monkeypatch.delenv("BUDGETWARDEN_POLICY")  # from_env would read it as a file
    assert Policy.from_env() == Policy()


def test_a_string_field_takes_its_variable_as_written(monkeypatch) -> None:
    # JSON-decoded, 1234 was an int, which fallback_model refused
    monkeypatch.setenv("BUDGETWARDEN_FALLBACK_MODEL", "1234")
    monkeypatch.setenv("BUDGETWARDEN_TOOLS__MAX_CALLS__SEARCH", "3")
    monkeypatch.setenv("BUDGETWARDEN_ROUTING__TIERS", '["gpt-4o-mini", "1234"]')
    policy = Policy.from_mapping({})
    assert policy.fallback_model == "1234"
    assert policy.tools.max_calls == {"search": 3}
    assert policy.routing is not None and policy.routing.tiers == ["gpt-4o-mini", "1234"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ModelPrice(input_cost_per_token=True, output_cost_per_token=1e-6), "boolean"),
        (
            lambda: ModelPrice(input_cost_per_token=float("inf"), output_cost_per_token=1e-6),
            "finite number",
        ),
        (lambda: ModelPrice(gpu_usd_per_hour=float("inf"), tokens_per_second=900), "finite"),
        (lambda: AlertRules(surge_days=True), "surge_days must be a number, not a boolean"),
        (lambda: AlertRules(envelope_levels=[0.5, True]), r"envelope_levels\[1\]"),
    ],
)
def test_prices_and_alert_rules_refuse_booleans_and_infinite_prices(
    make: Any, message: str
) -> None:
    """Policies refused these; a price or an alert rule took True as 1 and inf as a price."""
    with pytest.raises(ValidationError, match=message):
        make()
