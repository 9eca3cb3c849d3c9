"""The CrewAI rows of ``budgetwarden demo``: the same looping crew, unguarded and guarded."""

from __future__ import annotations

from budgetwarden.integrations.crewai._demo import run_demo


def test_demo_rows_show_the_caps_stopping_the_crew_that_would_run_on() -> None:
    free, by_cost, by_tools, answered = run_demo()

    assert free["model_calls"] == 11  # CrewAI's max_iter=10, then its forced final answer
    assert by_cost["stop"] == "max_cost_usd" and by_cost["cost_usd"] <= 0.02
    assert by_tools["stop"] == "max_tool_calls" and by_tools["tool_calls"] == 4
    assert free["cost_usd"] > by_cost["cost_usd"]
    assert answered["stop"] == "max_iterations: answered" and answered["model_calls"] == 4
