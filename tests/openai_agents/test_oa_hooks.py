"""BudgetRunHooks on real Runner.run / run_sync / run_streamed with a scripted model."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from typing import Any

import pytest
from agents import Agent, ModelSettings, RunConfig, RunHooks, Runner
from agents.exceptions import AgentsException, MaxTurnsExceeded, UserError
from oa_scripted import ScriptedModel, ScriptedProvider, message, tool_call

from budgetwarden import BudgetExceeded, CostEvent, PriceBook, RunFinished, ToolDenied, Usage
from budgetwarden.finalizing import join_abandoned
from budgetwarden.integrations.openai_agents import (
    AgentsBudgetExceeded,
    BudgetRunHooks,
    run_guarded,
)

MODEL = "gpt-4o-mini"


def looping_agent(tools: Any, model: ScriptedModel, name: str = "researcher") -> Agent[Any]:
    return Agent(name=name, instructions="Research.", model=model, tools=[tools.search])


async def test_max_iterations_allows_exactly_that_many_model_calls(make_warden, tools) -> None:
    model = ScriptedModel()
    hooks = BudgetRunHooks(make_warden(limits={"max_iterations": 3}), user="u1")
    with pytest.raises(BudgetExceeded) as info:
        await Runner.run(looping_agent(tools, model), "find it", hooks=hooks)
    assert model.calls == 3
    assert info.value.cap == "max_iterations"
    assert info.value.report is not None and info.value.report.iterations == 3
    assert len(tools.ran) == 3


async def test_max_tool_calls_refuses_the_next_tool_unwrapped_and_unrun(make_warden, tools) -> None:
    model = ScriptedModel()
    hooks = BudgetRunHooks(make_warden(limits={"max_tool_calls": 2}))
    with pytest.raises(BudgetExceeded) as info:
        await Runner.run(looping_agent(tools, model), "find it", hooks=hooks)
    exc = info.value
    assert not isinstance(exc, UserError)
    assert isinstance(exc, AgentsException) and isinstance(exc, AgentsBudgetExceeded)
    assert exc.cap == "max_tool_calls"
    assert tools.ran == ["query 0", "query 1"]  # the third call never ran
    assert model.calls == 3
    assert exc.report is not None and exc.report.tool_calls == 2
    assert exc.report.stop_reason == "max_tool_calls" and exc.report.partial


async def test_per_tool_cap_names_the_tool(make_warden, tools) -> None:
    hooks = BudgetRunHooks(make_warden(tools={"max_calls": {"search": 1}}))
    with pytest.raises(BudgetExceeded) as info:
        await Runner.run(looping_agent(tools, ScriptedModel()), "find it", hooks=hooks)
    assert info.value.cap == "max_tool_calls[search]"
    assert tools.ran == ["query 0"]


async def test_repeated_identical_tool_calls_are_refused_as_a_loop(make_warden, tools) -> None:
    hooks = BudgetRunHooks(make_warden(limits={"max_repeated_tool_calls": 2}))
    agent = looping_agent(tools, ScriptedModel(same_args=True))
    with pytest.raises(BudgetExceeded) as info:
        await Runner.run(agent, "find it", hooks=hooks)
    assert info.value.cap == "max_repeated_tool_calls"
    assert tools.ran == ["same", "same"]


async def test_denied_tool_raises_tool_denied_and_never_runs(make_warden, tools) -> None:
    hooks = BudgetRunHooks(make_warden(tools={"deny": ["search"]}))
    with pytest.raises(ToolDenied) as info:
        await Runner.run(looping_agent(tools, ScriptedModel()), "find it", hooks=hooks)
    assert not isinstance(info.value, UserError)
    assert info.value.tool == "search"
    assert tools.ran == []


async def test_cost_is_each_calls_own_usage_priced_by_pricebook(make_warden, tools) -> None:
    model = ScriptedModel(usage=(1200, 300, 1000, 50))
    hooks = BudgetRunHooks(make_warden(limits={"max_iterations": 3}))
    with pytest.raises(BudgetExceeded):
        await Runner.run(looping_agent(tools, model), "find it", hooks=hooks)
    report = hooks.report
    assert report is not None
    one = PriceBook().cost(
        MODEL,
        Usage(input_tokens=1200, output_tokens=300, cache_read_tokens=1000, reasoning_tokens=50),
    )
    assert report.cost_usd == pytest.approx(3 * one, rel=1e-9)
    assert (report.input_tokens, report.output_tokens) == (3600, 900)
    assert report.cache_read_tokens == 3000
    assert report.models == [MODEL]


async def test_max_cost_stops_before_a_call_that_could_pass_it(make_warden, tools) -> None:
    model = ScriptedModel(usage=(10, 100, 0, 0))
    agent = looping_agent(tools, model)
    agent.model_settings = ModelSettings(max_tokens=100)
    cap = 3 * PriceBook().cost(MODEL, Usage(input_tokens=10, output_tokens=100))
    hooks = BudgetRunHooks(make_warden(limits={"max_cost_usd": cap}))
    with pytest.raises(BudgetExceeded) as info:
        await Runner.run(agent, "find it", hooks=hooks)
    assert info.value.cap == "max_cost_usd"
    report = info.value.report
    assert report is not None and 0 < report.cost_usd <= cap
    assert report.overshoot_usd == 0
    assert model.calls == report.iterations >= 1
    assert all(settings.max_tokens == 100 for settings in model.settings)


def test_run_sync_is_governed_too(make_warden, tools) -> None:
    model = ScriptedModel()
    hooks = BudgetRunHooks(make_warden(limits={"max_tool_calls": 1}))
    with pytest.raises(BudgetExceeded) as info:
        Runner.run_sync(looping_agent(tools, model), "find it", hooks=hooks)
    assert info.value.cap == "max_tool_calls"
    assert tools.ran == ["query 0"]


async def test_streamed_run_raises_from_stream_events_at_the_cap(make_warden, tools) -> None:
    model = ScriptedModel(usage=(100, 20, 0, 0))
    hooks = BudgetRunHooks(make_warden(limits={"max_iterations": 2}))
    result = Runner.run_streamed(looping_agent(tools, model), "find it", hooks=hooks)
    events = 0
    with pytest.raises(BudgetExceeded) as info:
        async for _ in result.stream_events():
            events += 1
    assert info.value.cap == "max_iterations"
    assert model.calls == 2 and events > 0
    assert result.is_complete
    assert hooks.report is not None and hooks.report.input_tokens == 200


async def test_streamed_tool_refusal_is_unwrapped(make_warden, tools) -> None:
    hooks = BudgetRunHooks(make_warden(limits={"max_tool_calls": 1}))
    result = Runner.run_streamed(looping_agent(tools, ScriptedModel()), "find it", hooks=hooks)
    with pytest.raises(BudgetExceeded) as info:
        async for _ in result.stream_events():
            pass
    assert not isinstance(info.value, UserError)
    assert tools.ran == ["query 0"]


async def test_partial_output_carries_the_last_model_text_and_items(make_warden, tools) -> None:
    turns: list[Any] = [[message("Found two leads so far."), tool_call("search", {"q": "a"})]]
    hooks = BudgetRunHooks(make_warden(limits={"max_iterations": 2}))
    with pytest.raises(BudgetExceeded) as info:
        await Runner.run(looping_agent(tools, ScriptedModel(turns)), "find it", hooks=hooks)
    exc = info.value
    assert isinstance(exc, AgentsBudgetExceeded)
    assert exc.partial == "Found two leads so far."
    assert len(exc.new_items) >= 3  # message, tool call, tool output, second tool call
    assert exc.last_agent is not None and exc.last_agent.name == "researcher"
    assert "max_iterations" in str(exc)


async def test_handoffs_share_one_runs_counters(make_warden, sink, tools) -> None:
    writer = Agent(name="writer", model=ScriptedModel(), tools=[tools.search])
    first = ScriptedModel([[tool_call("search", {"q": "a"})], [tool_call("transfer_to_writer")]])
    triage = Agent(name="triage", model=first, tools=[tools.search], handoffs=[writer])
    hooks = BudgetRunHooks(make_warden(limits={"max_tool_calls": 3}))
    with pytest.raises(BudgetExceeded) as info:
        await Runner.run(triage, "write it", hooks=hooks)
    assert tools.ran == ["a", "query 0", "query 1"]
    report = info.value.report
    assert report is not None
    assert report.tool_calls == 3 and report.iterations == 2 + 3
    assert len({event.run_id for event in sink.cost_events}) == 1
    assert report.agent == "triage"


async def test_completed_run_is_finished_by_its_final_output(make_warden, tools) -> None:
    hooks = BudgetRunHooks(make_warden(limits={"max_iterations": 5}))
    turns: list[Any] = [[tool_call("search", {"q": "a"})]]
    agent = looping_agent(tools, ScriptedModel(turns, loop_tool=None, final_text="answer"))
    result = await Runner.run(agent, "find it", hooks=hooks)
    assert result.final_output == "answer"
    assert hooks.active_runs == 0
    assert hooks.report is not None and hooks.report.stop_reason == "completed"
    assert hooks.report.iterations == 2 and not hooks.report.partial


async def test_one_hooks_instance_keeps_concurrent_runs_apart(make_warden, tools) -> None:
    hooks = BudgetRunHooks(make_warden(limits={"max_iterations": 3}))
    models = [ScriptedModel(), ScriptedModel()]
    results = await asyncio.gather(
        *(Runner.run(looping_agent(tools, m), "find it", hooks=hooks) for m in models),
        return_exceptions=True,
    )
    assert all(isinstance(r, BudgetExceeded) for r in results)
    assert [m.calls for m in models] == [3, 3]
    reports = [r.report for r in results if isinstance(r, BudgetExceeded)]
    assert len({r.run_id for r in reports if r is not None}) == 2


async def _run_past_max_turns(hooks: BudgetRunHooks, agent: Agent[Any]) -> None:
    with contextlib.suppress(MaxTurnsExceeded):
        await Runner.run(agent, "find it", hooks=hooks, max_turns=2)


async def test_a_run_ended_by_another_exception_is_finished_once_dropped(
    make_warden, tools
) -> None:
    hooks = BudgetRunHooks(make_warden(limits={"max_iterations": 10}))
    await _run_past_max_turns(hooks, looping_agent(tools, ScriptedModel()))
    gc.collect()
    join_abandoned()
    assert hooks.active_runs == 0
    assert hooks.report is not None and hooks.report.stop_reason == "error"


async def test_close_finishes_a_run_the_sdk_ended_with_an_error(make_warden, tools) -> None:
    hooks = BudgetRunHooks(make_warden(limits={"max_iterations": 10}))
    agent = looping_agent(tools, ScriptedModel())
    with pytest.raises(MaxTurnsExceeded) as info:
        await Runner.run(agent, "find it", hooks=hooks, max_turns=2)
    assert hooks.active_runs == 1
    await hooks.aclose(info.value)
    assert hooks.active_runs == 0
    assert hooks.report is not None and hooks.report.stop_reason == "error"


@pytest.mark.parametrize("ended_by", ["close", "garbage collection"])
async def test_a_model_call_that_raised_is_recorded_as_failed_and_frees_its_hold(
    make_warden, sink, tools, ended_by: str
) -> None:
    """The SDK calls no hook when the model raises: the call is recorded as failed when the
    run ends (close, or the SDK dropping its context), and what it reserved is freed."""
    per_user = [{"scope": "user", "window": "day", "max_cost_usd": 10.0}]
    warden = make_warden(limits={"max_iterations": 10}, budgets=per_user)
    hooks = BudgetRunHooks(warden, user="u1")
    model = ScriptedModel([[tool_call("search", {"q": "a"})], ConnectionError("provider down")])
    with pytest.raises(ConnectionError):
        await Runner.run(looping_agent(tools, model), "find it", hooks=hooks)
    if ended_by == "close":
        await hooks.aclose(ConnectionError("provider down"))
    else:
        gc.collect()
        join_abandoned()
    calls = [e for e in sink.events if isinstance(e, CostEvent) and e.kind == "llm"]
    assert [(e.status, e.outcome) for e in calls] == [("ok", "ok"), ("error", "provider_error")]
    assert calls[1].cost_usd == 0 and hooks.active_runs == 0
    assert warden.remaining("user", "u1") == pytest.approx(10.0 - calls[0].cost_usd)


async def test_your_own_hooks_still_see_every_event(make_warden, tools) -> None:
    seen: list[str] = []

    class Mine(RunHooks[Any]):
        async def on_llm_start(self, *args: Any) -> None:
            seen.append("llm_start")

        async def on_tool_end(self, *args: Any) -> None:
            seen.append("tool_end")

    hooks = BudgetRunHooks(make_warden(limits={"max_iterations": 2}), hooks=Mine())
    with pytest.raises(BudgetExceeded):
        await Runner.run(looping_agent(tools, ScriptedModel()), "find it", hooks=hooks)
    assert seen == ["llm_start", "tool_end", "llm_start", "tool_end"]


async def test_attribution_reaches_every_cost_event(make_warden, sink, tools) -> None:
    hooks = BudgetRunHooks(
        make_warden(limits={"max_iterations": 1}), user="u1", workspace="acme", thread="t-9"
    )
    with pytest.raises(BudgetExceeded):
        await Runner.run(looping_agent(tools, ScriptedModel()), "find it", hooks=hooks)
    events = sink.cost_events
    assert events and all(
        (e.user, e.workspace, e.thread, e.agent) == ("u1", "acme", "t-9", "researcher")
        for e in events
    )


async def test_an_agent_used_as_a_tool_spends_from_its_callers_run(make_warden, tools) -> None:
    hooks = BudgetRunHooks(make_warden(limits={"max_iterations": 4}))
    inner_model = ScriptedModel(loop_tool=None, final_text="short summary")
    inner = Agent(name="summarizer", model=inner_model)
    summarize = inner.as_tool("summarize", "Summarize a text.", hooks=hooks)
    outer_model = ScriptedModel(
        [[tool_call("summarize", {"input": f"text {n}"})] for n in range(3)]
    )
    outer = Agent(name="editor", model=outer_model, tools=[summarize])
    with pytest.raises(BudgetExceeded) as info:
        await Runner.run(outer, "edit", hooks=hooks)
    assert (outer_model.calls, inner_model.calls) == (2, 2)
    report = info.value.report
    assert report is not None and report.iterations == 4 and report.tool_calls == 2


def test_a_usage_counting_cache_apart_from_input_is_read_without_failing() -> None:
    from agents.usage import InputTokensDetails, OutputTokensDetails
    from agents.usage import Usage as AgentsUsage

    from budgetwarden.integrations.openai_agents._translate import usage_of

    reported = AgentsUsage(
        requests=1,
        input_tokens=20,
        output_tokens=5,
        total_tokens=25,
        input_tokens_details=InputTokensDetails(cached_tokens=5000, cache_write_tokens=0),
        output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
    )
    usage = usage_of(reported)
    assert usage is not None and (usage.input_tokens, usage.cache_read_tokens) == (5020, 5000)


def parallel_agent(tools: Any, calls: list[Any]) -> Agent[Any]:
    """An agent whose one turn asks for ``calls`` at once (then answers)."""
    model = ScriptedModel([calls], loop_tool=None)
    return Agent(
        name="researcher",
        model=model,
        tools=[tools.search, tools.lookup],
        model_settings=ModelSettings(parallel_tool_calls=True),
    )


@pytest.mark.parametrize("guarded", [False, True])
async def test_a_refused_parallel_call_stops_its_turns_later_calls(
    make_warden, tools, sink, guarded: bool
) -> None:
    """The SDK runs a turn's tool calls as tasks that go on after one is refused: the later
    ones are refused too, under the same run, and nothing opens a second run."""
    warden = make_warden(
        limits={"max_tool_calls": 1},
        tools={"price_usd": {"search": 0.01}},
        budgets=[{"scope": "user", "window": "total", "max_cost_usd": 100.0}],
    )
    agent = parallel_agent(tools, [tool_call("search", {"q": q}) for q in "abc"])
    if guarded:
        result = await run_guarded(agent, "go", warden, user="u1")
        assert result.cap == "max_tool_calls"
    else:
        with pytest.raises(BudgetExceeded):
            await Runner.run(agent, "go", hooks=BudgetRunHooks(warden, user="u1"))
    await asyncio.sleep(0.05)  # the turn's other tasks run out
    finished = sink.of_type(RunFinished)
    assert len(finished) == 1 and finished[0].stop_reason == "max_tool_calls"
    assert len(tools.ran) <= 1  # only the call admitted before the refusal may run
    tool_events = [e for e in sink.cost_events if e.kind == "tool"]
    assert len(tool_events) == len(tools.ran)  # a call that ran is recorded, and priced
    spent = warden.spent("user", "u1", window="total")
    assert spent == pytest.approx(sum(e.cost_usd for e in sink.cost_events))


async def test_a_denied_parallel_call_ends_the_run_as_tool_denied(make_warden, tools, sink) -> None:
    warden = make_warden(tools={"deny": ["lookup"]})
    calls = [tool_call("lookup", {"q": "x"}), tool_call("lookup", {"q": "y"})]
    with pytest.raises(ToolDenied):
        await Runner.run(parallel_agent(tools, calls), "go", hooks=BudgetRunHooks(warden))
    await asyncio.sleep(0.05)
    assert [(e.stop_reason, e.partial) for e in sink.of_type(RunFinished)] == [
        ("tool_denied", True)
    ]
    assert tools.ran == []


@pytest.mark.parametrize("how", ["hooks", "run_guarded"])
async def test_a_run_config_model_prices_every_call(make_warden, sink, how: str) -> None:
    """``RunConfig(model=...)`` overrides the agent's model; the hooks are told of it."""
    answering = ScriptedModel(loop_tool=None, model="gpt-4o", usage=(1000, 100, 0, 0))
    config = RunConfig(model="gpt-4o", model_provider=ScriptedProvider({"gpt-4o": answering}))
    agent = Agent(name="a", model="gpt-4o-mini")
    warden = make_warden()
    if how == "hooks":
        hooks = BudgetRunHooks(warden, model="gpt-4o")
        await Runner.run(agent, "go", hooks=hooks, run_config=config)
    else:
        await run_guarded(agent, "go", warden, run_config=config)
    [event] = sink.cost_events
    assert (event.model, answering.calls) == ("gpt-4o", 1)
    expected = PriceBook().cost("gpt-4o", Usage(input_tokens=1000, output_tokens=100))
    assert event.cost_usd == pytest.approx(expected)
