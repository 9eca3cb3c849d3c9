"""Streamed kickoffs (``stream_kickoff``, ``astream_kickoff``): CrewAI's chunks, one governed
run, and a stream closed early cancels its run instead of letting the crew spend unread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import litellm
import pytest
from crewai import LLM, Agent, Crew, Process, Task
from crewai_fakes import CHUNK, ScriptedLLM, SearchTool, make_crew
from pydantic import PrivateAttr

from budgetwarden import Budget, BudgetExceeded, Limits, ListSink, Policy, Routing, Warden
from budgetwarden.buckets import cancel_key
from budgetwarden.integrations.crewai import (
    GuardedCrewOutput,
    GuardedCrewStreamingOutput,
    RoutedLLM,
    guard_crew,
    resume_crewai,
)
from budgetwarden.integrations.crewai._streaming import not_streaming

ANSWER = "Loops and re-sent context are where agent costs come from."
#: ScriptedLLM's answers while it loops: a ReAct tool call per model call.
LOOP_TEXT = 'Thought: I need more.\nAction: search\nAction Input: {"query": "q%d"}'


class HeldLLM(ScriptedLLM):
    """A looping ScriptedLLM whose calls after the first wait, once admitted, until the test
    lets them go: the test decides what the crew does while its stream is being closed."""

    _go: threading.Event = PrivateAttr(default_factory=threading.Event)
    _holding: threading.Event = PrivateAttr(default_factory=threading.Event)

    def _invoke_before_llm_call_hooks(self, messages: Any, from_agent: Any = None) -> Any:
        answer = super()._invoke_before_llm_call_hooks(messages, from_agent)
        if self.calls >= 1:  # admitted by the hooks: a call in flight
            self._holding.set()
            assert self._go.wait(10), "the test never let the held call go"
        return answer

    def wait_until_held(self) -> None:
        """Return once the second call was admitted and waits."""
        assert self._holding.wait(10), "the crew never made its second call"

    async def acall(self, messages: Any, tools: Any = None, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self.call, messages, tools, *args, **kwargs)

    def let_go_soon(self) -> None:
        """Let held calls go shortly, from another thread (the caller may block on a close)."""
        threading.Timer(0.05, self._go.set).start()


def litellm_crew(tasks: int = 2) -> Crew:
    """A stream=True crew over CrewAI's LiteLLM-backed LLM (a mocked, streamed response)."""
    llm = LLM("gpt-4o-mini", is_litellm=True, mock_response=ANSWER)
    agent = Agent(role="analyst", goal="explain costs", backstory="careful", llm=llm)
    jobs = [
        Task(description=f"explain part {i}", expected_output="one line", agent=agent)
        for i in range(tasks)
    ]
    return Crew(agents=[agent], tasks=jobs, process=Process.sequential, stream=True)


def streaming_crew(llm: ScriptedLLM, max_iter: int = 25) -> Crew:
    crew = make_crew([llm], tools=[SearchTool()], max_iter=max_iter)
    crew.stream = True
    return crew


def chunked(text: str) -> list[str]:
    return [text[i : i + CHUNK] for i in range(0, len(text), CHUNK)]


def no_cancel_left(warden: Warden, run_id: str) -> bool:
    return warden.ledger.cancelled([cancel_key(warden.namespace, f"run={run_id}")]) is None


def read_one_answer(chunks: Iterator[Any]) -> str:
    """Read the first model call's chunks (the call then waits in HeldLLM)."""
    wanted = len(LOOP_TEXT % 1)
    text = ""
    while len(text) < wanted:
        text += next(chunks).content
    return text


def test_a_streamed_kickoff_passes_the_models_chunks_and_returns_the_guarded_output() -> None:
    sink = ListSink()
    crew = litellm_crew()
    streaming = guard_crew(crew, Warden(Policy(), sinks=[sink])).stream_kickoff()

    chunks = [chunk.content for chunk in streaming]

    assert "".join(chunks) == ANSWER * 2  # two tasks, each answer streamed in pieces
    assert len(chunks) > 2
    result = streaming.result
    assert isinstance(result, GuardedCrewOutput) and not result.stopped
    assert result.raw == ANSWER
    report = result.report
    assert report is not None and report.run_id == streaming.run_id
    assert report.iterations == 2 and report.models == ["gpt-4o-mini"]
    # the streamed calls' usage (LiteLLM's last chunk) is counted, at LiteLLM's price
    assert report.input_tokens == result.token_usage.prompt_tokens > 0
    assert report.output_tokens == result.token_usage.completion_tokens > 0
    expected = litellm.cost_per_token(
        model="gpt-4o-mini",
        prompt_tokens=report.input_tokens,
        completion_tokens=report.output_tokens,
    )
    assert report.cost_usd == pytest.approx(sum(expected))
    assert [e.run_id for e in sink.cost_events] == [streaming.run_id] * 2
    assert crew.stream is True  # the crew is left as it was found


def test_a_cap_stops_a_streamed_kickoff_and_the_refused_call_streams_nothing() -> None:
    llm = ScriptedLLM()
    warden = Warden(Policy(limits=Limits(max_iterations=3)), log_events=False)

    streaming = guard_crew(streaming_crew(llm), warden).stream_kickoff()
    text = "".join(chunk.content for chunk in streaming)

    assert llm.calls == 3
    assert text == "".join(LOOP_TEXT % n for n in (1, 2, 3))
    result = streaming.result
    assert result.stopped and result.cap == "max_iterations"
    assert result.raw.startswith("[budgetwarden]")
    assert result.report is not None and result.report.iterations == 3


def test_under_on_exceeded_raise_the_stop_is_raised_from_the_iteration() -> None:
    llm = ScriptedLLM()
    policy = Policy(limits=Limits(max_iterations=2), on_exceeded="raise")
    streaming = guard_crew(streaming_crew(llm), Warden(policy, log_events=False)).stream_kickoff()

    with pytest.raises(BudgetExceeded) as raised:
        for _ in streaming:
            pass

    assert raised.value.cap == "max_iterations" and llm.calls == 2
    assert isinstance(raised.value.partial, GuardedCrewOutput)
    with pytest.raises(BudgetExceeded):
        streaming.result  # noqa: B018 - the property raises the run's refusal


@pytest.mark.parametrize("ledger", ["memory", "sqlite"])
def test_closing_a_stream_early_cancels_its_run(ledger: str, tmp_path: Path) -> None:
    llm = HeldLLM()
    uri = "memory://" if ledger == "memory" else f"sqlite:///{tmp_path / 'spend.db'}"
    warden = Warden(Policy(limits=Limits(max_iterations=50)), ledger=uri, log_events=False)
    streaming = guard_crew(streaming_crew(llm), warden).stream_kickoff()
    chunks = iter(streaming)

    assert read_one_answer(chunks) == LOOP_TEXT % 1
    llm.wait_until_held()
    llm.let_go_soon()  # the second call, admitted before the close, may finish
    streaming.close()

    assert llm.calls == 2  # the call in flight; the next one was refused
    result = streaming.result
    assert result.stopped and result.cap == "cancelled"
    assert result.report is not None and result.report.stop_reason == "cancelled"
    assert no_cancel_left(warden, streaming.run_id)  # the cancel was lifted after the stop


def test_a_stream_closed_under_on_exceeded_raise_keeps_the_refusal_for_result() -> None:
    llm = HeldLLM()
    policy = Policy(limits=Limits(max_iterations=50), on_exceeded="raise")
    streaming = guard_crew(streaming_crew(llm), Warden(policy, log_events=False)).stream_kickoff()

    chunks = iter(streaming)  # kept: a dropped iterator would close the stream at once
    read_one_answer(chunks)
    llm.wait_until_held()
    llm.let_go_soon()
    streaming.close()  # the closer is not the one the refusal is raised at

    with pytest.raises(BudgetExceeded) as raised:
        streaming.result  # noqa: B018 - the property raises the run's refusal
    assert raised.value.cap == "cancelled" and llm.calls == 2


def test_a_paused_stream_resumes_later_without_streaming(tmp_path: Path) -> None:
    ledger = f"sqlite:///{tmp_path / 'spend.db'}"
    budget = Budget(scope="user", window="total", max_requests=2)
    warden = Warden(Policy(budgets=[budget], on_exceeded="pause"), ledger=ledger)
    llm = ScriptedLLM(finish_after=3)
    crew = streaming_crew(llm)

    streaming = guard_crew(crew, warden, user="u1").stream_kickoff()
    text = "".join(chunk.content for chunk in streaming)
    paused = streaming.result

    assert text == LOOP_TEXT % 1 + LOOP_TEXT % 2 and llm.calls == 2
    assert paused.stopped and paused.handle is not None
    more = Budget(scope="user", window="total", max_requests=10)
    later = Warden(Policy(budgets=[more], on_exceeded="pause"), ledger=ledger)
    result = resume_crewai(later, paused.handle, crew)

    assert isinstance(result, GuardedCrewOutput) and not result.stopped
    assert result.raw == "answer 4 from gpt-4o-mini" and llm.calls == 4
    assert result.report is not None and result.report.run_id == streaming.run_id
    assert crew.stream is True


def test_leaving_the_loop_early_cancels_the_run_too() -> None:
    llm = HeldLLM()
    warden = Warden(Policy(limits=Limits(max_iterations=50)), log_events=False)
    streaming = guard_crew(streaming_crew(llm), warden).stream_kickoff()

    for chunk in streaming:
        assert chunk.content == chunked(LOOP_TEXT % 1)[0]
        llm.wait_until_held()
        llm.let_go_soon()
        break

    assert llm.calls == 2
    assert streaming.result.cap == "cancelled"
    assert no_cancel_left(warden, streaming.run_id)


def test_a_stream_closed_after_its_last_chunk_keeps_its_output_and_no_cancel() -> None:
    llm = ScriptedLLM(finish_after=1)
    warden = Warden(Policy(), log_events=False)
    streaming = guard_crew(streaming_crew(llm), warden).stream_kickoff()
    chunks = iter(streaming)
    final = "Thought: done\nFinal Answer: answer 2 from gpt-4o-mini"

    read = ""
    while not read.endswith(final):
        read += next(chunks).content
    streaming.close()  # the crew has no call left to refuse: it completes either way

    result = streaming.result
    assert not result.stopped and result.raw == "answer 2 from gpt-4o-mini"
    assert no_cancel_left(warden, streaming.run_id) and llm.calls == 2


def test_a_stream_closed_before_it_starts_runs_nothing() -> None:
    llm = ScriptedLLM()
    sink = ListSink()
    streaming = guard_crew(streaming_crew(llm), Warden(Policy(), sinks=[sink])).stream_kickoff()

    streaming.close()

    assert llm.calls == 0 and sink.events == []
    assert streaming.is_cancelled


async def test_an_async_stream_is_governed_and_closes_like_the_sync_one() -> None:
    warden = Warden(Policy(limits=Limits(max_iterations=3)), log_events=False)
    llm = ScriptedLLM()
    streaming = await guard_crew(streaming_crew(llm), warden).astream_kickoff()

    text = "".join([chunk.content async for chunk in streaming])

    assert text == "".join(LOOP_TEXT % n for n in (1, 2, 3))
    assert streaming.result.cap == "max_iterations" and llm.calls == 3

    held = HeldLLM()
    closing = await guard_crew(streaming_crew(held), warden).astream_kickoff()
    chunks = aiter(closing)
    read = ""
    while read != LOOP_TEXT % 1:
        read += (await anext(chunks)).content
    await asyncio.to_thread(held.wait_until_held)
    held.let_go_soon()
    await closing.aclose()

    assert held.calls == 2
    assert closing.result.cap == "cancelled"
    assert no_cancel_left(warden, closing.run_id)


@pytest.mark.parametrize("method", ["kickoff", "kickoff_for_each"])
def test_kicking_off_a_streaming_crew_without_stream_kickoff_names_the_fix(method: str) -> None:
    llm = ScriptedLLM()
    sink = ListSink()
    guarded = guard_crew(streaming_crew(llm), Warden(Policy(), sinks=[sink]))

    with pytest.raises(TypeError, match=r"stream=True: call stream_kickoff\(\)"):
        if method == "kickoff":
            guarded.kickoff()
        else:
            guarded.kickoff_for_each([{}])

    assert llm.calls == 0 and sink.events == []


async def test_the_async_kickoffs_of_a_streaming_crew_name_the_fix_too() -> None:
    llm = ScriptedLLM()
    guarded = guard_crew(streaming_crew(llm), Warden(Policy(), log_events=False))

    with pytest.raises(TypeError, match="astream_kickoff"):
        await guarded.akickoff()
    with pytest.raises(TypeError, match="astream_kickoff"):
        await guarded.kickoff_async()

    assert llm.calls == 0


def test_a_crew_without_stream_set_can_be_streamed_and_is_left_unset() -> None:
    llm = ScriptedLLM(finish_after=1)
    crew = make_crew([llm], tools=[SearchTool()])
    warden = Warden(Policy(), log_events=False)

    streaming = guard_crew(crew, warden).stream_kickoff()
    text = "".join(chunk.content for chunk in streaming)

    assert text == LOOP_TEXT % 1 + "Thought: done\nFinal Answer: answer 2 from gpt-4o-mini"
    assert streaming.result.raw == "answer 2 from gpt-4o-mini"
    assert crew.stream is False
    assert isinstance(streaming, GuardedCrewStreamingOutput)


@pytest.mark.parametrize("stream", [True, False])
def test_overlapping_streams_of_one_crew_leave_its_stream_flag_as_it_was(stream: bool) -> None:
    crew = make_crew([ScriptedLLM()])
    crew.stream = stream
    first, second = not_streaming(crew), not_streaming(crew)

    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the first to start ends first
    assert crew.stream is False  # the second still runs unstreamed
    second.__exit__(None, None, None)

    assert crew.stream is stream


def test_a_routed_agent_streams_the_tier_the_policy_chose() -> None:
    llm = RoutedLLM(mock_response=ANSWER, max_tokens=50)
    routing = Routing(tiers=["gpt-4o-mini", "gpt-4o"], task_classes={"hard": 1})
    sink = ListSink()
    warden = Warden(Policy(routing=routing), sinks=[sink])
    guarded = guard_crew(make_crew([llm], tools=[SearchTool()]), warden, task_class="hard")

    streaming = guarded.stream_kickoff()
    chunks = [chunk.content for chunk in streaming]

    assert "".join(chunks) == ANSWER and len(chunks) > 2
    assert streaming.result.report is not None and streaming.result.report.models == ["gpt-4o"]
    [event] = sink.cost_events
    assert event.model == "gpt-4o" and not event.estimated and event.output_tokens > 0
