"""The last call a cap allows answers without tools; budget hints go with one call only."""

from __future__ import annotations

import pytest
from crewai_fakes import ScriptedLLM, SearchTool, make_crew, notes_in

from budgetwarden import Limits, ModelPrice, Policy, Warden
from budgetwarden.integrations.crewai import RoutedLLM, guard_crew
from budgetwarden.steps import FINAL_ANSWER_INSTRUCTION

PRICED = "scripted-priced"
PRICES = {PRICED: ModelPrice(input_cost_per_token=0.0, output_cost_per_token=0.01)}


def warden(**policy: object) -> Warden:
    return Warden(Policy.model_validate(policy))


@pytest.mark.parametrize("native", [False, True], ids=["react", "native-tools"])
def test_last_allowed_call_has_no_tools_and_its_answer_is_the_partial_result(
    native: bool,
) -> None:
    llm, tool = ScriptedLLM(native=native), SearchTool()
    crew = make_crew([llm], tools=[tool])

    result = guard_crew(crew, warden(limits=Limits(max_iterations=3, final_answer=True))).kickoff()

    assert llm.calls == 3 and tool.runs == 2
    assert result.raw == "best answer 3 from gpt-4o-mini"
    assert result.stopped and result.cap == "max_iterations"
    assert result.report is not None and result.report.partial
    assert result.report.stop_reason == "max_iterations"
    assert FINAL_ANSWER_INSTRUCTION in notes_in(llm.seen[2])
    assert FINAL_ANSWER_INSTRUCTION not in notes_in(llm.seen[1])
    if native:
        assert llm.tools_seen[1] and llm.tools_seen[2] == []


def test_a_react_final_answer_without_crewais_format_is_still_the_answer() -> None:
    llm = ScriptedLLM(final_plain=True)
    crew = make_crew([llm], tools=[SearchTool()])

    result = guard_crew(crew, warden(limits=Limits(max_iterations=2, final_answer=True))).kickoff()

    assert llm.calls == 2
    assert result.raw == "best answer 2 from gpt-4o-mini"
    assert result.cap == "max_iterations"


def test_the_final_call_keeps_the_money_it_needs_under_a_dollar_cap() -> None:
    # Each call costs and reserves $0.20 (20 output tokens at $0.01): after two the third
    # would not fit in $0.50, so the second is the final-answer call.
    llm = ScriptedLLM(model=PRICED, completion_tokens=20, max_tokens=20)
    crew = make_crew([llm], tools=[SearchTool()])
    policy = {"limits": Limits(max_cost_usd=0.5, final_answer=True), "prices": PRICES}

    result = guard_crew(crew, warden(**policy)).kickoff()

    assert llm.calls == 2
    assert result.raw == "best answer 2 from scripted-priced"
    assert result.cap == "max_cost_usd"
    assert result.report is not None and result.report.cost_usd == pytest.approx(0.40)


def test_a_final_answer_ends_its_task_and_the_next_task_is_refused() -> None:
    first, second = ScriptedLLM(), ScriptedLLM()
    crew = make_crew([first, second], tools=[SearchTool()])

    result = guard_crew(crew, warden(limits=Limits(max_iterations=2, final_answer=True))).kickoff()

    assert (first.calls, second.calls) == (2, 0)
    assert [task.raw for task in result.tasks_output] == ["best answer 2 from gpt-4o-mini"]
    assert result.stopped and result.cap == "max_iterations"
    assert result.partial_text.startswith("best answer 2")


def test_final_answer_is_off_by_default() -> None:
    llm = ScriptedLLM()
    crew = make_crew([llm], tools=[SearchTool()])

    result = guard_crew(crew, warden(limits=Limits(max_iterations=2))).kickoff()

    assert not any(FINAL_ANSWER_INSTRUCTION in notes_in(seen) for seen in llm.seen)
    assert result.raw.startswith("[budgetwarden]")


@pytest.mark.parametrize("native", [False, True], ids=["react", "native-tools"])
def test_budget_hint_is_in_the_calls_past_the_warn_level_and_not_before(native: bool) -> None:
    llm = ScriptedLLM(native=native)
    crew = make_crew([llm], tools=[SearchTool()])
    policy = {"limits": Limits(max_iterations=5), "budget_hints": True}

    guard_crew(crew, warden(**policy)).kickoff()

    notes = [notes_in(seen) for seen in llm.seen]
    assert llm.calls == 5
    assert notes[:3] == [[], [], []]  # 3 of 5 calls is below the 80% warn level
    assert notes[3] == ["Budget note: 1 model call left for this task: finish now."]
    assert notes[4] == ["Budget note: 0 model calls left for this task: finish now."]
    executor = crew.agents[0].agent_executor
    assert executor is not None
    assert not any("Budget note" in str(m.get("content")) for m in executor.messages)


def test_budget_hints_are_off_by_default() -> None:
    llm = ScriptedLLM()
    crew = make_crew([llm], tools=[SearchTool()])

    guard_crew(crew, warden(limits=Limits(max_iterations=5))).kickoff()

    assert llm.calls == 5 and all(notes_in(seen) == [] for seen in llm.seen)


def test_a_routed_llms_final_call_reaches_its_model_without_any_tools() -> None:
    # The LiteLLM path would send an empty tools array as is: RoutedLLM sends none at all.
    model = ScriptedLLM(native=True)
    crew = make_crew([RoutedLLM("gpt-4o-mini", factory=lambda name: model)], tools=[SearchTool()])

    result = guard_crew(crew, warden(limits=Limits(max_iterations=2, final_answer=True))).kickoff()

    assert model.calls == 2
    assert model.tools_seen[0] and model.tools_seen[1] is None
    assert result.raw == "best answer 2 from gpt-4o-mini" and result.cap == "max_iterations"


# ---- providers that refuse a tool history without tools (Anthropic, Bedrock) -------------


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("claude-sonnet-4-20250514", "anthropic"),
        ("anthropic.claude-3-5-sonnet-20240620-v1:0", "bedrock"),
    ],
)
def test_anthropic_and_bedrock_final_calls_keep_their_tools(model: str, provider: str) -> None:
    llm = ScriptedLLM(model=model, provider=provider, native=True, needs_tools=True)
    tool = SearchTool()
    crew = make_crew([llm], tools=[tool])

    result = guard_crew(crew, warden(limits=Limits(max_iterations=3, final_answer=True))).kickoff()

    assert llm.calls == 3 and tool.runs == 2
    assert all(llm.tools_seen), "the history's tool calls need their tools declared"
    # The instruction goes last; as a user turn for Anthropic, whose system prompt it would
    # otherwise join (changing the start of the prompt, and losing its cache).
    role = "user" if provider == "anthropic" else "system"
    assert llm.seen[2][-1] == {"role": role, "content": FINAL_ANSWER_INSTRUCTION}
    assert result.raw == f"best answer 3 from {model}"
    assert result.cap == "max_iterations" and result.report is not None
    assert result.report.partial


def test_a_final_call_that_still_calls_a_tool_ends_with_an_honest_partial() -> None:
    llm = ScriptedLLM(
        model="claude-sonnet-4-20250514", provider="anthropic", native=True, obey=False
    )
    tool = SearchTool()
    crew = make_crew([llm], tools=[tool])

    result = guard_crew(crew, warden(limits=Limits(max_iterations=3, final_answer=True))).kickoff()

    assert (llm.calls, tool.runs) == (3, 2), "no call past the cap, and its tool call never ran"
    assert result.raw.startswith("[budgetwarden] budgetwarden stopped run")
    assert result.stopped and result.report is not None and result.report.partial
    assert result.report.iterations == 3
