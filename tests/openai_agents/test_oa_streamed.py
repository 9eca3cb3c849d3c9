"""run_guarded_streamed: a streamed run's events, then its GuardedResult; a reader that leaves
or cancels stops the SDK's run, and the run is finished with nothing left held."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from agents import Agent
from oa_scripted import ScriptedModel, message, tool_call

from budgetwarden import Budget, BudgetExceeded, ListSink, Policy, RunFinished, Warden
from budgetwarden.integrations.openai_agents import run_guarded_streamed

#: The daily budget each test's user spends from (dollars).
BUDGET = 1.0


class HeldModel(ScriptedModel):
    """A looping ScriptedModel whose second call waits (in flight) until the test lets it go."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.holding = asyncio.Event()
        self.go = asyncio.Event()

    async def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        if self.calls >= 1:
            self.holding.set()
            await self.go.wait()
        async for event in super().stream_response(*args, **kwargs):
            yield event


def budget_warden(sink: ListSink, **limits: Any) -> Warden:
    budget = Budget(scope="user", window="day", max_cost_usd=BUDGET)
    policy = Policy.model_validate({"limits": limits, "budgets": [budget]})
    return Warden(policy, sinks=[sink], log_events=False)


def agent_with(tools: Any, model: ScriptedModel) -> Agent[Any]:
    return Agent(name="researcher", instructions="Research.", model=model, tools=[tools.search])


def finished(sink: ListSink) -> list[RunFinished]:
    return [event for event in sink.events if isinstance(event, RunFinished)]


def nothing_held(warden: Warden) -> bool:
    """Whether the user's budget holds nothing beyond what was committed."""
    left = warden.remaining("user", "u1")
    return left == pytest.approx(BUDGET - warden.spent("user", "u1"))


async def test_a_completed_stream_ends_with_the_final_output(tools, sink: ListSink) -> None:
    model = ScriptedModel([[tool_call("search", {"q": "a"})]], loop_tool=None, final_text="42")
    stream = run_guarded_streamed(agent_with(tools, model), "find", budget_warden(sink), user="u1")

    events = [event async for event in stream.stream_events()]

    assert events and stream.is_complete
    result = stream.result
    assert not result.partial and result.cap is None and result.output == "42"
    assert result.result is stream.streaming
    assert result.report is not None and result.report.stop_reason == "completed"
    assert result.report.iterations == 2 and tools.ran == ["a"]
    assert len(finished(sink)) == 1


async def test_a_cap_ends_the_stream_with_the_partial_result(tools, sink: ListSink) -> None:
    turns: list[Any] = [[message("Two leads so far."), tool_call("search", {"q": "a"})]]
    model = ScriptedModel(turns)
    warden = budget_warden(sink, max_iterations=2)
    stream = run_guarded_streamed(agent_with(tools, model), "find", warden, user="u1")

    async for _ in stream.stream_events():  # no exception: the cap is in the result
        pass

    result = stream.result
    assert result.partial and result.cap == "max_iterations" and model.calls == 2
    assert isinstance(result.stopped, BudgetExceeded)
    assert result.output == "Two leads so far."
    assert result.report is not None and result.report.stop_reason == "max_iterations"
    assert len(finished(sink)) == 1 and nothing_held(warden)


async def test_under_on_exceeded_raise_the_refusal_is_raised(make_warden, tools) -> None:
    warden = make_warden(limits={"max_iterations": 1}, on_exceeded="raise")
    stream = run_guarded_streamed(agent_with(tools, ScriptedModel()), "find", warden)

    with pytest.raises(BudgetExceeded) as raised:
        async for _ in stream.stream_events():
            pass

    assert raised.value.cap == "max_iterations"
    with pytest.raises(RuntimeError, match="has not ended"):
        stream.result  # noqa: B018 - no result: the refusal was raised instead


@pytest.mark.parametrize("mode", ["immediate", "after_turn"])
async def test_cancel_stops_the_run_and_says_so(tools, sink: ListSink, mode: Any) -> None:
    model = ScriptedModel()
    warden = budget_warden(sink, max_iterations=50)
    stream = run_guarded_streamed(agent_with(tools, model), "find", warden, user="u1")

    async for event in stream.stream_events():
        if event.type == "run_item_stream_event" and event.name == "tool_output":
            stream.cancel(mode)  # after the first tool ran

    result = stream.result
    assert result.cancelled and result.partial and result.cap == "cancelled"
    assert model.calls <= 2 and tools.ran == ["query 0"]
    assert result.report is not None and result.report.stop_reason == "cancelled"
    [end] = finished(sink)
    assert end.stop_reason == "cancelled"
    assert nothing_held(warden)


async def test_a_cancel_during_a_call_frees_its_reservation(tools, sink: ListSink) -> None:
    model = HeldModel()
    warden = budget_warden(sink, max_iterations=50)
    stream = run_guarded_streamed(agent_with(tools, model), "find", warden, user="u1")

    async def read() -> None:
        async for _ in stream.stream_events():
            pass

    reader = asyncio.create_task(read())
    await asyncio.wait_for(model.holding.wait(), 5)
    assert not nothing_held(warden)  # the second call's worst case is reserved
    stream.cancel()
    await asyncio.wait_for(reader, 5)

    assert stream.result.cancelled and model.calls == 1
    assert nothing_held(warden)
    calls = [(event.status, event.cost_usd) for event in sink.cost_events if event.kind == "llm"]
    assert calls[0][0] == "ok" and calls[1:] == [("error", 0.0)]  # unanswered, unbilled


async def test_leaving_the_stream_early_stops_the_sdks_run(tools, sink: ListSink) -> None:
    model = ScriptedModel()
    warden = budget_warden(sink, max_iterations=50)
    stream = run_guarded_streamed(agent_with(tools, model), "find", warden, user="u1")

    async for event in stream.stream_events():
        if event.type == "run_item_stream_event" and event.name == "tool_output":
            break
    await asyncio.sleep(0.2)  # time enough for the SDK's run, if it went on, to loop on

    assert model.calls == 1 and tools.ran == ["query 0"]
    assert stream.is_complete and stream.result.cap == "cancelled"
    assert len(finished(sink)) == 1 and nothing_held(warden)


async def test_the_last_allowed_call_streams_the_models_own_answer(tools, sink: ListSink) -> None:
    model = ScriptedModel(final_text="my best answer")
    warden = budget_warden(sink, max_iterations=3, final_answer=True)
    stream = run_guarded_streamed(agent_with(tools, model), "find", warden, user="u1")

    async for _ in stream.stream_events():
        pass

    result = stream.result
    assert result.output == "my best answer" and result.final_cap == "max_iterations"
    assert result.partial and not result.cancelled and model.calls == 3
    assert len(finished(sink)) == 1 and nothing_held(warden)


async def test_a_cancel_during_the_last_turn_keeps_the_final_output(tools, sink: ListSink) -> None:
    model = ScriptedModel([[tool_call("search", {"q": "a"})]], loop_tool=None, final_text="42")
    stream = run_guarded_streamed(agent_with(tools, model), "find", budget_warden(sink), user="u1")

    tool_ran = asked = False
    async for event in stream.stream_events():
        if event.type == "run_item_stream_event" and event.name == "tool_output":
            tool_ran = True
        elif tool_ran and event.type == "raw_response_event" and not asked:
            stream.cancel("after_turn")  # during the last turn, which answers
            asked = True

    assert asked
    result = stream.result
    assert result.output == "42" and not result.cancelled and not result.partial
    assert result.report is not None and result.report.stop_reason == "completed"
