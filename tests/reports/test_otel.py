"""The OpenTelemetry sink, with the SDK's in-memory span exporter and metric reader."""

from __future__ import annotations

from typing import Any

import pytest

from budgetwarden import BudgetAlert, CostEvent, Policy, Usage, Warden

from .eventsets import at


@pytest.fixture
def otel(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)  # tests/conftest.py turns it off
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from budgetwarden.otel import OTelSink

    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[reader])
    sink = OTelSink(tracer_provider=tracer_provider, meter_provider=meter_provider)
    return sink, exporter, reader, tracer_provider


def _metrics(reader: Any) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for resource in reader.get_metrics_data().resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found[metric.name] = list(metric.data.data_points)
    return found


def test_a_model_call_becomes_a_genai_client_span(otel: Any) -> None:
    sink, exporter, _, _ = otel
    sink.emit(
        CostEvent(
            ts=at(1), run_id="r1", agent="researcher", user="u1", workflow="triage",
            task_class="extraction", provider="openai", model="gpt-4o-2024-08-06",
            route="tier 1: gpt-4o", route_reason="task_class=extraction", input_tokens=1200,
            output_tokens=80, cache_read_tokens=1000, cost_usd=0.0042, latency_s=0.75,
            service_tier="priority", web_search_requests=2,
        )
    )  # fmt: skip
    (span,) = exporter.get_finished_spans()
    assert span.name == "chat gpt-4o"  # the conventions name it after the request's model
    assert span.kind.name == "CLIENT"
    a = span.attributes
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == a["gen_ai.system"] == "openai"
    assert a["gen_ai.request.model"] == "gpt-4o"  # what the route asked for
    assert a["gen_ai.response.model"] == "gpt-4o-2024-08-06"
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (1200, 80)
    assert a["gen_ai.usage.cache_read.input_tokens"] == 1000
    assert a["gen_ai.agent.name"] == "researcher"
    assert a["budgetwarden.cost_usd"] == 0.0042
    assert (a["budgetwarden.run_id"], a["budgetwarden.user"]) == ("r1", "u1")
    assert a["budgetwarden.route_reason"] == "task_class=extraction"
    assert a["budgetwarden.service_tier"] == "priority"
    assert a["budgetwarden.web_search_requests"] == 2
    assert span.end_time == int(at(1) * 1e9)
    assert span.end_time - span.start_time == 750_000_000


@pytest.mark.parametrize(
    ("provider", "named"),
    [("bedrock", "aws.bedrock"), ("vertex_ai", "gcp.vertex_ai"), ("azure", "azure.ai.openai"),
     ("gemini", "gcp.gemini"), ("mistral", "mistral_ai"), ("anthropic", "anthropic")],
)  # fmt: skip
def test_providers_carry_the_semantic_conventions_names(
    otel: Any, provider: str, named: str
) -> None:
    sink, exporter, _, _ = otel
    sink.emit(CostEvent(ts=at(1), provider=provider, model=f"{provider}/m", cost_usd=0.01))
    (span,) = exporter.get_finished_spans()
    assert span.attributes["gen_ai.provider.name"] == span.attributes["gen_ai.system"] == named


def test_a_failed_tool_call_is_an_error_span(otel: Any) -> None:
    sink, exporter, _, _ = otel
    sink.emit(
        CostEvent(
            ts=at(1), kind="tool", tool="search", run_id="r1", status="error",
            outcome="error", cost_usd=0.01,
        )
    )  # fmt: skip
    (span,) = exporter.get_finished_spans()
    assert span.name == "execute_tool search"
    assert span.attributes["gen_ai.tool.name"] == "search"
    assert span.attributes["error.type"] == "error"
    assert span.status.status_code.name == "ERROR"


def test_metrics_use_the_genai_names(otel: Any) -> None:
    sink, _, reader, _ = otel
    for model, inp in (("gpt-4o", 1000), ("gpt-4o", 3000), ("gpt-4o-mini", 500)):
        sink.emit(
            CostEvent(
                ts=at(1), agent="a", provider="openai", model=model, input_tokens=inp,
                output_tokens=100, cost_usd=0.5, latency_s=1.0,
            )
        )  # fmt: skip
    sink.emit(BudgetAlert(ts=at(1), cap="max_cost_usd", level=0.8, action="warn", ratio=0.8,
                          used=8, limit=10))  # fmt: skip
    metrics = _metrics(reader)
    tokens = {
        (p.attributes["gen_ai.response.model"], p.attributes["gen_ai.token.type"]): p.sum
        for p in metrics["gen_ai.client.token.usage"]
    }
    assert tokens == {
        ("gpt-4o", "input"): 4000,
        ("gpt-4o", "output"): 200,
        ("gpt-4o-mini", "input"): 500,
        ("gpt-4o-mini", "output"): 100,
    }
    assert sum(p.count for p in metrics["gen_ai.client.operation.duration"]) == 3
    assert sum(p.value for p in metrics["budgetwarden.cost"]) == pytest.approx(1.5)
    (alert,) = metrics["budgetwarden.budget.alerts"]
    assert alert.value == 1 and alert.attributes["budgetwarden.cap"] == "max_cost_usd"
    point = metrics["budgetwarden.cost"][0]
    assert point.attributes["budgetwarden.agent"] == "a"
    assert "budgetwarden.user" not in point.attributes  # users stay out of metrics


def test_spans_of_a_warden_run_nest_under_the_current_span(otel: Any) -> None:
    sink, exporter, _, tracer_provider = otel
    warden = Warden(Policy(), sinks=[sink], log_events=False)
    tracer = tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("handle request") as parent:
        with warden.run(agent="researcher", user="u1") as run:
            step = run.before_llm_call(model="gpt-4o", input_tokens=100, max_tokens=10)
            run.after_llm_call(step, usage=Usage(input_tokens=100, output_tokens=10))
            tool = run.before_tool_call("search", {"q": "x"})
            run.after_tool_call(tool)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"chat gpt-4o", "execute_tool search", "handle request"}
    chat = spans["chat gpt-4o"]
    assert chat.parent is not None and chat.parent.span_id == parent.get_span_context().span_id
    assert chat.attributes["budgetwarden.run_id"] == run.id
    assert chat.attributes["budgetwarden.cost_usd"] == pytest.approx(0.00035)  # 100*2.5e-6+10*1e-5


def test_without_opentelemetry_the_import_error_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib
    import sys

    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    monkeypatch.delitem(sys.modules, "budgetwarden.otel", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'budgetwarden\[otel\]'"):
        importlib.import_module("budgetwarden.otel")
