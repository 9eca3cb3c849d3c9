"""A crew paused by a window resumes later (another Warden on the same ledger) where it stopped."""

from __future__ import annotations

from pathlib import Path

import pytest
from crewai import Crew, Process, Task
from crewai_fakes import ScriptedLLM, SearchTool, make_crew

from budgetwarden import Budget, Policy, Warden
from budgetwarden.integrations.crewai import aresume_crewai, guard_crew, resume_crewai

EIGHT_HOURS = 8 * 3600
CAP = "budget:user=u1/8h/requests"


class FakeClock:
    """Epoch seconds that only move when the warden sleeps."""

    def __init__(self) -> None:
        self.now = 1_767_225_600.0  # 2026-01-01T00:00:00Z, the start of an 8h window

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def pausing_warden(ledger: str, clock: FakeClock, requests: int = 4) -> Warden:
    budget = Budget(scope="user", window="8h", max_requests=requests)
    policy = Policy(budgets=[budget], on_exceeded="pause")
    return Warden(policy, ledger=ledger, clock=clock, sleep=clock.advance)


def two_tasks(
    first_finish_after: int, second_finish_after: int, native: bool = False
) -> tuple[Crew, ScriptedLLM, ScriptedLLM]:
    first = ScriptedLLM(finish_after=first_finish_after, native=native)
    second = ScriptedLLM(finish_after=second_finish_after, native=native)
    return make_crew([first, second], tools=[SearchTool()]), first, second


@pytest.fixture
def ledger(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'spend.db'}"


@pytest.mark.parametrize("native", [False, True], ids=["react", "native-tools"])
def test_a_paused_crew_resumes_after_the_reset_without_redoing_any_model_call(
    ledger: str, native: bool
) -> None:
    clock = FakeClock()
    crew, first, second = two_tasks(1, 3, native)  # 2 calls, then 4 calls: 6 in all

    paused = guard_crew(crew, pausing_warden(ledger, clock), user="u1").kickoff(
        inputs={"topic": "costs"}
    )

    assert (first.calls, second.calls) == (2, 2)  # the 5th call was refused
    assert paused.stopped and paused.cap == CAP and paused.handle is not None
    handle = paused.handle
    assert handle.resets_at == clock.now + EIGHT_HOURS
    assert [task.raw for task in paused.tasks_output] == ["answer 2 from gpt-4o-mini"]

    # Later, elsewhere: a new Warden on the same ledger, the crew built again.
    later = pausing_warden(ledger, clock)
    assert [h.id for h in later.paused()] == [handle.id]
    assert not later.ready_to_resume(handle)
    again, first_again, second_again = two_tasks(1, 1, native)
    result = later.nap_and_resume(handle.id, lambda h: resume_crewai(later, h, again))

    assert clock.now >= handle.resets_at
    assert first_again.calls == 0  # the finished task is not run again
    assert second_again.calls == 2  # the refused call, then the answer: 6 calls in all
    went_on_from = second_again.seen[0]
    assert went_on_from[: len(second.seen[1])] == second.seen[1]
    assert len(went_on_from) == len(second.seen[1]) + 2  # its last action and observation
    assert not result.stopped and result.raw == "answer 2 from gpt-4o-mini"
    assert [task.raw for task in result.tasks_output] == ["answer 2 from gpt-4o-mini"] * 2
    assert result.report is not None and result.report.run_id == handle.run_id
    assert later.load_handle(handle.id) is None
    assert again.checkpoint_kickoff_event_id is None


def test_a_pause_in_the_first_task_resumes_that_task_from_its_transcript(ledger: str) -> None:
    clock = FakeClock()
    crew, first, second = two_tasks(3, 0)

    paused = guard_crew(crew, pausing_warden(ledger, clock, requests=2), user="u1").kickoff()

    assert (first.calls, second.calls) == (2, 0) and paused.handle is not None
    again, first_again, second_again = two_tasks(1, 0)
    clock.advance(EIGHT_HOURS)
    result = resume_crewai(pausing_warden(ledger, clock), paused.handle, again)

    assert (first_again.calls, second_again.calls) == (2, 1)
    assert first_again.seen[0][: len(first.seen[1])] == first.seen[1]
    assert not result.stopped and len(result.tasks_output) == 2


async def test_async_resume_works_with_anap_and_resume(ledger: str) -> None:
    clock = FakeClock()
    crew, _, _ = two_tasks(1, 3)
    warden = pausing_warden(ledger, clock)
    paused = await guard_crew(crew, warden, user="u1").akickoff()
    assert paused.handle is not None and paused.cap == CAP

    async def nap(seconds: float) -> None:
        clock.advance(seconds)

    later = Warden(warden.policy, ledger=ledger, clock=clock, asleep=nap)
    again, first_again, second_again = two_tasks(1, 1)
    result = await later.anap_and_resume(
        paused.handle.id, lambda h: aresume_crewai(later, h, again)
    )

    assert (first_again.calls, second_again.calls) == (0, 2)
    assert not result.stopped


def test_resuming_with_a_different_crew_is_refused_before_any_call(ledger: str) -> None:
    clock = FakeClock()
    crew, _, _ = two_tasks(1, 3)
    warden = pausing_warden(ledger, clock)
    paused = guard_crew(crew, warden, user="u1").kickoff()
    assert paused.handle is not None
    other = make_crew([ScriptedLLM()], tools=[SearchTool()])

    with pytest.raises(ValueError, match="built the same way"):
        resume_crewai(warden, paused.handle, other)

    assert other.agents[0].llm.calls == 0  # type: ignore[union-attr]


def hierarchical(
    manager_finish_after: int, worker_finish_after: int
) -> tuple[Crew, ScriptedLLM, ScriptedLLM]:
    manager = ScriptedLLM(
        tool_names=["Delegate work to coworker"],
        tool_args={"task": "find facts", "context": "none", "coworker": "researcher 0"},
        finish_after=manager_finish_after,
    )
    worker = ScriptedLLM(finish_after=worker_finish_after)
    agents = make_crew([worker], tools=[SearchTool()]).agents
    task = Task(description="research the topic", expected_output="facts")
    crew = Crew(agents=agents, tasks=[task], process=Process.hierarchical, manager_llm=manager)
    return crew, manager, worker


def test_a_hierarchical_crew_resumes_its_manager_and_redoes_the_unfinished_delegation(
    ledger: str,
) -> None:
    clock = FakeClock()
    crew, manager, worker = hierarchical(1, 5)

    paused = guard_crew(crew, pausing_warden(ledger, clock), user="u1").kickoff()

    assert (manager.calls, worker.calls) == (1, 3) and paused.handle is not None
    again, manager_again, worker_again = hierarchical(1, 1)
    clock.advance(EIGHT_HOURS)
    result = resume_crewai(pausing_warden(ledger, clock), paused.handle, again)

    went_on_from = manager_again.seen[0]
    assert went_on_from[: len(manager.seen[0])] == manager.seen[0]
    assert "budgetwarden stopped run" in str(went_on_from[-2]["content"])  # the failed delegation
    assert (manager_again.calls, worker_again.calls) == (2, 2)
    assert len(worker_again.seen[0]) == 2  # the coworker starts its delegated task again
    assert not result.stopped and result.raw == "answer 2 from gpt-4o-mini"


def test_a_handle_resumed_directly_is_resumed_once(ledger: str) -> None:
    """``resume_crewai`` claims and forgets the handle as ``nap_and_resume`` does: called
    twice, it ran the crew twice; a resume that raises gives the handle back."""
    clock = FakeClock()
    crew, _, _ = two_tasks(3, 0)
    warden = pausing_warden(ledger, clock, requests=2)
    paused = guard_crew(crew, warden, user="u1").kickoff()
    assert paused.handle is not None
    other = make_crew([ScriptedLLM()], tools=[SearchTool()])
    with pytest.raises(ValueError, match="built the same way"):
        resume_crewai(warden, paused.handle, other)
    assert [h.id for h in warden.paused()] == [paused.handle.id]  # given back
    clock.advance(EIGHT_HOURS)
    again, first_again, second_again = two_tasks(1, 0)
    resume_crewai(warden, paused.handle.id, again)
    calls = (first_again.calls, second_again.calls)
    assert paused.handle.id not in [h.id for h in warden.paused()]
    with pytest.raises(KeyError):
        resume_crewai(warden, paused.handle.id, again)
    assert (first_again.calls, second_again.calls) == calls
