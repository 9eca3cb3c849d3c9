"""RoutedLLM calls the tier the policy chose: one reservation per call, a tier down on pressure."""

from __future__ import annotations

from typing import Any

import pytest
from crewai_fakes import ScriptedLLM, SearchTool, make_crew

from budgetwarden import Limits, ListSink, ModelPrice, Policy, Routing, Thresholds, Warden
from budgetwarden.integrations.crewai import RoutedLLM, guard_crew

CHEAP, STRONG = "tier-cheap", "tier-strong"
#: Output tokens only, binary-exact prices: 8 tokens cost $1/128 on the cheap tier, $1/4 on
#: the strong one.
PRICES = {
    CHEAP: ModelPrice(input_cost_per_token=0.0, output_cost_per_token=1 / 1024),
    STRONG: ModelPrice(input_cost_per_token=0.0, output_cost_per_token=1 / 32),
}
TOKENS = 8


class Tiers:
    """Scripted LLMs for each tier, built by RoutedLLM's factory."""

    def __init__(self, **options: Any) -> None:
        self.llms = {
            name: ScriptedLLM(model=name, completion_tokens=TOKENS, **options)
            for name in (CHEAP, STRONG)
        }

    def __call__(self, model: str) -> ScriptedLLM:
        return self.llms[model]

    def calls(self) -> tuple[int, int]:
        return self.llms[CHEAP].calls, self.llms[STRONG].calls


def routed_warden(degrade: float = 0.9, **limits: float) -> Warden:
    policy = Policy(
        limits=Limits(**limits),
        routing=Routing(tiers=[CHEAP, STRONG], task_classes={"hard": STRONG}),
        thresholds=Thresholds(alerts=[0.5], warn=0.5, degrade=degrade),
        prices=PRICES,
    )
    return Warden(policy)


def routed(tiers: Tiers) -> RoutedLLM:
    return RoutedLLM(factory=tiers, max_tokens=TOKENS)


@pytest.mark.parametrize("native", [False, True], ids=["react", "native-tools"])
def test_routed_llm_calls_the_tier_of_the_task_class(native: bool) -> None:
    tiers = Tiers(native=native)
    crew = make_crew([routed(tiers)], tools=[SearchTool()])

    result = guard_crew(crew, routed_warden(max_iterations=3), task_class="hard").kickoff()

    assert tiers.calls() == (0, 3)
    assert result.report is not None
    assert result.report.iterations == 3
    assert result.report.models == [STRONG]


def test_routed_llm_without_a_task_class_starts_on_the_cheapest_tier() -> None:
    tiers = Tiers()
    crew = make_crew([routed(tiers)], tools=[SearchTool()])

    guard_crew(crew, routed_warden(max_iterations=2)).kickoff()

    assert tiers.calls() == (2, 0)


def test_budget_pressure_moves_the_next_call_one_tier_down() -> None:
    # Strong calls cost $0.25: after three the run is at 75% of $1, its degrade level.
    tiers = Tiers()
    crew = make_crew([routed(tiers)], tools=[SearchTool()])
    warden = routed_warden(degrade=0.75, max_cost_usd=1.0, max_iterations=6)

    result = guard_crew(crew, warden, task_class="hard").kickoff()

    assert tiers.calls() == (3, 3)
    assert tiers.llms[CHEAP].started[0] > tiers.llms[STRONG].started[-1]
    assert result.report is not None
    assert result.report.cost_usd == 0.75 + 3 / 128
    assert result.cap == "max_iterations"


def test_each_routed_call_is_reserved_exactly_once_forced_final_answer_included() -> None:
    # max_iter=2: two executor calls (hooks dispatched by CrewAI), then CrewAI's forced
    # final answer, which calls the LLM directly (hooks dispatched by RoutedLLM).
    tiers = Tiers()
    llm = routed(tiers)
    crew = make_crew([llm], tools=[SearchTool()], max_iter=2)

    result = guard_crew(crew, routed_warden()).kickoff()

    assert tiers.calls() == (3, 0)
    assert result.report is not None and result.report.iterations == 3
    assert result.report.output_tokens == 3 * TOKENS
    assert llm.get_token_usage_summary().completion_tokens == 3 * TOKENS


def test_a_refused_routed_call_never_reaches_any_tier() -> None:
    tiers = Tiers()
    crew = make_crew([routed(tiers)], tools=[SearchTool()])

    result = guard_crew(crew, routed_warden(max_iterations=1)).kickoff()

    assert sum(tiers.calls()) == 1
    assert result.cap == "max_iterations"


def test_routed_llm_outside_a_guarded_kickoff_calls_its_own_model() -> None:
    tiers = Tiers(finish_after=0)
    llm = RoutedLLM(STRONG, factory=tiers)

    answer = llm.call("hello")

    assert answer == "Thought: done\nFinal Answer: answer 1 from tier-strong"
    assert tiers.calls() == (0, 1)


def test_routed_llm_without_model_or_routing_says_what_is_missing() -> None:
    with pytest.raises(ValueError, match="Routing tiers"):
        RoutedLLM(factory=Tiers()).call("hello")


class APITimeoutError(Exception):
    """A provider's timeout, as the OpenAI and LiteLLM clients name it."""


def test_after_a_timeout_crewai_s_retry_goes_to_the_fallback_model() -> None:
    class TimesOutOnce(ScriptedLLM):
        def call(self, *args: Any, **kwargs: Any) -> Any:
            if not self.started:
                self._started.append(0.0)
                raise APITimeoutError("the cheap tier timed out")
            return super().call(*args, **kwargs)

    tiers = Tiers()
    tiers.llms[CHEAP] = TimesOutOnce(model=CHEAP, completion_tokens=TOKENS)
    policy = Policy(
        limits=Limits(max_iterations=3),
        routing=Routing(tiers=[CHEAP, STRONG], fallbacks={CHEAP: [STRONG]}),
        prices=PRICES,
    )
    crew = make_crew([routed(tiers)], tools=[SearchTool()])

    result = guard_crew(crew, Warden(policy)).kickoff()

    cheap, strong = tiers.llms[CHEAP], tiers.llms[STRONG]
    assert (cheap.calls, strong.calls) == (1, 1)  # the timed-out call never answered
    assert strong.started[0] < cheap.started[1]  # CrewAI's retry went to the fallback first
    assert result.report is not None
    assert result.report.errors == 1 and result.report.iterations == 3
    assert result.report.input_tokens == 2 * 100  # the failed call is committed at zero


def test_a_plain_llm_under_a_routing_policy_is_reserved_and_priced_as_itself() -> None:
    """Only ``RoutedLLM`` switches models: an agent's own LLM answers every call, so a routing
    policy that would pick the cheap tier must not price (or reserve) its calls as that tier
    (24 of 26 gpt-4o calls were recorded at gpt-4o-mini's price, the cap crossed 5.9x)."""
    own = ScriptedLLM(model=STRONG, completion_tokens=TOKENS, max_tokens=TOKENS)
    crew = make_crew([own], tools=[SearchTool()])
    policy = Policy(
        limits=Limits(max_cost_usd=1.0),
        routing=Routing(tiers=[CHEAP, STRONG], task_classes={"easy": CHEAP}),
        prices=PRICES,
    )
    sink = ListSink()
    result = guard_crew(crew, Warden(policy, sinks=[sink]), task_class="easy").kickoff()
    assert result.report is not None and result.report.stop_reason == "max_cost_usd"
    assert own.calls == 4  # $0.25 each: four fit $1
    calls = [e for e in sink.cost_events if e.kind == "llm"]
    assert [e.model for e in calls] == [STRONG] * 4
    assert {e.route_reason for e in calls} == {"caller model (the caller cannot switch models)"}
    assert result.report.cost_usd == pytest.approx(1.0)
