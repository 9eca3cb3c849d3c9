"""Event sets for the report tests: one small set written out by hand, one seeded at random.

The hand set (``hand_events``) is ten days of January 2026 (UTC) whose every figure the tests
check against numbers worked out by hand in ``test_analytics.py``. Daily spend, in USD:

    Jan  1  2  3  4  5  6  7  8  9  10
         1  1  1  1  0  2  1  2  2  10        total 21

Runs (task = root run with its children; cost; model calls; tokens in+out; success):

    R1  d1  u1    researcher  extraction  gpt-4o 0.60 (1000/100, cache 400) + tool search 0.40
                                          = 1.00, 1 step, 1100 tok, success True
    R2  d2  u2    researcher  extraction  gpt-4o-mini 1.00 (2000/200) = 1 step, 2200, False
    R3  d3  u3    writer      research    gpt-4o 2 x 0.50 (1000/100) = 1.00, 2 steps, 2200, True
    R4  d4  u4    writer      research    gpt-4o 1.00 (3000/300, cache 1500), 3300, None
    R5  d6  u5    researcher  extraction  gpt-4o 1.00 (1000/100), success True, with child
        R5c       summarizer              gpt-4o-mini 1.00 (4000/400, cache 2000), success
                                          False (a child's outcome is not the task's)
                                          task: 2.00, 2 steps, 5500 tok
    R6  d7  u1    researcher  extraction  gpt-4o-mini 1.00 (500/50), 550, True
    R7  d8  u2    writer      research    gpt-4o 1.00 (1000/100), 1100, False
    R8  d8  u3    writer      research    gpt-4o 1.00 (1000/100), 1100, None
    R9  d9  u4    researcher  extraction  gpt-4o-mini 1.00 (1000/100, cache 500), 1100, True
    R10 d9  u6    researcher  extraction  gpt-4o-mini 1.00 (1000/100), 1100, True
    R11 d10 whale researcher  research    gpt-4o 3 x 3.00 (10000/1000, cache 5000)
                                          = 9.00, 3 steps, 33000 tok, False
    R12 d10 u6    writer      extraction  gpt-4o 1.00 (1000/100), 1100, True

plus one BudgetAlert and one Notice (no spend). Every run is in workspace "acme" and
workflow "triage" except R11 (workspace "bigco", workflow "deep-dive").
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from budgetwarden import BudgetAlert, CostEvent, Notice
from budgetwarden.events import Event

DAY = 86_400.0
JAN_1 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
NOON = 12 * 3600.0


def at(day: int, seconds: float = NOON) -> float:
    """Epoch seconds of January ``day`` 2026 at ``seconds`` after midnight UTC."""
    return JAN_1 + (day - 1) * DAY + seconds


@dataclass(frozen=True)
class Call:
    """One model call (or a tool call when ``tool`` is set)."""

    cost: float
    inp: int = 0
    out: int = 0
    cache: int = 0
    model: str = "gpt-4o"
    tool: str | None = None


def run_events(
    run_id: str,
    day: int,
    calls: list[Call],
    *,
    user: str,
    agent: str,
    task_class: str,
    success: bool | None,
    parent: str | None = None,
    workspace: str = "acme",
    workflow: str = "triage",
    minute: int = 0,
) -> list[Event]:
    """The cost events of one run, a minute apart; ``success`` on its last event."""
    events: list[Event] = []
    for i, call in enumerate(calls):
        last = i == len(calls) - 1
        common = {
            "ts": at(day, NOON + 60 * (minute + i)),
            "run_id": run_id,
            "parent_run_id": parent,
            "agent": agent,
            "user": user,
            "task_class": task_class,
            "workspace": workspace,
            "workflow": workflow,
            "cost_usd": call.cost,
            "success": success if last else None,
            "latency_s": 0.5,
        }
        if call.tool:
            events.append(CostEvent(kind="tool", tool=call.tool, **common))
        else:
            events.append(
                CostEvent(
                    kind="llm",
                    model=call.model,
                    provider="openai",
                    route=f"tier 0: {call.model}",
                    input_tokens=call.inp,
                    output_tokens=call.out,
                    cache_read_tokens=call.cache,
                    **common,
                )
            )
    return events


def hand_events() -> list[Event]:
    """The hand-computed set described in the module docstring."""
    mini = "gpt-4o-mini"
    ev: list[Event] = []
    ev += run_events(
        "R1",
        1,
        [Call(0.60, 1000, 100, 400), Call(0.40, tool="search")],
        user="u1",
        agent="researcher",
        task_class="extraction",
        success=True,
    )
    ev += run_events(
        "R2", 2, [Call(1.0, 2000, 200, model=mini)],
        user="u2", agent="researcher", task_class="extraction", success=False,
    )  # fmt: skip
    ev += run_events(
        "R3", 3, [Call(0.5, 1000, 100), Call(0.5, 1000, 100)],
        user="u3", agent="writer", task_class="research", success=True,
    )  # fmt: skip
    ev += run_events(
        "R4", 4, [Call(1.0, 3000, 300, 1500)],
        user="u4", agent="writer", task_class="research", success=None,
    )  # fmt: skip
    ev += run_events(
        "R5", 6, [Call(1.0, 1000, 100)],
        user="u5", agent="researcher", task_class="extraction", success=True,
    )  # fmt: skip
    ev += run_events(
        "R5c", 6, [Call(1.0, 4000, 400, 2000, model=mini)],
        user="u5", agent="summarizer", task_class="extraction", success=False,
        parent="R5", minute=1,
    )  # fmt: skip
    ev += run_events(
        "R6", 7, [Call(1.0, 500, 50, model=mini)],
        user="u1", agent="researcher", task_class="extraction", success=True,
    )  # fmt: skip
    ev += run_events(
        "R7", 8, [Call(1.0, 1000, 100)],
        user="u2", agent="writer", task_class="research", success=False,
    )  # fmt: skip
    ev += run_events(
        "R8", 8, [Call(1.0, 1000, 100)],
        user="u3", agent="writer", task_class="research", success=None, minute=5,
    )  # fmt: skip
    ev += run_events(
        "R9", 9, [Call(1.0, 1000, 100, 500, model=mini)],
        user="u4", agent="researcher", task_class="extraction", success=True,
    )  # fmt: skip
    ev += run_events(
        "R10", 9, [Call(1.0, 1000, 100, model=mini)],
        user="u6", agent="researcher", task_class="extraction", success=True, minute=5,
    )  # fmt: skip
    ev += run_events(
        "R11", 10, [Call(3.0, 10000, 1000, 5000)] * 3,
        user="whale", agent="researcher", task_class="research", success=False,
        workspace="bigco", workflow="deep-dive",
    )  # fmt: skip
    ev += run_events(
        "R12", 10, [Call(1.0, 1000, 100)],
        user="u6", agent="writer", task_class="extraction", success=True, minute=10,
    )  # fmt: skip
    ev.append(
        BudgetAlert(
            ts=at(10, NOON + 300), run_id="R11", cap="max_cost_usd", level=0.8, action="warn",
            ratio=0.8, used=8.0, limit=10.0,
        )
    )  # fmt: skip
    ev.append(Notice(ts=at(3), code="unpriced_model", message="no price for x"))
    return ev


#: Names that try to break out of HTML, attributes and scripts.
HOSTILE_AGENT = "<script>alert(1)</script>"
HOSTILE_MODEL = 'm"odel</script><img src=x onerror=alert(2)>'
HOSTILE_USER = "u'\"&<b>bold</b>\u2028"


def hostile_events() -> list[Event]:
    """A few days of spend by agents, models and users whose names are attacks."""
    events: list[Event] = []
    for day in range(1, 6):
        events += run_events(
            f"H{day}", day, [Call(1.0 + day, 1000, 100, model=HOSTILE_MODEL)],
            user=HOSTILE_USER, agent=HOSTILE_AGENT, task_class="</script>", success=True,
        )  # fmt: skip
        events += run_events(
            f"N{day}", day, [Call(0.5, 500, 50)],
            user="plain", agent="plain-agent", task_class="extraction", success=False,
            minute=3,
        )  # fmt: skip
    return events


AGENTS = ("planner", "researcher", "writer", "critic")
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet-20240620")
CLASSES = ("extraction", "analysis", "chat")


def random_events(seed: int = 7, runs: int = 400, days: int = 30) -> list[Event]:
    """A seeded random month: runs of 1-12 model calls and some tool calls."""
    rng = random.Random(seed)
    events: list[Event] = []
    for n in range(runs):
        day = rng.randint(1, days)
        calls = []
        for _ in range(rng.randint(1, 12)):
            if rng.random() < 0.2:
                calls.append(Call(round(rng.uniform(0, 0.01), 6), tool="search"))
                continue
            inp, out = rng.randint(100, 20000), rng.randint(10, 2000)
            cache = rng.randint(0, inp // 2)
            cost = round(inp * 2.5e-6 + out * 1e-5, 8)
            calls.append(Call(cost, inp, out, cache, model=rng.choice(MODELS)))
        events += run_events(
            f"run-{n:04d}",
            day,
            calls,
            user=f"user-{rng.randint(1, 25):02d}",
            agent=rng.choice(AGENTS),
            task_class=rng.choice(CLASSES),
            success=rng.choice((True, False, None)),
            workspace=rng.choice(("acme", "globex")),
            minute=rng.randint(0, 600),
        )
    return events
