"""RoutedLLM's default factory: CrewAI's LLM through LiteLLM (offline, a mocked response)."""

from __future__ import annotations

from crewai_fakes import SearchTool, make_crew

from budgetwarden import Limits, Policy, Routing, Warden
from budgetwarden.integrations.crewai import RoutedLLM, guard_crew


def test_routed_llm_calls_the_chosen_tier_through_litellm() -> None:
    answer = "The costs come from loops and re-sent context."
    llm = RoutedLLM(mock_response=answer, max_tokens=50)  # options go to crewai.LLM / LiteLLM
    routing = Routing(tiers=["gpt-4o-mini", "gpt-4o"], task_classes={"hard": 1})
    warden = Warden(Policy(limits=Limits(max_iterations=3), routing=routing), log_events=False)

    result = guard_crew(make_crew([llm], tools=[SearchTool()]), warden, task_class="hard").kickoff()

    assert result.raw == answer
    assert result.report is not None
    assert result.report.models == ["gpt-4o"]
    assert result.report.iterations == 1
    assert result.report.output_tokens > 0 and not result.stopped
    assert llm.delegate("gpt-4o").is_litellm
