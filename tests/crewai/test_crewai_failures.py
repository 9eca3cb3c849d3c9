"""Failures that are not caps: the kickoff raises them, and no call runs unmetered."""

from __future__ import annotations

from typing import Any

import pytest
from crewai_fakes import ScriptedLLM, SearchTool, make_crew

from budgetwarden import Budget, CostEvent, Limits, ListSink, ModelDenied, Policy, Run, Warden
from budgetwarden.integrations.crewai import guard_crew


def test_an_unpriced_model_under_a_deny_policy_is_never_called() -> None:
    llm = ScriptedLLM(model="nobody-prices-this-model")
    crew = make_crew([llm], tools=[SearchTool()])
    warden = Warden(Policy(unknown_model="deny"))

    with pytest.raises(ModelDenied, match="add a price"):
        guard_crew(crew, warden).kickoff()

    assert llm.calls == 0


def test_an_error_inside_budgetwarden_stops_the_crew_instead_of_running_unmetered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken_commit(self: Run, *args: object, **kwargs: object) -> None:
        raise RuntimeError("ledger went away")

    monkeypatch.setattr(Run, "record_llm_call", broken_commit)
    llm = ScriptedLLM()
    crew = make_crew([llm], tools=[SearchTool()])

    with pytest.raises(RuntimeError, match="ledger went away"):
        guard_crew(crew, Warden(Policy(limits=Limits(max_iterations=5)))).kickoff()

    assert llm.calls == 1  # the first call could not be committed: nothing after it ran


def test_an_error_of_the_crew_itself_propagates_unchanged() -> None:
    class Broken(ScriptedLLM):
        def call(self, *args: object, **kwargs: object) -> str:
            raise ConnectionError("provider is down")

    crew = make_crew([Broken()], tools=[SearchTool()])
    crew.agents[0].max_retry_limit = 0

    with pytest.raises(ConnectionError, match="provider is down"):
        guard_crew(crew, Warden(Policy())).kickoff()


def test_a_model_call_that_raised_is_recorded_as_failed_and_not_charged() -> None:
    """An LLM that raises without emitting CrewAI's failed event: the kickoff's own error
    says the pending call failed; it is recorded as such, and costs nothing."""

    class FailsSecond(ScriptedLLM):
        def call(self, *args: Any, **kwargs: Any) -> Any:
            if self.calls == 1:
                self._calls += 1
                raise ConnectionError("provider is down")
            return super().call(*args, **kwargs)

    sink = ListSink()
    per_user = Policy(budgets=[Budget(scope="user", window="day", max_cost_usd=10.0)])
    warden = Warden(per_user, sinks=[sink], log_events=False)
    crew = make_crew([FailsSecond()], tools=[SearchTool()])
    crew.agents[0].max_retry_limit = 0

    with pytest.raises(ConnectionError, match="provider is down"):
        guard_crew(crew, warden, user="u1").kickoff()

    calls = [e for e in sink.events if isinstance(e, CostEvent) and e.kind == "llm"]
    assert [(e.status, e.outcome) for e in calls] == [("ok", "ok"), ("error", "provider_error")]
    assert calls[1].cost_usd == 0
    assert warden.spent("user", "u1") == pytest.approx(calls[0].cost_usd)


class FailingTool(SearchTool):
    """A tool whose every run raises."""

    def _run(self, query: str = "") -> str:
        self.runs += 1
        raise ValueError("search backend down")


@pytest.mark.parametrize("native", [False, True], ids=["react", "native-tools"])
def test_a_failing_tool_is_recorded_as_an_error_and_ends_the_row_at_the_cap(native: bool) -> None:
    """CrewAI words a failed tool differently in ReAct and native mode; both count as errors,
    and a model that keeps asking for the failing tool meets max_consecutive_errors."""
    sink = ListSink()
    limits = Limits(max_iterations=8, max_consecutive_errors=2)
    warden = Warden(Policy(limits=limits), sinks=[sink], log_events=False)
    llm, tool = ScriptedLLM(native=native), FailingTool()

    result = guard_crew(make_crew([llm], tools=[tool]), warden, user="u1").kickoff()

    statuses = [e.status for e in sink.events if isinstance(e, CostEvent) and e.kind == "tool"]
    assert statuses == ["error", "error"]
    assert tool.runs >= 2
    assert result.cap == "max_consecutive_errors"
    assert llm.calls == 2  # the third model call would follow a second failed tool call
