"""A LangGraph agent paused at an 8h budget resumes in a new process: the pause handle lives
in the SQLite ledger, the agent's state in a SQLite checkpointer, and no model call is made
twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("langgraph.checkpoint.sqlite", reason="needs langgraph-checkpoint-sqlite")

HERE = Path(__file__).parent
EIGHT_HOURS = 8 * 3600
START = 1_767_225_600.0  # the same instant in both processes: the clock is injected

SETUP = """
import json, sqlite3, sys
from functools import partial
from langgraph.checkpoint.sqlite import SqliteSaver
from lc_fakes import Clock, CountedTool, ScriptedChatModel, agent_graph, inputs
from budgetwarden import Budget, Policy, Warden
from budgetwarden.integrations.langchain import BudgetMiddleware, resume_langgraph

ledger, checkpoints, now = sys.argv[1], sys.argv[2], float(sys.argv[3])
policy = Policy(budgets=[Budget(scope="user", window="8h", max_requests=3)],
                on_exceeded="pause")
clock = Clock(now)
warden = Warden(policy, ledger=ledger, clock=clock, sleep=clock.advance, log_events=False)
saver = SqliteSaver(sqlite3.connect(checkpoints, check_same_thread=False))
model, search = ScriptedChatModel(answer_after=4), CountedTool()
agent = agent_graph(model, [search.tool], middleware=[BudgetMiddleware(warden, user="u1")],
                    checkpointer=saver)
config = {"configurable": {"thread_id": "conversation-1"}}
"""
PAUSE = (
    SETUP
    + """
result = agent.invoke(inputs(), config=config)
pending = result["__interrupt__"][0].value
print(json.dumps({"handle": pending["handle"], "cap": pending["cap"],
                  "model_calls": model.calls, "tool_calls": search.calls}))
"""
)
RESUME = (
    SETUP
    + """
handle_id = sys.argv[4]
result = warden.nap_and_resume(handle_id, partial(resume_langgraph, agent, config=config))
print(json.dumps({"answer": result["messages"][-1].text, "model_calls": model.calls,
                  "tool_calls": search.calls,
                  "first_prompt": len(model.prompts[0]) if model.prompts else 0,
                  "left": [h.id for h in warden.paused()], "now": clock.now}))
"""
)


def run_child(script: str, *args: str) -> dict[str, object]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_paused_agent_resumes_in_a_new_process_from_the_same_step(tmp_path: Path) -> None:
    ledger = f"sqlite:///{tmp_path / 'spend.db'}"
    checkpoints = str(tmp_path / "checkpoints.db")
    paused = run_child(PAUSE, ledger, checkpoints, str(START))
    assert paused["cap"] == "budget:user=u1/8h/requests"
    assert (paused["model_calls"], paused["tool_calls"]) == (3, 3)

    # A new process, after the window reset (the injected clock stands 8 hours later).
    later = str(START + EIGHT_HOURS + 1)
    resumed = run_child(RESUME, ledger, checkpoints, later, str(paused["handle"]))
    assert resumed["answer"] == "Done after 4 tool turns."
    assert (resumed["model_calls"], resumed["tool_calls"]) == (2, 1)  # 5 and 4 in all
    assert resumed["first_prompt"] == 1 + 2 * 3  # it saw the whole transcript so far
    assert resumed["left"] == []
