"""The LangChain rows of ``budgetwarden demo``."""

from __future__ import annotations

from budgetwarden.integrations.langchain._demo import run_demo


def test_demo_rows_show_the_looping_agent_stopped_by_each_adapter() -> None:
    unguarded, handler, middleware = run_demo()
    assert unguarded["stop"] == "GraphRecursionError"
    assert unguarded["model_calls"] == 10
    assert handler["stop"] == "max_cost_usd"
    assert 0 < handler["cost_usd"] <= 0.02 < unguarded["cost_usd"]
    assert middleware["stop"] == "max_iterations, answered"
    assert middleware["tool_calls"] == 4
    assert middleware["model_calls"] == 5
