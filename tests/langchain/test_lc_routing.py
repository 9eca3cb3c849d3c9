"""BudgetMiddleware routing: task-class tiers, escalation, fallback, downgrade and compression."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain.agents.middleware import ModelRetryMiddleware
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from lc_fakes import CountedTool, ScriptedChatModel, agent_graph, inputs, make_warden

from budgetwarden import Limits, Policy, Routing
from budgetwarden.integrations.langchain import BudgetMiddleware, _models

CHEAP, STRONG, SPARE = "tier-cheap", "tier-strong", "tier-spare"
PRICES = {
    CHEAP: {"input_cost_per_token": 1e-5, "output_cost_per_token": 0.0},
    STRONG: {"input_cost_per_token": 3.2e-4, "output_cost_per_token": 0.0},
    SPARE: {"input_cost_per_token": 1e-5, "output_cost_per_token": 0.0},
}


class RateLimitError(Exception):
    """Named like a provider's rate-limit error."""


class TierModels:
    """One scripted chat model per tier name: the middleware's ``model_factory``."""

    def __init__(self, **models: ScriptedChatModel) -> None:
        self.models = models
        self.built: list[str] = []

    def __call__(self, name: str) -> ScriptedChatModel:
        self.built.append(name)
        return self.models.setdefault(name, ScriptedChatModel(model_name=name))


def routed_agent(
    routing: Routing,
    tiers: TierModels,
    *,
    task_class: str | None = None,
    caller: ScriptedChatModel | None = None,
    limits: Limits | None = None,
) -> tuple[Any, Any, ScriptedChatModel]:
    """An agent whose own model is the strong tier, governed by a routing policy."""
    limits = limits or Limits(max_iterations=8)
    warden, sink = make_warden(Policy(routing=routing, prices=PRICES, limits=limits))
    caller = caller or ScriptedChatModel(model_name=STRONG)
    middleware = BudgetMiddleware(
        warden, task_class=task_class, model_factory=tiers, compress_to_tokens=40
    )
    return agent_graph(caller, [CountedTool().tool], middleware=[middleware]), sink, caller


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_task_class_routes_every_call_to_its_tier(mode: str) -> None:
    routing = Routing(tiers=[CHEAP, STRONG], task_classes={"extraction": 0})
    tiers = TierModels(**{CHEAP: ScriptedChatModel(model_name=CHEAP, answer_after=2)})
    agent, sink, caller = routed_agent(routing, tiers, task_class="extraction")
    result = agent.invoke(inputs()) if mode == "sync" else asyncio.run(agent.ainvoke(inputs()))
    assert result["messages"][-1].text == "Done after 2 tool turns."
    assert (caller.calls, tiers.models[CHEAP].calls) == (0, 3)
    assert tiers.built == [CHEAP], "the routed model is built once"
    llm = [e for e in sink.cost_events if e.kind == "llm"]
    assert {(e.model, e.tier, e.route_reason) for e in llm} == {(CHEAP, 0, "task_class=extraction")}


def test_the_callers_model_is_kept_when_routing_picks_it() -> None:
    routing = Routing(tiers=[CHEAP, STRONG])
    tiers = TierModels()
    agent, sink, caller = routed_agent(routing, tiers, limits=Limits(max_iterations=2))
    agent.invoke(inputs())
    assert caller.calls == 2
    assert tiers.built == []
    assert {e.route_reason for e in sink.cost_events if e.kind == "llm"} == {
        f"caller model {STRONG}"
    }


class SloppyModel(ScriptedChatModel):
    """Its first answer also asks for a tool in a form that cannot be parsed."""

    def _next(self, messages: Any, **kwargs: Any) -> Any:
        result = super()._next(messages, **kwargs)
        if self.calls == 1:
            message = result.generations[0].message
            message.invalid_tool_calls = [
                {"name": "search", "args": "{not json", "id": "bad-1", "error": "bad json"}
            ]
        return result


def test_a_tool_call_error_escalates_the_next_call_one_tier_up() -> None:
    routing = Routing(tiers=[CHEAP, STRONG], task_classes={"extraction": 0})
    tiers = TierModels(**{CHEAP: SloppyModel(model_name=CHEAP)})
    strong = ScriptedChatModel(model_name=STRONG, answer_after=0)
    agent, sink, _ = routed_agent(routing, tiers, task_class="extraction", caller=strong)
    result = agent.invoke(inputs())
    assert result["messages"][-1].text == "Done after 1 tool turns."
    assert (tiers.models[CHEAP].calls, strong.calls) == (1, 1)
    assert tiers.built == [CHEAP], "the agent's own model serves its own tier"
    llm = [e for e in sink.cost_events if e.kind == "llm"]
    assert [(e.model, e.outcome) for e in llm] == [(CHEAP, "tool_call_error"), (STRONG, "ok")]
    assert llm[1].route_reason == "escalate: tool_call_error"


def test_an_outage_falls_back_to_the_next_model_on_retry() -> None:
    class Flaky(ScriptedChatModel):
        def _next(self, messages: Any, **kwargs: Any) -> Any:
            self.calls += 1
            raise RateLimitError("429 slow down")

    routing = Routing(
        tiers=[CHEAP, STRONG], task_classes={"extraction": 0}, fallbacks={CHEAP: [SPARE]}
    )
    tiers = TierModels(**{CHEAP: Flaky(model_name=CHEAP)})
    tiers.models[SPARE] = ScriptedChatModel(model_name=SPARE, answer_after=0)
    warden, sink = make_warden(Policy(routing=routing, prices=PRICES))
    middleware = [
        ModelRetryMiddleware(max_retries=2, initial_delay=0, jitter=False),
        BudgetMiddleware(warden, task_class="extraction", model_factory=tiers),
    ]
    agent = agent_graph(ScriptedChatModel(model_name=STRONG), [], middleware=middleware)
    result = agent.invoke(inputs())
    assert result["messages"][-1].text == "Done after 0 tool turns."
    llm = [e for e in sink.cost_events if e.kind == "llm"]
    assert [(e.model, e.outcome) for e in llm] == [(CHEAP, "rate_limited"), (SPARE, "ok")]
    assert llm[1].route_reason == f"fallback: rate_limited from {CHEAP}"


def test_budget_pressure_downgrades_one_tier_and_compresses_the_context() -> None:
    # Strong calls really cost 1000 * 3.2e-4 = $0.32: after three, $0.96 of $1.00 is past the
    # degrade level (90%), so the fourth call goes one tier down with compressed context.
    routing = Routing(tiers=[CHEAP, STRONG], task_classes={"research": 1})
    tiers = TierModels(**{CHEAP: ScriptedChatModel(model_name=CHEAP, input_tokens=1000)})
    strong = ScriptedChatModel(model_name=STRONG, input_tokens=1000)
    agent, sink, _ = routed_agent(
        routing,
        tiers,
        task_class="research",
        caller=strong,
        limits=Limits(max_cost_usd=1.0, max_iterations=5),
    )
    result = agent.invoke(inputs())
    llm = [e for e in sink.cost_events if e.kind == "llm"]
    assert [e.model for e in llm] == [STRONG, STRONG, STRONG, CHEAP, CHEAP]
    assert (strong.calls, tiers.models[CHEAP].calls) == (3, 2)
    assert llm[3].route_reason.startswith("downgrade: ")
    assert "max_cost_usd" in llm[3].route_reason
    assert "degrade" in {a.action for a in sink.alerts}
    # The cheap model saw the task and the latest turn only, with no orphan tool answer.
    prompt = tiers.models[CHEAP].prompts[0]
    assert len(prompt) < len(result["messages"]) - 3
    assert isinstance(prompt[0], HumanMessage)
    asked = {c["id"] for m in prompt if isinstance(m, AIMessage) for c in m.tool_calls}
    assert all(m.tool_call_id in asked for m in prompt if isinstance(m, ToolMessage))
    assert isinstance(prompt[-1], ToolMessage)


def test_default_model_factory_reads_provider_prefixes(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, str | None]] = []

    def fake_init(model: str, model_provider: str | None = None) -> ScriptedChatModel:
        seen.append((model, model_provider))
        return ScriptedChatModel(model_name=model)

    monkeypatch.setattr("langchain.chat_models.init_chat_model", fake_init)
    monkeypatch.setattr(_models.importlib.util, "find_spec", lambda name: None)
    _models.default_model_factory("anthropic/claude-3-5-haiku-latest")
    _models.default_model_factory("gpt-4o-mini")
    assert seen == [("claude-3-5-haiku-latest", "anthropic"), ("gpt-4o-mini", None)]
