"""Thread budgets across kickoffs; a hierarchical crew's workers and nested crews as child runs."""

from __future__ import annotations

from crewai import Crew, Process, Task
from crewai.flow.flow import Flow, start
from crewai.tools import BaseTool
from crewai_fakes import ScriptedLLM, SearchTool, make_crew
from pydantic import ConfigDict

from budgetwarden import Budget, Limits, Policy, Warden
from budgetwarden.integrations.crewai import GuardedCrew, GuardedCrewOutput, guard_crew

THREAD_CAP = "budget:thread={}/total/requests"


def thread_warden(calls_per_thread: int, max_iterations: int) -> Warden:
    budget = Budget(scope="thread", window="total", max_requests=calls_per_thread)
    return Warden(Policy(budgets=[budget], limits=Limits(max_iterations=max_iterations)))


def test_a_thread_budget_holds_across_kickoffs_while_run_caps_reset_each_kickoff() -> None:
    warden = thread_warden(calls_per_thread=5, max_iterations=3)
    llm = ScriptedLLM()
    guarded = guard_crew(make_crew([llm], tools=[SearchTool()]), warden, thread="t1")

    first, second, third = guarded.kickoff(), guarded.kickoff(), guarded.kickoff()
    other = guard_crew(make_crew([ScriptedLLM()], tools=[SearchTool()]), warden, thread="t2")

    assert first.cap == "max_iterations"  # 3 calls: the run cap, not the thread's
    assert second.cap == THREAD_CAP.format("t1")
    assert second.report is not None and second.report.iterations == 2
    assert third.report is not None and third.report.iterations == 0
    assert llm.calls == 5
    assert other.kickoff().cap == "max_iterations"


class _ResearchFlow(Flow):  # type: ignore[type-arg]
    warden: Warden | None = None
    llm: ScriptedLLM | None = None

    @start()
    def research(self) -> str | None:
        assert self.warden is not None and self.llm is not None
        crew = make_crew([self.llm], tools=[SearchTool()])
        return guard_crew(crew, self.warden).kickoff().cap


def test_inside_a_flow_the_flows_state_id_is_the_thread() -> None:
    warden = thread_warden(calls_per_thread=3, max_iterations=2)
    llm = ScriptedLLM()
    flow, other = _ResearchFlow(), _ResearchFlow()
    for item in (flow, other):
        item.warden, item.llm = warden, llm

    caps = [flow.kickoff(), flow.kickoff(), other.kickoff()]

    assert caps == ["max_iterations", THREAD_CAP.format(flow.flow_id), "max_iterations"]
    assert llm.calls == 5


def hierarchical_crew(manager: ScriptedLLM, worker: ScriptedLLM) -> Crew:
    agents = make_crew([worker], tools=[SearchTool()]).agents
    task = Task(description="research the topic", expected_output="facts")
    return Crew(agents=agents, tasks=[task], process=Process.hierarchical, manager_llm=manager)


def delegating_manager() -> ScriptedLLM:
    return ScriptedLLM(
        tool_names=["Delegate work to coworker"],
        tool_args={"task": "find facts", "context": "none", "coworker": "researcher 0"},
    )


def test_a_hierarchical_crews_worker_spends_from_a_child_run_of_the_kickoff() -> None:
    manager, worker = delegating_manager(), ScriptedLLM(finish_after=1)
    crew = hierarchical_crew(manager, worker)

    result = guard_crew(crew, Warden(Policy(limits=Limits(max_iterations=6)))).kickoff()

    report = result.report
    assert report is not None and report.iterations == 6 == manager.calls + worker.calls
    [child] = report.children
    assert child.agent == "researcher 0" and child.parent_run_id == report.run_id
    assert child.iterations == worker.calls == 2
    assert child.tool_calls_by_name == {"search": 1}


def test_a_worker_cannot_spend_past_what_the_kickoffs_run_has_left() -> None:
    manager, worker = delegating_manager(), ScriptedLLM()  # the worker never finishes
    crew = hierarchical_crew(manager, worker)
    warden = Warden(Policy(limits=Limits(max_iterations=4)))  # each run may make 4 calls

    result = guard_crew(crew, warden).kickoff()

    assert (manager.calls, worker.calls) == (1, 3)
    assert result.cap == "max_iterations"
    assert result.report is not None and result.report.iterations == 4
    assert [child.iterations for child in result.report.children] == [3]


class _TeamTool(BaseTool):
    """A tool whose work is another guarded crew's kickoff."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    name: str = "ask_team"
    description: str = "Ask the research team."
    team: GuardedCrew
    answers: list[GuardedCrewOutput] = []

    def _run(self, query: str = "") -> str:
        result = self.team.kickoff()
        self.answers.append(result)
        return result.raw


def test_a_guarded_crew_kicked_off_in_a_tool_is_a_child_run_of_the_outer_kickoff() -> None:
    warden = Warden(Policy(limits=Limits(max_iterations=4)))
    inner_llm = ScriptedLLM()
    team = guard_crew(make_crew([inner_llm], tools=[SearchTool()]), warden, agent="team")
    tool = _TeamTool(team=team)
    outer_llm = ScriptedLLM(tool_names=["ask_team"])

    result = guard_crew(make_crew([outer_llm], tools=[tool]), warden, user="u1").kickoff()

    assert (outer_llm.calls, inner_llm.calls) == (1, 3)  # the inner crew had 3 of the 4 left
    report = result.report
    assert report is not None and report.iterations == 4 and result.cap == "max_iterations"
    [child] = report.children
    assert child.agent == "team" and child.iterations == 3
    [inner] = tool.answers
    assert inner.cap == "max_iterations"
    assert inner.report is not None and inner.report.run_id == child.run_id
