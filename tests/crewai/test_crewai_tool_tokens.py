"""What a CrewAI call's reservation counts: its tools in native-tool mode (ReAct describes
them in the prompt's text, which counts already), and what the last estimate missed of the
prompt the provider billed."""

from __future__ import annotations

from typing import Any

import pytest
from crewai_fakes import ScriptedLLM, SearchTool, make_crew

from budgetwarden import Limits, ListSink, Policy, Warden
from budgetwarden.integrations.crewai import guard_crew
from budgetwarden.integrations.crewai._calls import tool_calls_text
from budgetwarden.usage import estimate_tokens, tool_tokens


def test_a_crewai_tool_counts_its_name_description_and_parameters() -> None:
    tool = SearchTool()
    assert tool_tokens(tool) > estimate_tokens(tool.name + tool.description) + 5


@pytest.mark.parametrize(("native", "counted"), [(True, True), (False, False)])
def test_native_tool_schemas_are_reserved(
    native: bool, counted: bool, reserved_steps: list[Any]
) -> None:
    steps = reserved_steps
    llm = ScriptedLLM(native=native)
    crew = make_crew([llm], tools=[SearchTool()])
    warden = Warden(Policy(limits=Limits(max_iterations=2)), log_events=False)
    guard_crew(crew, warden).kickoff()
    assert len(steps) == 2
    assert all((step.tool_tokens > 20) is counted for step in steps)


@pytest.mark.parametrize("native", [True, False])
def test_the_next_call_reserves_what_the_bill_showed_the_estimate_missed(
    native: bool, reserved_steps: list[Any]
) -> None:
    # The provider bills 5,000 prompt tokens a call, far more than CrewAI's messages read.
    steps = reserved_steps
    crew = make_crew([ScriptedLLM(native=native, prompt_tokens=5000)], tools=[SearchTool()])
    warden = Warden(Policy(limits=Limits(max_iterations=2)), log_events=False)
    guard_crew(crew, warden).kickoff()
    first, second = steps
    assert first.prompt_gap == 0 and first.input_tokens < 2000
    assert second.prompt_gap == 5000 - first.input_tokens
    assert second.input_tokens >= 5000


@pytest.mark.parametrize("native", [False, True], ids=["react", "native-tools"])
def test_a_call_that_reports_no_usage_counts_its_tool_calls_as_output(native: bool) -> None:
    llm = ScriptedLLM(native=native, report_usage=False, emit_tool_calls=True, finish_after=2)
    sink = ListSink()
    guard_crew(make_crew([llm], tools=[SearchTool()]), Warden(Policy(), sinks=[sink])).kickoff()

    events = [event for event in sink.cost_events if event.kind == "llm"]
    assert len(events) == 3 and all(event.estimated for event in events)
    if native:  # each tool call is billed output: name(arguments)
        asked = [tool_calls_text([llm._tool_call(n)]) for n in (1, 2)]
    else:  # ReAct: the tool call is in the answer's text
        asked = [f'Thought: I need more.\nAction: search\nAction Input: {{"query": "q{n}"}}'
                 for n in (1, 2)]  # fmt: skip
    assert [event.output_tokens for event in events[:2]] == [estimate_tokens(a) for a in asked]
    assert all(event.output_tokens >= 5 for event in events)
