"""Issue 11 on LangChain: final-answer calls, budget hints, thread budgets and nested runs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import ModelCallLimitMiddleware
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.tools import StructuredTool
from langgraph.checkpoint.memory import InMemorySaver
from lc_fakes import CountedTool, ScriptedChatModel, agent_graph, inputs, make_warden

from budgetwarden import Budget, BudgetExceeded, Limits, Policy
from budgetwarden.integrations.langchain import BudgetCallbackHandler, BudgetMiddleware
from budgetwarden.run import FINAL_ANSWER_INSTRUCTION

MODES = ["sync", "async"]
HOUSE_PRICE = {"house-model": {"input_cost_per_token": 0.0, "output_cost_per_token": 2e-5}}


def house_model(**kwargs: Any) -> ScriptedChatModel:
    """A model whose every call costs exactly its reservation: 50 output tokens, $0.001."""
    return ScriptedChatModel(model_name="house-model", output_tokens=50, max_tokens=50, **kwargs)


def run_agent(agent: Any, mode: str, text: str = "find the answer", **config: Any) -> Any:
    if mode == "sync":
        return agent.invoke(inputs(text), config=config or None)
    return asyncio.run(agent.ainvoke(inputs(text), config=config or None))


def on_thread(thread: str, **config: Any) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}, **config}


def system_text(prompt: list[Any]) -> str:
    return prompt[0].text if prompt and isinstance(prompt[0], SystemMessage) else ""


def note_text(prompt: list[Any]) -> str:
    """The note budgetwarden added as the call's last message (after the agent's turns)."""
    last = prompt[-1] if prompt else None
    after_turns = any(isinstance(m, AIMessage) for m in prompt)
    return last.text if isinstance(last, HumanMessage) and after_turns else ""


# ---- final-answer reserve ----------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_the_last_call_a_cap_allows_has_no_tools_and_its_answer_ends_the_run(
    mode: str, model: ScriptedChatModel, search: CountedTool
) -> None:
    warden, _ = make_warden(Policy(limits=Limits(max_iterations=3, final_answer=True)))
    agent = agent_graph(
        model, [search.tool], middleware=[BudgetMiddleware(warden)], system_prompt="Be brief."
    )
    result = run_agent(agent, mode)
    assert (model.calls, search.calls) == (3, 2)
    assert model.offered == [["search"], ["search"], []]
    assert note_text(model.prompts[-1]) == FINAL_ANSWER_INSTRUCTION
    assert all(note_text(p) == "" for p in model.prompts[:-1])
    assert {system_text(p) for p in model.prompts} == {"Be brief."}, "the cached prefix stays"
    final = result["messages"][-1]
    assert isinstance(final, AIMessage) and not final.tool_calls
    assert final.text == "Best answer so far, after 2 tool turns.", "the model's own words"
    stop = final.response_metadata["budgetwarden"]
    assert (stop["cap"], stop["partial"], stop["final_answer"]) == ("max_iterations", True, True)
    assert stop["report"]["iterations"] == 3


def test_a_dollar_cap_keeps_the_money_for_a_final_answer(search: CountedTool) -> None:
    # $0.001 a call: the third leaves $0.0005, too little for a fourth, so it is the last.
    model = house_model()
    policy = Policy(limits=Limits(max_cost_usd=0.0035, final_answer=True), prices=HOUSE_PRICE)
    warden, _ = make_warden(policy)
    result = run_agent(
        agent_graph(model, [search.tool], middleware=[BudgetMiddleware(warden)]), "sync"
    )
    final = result["messages"][-1]
    assert model.offered == [["search"], ["search"], []]
    assert final.text.startswith("Best answer so far")
    stop = final.response_metadata["budgetwarden"]
    assert stop["cap"] == "max_cost_usd"
    assert stop["report"]["cost_usd"] == pytest.approx(0.003)


@pytest.mark.parametrize("cap", [0.004 + i * 0.0007 for i in range(0, 40, 3)])
def test_a_growing_prompt_still_ends_with_a_final_answer_under_a_dollar_cap(cap: float) -> None:
    """Each call's prompt re-sends the last answer and tool result, so the next call costs
    more than this one: the final call is foreseen with that growth, not this call's size."""
    price = {"house": {"input_cost_per_token": 1e-5, "output_cost_per_token": 2e-5}}
    model = ScriptedChatModel(
        model_name="house", input_tokens=None, output_tokens=50, max_tokens=50
    )
    policy = Policy(limits=Limits(max_cost_usd=cap, final_answer=True), prices=price)
    warden, _ = make_warden(policy)
    search = CountedTool()
    final = agent_graph(model, [search.tool], middleware=[BudgetMiddleware(warden)]).invoke(
        inputs("find the answer")
    )["messages"][-1]
    assert model.offered[-1] == [] and final.text.startswith("Best answer so far")
    stop = final.response_metadata["budgetwarden"]
    report = stop["report"]  # within the cap but for what calls used beyond their estimate
    assert stop["final_answer"] is True
    assert report["cost_usd"] - report["overshoot_usd"] <= cap + 1e-12


def test_without_the_option_the_last_call_keeps_its_tools(
    model: ScriptedChatModel, search: CountedTool
) -> None:
    warden, _ = make_warden(Policy(limits=Limits(max_iterations=2)))
    run_agent(agent_graph(model, [search.tool], middleware=[BudgetMiddleware(warden)]), "sync")
    assert model.offered == [["search"], ["search"]]


# ---- budget hints ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_budget_hint_reaches_the_model_past_the_warn_level_and_not_before(
    mode: str, model: ScriptedChatModel, search: CountedTool
) -> None:
    warden, _ = make_warden(Policy(limits=Limits(max_iterations=5), budget_hints=True))
    agent = agent_graph(model, [search.tool], middleware=[BudgetMiddleware(warden)])
    run_agent(agent, mode)
    notes = [note_text(prompt) for prompt in model.prompts]
    # Calls 4 and 5 are at 80% and 100% of five: past the warn level (80%).
    assert notes[:3] == ["", "", ""]
    assert notes[3] == "Budget note: 1 model call left for this task: finish now."
    assert notes[4] == "Budget note: 0 model calls left for this task: finish now."
    # Each call's prompt starts as the one before it did: the hint changes no cached prefix.
    for earlier, later in zip(model.prompts[3:], model.prompts[4:], strict=False):
        assert later[: len(earlier) - 1] == earlier[:-1]


def test_hints_stay_off_unless_the_policy_asks(
    model: ScriptedChatModel, search: CountedTool
) -> None:
    warden, _ = make_warden(Policy(limits=Limits(max_iterations=5)))
    run_agent(agent_graph(model, [search.tool], middleware=[BudgetMiddleware(warden)]), "sync")
    assert not any(isinstance(m, SystemMessage) for prompt in model.prompts for m in prompt)


# ---- thread budgets ----------------------------------------------------------------------

THREAD_POLICY = Policy(
    limits=Limits(max_iterations=1),
    budgets=[Budget(scope="thread", window="total", max_requests=3)],
)


@pytest.mark.parametrize("limiter", ["budgetwarden", "langchain"])
def test_a_thread_of_three_calls_refuses_the_fourth_invoke_as_model_call_limit_does(
    limiter: str,
) -> None:
    model = ScriptedChatModel(answer_after=0)
    warden, _ = make_warden(THREAD_POLICY)
    middleware = (
        BudgetMiddleware(warden)
        if limiter == "budgetwarden"
        else ModelCallLimitMiddleware(thread_limit=3, run_limit=1)
    )
    agent = agent_graph(
        model, [CountedTool().tool], middleware=[middleware], checkpointer=InMemorySaver()
    )
    finals = [
        agent.invoke(inputs(f"q{i}"), config=on_thread("a"))["messages"][-1] for i in range(4)
    ]
    # A run cap of one call resets on each invoke; the thread's three calls do not.
    assert model.calls == 3
    assert [f.text.startswith("Done") for f in finals] == [True, True, True, False]
    assert isinstance(finals[3], AIMessage) and not finals[3].tool_calls
    other = agent.invoke(inputs("q"), config=on_thread("b"))
    assert other["messages"][-1].text.startswith("Done") and model.calls == 4
    if limiter == "budgetwarden":
        stop = finals[3].response_metadata["budgetwarden"]
        assert (stop["cap"], stop["limit"], stop["used"]) == (
            "budget:thread=a/total/requests",
            3,
            3,
        )


def test_the_handler_holds_a_thread_budget_across_invokes_and_resets_run_caps() -> None:
    model = ScriptedChatModel(answer_after=0)
    warden, _ = make_warden(THREAD_POLICY)
    handler = BudgetCallbackHandler(warden)
    agent = agent_graph(model, [CountedTool().tool], checkpointer=InMemorySaver())
    for i in range(3):
        done = agent.invoke(inputs(f"q{i}"), config=on_thread("a", callbacks=[handler]))
        assert done["messages"][-1].text.startswith("Done")
    with pytest.raises(BudgetExceeded) as caught:
        agent.invoke(inputs("q3"), config=on_thread("a", callbacks=[handler]))
    assert caught.value.cap == "budget:thread=a/total/requests"
    assert model.calls == 3
    other = agent.invoke(inputs("q"), config=on_thread("b", callbacks=[handler]))
    assert other["messages"][-1].text.startswith("Done")


def test_a_dollar_thread_budget_is_shared_by_wardens_on_one_ledger_without_a_checkpointer(
    tmp_path: Any,
) -> None:
    # Two processes would each build their warden and agent; the ledger file is all they share.
    policy = Policy(
        budgets=[Budget(scope="thread", window="total", max_cost_usd=0.0035)], prices=HOUSE_PRICE
    )
    ledger = f"sqlite:///{tmp_path / 'spend.db'}"
    model = house_model(answer_after=0)
    agents = []
    for _ in range(2):
        warden, _ = make_warden(policy, ledger=ledger)
        agents.append(agent_graph(model, [], middleware=[BudgetMiddleware(warden)]))
    finals = [
        agents[i // 2].invoke(inputs(f"q{i}"), config=on_thread("a"))["messages"][-1]
        for i in range(4)
    ]
    assert model.calls == 3, "$0.001 a call: the fourth does not fit in $0.0035"
    assert finals[3].response_metadata["budgetwarden"]["cap"] == "budget:thread=a/total"


# ---- nested runs -------------------------------------------------------------------------


def researcher_tool(inner: Any) -> StructuredTool:
    def research(query: str) -> str:
        return str(inner.invoke(inputs(query))["messages"][-1].text)

    return StructuredTool.from_function(research, description="Ask a researcher.")


@pytest.mark.parametrize("mode", MODES)
def test_an_agent_called_from_a_tool_is_a_child_run_within_its_callers_remainder(
    mode: str,
) -> None:
    warden, sink = make_warden(Policy(limits=Limits(max_iterations=4)))
    inner_model = ScriptedChatModel()
    inner = create_agent(
        inner_model, [CountedTool().tool], middleware=[BudgetMiddleware(warden, agent="researcher")]
    )

    async def aresearch(query: str) -> str:
        return str((await inner.ainvoke(inputs(query)))["messages"][-1].text)

    tool = researcher_tool(inner)
    tool.coroutine = aresearch
    outer_model = ScriptedChatModel(tool="research")
    outer = create_agent(outer_model, [tool], middleware=[BudgetMiddleware(warden, agent="lead")])
    result = run_agent(outer, mode)
    # Outer call 1, then the researcher's calls 2-4: its fifth call would pass the lead's cap.
    assert (outer_model.calls, inner_model.calls) == (1, 3)
    stop = result["messages"][-1].response_metadata["budgetwarden"]
    lead = stop["report"]
    (child,) = lead["children"]
    assert (lead["agent"], lead["iterations"]) == ("lead", 4)
    assert (child["agent"], child["iterations"], child["parent_run_id"]) == (
        "researcher",
        3,
        lead["run_id"],
    )
    assert child["stop_reason"] == "max_iterations"
    inner_events = [e for e in sink.cost_events if e.agent == "researcher"]
    assert {e.parent_run_id for e in inner_events} == {lead["run_id"]}


def test_a_child_cannot_spend_past_its_callers_dollars() -> None:
    policy = Policy(limits=Limits(max_cost_usd=0.0035), prices=HOUSE_PRICE)
    warden, _ = make_warden(policy)
    inner_model = house_model()
    inner = create_agent(inner_model, [CountedTool().tool], middleware=[BudgetMiddleware(warden)])
    outer_model = house_model(tool="research")
    outer = create_agent(
        outer_model, [researcher_tool(inner)], middleware=[BudgetMiddleware(warden)]
    )
    result = run_agent(outer, "sync")
    lead = result["messages"][-1].response_metadata["budgetwarden"]["report"]
    assert (outer_model.calls, inner_model.calls) == (1, 2)
    assert lead["cost_usd"] == pytest.approx(0.003) and lead["cost_usd"] <= 0.0035
    assert lead["children"][0]["cost_usd"] == pytest.approx(0.002)
