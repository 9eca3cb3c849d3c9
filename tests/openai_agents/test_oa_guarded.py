"""run_guarded / run_guarded_sync: a cap returns the partial result instead of raising."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from agents import (
    Agent,
    GuardrailFunctionOutput,
    RunHooks,
    SQLiteSession,
    function_tool,
    output_guardrail,
)
from agents.exceptions import MaxTurnsExceeded, OutputGuardrailTripwireTriggered, UserError
from oa_scripted import ScriptedModel, message, tool_call

from budgetwarden import BudgetExceeded, CostEvent, RunFinished, ToolDenied
from budgetwarden.integrations.openai_agents import (
    run_guarded,
    run_guarded_streamed,
    run_guarded_sync,
)


def agent_with(tools: Any, model: ScriptedModel) -> Agent[Any]:
    return Agent(name="researcher", instructions="Research.", model=model, tools=[tools.search])


async def test_a_cap_returns_the_partial_result_and_the_report(make_warden, tools) -> None:
    turns: list[Any] = [[message("Two leads so far."), tool_call("search", {"q": "a"})]]
    warden = make_warden(limits={"max_tool_calls": 2})
    result = await run_guarded(agent_with(tools, ScriptedModel(turns)), "find", warden, user="u1")
    assert result.partial and result.cap == "max_tool_calls"
    assert isinstance(result.stopped, BudgetExceeded)
    assert result.output == "Two leads so far."
    assert tools.ran == ["a", "query 1"]  # the refused third call never ran
    assert result.report is not None and result.report.stop_reason == "max_tool_calls"
    assert result.report.tool_calls == 2 and result.new_items


async def test_a_completed_run_returns_its_final_output(make_warden, tools) -> None:
    model = ScriptedModel([[tool_call("search", {"q": "a"})]], loop_tool=None, final_text="42")
    result = await run_guarded(agent_with(tools, model), "find", make_warden())
    assert not result.partial and result.cap is None
    assert result.output == "42" and result.result is not None
    assert result.report is not None and result.report.stop_reason == "completed"


def test_the_sync_twin_returns_the_partial_result(make_warden, tools) -> None:
    warden = make_warden(limits={"max_iterations": 2})
    result = run_guarded_sync(agent_with(tools, ScriptedModel()), "find", warden)
    assert result.cap == "max_iterations"
    assert result.report is not None and result.report.iterations == 2


async def test_a_denied_tool_is_reported_not_raised(make_warden, tools) -> None:
    warden = make_warden(tools={"deny": ["search"]})
    result = await run_guarded(agent_with(tools, ScriptedModel()), "find", warden)
    assert isinstance(result.stopped, ToolDenied) and result.cap == "tool_denied"
    assert tools.ran == []


async def test_on_exceeded_raise_raises_even_when_guarded(make_warden, tools) -> None:
    warden = make_warden(limits={"max_iterations": 1}, on_exceeded="raise")
    with pytest.raises(BudgetExceeded):
        await run_guarded(agent_with(tools, ScriptedModel()), "find", warden)


async def test_other_errors_still_raise_after_what_ran_was_recorded(
    make_warden, sink, tools
) -> None:
    warden = make_warden()
    with pytest.raises(MaxTurnsExceeded):
        await run_guarded(agent_with(tools, ScriptedModel()), "find", warden, max_turns=2)
    assert len(sink.cost_events) == 4  # two model calls, two tool calls, then it stopped


async def test_the_session_id_becomes_the_thread(make_warden, sink, tools) -> None:
    session = SQLiteSession("conversation-7")
    model = ScriptedModel(loop_tool=None)
    await run_guarded(agent_with(tools, model), "hi", make_warden(), session=session)
    assert {event.thread for event in sink.cost_events} == {"conversation-7"}


async def test_your_hooks_are_kept(make_warden, tools) -> None:
    ends: list[Any] = []

    class Mine(RunHooks[Any]):
        async def on_agent_end(self, context: Any, agent: Any, output: Any) -> None:
            ends.append(output)

    model = ScriptedModel(loop_tool=None, final_text="fine")
    await run_guarded(agent_with(tools, model), "hi", make_warden(), hooks=Mine())
    assert ends == ["fine"]


async def test_route_true_sends_calls_to_the_chosen_tier(make_warden, tools) -> None:
    models = {name: ScriptedModel(model=name, loop_tool=None) for name in ("gpt-4o-mini", "gpt-4o")}
    warden = make_warden(routing={"tiers": ["gpt-4o-mini", "gpt-4o"], "task_classes": {"hard": 1}})
    agent = Agent(name="analyst", tools=[tools.search])
    result = await run_guarded(
        agent, "hi", warden, task_class="hard", route=True, model_factory=models.__getitem__
    )
    assert result.output == "done"
    assert (models["gpt-4o-mini"].calls, models["gpt-4o"].calls) == (0, 1)


async def test_a_denied_tool_keeps_the_models_last_text(make_warden, tools) -> None:
    turns: list[Any] = [[message("Let me search."), tool_call("search", {"q": "a"})]]
    warden = make_warden(tools={"deny": ["search"]})
    result = await run_guarded(agent_with(tools, ScriptedModel(turns)), "find", warden)
    assert result.output == "Let me search."
    assert result.stopped is not None and result.stopped.run_data is not None


async def test_a_model_call_that_raised_is_recorded_with_the_error_s_outcome(
    make_warden, sink, tools
) -> None:
    model = ScriptedModel([[tool_call("search", {"q": "a"})], TimeoutError("model timed out")])
    with pytest.raises(TimeoutError):
        await run_guarded(agent_with(tools, model), "find", make_warden(), user="u1")
    calls = [e for e in sink.events if isinstance(e, CostEvent) and e.kind == "llm"]
    assert [(e.status, e.outcome) for e in calls] == [("ok", "ok"), ("error", "timeout")]


@output_guardrail
async def reject_everything(ctx: Any, agent: Any, output: Any) -> GuardrailFunctionOutput:
    return GuardrailFunctionOutput(output_info="rejected", tripwire_triggered=True)


@pytest.mark.parametrize("how", ["run_guarded", "run_guarded_sync", "run_guarded_streamed"])
async def test_an_output_guardrail_that_trips_ends_the_run_in_error(
    make_warden, sink, how: str
) -> None:
    """Output guardrails run after the last hook: the guarded run waits for them."""
    agent = Agent(
        name="writer",
        model=ScriptedModel(loop_tool=None, final_text="draft"),
        output_guardrails=[reject_everything],
    )
    warden = make_warden()
    with pytest.raises(OutputGuardrailTripwireTriggered):
        if how == "run_guarded":
            await run_guarded(agent, "write", warden)
        elif how == "run_guarded_sync":
            await asyncio.to_thread(run_guarded_sync, agent, "write", warden)
        else:
            stream = run_guarded_streamed(agent, "write", warden)
            async for _ in stream.stream_events():
                pass
    [finished] = sink.of_type(RunFinished)
    assert (finished.stop_reason, finished.iterations) == ("error", 1)


async def test_a_guarded_run_with_a_passing_output_guardrail_completes(make_warden, sink) -> None:
    @output_guardrail
    async def accept(ctx: Any, agent: Any, output: Any) -> GuardrailFunctionOutput:
        return GuardrailFunctionOutput(output_info="ok", tripwire_triggered=False)

    agent = Agent(name="writer", model=ScriptedModel(loop_tool=None), output_guardrails=[accept])
    result = await run_guarded(agent, "write", make_warden())
    assert result.report is not None and result.report.stop_reason == "completed"
    assert [e.stop_reason for e in sink.of_type(RunFinished)] == ["completed"]


async def test_a_tool_that_raises_out_of_the_run_is_recorded_and_priced(make_warden, sink) -> None:
    """A tool without a failure function ends the run with the SDK's ``UserError``, and the
    SDK calls no ``on_tool_end``: the guarded run still records (and prices) that call."""

    @function_tool(failure_error_function=None)
    def pay(q: str) -> str:
        """Pay a bill."""
        raise RuntimeError("payment backend down")

    agent = Agent(name="payer", model=ScriptedModel(loop_tool="pay"), tools=[pay])
    warden = make_warden(tools={"price_usd": {"pay": 0.05}})
    with pytest.raises(UserError, match="Error running tool pay"):
        await run_guarded(agent, "pay it", warden)
    [tool_event] = [e for e in sink.cost_events if e.kind == "tool"]
    assert (tool_event.tool, tool_event.status, tool_event.cost_usd) == ("pay", "error", 0.05)
    [finished] = sink.of_type(RunFinished)
    assert finished.stop_reason == "error" and finished.tool_calls == 1
    assert finished.cost_usd >= 0.05
