"""Events: one CostEvent per call with its attribution; JSONL and structlog sinks; no text."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from budgetwarden import CostEvent, JSONLSink, Policy, Usage
from budgetwarden.events import event_from_dict

from .helpers import make_warden, usage

ATTRIBUTION = {
    "agent": "researcher",
    "user": "u1",
    "workspace": "acme",
    "workflow": "triage",
    "task_class": "extraction",
    "key": "k1",
    "thread": "t1",
    "feature": "search",
}


def test_every_llm_and_tool_call_emits_one_cost_event_with_its_attribution() -> None:
    warden, sink, _ = make_warden(Policy())
    run = warden.run(**ATTRIBUTION)
    step = run.before_llm_call("gpt-4o-mini", [{"role": "user", "content": "secret prompt"}])
    run.after_llm_call(
        step,
        Usage(input_tokens=120, output_tokens=30, cache_read_tokens=100),
        latency_s=0.8,
        output_text="secret answer",
    )
    run.after_tool_call(run.before_tool_call("search", {"q": "x"}), latency_s=0.1)
    llm, tool = sink.cost_events
    for event in (llm, tool):
        for name, value in ATTRIBUTION.items():
            assert getattr(event, name) == value
        assert event.run_id == run.id
    assert (llm.kind, llm.model, llm.provider) == ("llm", "gpt-4o-mini", "openai")
    assert (llm.input_tokens, llm.output_tokens, llm.cache_read_tokens) == (120, 30, 100)
    assert llm.cost_usd > 0 and llm.latency_s == 0.8 and llm.outcome == "ok"
    assert llm.prompt is None and llm.response is None
    assert (tool.kind, tool.tool, tool.latency_s) == ("tool", "search", 0.1)


def test_text_is_recorded_only_when_the_policy_opts_in() -> None:
    warden, sink, _ = make_warden(Policy(record_content=True))
    run = warden.run()
    run.after_llm_call(
        run.before_llm_call("gpt-4o-mini"),
        usage(),
        output_text="the answer",
        prompt_text="the question",
    )
    assert sink.cost_events[0].response == "the answer"
    assert sink.cost_events[0].prompt == "the question"


def test_missing_usage_is_estimated_and_marked() -> None:
    warden, _sink, _ = make_warden(Policy())
    run = warden.run()
    step = run.before_llm_call("gpt-4o-mini", input_tokens=40)
    event = run.after_llm_call(step, None, output_text="x" * 400)
    assert event.estimated and event.output_tokens == 100 and event.input_tokens == 40


def test_jsonl_sink_writes_events_that_read_back(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    warden, _, _ = make_warden(Policy(limits={"max_input_tokens": 100}))
    warden.sinks.append(JSONLSink(path))
    run = warden.run(user="u1")
    run.after_llm_call(
        run.before_llm_call("gpt-4o-mini", input_tokens=60, max_tokens=5), usage(60, 5)
    )
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["type"] for line in lines] == ["BudgetAlert", "CostEvent"]
    event = event_from_dict(lines[1])
    assert isinstance(event, CostEvent) and event.user == "u1" and event.input_tokens == 60


def test_structlog_sink_logs_alerts_at_warning_and_costs_only_at_debug(caplog) -> None:
    warden, _, _ = make_warden(Policy(limits={"max_input_tokens": 100}))
    with caplog.at_level(logging.WARNING, logger="budgetwarden"):
        run = warden.run()
        run.after_llm_call(
            run.before_llm_call("gpt-4o-mini", input_tokens=60, max_tokens=5), usage(60, 5)
        )
    assert len(caplog.records) == 1
    assert "BudgetAlert" in caplog.records[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="budgetwarden"):
        run.after_llm_call(
            run.before_llm_call("gpt-4o-mini", input_tokens=1, max_tokens=1), usage(1, 1)
        )
    payload = json.loads(caplog.records[-1].getMessage())
    assert payload["event"] == "CostEvent" and payload["level"] == "debug"


def test_a_failing_sink_never_breaks_a_run(caplog) -> None:
    class Broken:
        def emit(self, event: object) -> None:
            raise OSError("disk full")

    warden, sink, _ = make_warden(Policy())
    warden.sinks.insert(0, Broken())
    run = warden.run()
    with caplog.at_level(logging.ERROR, logger="budgetwarden"):
        run.after_llm_call(run.before_llm_call("gpt-4o-mini"), usage())
    assert len(sink.cost_events) == 1
    assert "Broken failed" in caplog.text


@pytest.mark.parametrize("module", ["budgetwarden"])
def test_import_pulls_in_no_framework_and_no_litellm(module: str) -> None:
    import subprocess
    import sys

    code = (
        f"import sys, time; t=time.perf_counter(); import {module}; "
        "d=time.perf_counter()-t; "
        "heavy=[m for m in ('litellm','langchain_core','langgraph','crewai','agents','openai') "
        "if m in sys.modules]; print(heavy, d)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split(" ", 1)
    assert out[0] == "[]", out


def test_each_run_emits_one_run_finished_event_with_its_success() -> None:
    from budgetwarden import RunFinished

    warden, sink, _ = make_warden(Policy(limits={"max_iterations": 1}))
    run = warden.run(agent="a", user="u1")
    step = run.before_llm_call("gpt-4o-mini", input_tokens=10, max_tokens=5)
    event = run.after_llm_call(step, usage(10, 5))
    assert event.requested_model == "gpt-4o-mini"
    run.finish(success=True)
    run.finish()  # a second end changes nothing and emits nothing
    [finished] = sink.of_type(RunFinished)
    assert (finished.run_id, finished.user, finished.success) == (run.id, "u1", True)
    assert (finished.iterations, finished.stop_reason, finished.partial) == (1, "completed", False)
    assert finished.cost_usd == pytest.approx(event.cost_usd)
    assert run.report.success is True


@pytest.mark.parametrize(
    ("error", "reason", "partial"),
    [
        (asyncio.CancelledError(), "cancelled", True),  # its task was cancelled
        (GeneratorExit(), "cancelled", True),  # its stream was closed by the reader
        (RuntimeError("boom"), "error", False),
    ],
)
def test_a_run_its_caller_stopped_ends_cancelled_not_in_error(
    error: BaseException, reason: str, partial: bool
) -> None:
    from budgetwarden import RunFinished

    warden, sink, _ = make_warden(Policy())
    run = warden.run(agent="a")
    run.before_llm_call("gpt-4o-mini", input_tokens=10, max_tokens=5)  # never answered

    run.finish(error=error)

    [finished] = sink.of_type(RunFinished)
    assert (finished.stop_reason, finished.partial) == (reason, partial)
    assert (run.report.stop_reason, run.report.partial) == (reason, partial)


def test_trusted_events_equal_validated_ones_defaults_and_factories_included() -> None:
    from budgetwarden.events import BudgetAlert, CostEvent, Notice, trusted

    cases = [
        (CostEvent, {"ts": 1.0, "run_id": "r", "cost_usd": 0.5, "budget_ratios": {"a": 0.1}}),
        (CostEvent, {"ts": 2.0, "kind": "tool", "tool": "search", "latency_s": 0.25}),
        (Notice, {"ts": 1.0, "code": "wait", "message": "m"}),
        (
            BudgetAlert,
            {
                "ts": 1.0,
                "cap": "c",
                "level": 0.5,
                "action": "alert",
                "ratio": 0.5,
                "used": 1.0,
                "limit": 2.0,
            },
        ),
    ]
    for cls, values in cases:
        fast, checked = trusted(cls, dict(values)), cls(**values)
        assert fast == checked
        assert fast.to_dict() == checked.to_dict()
        assert fast.model_fields_set == checked.model_fields_set
    first = trusted(Notice, {"ts": 1.0, "code": "x", "message": "m"})
    second = trusted(Notice, {"ts": 1.0, "code": "x", "message": "m"})
    assert first.data is not second.data  # a default factory runs per event


def test_a_sink_that_does_not_want_cost_events_gets_none_and_callers_still_get_theirs() -> None:
    from budgetwarden import Warden
    from budgetwarden.events import BudgetAlert, Event

    class AlertsOnly:
        def __init__(self) -> None:
            self.events: list[Event] = []

        def wants(self, kind: type[Event]) -> bool:
            return kind is not CostEvent

        def emit(self, event: Event) -> None:
            self.events.append(event)

    sink = AlertsOnly()
    policy = Policy.model_validate({"limits": {"max_cost_usd": 0.001}})
    warden = Warden(policy, sinks=[sink], log_events=False)
    run = warden.run(user="u1")
    step = run.before_llm_call("gpt-4o-mini", input_tokens=3000, max_tokens=100)
    event = run.after_llm_call(step, Usage(input_tokens=3000, output_tokens=100))  # 51 %
    assert isinstance(event, CostEvent) and event.cost_usd > 0  # the caller's, still built
    assert not any(isinstance(e, CostEvent) for e in sink.events)
    assert any(isinstance(e, BudgetAlert) for e in sink.events)  # alerts still go out
    step = run.before_llm_call("gpt-4o-mini", input_tokens=100, max_tokens=10)
    assert run.record_llm_call(step, Usage(input_tokens=100, output_tokens=10)) is None


def test_a_sink_is_asked_about_cost_events_once_per_run_when_it_opens() -> None:
    """A sink that starts wanting CostEvents mid-run gets them from the next run on."""
    from budgetwarden import Warden
    from budgetwarden.events import Event

    class Switchable:
        def __init__(self) -> None:
            self.on = False
            self.asked = 0
            self.events: list[Event] = []

        def wants(self, kind: type[Event]) -> bool:
            if kind is CostEvent:
                self.asked += 1
            return self.on or kind is not CostEvent

        def emit(self, event: Event) -> None:
            self.events.append(event)

    sink = Switchable()
    warden = Warden(Policy(), sinks=[sink], log_events=False)
    first = warden.run(user="u1")
    sink.on = True  # e.g. debug logging turned on while the run goes
    for _ in range(3):
        step = first.before_llm_call("gpt-4o-mini", input_tokens=10, max_tokens=5)
        first.record_llm_call(step, Usage(input_tokens=10, output_tokens=5))
    assert sink.asked == 1 and not any(isinstance(e, CostEvent) for e in sink.events)
    second = warden.run(user="u1")
    step = second.before_llm_call("gpt-4o-mini", input_tokens=10, max_tokens=5)
    second.record_llm_call(step, Usage(input_tokens=10, output_tokens=5))
    assert [e.run_id for e in sink.events if isinstance(e, CostEvent)] == [second.id]
