"""Containment: runaway loops replayed on LiteLLM ``mock_response`` with real token counts.

Two runaway agents, each replayed unguarded and then under one cap at a time:

- **context re-sent**: a research agent that never concludes; each step re-sends the whole,
  growing conversation, gets a reply and appends a search result (as ``core/demo.py`` does);
- **retries storm**: an agent that asks for JSON, gets invalid JSON back every time and retries
  with the bad answer and a complaint appended.

Every call goes through ``budgetwarden.dispatch.complete`` to ``litellm.completion`` with a
``mock_response`` whose usage is ``litellm.token_counter`` of the real prompt and reply, so
the spend is what a provider would bill. An independent tally prices each call that really
reached LiteLLM with ``litellm.cost_per_token``. Caps are set at a fraction of the unguarded
spend, so they bind whatever ``N`` is. Overspend beyond each cap must be 0.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from budgetwarden import Budget, BudgetExceeded, Limits, Policy, Warden
from budgetwarden.dispatch import complete

from ._harness import Context, write_result

MODEL = "gpt-4o"
MAX_TOKENS = 256
SEARCH_RESULT = (
    "Result: budgets for LLM agents must live in the agent loop, because agents retry, "
    "loop and re-send their whole context at every step. "
) * 10
BAD_JSON = '{"answer": "agents overspend because", "sources": [unterminated'


@dataclass
class Served:
    """Stands in for litellm.completion: counts and prices every call that reached LiteLLM."""

    litellm: Any
    calls: int = 0
    cost_usd: float = 0.0
    input_tokens: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def completion(self, **kwargs: Any) -> Any:
        """Hand the call to litellm with its mock_response; tally what it would cost."""
        usage = kwargs["mock_response"]["usage"]
        prompt, completion = self.litellm.cost_per_token(
            model=kwargs["model"],
            prompt_tokens=usage["prompt_tokens"],
            completion_tokens=usage["completion_tokens"],
        )
        with self.lock:
            self.calls += 1
            self.cost_usd += prompt + completion
            self.input_tokens += usage["prompt_tokens"]
        return self.litellm.completion(**kwargs)


class Script:
    """The replies of one runaway agent, with real token counts, computed once and replayed."""

    def __init__(self, litellm: Any, kind: str, steps: int) -> None:
        self.litellm = litellm
        self.kind = kind
        self.steps = steps
        self.messages: list[list[dict[str, str]]] = []
        self.replies: list[dict[str, Any]] = []
        convo = [
            {"role": "system", "content": "You are a meticulous research agent."},
            {"role": "user", "content": "Find out why agents overspend, with sources, as JSON."},
        ]
        for step in range(1, steps + 1):
            text = (
                f"Step {step}: I should search more before answering. " * 4
                if kind == "context re-sent"
                else BAD_JSON
            )
            self.messages.append(list(convo))
            self.replies.append(self._reply(convo, text))
            convo.append({"role": "assistant", "content": text})
            follow = (
                SEARCH_RESULT
                if kind == "context re-sent"
                else "That was not valid JSON. Answer again with valid JSON only."
            )
            convo.append({"role": "user", "content": follow})

    def _reply(self, messages: list[dict[str, str]], text: str) -> dict[str, Any]:
        prompt = self.litellm.token_counter(model=MODEL, messages=messages)
        completion = self.litellm.token_counter(model=MODEL, text=text, count_response_tokens=True)
        return {
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": text},
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }


@dataclass
class Replay:
    """What one replay did."""

    calls: int
    cost_usd: float
    input_tokens: int
    litellm_cost_usd: float
    wall_s: float
    stop: str
    refusal_us: float | None


def replay(warden: Warden, script: Script, served: Served, *, user: str = "u1") -> Replay:
    """Run the script's agent under ``warden`` until it stops or runs out of steps."""
    before = (served.calls, served.cost_usd)
    stop, refusal_us = "completed all steps", None
    started = time.perf_counter()
    with warden.run(agent="runaway", user=user) as run:
        for step in range(script.steps):
            t0 = time.perf_counter_ns()
            try:
                complete(
                    run,
                    script.messages[step],
                    model=MODEL,
                    max_tokens=MAX_TOKENS,
                    attempts=1,
                    expect_json=script.kind == "retries storm",
                    router=served,
                    mock_response=script.replies[step],
                )
            except BudgetExceeded as exc:
                refusal_us = (time.perf_counter_ns() - t0) / 1000
                stop = exc.cap
                break
            except ValueError:
                continue  # invalid JSON: the runaway agent retries
            if script.kind == "context re-sent":
                tool = run.before_tool_call("search", {"q": f"overspend {step}"})
                run.after_tool_call(tool)
    report = run.report
    return Replay(
        calls=served.calls - before[0],
        cost_usd=report.cost_usd,
        input_tokens=report.input_tokens,
        litellm_cost_usd=served.cost_usd - before[1],
        wall_s=time.perf_counter() - started,
        stop=stop,
        refusal_us=refusal_us,
    )


#: cap name -> (policy for a cap of ``fraction`` of the unguarded run, unit, what to compare)
CapFactory = Callable[[Replay, int], tuple[Policy, float, str]]


def _caps(kind: str) -> dict[str, CapFactory]:
    caps: dict[str, CapFactory] = {
        "run max_cost_usd": lambda u, n: (
            Policy(limits=Limits(max_cost_usd=round(u.cost_usd * 0.3, 6))),
            round(u.cost_usd * 0.3, 6),
            "cost_usd",
        ),
        "user budget (day, USD)": lambda u, n: (
            Policy(
                budgets=[
                    Budget(scope="user", window="day", max_cost_usd=round(u.cost_usd * 0.3, 6))
                ]
            ),
            round(u.cost_usd * 0.3, 6),
            "cost_usd",
        ),
        "run max_input_tokens": lambda u, n: (
            Policy(limits=Limits(max_input_tokens=int(u.input_tokens * 0.3))),
            int(u.input_tokens * 0.3),
            "input_tokens",
        ),
        "run max_iterations": lambda u, n: (
            Policy(limits=Limits(max_iterations=max(n // 3, 1))),
            max(n // 3, 1),
            "calls",
        ),
    }
    if kind == "retries storm":
        caps["run max_retries=3"] = lambda u, n: (Policy(limits=Limits(max_retries=3)), 4, "calls")
        caps["run max_consecutive_errors=5"] = lambda u, n: (
            Policy(limits=Limits(max_consecutive_errors=5)),
            5,
            "calls",
        )
    return caps


def _used(r: Replay, unit: str) -> float:
    return {"cost_usd": r.cost_usd, "input_tokens": r.input_tokens, "calls": r.calls}[unit]


def scenario(litellm: Any, kind: str, steps: int) -> dict[str, Any]:
    """The unguarded replay and one guarded replay per cap."""
    script = Script(litellm, kind, steps)
    served = Served(litellm)
    unguarded = replay(Warden(Policy(), log_events=False), script, served)
    rows = []
    for name, make in _caps(kind).items():
        policy, cap, unit = make(unguarded, steps)
        guarded = replay(Warden(policy, log_events=False), script, served)
        used = _used(guarded, unit)
        rows.append(
            {
                "cap": name,
                "limit": cap,
                "unit": unit,
                "used": round(used, 6),
                "overspend": round(max(used - cap, 0.0), 9),
                "calls": guarded.calls,
                "cost_usd": round(guarded.cost_usd, 6),
                "litellm_cost_usd": round(guarded.litellm_cost_usd, 6),
                "saved_pct": round(100 * (1 - guarded.cost_usd / unguarded.cost_usd), 1),
                "stop": guarded.stop,
                "wall_s": round(guarded.wall_s, 3),
                "refusal_us": round(guarded.refusal_us, 1) if guarded.refusal_us else None,
            }
        )
    return {
        "steps": steps,
        "model": MODEL,
        "unguarded": {
            "calls": unguarded.calls,
            "cost_usd": round(unguarded.cost_usd, 6),
            "litellm_cost_usd": round(unguarded.litellm_cost_usd, 6),
            "input_tokens": unguarded.input_tokens,
            "wall_s": round(unguarded.wall_s, 3),
        },
        "guarded": rows,
    }


def concurrent(litellm: Any, steps: int, runs: int = 4) -> dict[str, Any]:
    """``runs`` runaway agents in threads sharing one user budget: together within it?"""
    script = Script(litellm, "context re-sent", steps)
    served = Served(litellm)
    alone = replay(Warden(Policy(), log_events=False), script, Served(litellm))
    cap = round(alone.cost_usd * runs * 0.3, 6)
    warden = Warden(
        Policy(budgets=[Budget(scope="user", window="day", max_cost_usd=cap)]), log_events=False
    )
    results: list[Replay] = []
    threads = [
        threading.Thread(target=lambda: results.append(replay(warden, script, served)))
        for _ in range(runs)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spent = warden.spent("user", "u1")
    return {
        "runs": runs,
        "steps_each": steps,
        "unguarded_total_usd": round(alone.cost_usd * runs, 6),
        "budget_usd": cap,
        "spent_usd": round(spent, 6),
        "litellm_cost_usd": round(served.cost_usd, 6),
        "overspend_usd": round(max(spent - cap, 0.0), 9),
        "stops": sorted(r.stop for r in results),
    }


def run(ctx: Context) -> dict[str, Any]:
    """Both runaway agents and the shared-budget case; writes results/containment.json."""
    import litellm

    started = time.perf_counter()
    steps = ctx.scale(30, 9)
    scenarios = {
        kind: scenario(litellm, kind, steps) for kind in ("context re-sent", "retries storm")
    }
    shared = concurrent(litellm, steps)
    worst = max(
        [
            row["overspend"]
            for s in scenarios.values()
            for row in s["guarded"]
            if row["unit"] == "cost_usd"
        ]
        + [shared["overspend_usd"]]
    )
    any_over = any(row["overspend"] > 0 for s in scenarios.values() for row in s["guarded"])
    data = {
        "scenarios": scenarios,
        "shared_budget_threads": shared,
        "max_overspend_usd": worst,
        "verdict": "fail" if any_over or shared["overspend_usd"] > 0 else "pass",
    }
    write_result(ctx, "containment", data, started)
    return data
