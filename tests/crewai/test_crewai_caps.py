"""Each cap of a guarded crew allows exactly its calls; the kickoff ends with a partial output."""

from __future__ import annotations

import pytest
from crewai import Crew, Process, Task
from crewai_fakes import ScriptedLLM, SearchTool, lookup_tool, make_crew

from budgetwarden import BudgetExceeded, Limits, ModelPrice, Policy, ToolRules, Warden
from budgetwarden.integrations.crewai import GuardedCrewOutput, guard_crew

#: A model with a made-up price: output tokens only, 1 cent each (input is free).
PRICED = "scripted-priced"
PRICES = {PRICED: ModelPrice(input_cost_per_token=0.0, output_cost_per_token=0.01)}


def warden(**policy: object) -> Warden:
    return Warden(Policy.model_validate(policy))


@pytest.mark.parametrize("native", [False, True], ids=["react", "native-tools"])
def test_max_iterations_allows_exactly_that_many_model_calls(native: bool) -> None:
    llm, tool = ScriptedLLM(native=native), SearchTool()
    crew = make_crew([llm], tools=[tool])

    result = guard_crew(crew, warden(limits=Limits(max_iterations=3))).kickoff()

    assert isinstance(result, GuardedCrewOutput)
    assert llm.calls == 3
    assert tool.runs == 3
    assert result.stopped and result.cap == "max_iterations"
    assert result.report is not None
    assert result.report.iterations == 3
    assert result.report.stop_reason == "max_iterations"
    assert result.raw.startswith("[budgetwarden]") and "max_iterations" in result.raw


@pytest.mark.parametrize("native", [False, True], ids=["react", "native-tools"])
def test_usage_of_every_call_is_committed_from_crewai(native: bool) -> None:
    llm = ScriptedLLM(native=native, prompt_tokens=120, completion_tokens=30)
    crew = make_crew([llm], tools=[SearchTool()])

    result = guard_crew(crew, warden(limits=Limits(max_iterations=4))).kickoff()

    assert result.report is not None
    assert result.report.input_tokens == 4 * 120
    assert result.report.output_tokens == 4 * 30
    assert result.report.cost_usd > 0
    assert result.token_usage.prompt_tokens == 4 * 120


def test_max_tool_calls_allows_exactly_that_many_tool_runs() -> None:
    llm, tool = ScriptedLLM(), SearchTool()
    crew = make_crew([llm], tools=[tool])

    result = guard_crew(crew, warden(limits=Limits(max_tool_calls=2))).kickoff()

    assert tool.runs == 2
    assert llm.calls == 3  # the third answer asked for the refused tool; no call after it
    assert result.stopped and result.cap == "max_tool_calls"
    assert result.report is not None and result.report.tool_calls == 2


def test_per_tool_cap_refuses_only_past_that_tools_allowance() -> None:
    llm = ScriptedLLM(tool_names=["search", "lookup"])
    search, lookup = SearchTool(), lookup_tool()
    crew = make_crew([llm], tools=[search, lookup])

    result = guard_crew(crew, warden(tools=ToolRules(max_calls={"search": 1}))).kickoff()

    assert search.runs == 1
    assert lookup.runs == 1
    assert llm.calls == 3
    assert result.cap == "max_tool_calls[search]"
    assert result.report is not None and result.report.tool_calls_by_name == {
        "search": 1,
        "lookup": 1,
    }


def test_denied_tool_is_skipped_and_the_run_goes_on() -> None:
    llm, tool = ScriptedLLM(), SearchTool()
    crew = make_crew([llm], tools=[tool])
    policy = {"limits": Limits(max_iterations=3), "tools": ToolRules(deny=["search"])}

    result = guard_crew(crew, warden(**policy)).kickoff()

    assert tool.runs == 0
    assert llm.calls == 3
    assert result.cap == "max_iterations"
    executor = crew.agents[0].agent_executor
    assert executor is not None
    observations = " ".join(str(m.get("content")) for m in executor.messages)
    assert "Tool call refused" in observations


def test_max_cost_usd_stops_before_the_call_that_would_overspend() -> None:
    # Each call costs 20 output tokens x $0.01 = $0.20, and reserves exactly that (max_tokens=20).
    llm = ScriptedLLM(model=PRICED, completion_tokens=20, max_tokens=20)
    crew = make_crew([llm], tools=[SearchTool()])
    policy = {"limits": Limits(max_cost_usd=0.5), "prices": PRICES}

    result = guard_crew(crew, warden(**policy)).kickoff()

    assert llm.calls == 2
    assert result.cap == "max_cost_usd"
    assert result.report is not None
    assert result.report.cost_usd == pytest.approx(0.40)
    assert result.report.cost_usd <= 0.5


def test_two_agents_in_sequence_share_one_run_and_keep_the_finished_task() -> None:
    first = ScriptedLLM(finish_after=1)  # one tool call, then a final answer
    second = ScriptedLLM()
    crew = make_crew([first, second], tools=[SearchTool()])

    result = guard_crew(crew, warden(limits=Limits(max_iterations=4))).kickoff()

    assert (first.calls, second.calls) == (2, 2)
    assert result.stopped and result.cap == "max_iterations"
    assert [task.raw for task in result.tasks_output] == ["answer 2 from gpt-4o-mini"]
    assert "answer 2 from gpt-4o-mini" in result.raw
    assert "answer 2 from gpt-4o-mini" in result.partial_text


def test_a_crew_that_finishes_returns_its_output_with_the_report() -> None:
    llm = ScriptedLLM(finish_after=1)
    crew = make_crew([llm], tools=[SearchTool()])

    result = guard_crew(crew, warden(limits=Limits(max_iterations=5))).kickoff()

    assert not result.stopped and result.cap is None
    assert result.raw == "answer 2 from gpt-4o-mini"
    assert result.report is not None
    assert result.report.stop_reason == "completed"
    assert result.report.iterations == 2


def test_on_exceeded_raise_raises_with_the_partial_output_and_report() -> None:
    llm = ScriptedLLM()
    crew = make_crew([llm], tools=[SearchTool()])
    policy = {"limits": Limits(max_iterations=2), "on_exceeded": "raise"}

    with pytest.raises(BudgetExceeded) as caught:
        guard_crew(crew, warden(**policy)).kickoff()

    assert llm.calls == 2
    assert caught.value.cap == "max_iterations"
    assert caught.value.report is not None and caught.value.report.iterations == 2
    assert isinstance(caught.value.partial, GuardedCrewOutput)
    assert caught.value.partial.stopped


def test_crewai_forced_final_answer_is_a_model_call_like_any_other() -> None:
    # An agent at max_iter=2 makes a third, forced final-answer call outside the executor.
    llm = ScriptedLLM()
    crew = make_crew([llm], tools=[SearchTool()], max_iter=2)

    capped = guard_crew(crew, warden(limits=Limits(max_iterations=2))).kickoff()
    assert llm.calls == 2 and capped.stopped

    free = ScriptedLLM()
    result = guard_crew(make_crew([free], tools=[SearchTool()], max_iter=2), warden()).kickoff()
    assert free.calls == 3
    assert result.report is not None and result.report.iterations == 3
    assert not result.stopped


async def test_native_async_kickoff_is_governed_too() -> None:
    llm = ScriptedLLM()
    crew = make_crew([llm], tools=[SearchTool()])

    result = await guard_crew(crew, warden(limits=Limits(max_iterations=3))).akickoff()

    assert llm.calls == 3
    assert result.cap == "max_iterations"


def test_a_hierarchical_crews_manager_and_workers_spend_from_one_run() -> None:
    manager = ScriptedLLM(
        tool_names=["Delegate work to coworker"],
        tool_args={"task": "find facts", "context": "none", "coworker": "researcher 0"},
    )
    worker = ScriptedLLM(finish_after=1)  # one search, then its answer to the manager
    agents = make_crew([worker], tools=[SearchTool()]).agents
    task = Task(description="research the topic", expected_output="facts")
    crew = Crew(agents=agents, tasks=[task], process=Process.hierarchical, manager_llm=manager)

    result = guard_crew(crew, warden(limits=Limits(max_iterations=6))).kickoff()

    assert worker.calls == 2
    assert manager.calls + worker.calls == 6
    assert result.cap == "max_iterations"
    assert result.report is not None
    assert result.report.tool_calls_by_name["search"] == 1
    assert result.report.tool_calls_by_name["delegate_work_to_coworker"] >= 1


def test_a_token_tracker_counting_cache_apart_from_the_prompt_is_read_without_failing() -> None:
    # CrewAI's native Bedrock LLM adds Bedrock's inputTokens (the uncached part) to
    # prompt_tokens and its cache reads to cached_prompt_tokens: more cached than prompt
    from crewai.types.usage_metrics import UsageMetrics

    from budgetwarden.integrations.crewai._calls import usage_from_metrics

    delta = UsageMetrics(prompt_tokens=20, completion_tokens=5, cached_prompt_tokens=5000)
    usage = usage_from_metrics(delta)
    assert (usage.input_tokens, usage.cache_read_tokens, usage.output_tokens) == (5020, 5000, 5)


@pytest.mark.parametrize(("native", "runs"), [(False, 1), (True, 3)], ids=["react", "native-tools"])
def test_a_repeat_crewai_answers_itself_is_neither_counted_nor_priced(
    native: bool, runs: int
) -> None:
    """In ReAct mode CrewAI answers the same tool call made twice in a row below the hooks,
    without running the tool: nothing ran, so nothing is counted or charged. (Native tool
    calls have no such check: every one runs, and counts.)"""
    llm = ScriptedLLM(native=native, tool_args={"query": "same"}, finish_after=3)
    tool = SearchTool()
    rules = ToolRules(price_usd={"search": 0.01})
    result = guard_crew(make_crew([llm], tools=[tool]), warden(tools=rules)).kickoff()
    assert (llm.calls, tool.runs) == (4, runs)
    assert result.report is not None and result.report.tool_calls == runs
    assert result.report.cost_usd == pytest.approx(0.01 * runs, abs=0.0005)
