"""The Agents SDK rows of ``budgetwarden demo``."""

from __future__ import annotations

from budgetwarden.integrations.openai_agents._demo import run_demo


def test_demo_agent_is_stopped_by_its_caps_for_less_than_unguarded() -> None:
    unguarded, hooked, guarded, final = run_demo()
    assert unguarded["stop"] == "max_turns" and unguarded["model_calls"] == 10
    assert hooked["stop"] == "max_tool_calls" and hooked["tool_calls"] == 4
    assert guarded["stop"] == "max_cost_usd" and guarded["cost_usd"] <= 0.02
    assert hooked["cost_usd"] < guarded["cost_usd"] < unguarded["cost_usd"]
    assert final["stop"] == "max_iterations: answered" and final["model_calls"] == 4
    assert final["tool_calls"] == 3
