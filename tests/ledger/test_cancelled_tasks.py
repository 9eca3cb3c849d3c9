"""A task cancelled mid-run (``asyncio.wait_for``'s timeout, a client gone) ends its run as
``cancelled`` and leaves nothing held in the ledger, even while whoever cancelled it keeps
the ``CancelledError`` (and, through its traceback, the agent's state)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage
from langchain_core.tools import StructuredTool

from budgetwarden import Budget, ListSink, Policy, RunFinished, Warden
from budgetwarden.integrations.langchain import BudgetMiddleware
from budgetwarden.integrations.langchain._scripted import ScriptedChatModel
from budgetwarden.ledger import Charge
from budgetwarden.ledger.sqlite import SQLiteLedger


class SlowModel(ScriptedChatModel):
    """Asks for the search tool each turn, after ``delay`` seconds."""

    delay: float = 0.2

    async def _agenerate(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> Any:
        await asyncio.sleep(self.delay)
        return await super()._agenerate(messages, stop, run_manager, **kw)


async def _search(query: str) -> str:
    await asyncio.sleep(0.2)
    return f"results for {query}"


def _held(warden: Warden) -> float:
    [ref] = warden._bucket_refs({"user": "u1"}, "r", warden.clock())[2]
    return warden.ledger.state(ref.key, now=warden.clock(), limit=ref.limit).reserved


@pytest.mark.parametrize("timeout", [0.1, 0.3])  # inside a model call, inside a tool call
async def test_a_cancelled_agent_ends_its_run_and_holds_nothing(
    ledger_uri: str, timeout: float
) -> None:
    sink = ListSink()
    policy = Policy(budgets=[Budget(scope="user", window="day", max_cost_usd=1.0)])
    warden = Warden(policy, ledger=ledger_uri, sinks=[sink], log_events=False)
    tool = StructuredTool.from_function(coroutine=_search, name="search", description="Search.")
    agent = create_agent(SlowModel(), [tool], middleware=[BudgetMiddleware(warden, user="u1")])
    kept: list[BaseException] = []  # as a caller that logs or re-raises it later would
    try:
        await asyncio.wait_for(agent.ainvoke({"messages": [HumanMessage("go")]}), timeout)
    except TimeoutError as exc:
        kept.append(exc)
    assert kept, "the agent was to be cut short"
    [finished] = [e for e in sink.events if isinstance(e, RunFinished)]
    assert finished.stop_reason == "cancelled" and finished.partial
    warden.spent("user", "u1")  # deferred commits land
    assert _held(warden) == 0.0
    warden.close()


class _SlowSQLite(SQLiteLedger):
    """A SQLite ledger whose reservations take a while, in their worker thread."""

    def reserve(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(0.3)
        return super().reserve(*args, **kwargs)


async def test_a_reservation_its_caller_stopped_waiting_for_is_released_once_made(
    tmp_path: Any,
) -> None:
    """A cancelled task stops waiting for an offloaded reservation, but the worker thread
    still makes it: it is released when made, not held until its lease ends (300 s)."""
    ledger = _SlowSQLite(f"sqlite:///{tmp_path / 'slow.db'}")
    charge = Charge("b", 1.0, 10.0, 1e12)
    task = asyncio.ensure_future(ledger.areserve("r1", [charge], now=1.0, lease_until=1e9))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.6)  # the thread made the reservation by now
    assert ledger.state("b", now=2.0).reserved == 0.0
    ledger.close()
