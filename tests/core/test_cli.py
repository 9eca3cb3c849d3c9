"""The budgetwarden command, through typer's runner."""

from __future__ import annotations

import socket

import pytest
from typer.testing import CliRunner

from budgetwarden.cli import app
from budgetwarden.demo import core_rows

runner = CliRunner()


def test_demo_guarded_agent_stops_at_its_cap_and_costs_far_less() -> None:
    unguarded, guarded = core_rows()
    assert unguarded["stop"] == "completed" and unguarded["model_calls"] == 30
    assert guarded["stop"] in ("max_cost_usd", "max_iterations")
    assert guarded["cost_usd"] <= 0.05
    assert unguarded["cost_usd"] > 5 * guarded["cost_usd"]
    # context is re-sent every step: input grows faster than linearly
    assert unguarded["input_tokens"] / unguarded["model_calls"] > 2 * (
        guarded["input_tokens"] / guarded["model_calls"]
    )


def test_demo_command_prints_the_table() -> None:
    result = runner.invoke(app, ["demo"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "research agent, no guard" in result.output
    assert "max_cost_usd" in result.output


def test_price_command_shows_per_million_prices() -> None:
    result = runner.invoke(
        app, ["price", "gpt-4o", "--input-tokens", "1000000", "--output-tokens", "0"]
    )
    assert result.exit_code == 0, result.output
    assert "$2.5000 / M input tokens" in result.output


def test_price_command_explains_an_unknown_model() -> None:
    result = runner.invoke(app, ["price", "no-such-model-x"])
    assert result.exit_code == 1
    assert "no-such-model-x" in result.output


def test_cancel_command_stops_runs_of_another_process_until_lifted(tmp_path) -> None:
    import pytest

    from budgetwarden import BudgetExceeded, Warden

    uri = f"sqlite:///{tmp_path / 'spend.db'}"
    result = runner.invoke(app, ["cancel", "--ledger", uri, "--user", "u1", "--reason", "loop"])
    assert result.exit_code == 0, result.output
    assert "cancelled user=u1" in result.output
    warden = Warden(ledger=uri, log_events=False)
    with pytest.raises(BudgetExceeded) as info:
        warden.run(user="u1").before_llm_call("gpt-4o-mini")
    assert info.value.cap == "cancelled"
    warden.run(user="u2").before_llm_call("gpt-4o-mini")
    lifted = runner.invoke(app, ["cancel", "--ledger", uri, "--user", "u1", "--lift"])
    assert lifted.exit_code == 0 and "lifted" in lifted.output
    warden.run(user="u1").before_llm_call("gpt-4o-mini")
    missing = runner.invoke(app, ["cancel", "--ledger", uri])
    assert missing.exit_code == 2 and "needs run_id" in missing.output
    other = Warden(ledger=uri, namespace="billing", log_events=False)
    elsewhere = ["cancel", "--ledger", uri, "--user", "u1", "--namespace", "billing"]
    result = runner.invoke(app, elsewhere)
    assert result.exit_code == 0 and "namespace 'billing'" in result.output
    warden.run(user="u1").before_llm_call("gpt-4o-mini")  # the default namespace goes on
    with pytest.raises(BudgetExceeded):
        other.run(user="u1").before_llm_call("gpt-4o-mini")
    unknown = runner.invoke(app, ["cancel", "--ledger", "bogus://x", "--user", "u1"])
    assert unknown.exit_code == 2 and "unknown ledger URI 'bogus://x'" in unknown.output
    assert "Traceback" not in unknown.output


def test_cancel_refuses_a_memory_ledger_that_dies_with_the_command() -> None:
    for args in (["--user", "u1"], ["--user", "u1", "--lift"]):
        result = runner.invoke(app, ["cancel", "--ledger", "memory://", *args])
        assert result.exit_code == 2, result.output
        assert "--ledger memory:// lives only as long as this command" in result.output
        assert "sqlite:///spend.db" in result.output and "redis://" in result.output
        assert "cancelled user=u1" not in result.output


def test_cancel_on_an_unreachable_redis_is_one_line_and_exit_code_2() -> None:
    pytest.importorskip("redis")
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    uri = f"redis://127.0.0.1:{port}/0?connect_timeout=0.2"
    for args, verb in ((["--user", "u1"], "cancelled"), (["--user", "u1", "--lift"], "lifted")):
        result = runner.invoke(app, ["cancel", "--ledger", uri, *args])
        assert result.exit_code == 2, result.output
        assert f"cannot reach ledger redis://127.0.0.1:{port}/0" in result.output
        assert f"nothing was {verb}" in result.output
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_cancel_command_stops_runs_by_task_class_and_by_tag(tmp_path) -> None:
    from budgetwarden import BudgetExceeded, Warden

    uri = f"sqlite:///{tmp_path / 'spend.db'}"
    warden = Warden(ledger=uri, log_events=False)
    args = ["cancel", "--ledger", uri, "--task-class", "extraction", "--tag", "team=search"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "task_class=extraction" in result.output and "tag:team=search" in result.output
    for run in (warden.run(task_class="extraction"), warden.run(tags={"team": "search"})):
        with pytest.raises(BudgetExceeded) as info:
            run.before_llm_call("gpt-4o-mini")
        assert info.value.cap == "cancelled"
    warden.run(task_class="chat", tags={"team": "ops"}).before_llm_call("gpt-4o-mini")
    bad = runner.invoke(app, ["cancel", "--ledger", uri, "--tag", "team"])
    assert bad.exit_code == 2 and "give it as name=value" in bad.output
