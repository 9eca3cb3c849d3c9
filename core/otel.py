"""OpenTelemetry: a sink that turns events into GenAI spans and metrics.

``Warden(policy, sinks=[OTelSink()])`` (needs ``pip install 'budgetwarden[otel]'``). Each
``CostEvent`` becomes one span, a child of whatever span is current when the call ends:

- a model call: ``chat <request model>`` (kind CLIENT) with ``gen_ai.operation.name="chat"``,
  ``gen_ai.provider.name`` and ``gen_ai.system`` (the conventions' names: ``aws.bedrock``,
  ``gcp.vertex_ai``, ``azure.ai.openai``...), ``gen_ai.request.model`` (the model routed
  to), ``gen_ai.response.model`` (the model that answered), ``gen_ai.usage.input_tokens``,
  ``gen_ai.usage.output_tokens``, ``gen_ai.usage.cache_read.input_tokens``,
  ``gen_ai.usage.cache_creation.input_tokens``, ``gen_ai.usage.reasoning.output_tokens``;
- a tool call: ``execute_tool <tool>`` with ``gen_ai.operation.name="execute_tool"`` and
  ``gen_ai.tool.name``;
- both: ``gen_ai.agent.name``, ``error.type`` when the call failed, and
  ``budgetwarden.cost_usd``, ``.reserved_usd``, ``.overshoot_usd``, ``.run_id``,
  ``.parent_run_id``, ``.user``, ``.workspace``, ``.workflow``, ``.task_class``, ``.route``,
  ``.route_reason``, ``.outcome``, ``.estimated``, ``.service_tier`` (a provider's tier billed
  apart, such as OpenAI's ``priority``), ``.web_search_requests`` (hosted web searches).

The span starts ``latency_s`` before the event (its end). Metrics (GenAI semantic
conventions): ``gen_ai.client.token.usage`` (histogram, ``{token}``, by ``gen_ai.token.type``
input/output) and ``gen_ai.client.operation.duration`` (histogram, seconds), plus
``budgetwarden.cost`` (counter, USD) and ``budgetwarden.budget.alerts`` (counter, by cap and
action). Metric attributes stay low-cardinality: operation, provider, models, and the
attribution names in ``metric_attributes`` (agent, workflow, task class by default; add
``"user"`` only if your users are few). A ``BudgetAlert`` or ``Notice`` also becomes an
event on the current span, if one is recording.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .events import BudgetAlert, CostEvent, Event, Notice

try:
    from opentelemetry import metrics, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "budgetwarden.otel needs opentelemetry: pip install 'budgetwarden[otel]'"
    ) from exc

__all__ = ["OTelSink"]

_SCOPE = "budgetwarden"
_TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304]
_DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48]
_BW_FIELDS = (
    "run_id",
    "parent_run_id",
    "user",
    "workspace",
    "workflow",
    "task_class",
    "key",
    "thread",
    "feature",
    "route",
    "route_reason",
    "outcome",
    "tier",
    "service_tier",
)


def _requested_model(event: CostEvent) -> str | None:
    """The model the call was routed to: the route's model ('tier N: model'), else the model."""
    route = event.route
    if route and route.startswith("tier ") and ": " in route:
        return route.split(": ", 1)[1]
    return route or event.model


class OTelSink:
    """A sink emitting one GenAI span per ``CostEvent`` and GenAI metrics.

    ``tracer_provider`` / ``meter_provider``: the providers to use (default: the global
    ones set with ``trace.set_tracer_provider`` / ``metrics.set_meter_provider``).
    ``metric_attributes``: attribution names added to metrics as ``budgetwarden.<name>``.
    """

    def __init__(
        self,
        tracer_provider: Any | None = None,
        meter_provider: Any | None = None,
        *,
        metric_attributes: Sequence[str] = ("agent", "workflow", "task_class"),
    ) -> None:
        from . import __version__

        self._tracer = trace.get_tracer(_SCOPE, __version__, tracer_provider=tracer_provider)
        meter = metrics.get_meter(_SCOPE, __version__, meter_provider=meter_provider)
        self._metric_names = tuple(metric_attributes)
        self._tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
        )
        self._duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self._cost = meter.create_counter(
            "budgetwarden.cost", unit="USD", description="Dollars spent by model and tool calls."
        )
        self._alerts = meter.create_counter(
            "budgetwarden.budget.alerts",
            unit="{alert}",
            description="Budget threshold crossings.",
        )

    def emit(self, event: Event) -> None:
        """Record one event: a span and metrics for a cost event, a span event otherwise."""
        if isinstance(event, CostEvent):
            self._span(event)
            self._record(event)
        elif isinstance(event, BudgetAlert):
            self._alerts.add(
                1, {"budgetwarden.cap": event.cap, "budgetwarden.action": event.action}
            )
            self._span_event(f"budgetwarden.alert {event.cap}", event)
        elif isinstance(event, Notice):
            self._span_event(f"budgetwarden.notice {event.code}", event)

    # ------------------------------------------------------------------ spans
    def _span(self, event: CostEvent) -> None:
        end = int(event.ts * 1e9)
        start = end - int((event.latency_s or 0.0) * 1e9)
        llm = event.kind == "llm"
        model = _requested_model(event) or event.model or "unknown"  # semconv: the request's
        name = f"chat {model}" if llm else f"execute_tool {event.tool}"
        span = self._tracer.start_span(
            name,
            kind=SpanKind.CLIENT if llm else SpanKind.INTERNAL,
            attributes=_span_attributes(event),
            start_time=start,
        )
        if event.status != "ok":
            span.set_status(Status(StatusCode.ERROR, event.outcome))
        span.end(end_time=end)

    def _span_event(self, name: str, event: BudgetAlert | Notice) -> None:
        span = trace.get_current_span()
        if span.is_recording():
            data = {k: v for k, v in event.to_dict().items() if _is_attribute(v)}
            span.add_event(name, attributes=data, timestamp=int(event.ts * 1e9))

    # ------------------------------------------------------------------ metrics
    def _record(self, event: CostEvent) -> None:
        attrs = _common_attributes(event)
        for name in self._metric_names:
            value = getattr(event, name, None)
            if value is not None:
                attrs[f"budgetwarden.{name}"] = str(value)
        if event.kind == "llm":
            self._tokens.record(event.input_tokens, {**attrs, "gen_ai.token.type": "input"})
            self._tokens.record(event.output_tokens, {**attrs, "gen_ai.token.type": "output"})
        if event.latency_s is not None:
            duration_attrs = dict(attrs)
            if event.status != "ok":
                duration_attrs["error.type"] = event.outcome
            self._duration.record(event.latency_s, duration_attrs)
        self._cost.add(event.cost_usd, attrs)


#: LiteLLM's provider prefixes (what events carry) whose GenAI semantic-convention name
#: differs; the others are the same in both.
_SEMCONV_PROVIDERS = {
    "azure": "azure.ai.openai",
    "azure_ai": "azure.ai.inference",
    "bedrock": "aws.bedrock",
    "bedrock_converse": "aws.bedrock",
    "vertex_ai": "gcp.vertex_ai",
    "gemini": "gcp.gemini",
    "mistral": "mistral_ai",
    "xai": "x_ai",
    "watsonx": "ibm.watsonx.ai",
}


def _is_attribute(value: Any) -> bool:
    return isinstance(value, str | bool | int | float)


def _common_attributes(event: CostEvent) -> dict[str, Any]:
    """Operation, provider and models: the attributes both spans and metrics carry."""
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat" if event.kind == "llm" else "execute_tool"
    }
    if event.kind == "llm":
        if event.provider:
            provider = _SEMCONV_PROVIDERS.get(event.provider, event.provider)
            attrs["gen_ai.provider.name"] = provider
            attrs["gen_ai.system"] = provider
        requested = _requested_model(event)
        if requested:
            attrs["gen_ai.request.model"] = requested
        if event.model:
            attrs["gen_ai.response.model"] = event.model
    elif event.tool:
        attrs["gen_ai.tool.name"] = event.tool
    return attrs


def _span_attributes(event: CostEvent) -> dict[str, Any]:
    attrs = _common_attributes(event)
    if event.kind == "llm":
        attrs["gen_ai.usage.input_tokens"] = event.input_tokens
        attrs["gen_ai.usage.output_tokens"] = event.output_tokens
        attrs["gen_ai.usage.cache_read.input_tokens"] = event.cache_read_tokens
        attrs["gen_ai.usage.cache_creation.input_tokens"] = event.cache_write_tokens
        attrs["gen_ai.usage.reasoning.output_tokens"] = event.reasoning_tokens
        if event.web_search_requests:
            attrs["budgetwarden.web_search_requests"] = event.web_search_requests
    if event.agent:
        attrs["gen_ai.agent.name"] = event.agent
    if event.status != "ok":
        attrs["error.type"] = event.outcome
    attrs["budgetwarden.cost_usd"] = event.cost_usd
    attrs["budgetwarden.reserved_usd"] = event.reserved_usd
    attrs["budgetwarden.overshoot_usd"] = event.overshoot_usd
    attrs["budgetwarden.estimated"] = event.estimated
    for name in _BW_FIELDS:
        value = getattr(event, name)
        if value is not None:
            attrs[f"budgetwarden.{name}"] = value
    return attrs
