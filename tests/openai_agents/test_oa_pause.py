"""Pause and resume: a run stopped by an 8h budget wakes up where it stopped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, Runner
from oa_scripted import ScriptedModel, message, tool_call

from budgetwarden import BudgetExceeded, ListSink, Policy, Warden
from budgetwarden.events import Notice
from budgetwarden.integrations.openai_agents import (
    BudgetRunHooks,
    resume_openai_agents,
    resume_openai_agents_sync,
    run_guarded,
    run_guarded_sync,
)
from budgetwarden.ledger import MemoryLedger

HERE = Path(__file__).parent
EIGHT_HOURS = 8 * 3600


class Clock:
    """Epoch seconds that move only when a test (or a warden's nap) says so."""

    def __init__(self) -> None:
        self.now = 1_767_225_600.0  # 2026-01-01T00:00:00Z

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def pausing_policy(max_requests: int = 3) -> Policy:
    budget = {"scope": "user", "window": "8h", "max_requests": max_requests}
    return Policy.model_validate({"budgets": [budget], "on_exceeded": "pause"})


def warden_on(ledger: Any, clock: Clock, max_requests: int = 3, **kwargs: Any) -> Warden:
    return Warden(
        pausing_policy(max_requests),
        ledger=ledger,
        clock=clock,
        sleep=clock.advance,
        log_events=False,
        **kwargs,
    )


def checker(tools: Any, model: ScriptedModel) -> Agent[Any]:
    return Agent(name="checker", instructions="Check.", model=model, tools=[tools.search])


def four_turns() -> ScriptedModel:
    calls: list[Any] = [[tool_call("search", {"q": q})] for q in ("a", "b", "c")]
    return ScriptedModel([*calls, [message("all three checked")]])


def kinds(items: list[Any]) -> list[str]:
    return [str(item.get("type") or item.get("role")) for item in items]


async def test_a_paused_run_resumes_after_the_window_resets_without_repeating_a_call(
    tools,
) -> None:
    clock, ledger, sink = Clock(), MemoryLedger("memory://shared"), ListSink()
    model = four_turns()
    first = warden_on(ledger, clock, sinks=[sink])
    paused = await run_guarded(checker(tools, model), "check a, b, c", first, user="u1")
    assert paused.paused and paused.cap == "budget:user=u1/8h/requests"
    assert paused.handle is not None and paused.handle.resets_at == clock.now + EIGHT_HOURS
    assert paused.handle.report.iterations == 3 and model.calls == 3
    assert any(isinstance(e, Notice) and e.code == "pause" for e in sink.events)

    later = warden_on(ledger, clock)  # another warden on the same ledger
    handle = later.load_handle(paused.handle.id)
    assert handle is not None and not later.ready_to_resume(handle)
    resumed = await later.anap_and_resume(
        handle.id, lambda h: resume_openai_agents(later, h, checker(tools, model))
    )
    assert clock.now >= handle.resets_at
    assert resumed.output == "all three checked" and not resumed.partial
    assert model.calls == 4  # the refused call, made once, after the reset
    assert kinds(model.inputs[3]) == ["user"] + ["function_call", "function_call_output"] * 3
    assert tools.ran == ["a", "b", "c"]
    assert resumed.report is not None and resumed.report.run_id == handle.run_id
    assert later.load_handle(handle.id) is None


def test_a_raised_budget_resumes_a_paused_run_at_once(tools) -> None:
    clock, ledger = Clock(), MemoryLedger("memory://shared")
    model = four_turns()
    paused = run_guarded_sync(checker(tools, model), "check", warden_on(ledger, clock), user="u1")
    assert paused.handle is not None
    raised = warden_on(ledger, clock, max_requests=6)  # someone raised the budget
    resumed = raised.nap_and_resume(
        paused.handle.id, lambda h: resume_openai_agents_sync(raised, h, checker(tools, model))
    )
    assert clock.now == Clock().now  # no nap: the budget has room
    assert resumed.output == "all three checked" and model.calls == 4


async def test_a_pause_at_a_tool_keeps_the_models_answer(make_warden, tools) -> None:
    turns: list[Any] = [
        [tool_call("search", {"q": "a"})],
        [message("Now b."), tool_call("search", {"q": "b"})],
        [message("b was not run; a is enough: done.")],
    ]
    model = ScriptedModel(turns)
    warden = make_warden(limits={"max_tool_calls": 1}, on_exceeded="pause")
    paused = await run_guarded(checker(tools, model), "check", warden)
    assert paused.handle is not None and paused.cap == "max_tool_calls"
    assert warden.ready_to_resume(paused.handle)  # a run cap: a resumed run has fresh caps
    resumed = await resume_openai_agents(warden, paused.handle, checker(tools, model))
    assert resumed.output == "b was not run; a is enough: done."
    assert model.calls == 3 and tools.ran == ["a"]
    last_input = model.inputs[2]
    assert kinds(last_input)[-3:] == ["message", "function_call", "function_call_output"]
    assert str(last_input[-1]["output"]).startswith("Not run: budgetwarden paused this run")


_RESUME_ELSEWHERE = """
import asyncio, json, sys
sys.path.insert(0, {here!r})
from agents import Agent, set_tracing_disabled
from oa_scripted import ScriptedModel, message
from conftest import ToolLog
from budgetwarden import Policy, Warden
from budgetwarden.integrations.openai_agents import resume_openai_agents

set_tracing_disabled(True)
policy = Policy.model_validate({policy})
warden = Warden(policy, ledger={ledger!r}, clock=lambda: {now}, log_events=False)
model = ScriptedModel([[message("resumed elsewhere")]])
agent = Agent(name="checker", model=model, tools=[ToolLog().search])
handle = warden.load_handle({handle_id!r})
ready = warden.ready_to_resume(handle)
result = asyncio.run(resume_openai_agents(warden, handle, agent))
print(json.dumps({{"ready": ready, "output": result.output, "calls": model.calls,
                  "input": [i.get("type") or i.get("role") for i in model.inputs[0]]}}))
"""


async def test_the_handle_survives_a_new_process_on_a_sqlite_ledger(tmp_path, tools) -> None:
    ledger, clock = f"sqlite:///{tmp_path / 'spend.db'}", Clock()
    model = four_turns()
    paused = await run_guarded(checker(tools, model), "check", warden_on(ledger, clock), user="u1")
    assert paused.handle is not None and model.calls == 3
    script = _RESUME_ELSEWHERE.format(
        here=str(HERE),
        policy=pausing_policy().model_dump(mode="json"),
        ledger=ledger,
        now=clock.now + EIGHT_HOURS,
        handle_id=paused.handle.id,
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["ready"] and out["output"] == "resumed elsewhere" and out["calls"] == 1
    assert out["input"] == ["user"] + ["function_call", "function_call_output"] * 3


async def test_plain_hooks_pause_a_streamed_run_that_resumes_later(tools) -> None:
    clock, ledger = Clock(), MemoryLedger("memory://shared")
    warden = warden_on(ledger, clock)
    hooks = BudgetRunHooks(warden, user="u1")
    model = four_turns()
    streamed = Runner.run_streamed(checker(tools, model), "check", hooks=hooks)
    with pytest.raises(BudgetExceeded) as info:
        async for _ in streamed.stream_events():
            pass
    handle = hooks.pause(info.value, checker(tools, model))
    assert handle is not None and info.value.handle is handle
    assert warden.load_handle(handle.id) == handle and model.calls == 3
    clock.advance(EIGHT_HOURS)
    resumed = await resume_openai_agents(warden, handle, checker(tools, model))
    assert resumed.output == "all three checked" and model.calls == 4


async def test_a_handle_resumed_directly_is_resumed_once(make_warden, tools) -> None:
    """``resume_openai_agents`` called on its own claims and forgets the handle, as
    ``anap_and_resume`` does: a second resume ran the paused step again (an extra call)."""
    model = ScriptedModel([[tool_call("search", {"q": "a"})], [message("done")]])
    warden = make_warden(limits={"max_tool_calls": 0}, on_exceeded="pause")
    paused = await run_guarded(checker(tools, model), "check", warden)
    assert paused.handle is not None and warden.paused() == [paused.handle]
    await resume_openai_agents(warden, paused.handle, checker(tools, model))
    calls = model.calls
    assert warden.paused() == []
    with pytest.raises(KeyError, match="resumed already"):
        await resume_openai_agents(warden, paused.handle, checker(tools, model))
    with pytest.raises(KeyError):
        await warden.anap_and_resume(
            paused.handle.id, lambda h: resume_openai_agents(warden, h, checker(tools, model))
        )
    assert model.calls == calls
