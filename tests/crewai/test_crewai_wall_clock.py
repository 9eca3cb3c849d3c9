"""max_wall_seconds stops a crew whose model is slow: no call starts after the deadline."""

from __future__ import annotations

import contextlib
import time

from crewai_fakes import ScriptedLLM, SearchTool, make_crew

from budgetwarden import Limits, Policy, Warden
from budgetwarden.integrations.crewai import guard_crew

CALL_SECONDS = 0.3
DEADLINE = 1.0


def test_wall_clock_cap_stops_a_slow_crew_within_one_call_of_the_deadline() -> None:
    llm = ScriptedLLM(delay=CALL_SECONDS)
    crew = make_crew([llm], tools=[SearchTool()])
    warden = Warden(Policy(limits=Limits(max_wall_seconds=DEADLINE)))

    began = time.time()
    result = guard_crew(crew, warden).kickoff()
    elapsed = time.time() - began

    assert result.stopped and result.cap == "max_wall_seconds"
    # No call started after the deadline (give or take the few ms between the run's check
    # and the model's clock), and the crew stopped within one call of it.
    assert all(start - began < DEADLINE + 0.05 for start in llm.started)
    assert elapsed < DEADLINE + CALL_SECONDS + 0.5
    assert llm.calls == len(llm.started) >= 3


def test_crewai_max_execution_time_alone_lets_the_same_crew_run_on() -> None:
    # Why the cap is needed: CrewAI's own limit does not stop a running task in time.
    llm = ScriptedLLM(delay=CALL_SECONDS)
    crew = make_crew([llm], tools=[SearchTool()], max_iter=5)
    crew.agents[0].max_execution_time = 1

    began = time.time()
    with contextlib.suppress(Exception):
        crew.kickoff()
    assert time.time() - began > DEADLINE + CALL_SECONDS
