"""Guarded kickoffs keep their own counters; crews nobody guarded are untouched."""

from __future__ import annotations

import asyncio

from crewai import Crew
from crewai.hooks.dispatch import InterceptionPoint, get_scoped_hooks, register_scoped, scoped_hooks
from crewai_fakes import ScriptedLLM, SearchTool, make_crew

from budgetwarden import Budget, Limits, ModelPrice, Policy, Warden
from budgetwarden.integrations.crewai import guard_crew


def capped(max_iterations: int) -> Warden:
    return Warden(Policy(limits=Limits(max_iterations=max_iterations)))


def test_two_guarded_crews_in_sequence_do_not_share_counters() -> None:
    shared = capped(3)
    first, second = ScriptedLLM(), ScriptedLLM()

    one = guard_crew(make_crew([first], tools=[SearchTool()]), shared).kickoff()
    two = guard_crew(make_crew([second], tools=[SearchTool()]), shared).kickoff()

    assert (first.calls, second.calls) == (3, 3)
    assert one.report is not None and two.report is not None
    assert (one.report.iterations, two.report.iterations) == (3, 3)
    assert one.report.run_id != two.report.run_id


async def test_two_guarded_crews_kicked_off_concurrently_do_not_share_counters() -> None:
    shared = capped(4)
    slow = [ScriptedLLM(delay=0.02), ScriptedLLM(delay=0.02)]
    crews = [guard_crew(make_crew([llm], tools=[SearchTool()]), shared) for llm in slow]

    results = await asyncio.gather(*(crew.kickoff_async() for crew in crews))

    assert [llm.calls for llm in slow] == [4, 4]
    assert [r.report.iterations for r in results if r.report] == [4, 4]
    assert all(r.cap == "max_iterations" for r in results)


async def test_an_unguarded_crew_runs_normally_next_to_a_guarded_one() -> None:
    guarded_llm, free_llm = ScriptedLLM(delay=0.02), ScriptedLLM(delay=0.02)
    guarded = guard_crew(make_crew([guarded_llm], tools=[SearchTool()]), capped(2))
    free = make_crew([free_llm], tools=[SearchTool()], max_iter=4)

    stopped, finished = await asyncio.gather(guarded.kickoff_async(), free.kickoff_async())

    assert guarded_llm.calls == 2 and stopped.stopped
    assert free_llm.calls == 5  # max_iter=4, then CrewAI's forced final answer
    assert "budgetwarden" not in finished.raw


def test_same_crew_object_kicked_off_twice_gets_a_fresh_run_each_time() -> None:
    llm = ScriptedLLM()
    guarded = guard_crew(make_crew([llm], tools=[SearchTool()]), capped(2))

    first = guarded.kickoff()
    second = guarded.kickoff()

    assert llm.calls == 4
    assert first.report is not None and second.report is not None
    assert (first.report.iterations, second.report.iterations) == (2, 2)


def test_kickoff_for_each_makes_one_run_per_input() -> None:
    guarded = guard_crew(make_crew([ScriptedLLM()], tools=[SearchTool()]), capped(2))

    results = guarded.kickoff_for_each([{"topic": "a"}, {"topic": "b"}])

    assert len(results) == 2
    assert [r.report.iterations for r in results if r.report] == [2, 2]
    assert len({r.report.run_id for r in results if r.report}) == 2


async def test_kickoff_for_each_async_runs_side_by_side_with_their_own_runs() -> None:
    guarded = guard_crew(make_crew([ScriptedLLM()], tools=[SearchTool()]), capped(3))

    results = await guarded.kickoff_for_each_async([{"topic": "a"}, {"topic": "b"}])

    assert [r.report.iterations for r in results if r.report] == [3, 3]
    assert all(r.cap == "max_iterations" for r in results)


def test_scoped_hooks_of_the_caller_still_run_and_are_restored() -> None:
    seen: list[int] = []

    def caller_hook(ctx: object) -> None:
        seen.append(1)

    llm = ScriptedLLM()
    with scoped_hooks():
        register_scoped(InterceptionPoint.PRE_MODEL_CALL, caller_hook)
        guard_crew(make_crew([llm], tools=[SearchTool()]), capped(2)).kickoff()
        assert get_scoped_hooks(InterceptionPoint.PRE_MODEL_CALL) == [caller_hook]

    assert len(seen) == 3  # two allowed calls, and the refused third one


def test_guarded_crew_exposes_the_crew_it_wraps() -> None:
    crew = make_crew([ScriptedLLM()], tools=[SearchTool()])
    guarded = guard_crew(crew, capped(1), user="u1")

    assert guarded.crew is crew
    assert guarded.tasks is crew.tasks
    assert guarded.attribution["user"] == "u1"
    assert guarded.attribution["agent"] == crew.name


async def test_crews_sharing_one_llm_side_by_side_each_commit_only_their_own_usage() -> None:
    # Overlapping calls on one LLM make its token-tracker delta ambiguous: each call then
    # takes the usage of its own LLMCallCompletedEvent.
    llm = ScriptedLLM(delay=0.05, prompt_tokens=100, completion_tokens=20)
    crews = [guard_crew(make_crew([llm], tools=[SearchTool()]), capped(3)) for _ in range(2)]

    results = await asyncio.gather(*(crew.kickoff_async() for crew in crews))

    assert llm.calls == 6
    for result in results:
        assert result.report is not None
        assert result.report.iterations == 3
        assert (result.report.input_tokens, result.report.output_tokens) == (300, 60)


def test_a_user_budget_spans_kickoffs_of_different_crews() -> None:
    # Each call costs $0.25 (8 output tokens at $1/32); the user may spend $1 per 8 hours.
    prices = {"scripted-priced": ModelPrice(input_cost_per_token=0.0, output_cost_per_token=1 / 32)}
    policy = Policy(
        budgets=[Budget(scope="user", window="8h", max_cost_usd=1.0)],
        limits=Limits(max_iterations=3),
        prices=prices,
    )
    warden = Warden(policy)

    def crew() -> Crew:
        llm = ScriptedLLM(model="scripted-priced", completion_tokens=8, max_tokens=8)
        return make_crew([llm], tools=[SearchTool()])

    first = guard_crew(crew(), warden, user="u1").kickoff()
    second = guard_crew(crew(), warden, user="u1").kickoff()
    other = guard_crew(crew(), warden, user="u2").kickoff()

    assert first.cap == "max_iterations"
    assert second.cap == "budget:user=u1/8h"
    assert second.report is not None and second.report.iterations == 1
    assert other.cap == "max_iterations"
