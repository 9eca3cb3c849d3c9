"""CrewAI tools count in the reserved prompt in native-tool mode (ReAct describes them in
the prompt's text, which counts already)."""

from __future__ import annotations

from typing import Any

import pytest
from crewai_fakes import ScriptedLLM, SearchTool, make_crew

from budgetwarden import Limits, Policy, Warden
from budgetwarden.integrations.crewai import guard_crew
from budgetwarden.run import Run
from budgetwarden.usage import estimate_tokens, tool_tokens


def test_a_crewai_tool_counts_its_name_description_and_parameters() -> None:
    tool = SearchTool()
    assert tool_tokens(tool) > estimate_tokens(tool.name + tool.description) + 5


@pytest.mark.parametrize(("native", "counted"), [(True, True), (False, False)])
def test_native_tool_schemas_are_reserved(
    native: bool, counted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps: list[Any] = []
    reserve = Run.before_llm_call

    def recording(self: Run, *args: Any, **kwargs: Any) -> Any:
        steps.append(step := reserve(self, *args, **kwargs))
        return step

    monkeypatch.setattr(Run, "before_llm_call", recording)
    llm = ScriptedLLM(native=native)
    crew = make_crew([llm], tools=[SearchTool()])
    warden = Warden(Policy(limits=Limits(max_iterations=2)), log_events=False)
    guard_crew(crew, warden).kickoff()
    assert len(steps) == 2
    assert all((step.tool_tokens > 20) is counted for step in steps)
