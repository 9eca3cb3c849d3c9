"""Under budget pressure the next call's context is compressed, the task kept."""

from __future__ import annotations

from crewai_fakes import ScriptedLLM, SearchTool, make_crew

from budgetwarden import Limits, ModelPrice, Policy, Thresholds, Warden
from budgetwarden.integrations.crewai import guard_crew

PRICED = "scripted-priced"
#: 8 output tokens cost $0.25 (binary-exact); input is free.
PRICES = {PRICED: ModelPrice(input_cost_per_token=0.0, output_cost_per_token=1 / 32)}


def kickoff(degrade: float) -> ScriptedLLM:
    llm = ScriptedLLM(model=PRICED, completion_tokens=8, max_tokens=8)
    policy = Policy(
        limits=Limits(max_cost_usd=1.0),
        thresholds=Thresholds(alerts=[0.5], warn=0.5, degrade=degrade),
        prices=PRICES,
    )
    guard_crew(make_crew([llm], tools=[SearchTool()]), Warden(policy)).kickoff()
    return llm


def test_calls_past_the_degrade_level_get_a_compressed_context_with_the_task() -> None:
    llm = kickoff(degrade=0.5)  # two calls spend $0.50: the third is under pressure

    sizes = [len(messages) for messages in llm.seen]
    assert llm.calls == 4
    assert sizes[2] < sizes[1] + 2  # the third call would have two more messages
    third = llm.seen[2]
    assert [m["role"] for m in third] == ["system", "user", "assistant", "user"]
    assert "research topic 0" in str(third[1]["content"])
    assert "q2" in str(third[2]["content"])  # the newest action and its observation


def test_calls_below_the_degrade_level_keep_their_whole_context() -> None:
    llm = kickoff(degrade=1.0)

    sizes = [len(messages) for messages in llm.seen]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
