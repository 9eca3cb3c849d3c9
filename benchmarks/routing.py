"""Routing simulation (issue 7): cost per successful task with and without routing.

A mixed workload of task classes is replayed through ``budgetwarden.dispatch.complete`` (each
call reaches ``litellm.completion`` with a ``mock_response`` carrying the class's token
counts) under four policies:

- **strong only** (no routing): every task on the strongest tier; a failed answer is retried
  on the same model;
- **cheap only** (no routing): every task on the cheapest tier, retried the same way;
- **routing, all start cheap**: ``Routing(tiers=...)`` with no task classes: every task starts
  on the cheapest tier and a failed validation moves the retry one tier up;
- **routing by task class**: the class picks the starting tier, then the same escalation.

ASSUMPTIONS (stated here and printed with the results):

- A call succeeds (its answer validates) with the probability in ``CLASSES`` for its class
  and tier, independently of earlier attempts; a task may make up to ``ATTEMPTS`` calls and
  counts as successful if one of them validates.
- Every call of a class uses that class's fixed input and output tokens (a retry re-sends the
  same prompt); prices are LiteLLM's for the tier models (``PriceBook`` = LiteLLM's figure).
- The workload mix is ``CLASSES``' share; draws use a seeded RNG, and every policy sees the
  same random numbers for the same task and attempt (common random numbers), so the
  differences between policies come from the policies, not from luck.
- Cost per successful task = all spend (failed calls and failed tasks included) / tasks that
  succeeded.
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from budgetwarden import Policy, Routing, Warden
from budgetwarden.dispatch import complete

from ._harness import Context, write_result

TIERS = ["gpt-4.1-nano", "gpt-4.1-mini", "gpt-4.1"]
ATTEMPTS = 3


@dataclass(frozen=True)
class TaskClass:
    """One kind of task: its share of the workload, its tokens, and p(success) per tier."""

    share: float
    input_tokens: int
    output_tokens: int
    success: tuple[float, float, float]  # cheap, mid, strong
    start_tier: int


CLASSES: dict[str, TaskClass] = {
    "classification": TaskClass(0.35, 400, 10, (0.92, 0.95, 0.97), 0),
    "extraction": TaskClass(0.30, 1200, 150, (0.85, 0.93, 0.97), 0),
    "summarization": TaskClass(0.20, 3000, 300, (0.75, 0.90, 0.96), 1),
    "multi-step reasoning": TaskClass(0.15, 2000, 700, (0.35, 0.65, 0.90), 2),
}
POLICIES = ("strong only", "cheap only", "routing, all start cheap", "routing by task class")
NOTE_PATH = Path("/work/notes/readme_routing_sim.md")


class SimProvider:
    """Stands in for ``litellm.completion``: decides each answer from the task's draws."""

    def __init__(self, litellm: Any) -> None:
        self.litellm = litellm
        self.task: TaskClass | None = None
        self.draws: list[float] = []
        self.attempt = 0
        self.models: list[str] = []

    def start(self, task: TaskClass, draws: list[float]) -> None:
        """A new task with its random numbers (one per attempt)."""
        self.task, self.draws, self.attempt = task, draws, 0

    def completion(self, **kwargs: Any) -> Any:
        """One call: validates when this attempt's draw is below the tier's success rate."""
        assert self.task is not None
        model = str(kwargs["model"])
        ok = self.draws[self.attempt] < self.task.success[TIERS.index(model)]
        self.attempt += 1
        self.models.append(model)
        text = '{"ok": true}' if ok else '{"ok": false}'
        reply = {
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
            "usage": {
                "prompt_tokens": self.task.input_tokens,
                "completion_tokens": self.task.output_tokens,
                "total_tokens": self.task.input_tokens + self.task.output_tokens,
            },
        }
        return self.litellm.completion(**kwargs, mock_response=reply)


def _valid(response: Any) -> bool:
    return bool(response.choices[0].message.content == '{"ok": true}')


def workload(n: int, seed: int) -> list[tuple[str, list[float]]]:
    """``n`` tasks: each a class drawn by share, and one uniform draw per attempt."""
    rng = random.Random(seed)
    names = list(CLASSES)
    weights = [CLASSES[c].share for c in names]
    return [
        (rng.choices(names, weights)[0], [rng.random() for _ in range(ATTEMPTS)]) for _ in range(n)
    ]


def _policy(name: str) -> tuple[Policy, str | None]:
    """The policy and the model the caller names (None: routing chooses)."""
    if name == "strong only":
        return Policy(), TIERS[-1]
    if name == "cheap only":
        return Policy(), TIERS[0]
    if name == "routing, all start cheap":
        return Policy(routing=Routing(tiers=TIERS, max_escalations=2)), None
    classes: dict[str, int | str] = {c: t.start_tier for c, t in CLASSES.items()}
    return Policy(routing=Routing(tiers=TIERS, task_classes=classes, max_escalations=2)), None


def simulate(
    litellm: Any, policy_name: str, tasks: list[tuple[str, list[float]]]
) -> dict[str, Any]:
    """Replay ``tasks`` under one policy; totals and per-class figures."""
    policy, model = _policy(policy_name)
    warden = Warden(policy, log_events=False)
    provider = SimProvider(litellm)
    per_class: dict[str, dict[str, float]] = {
        c: {"tasks": 0, "successes": 0, "cost_usd": 0.0, "calls": 0} for c in CLASSES
    }
    for name, draws in tasks:
        task = CLASSES[name]
        provider.start(task, draws)
        messages = [{"role": "user", "content": f"{name} task: answer as JSON"}]
        with warden.run(task_class=name, workflow="sim") as run:
            try:
                complete(
                    run, messages, model=model, attempts=ATTEMPTS, validate=_valid, router=provider
                )
                run.success = True
            except ValueError:
                run.success = False
        report = run.report
        row = per_class[name]
        row["tasks"] += 1
        row["successes"] += int(bool(run.success))
        row["cost_usd"] += report.cost_usd
        row["calls"] += report.iterations
    return _totals(per_class, provider.models)


def _totals(per_class: dict[str, dict[str, float]], models: list[str]) -> dict[str, Any]:
    tasks = sum(r["tasks"] for r in per_class.values())
    wins = sum(r["successes"] for r in per_class.values())
    cost = sum(r["cost_usd"] for r in per_class.values())
    calls = sum(r["calls"] for r in per_class.values())
    return {
        "tasks": tasks,
        "successes": wins,
        "success_rate": round(wins / tasks, 4),
        "cost_usd": round(cost, 6),
        "cost_per_success_usd": round(cost / wins, 8) if wins else None,
        "calls_per_task": round(calls / tasks, 3),
        "calls_by_model": {m: models.count(m) for m in TIERS},
        "by_class": {
            c: {
                "tasks": int(r["tasks"]),
                "success_rate": round(r["successes"] / r["tasks"], 4) if r["tasks"] else None,
                "cost_per_success_usd": round(r["cost_usd"] / r["successes"], 8)
                if r["successes"]
                else None,
            }
            for c, r in per_class.items()
        },
    }


def run(ctx: Context) -> dict[str, Any]:
    """Every policy over the same seeded workloads; writes results and the README table."""
    import litellm

    started = time.perf_counter()
    n, seeds = ctx.scale(1000, 120), ctx.scale(3, 1)
    by_seed: dict[str, list[dict[str, Any]]] = {p: [] for p in POLICIES}
    for seed in range(seeds):
        tasks = workload(n, seed)
        for name in POLICIES:
            by_seed[name].append(simulate(litellm, name, tasks))
    summary = {}
    base = statistics.median(r["cost_per_success_usd"] for r in by_seed["strong only"])
    for name, results in by_seed.items():
        cps = [r["cost_per_success_usd"] for r in results]
        summary[name] = {
            "cost_per_success_usd": round(statistics.median(cps), 8),
            "cost_per_success_range": [min(cps), max(cps)],
            "vs_strong_only": round(statistics.median(cps) / base, 3),
            "success_rate": round(statistics.median(r["success_rate"] for r in results), 4),
            "calls_per_task": round(statistics.median(r["calls_per_task"] for r in results), 3),
            "first_seed": results[0],
        }
    data = {
        "tiers": TIERS,
        "attempts": ATTEMPTS,
        "tasks_per_seed": n,
        "seeds": seeds,
        "classes": {c: vars(t) for c, t in CLASSES.items()},
        "assumptions": __doc__.split("ASSUMPTIONS (stated here and printed with the results):")[1]
        .strip()
        .replace("\n  ", " "),
        "policies": summary,
    }
    write_result(ctx, "routing", data, started)
    if not ctx.quick:
        _write_note(data)
    return data


def _write_note(data: dict[str, Any]) -> None:
    """The README's routing table and its assumptions, for the lead."""
    from .report import routing_markdown

    try:
        NOTE_PATH.parent.mkdir(parents=True, exist_ok=True)
        NOTE_PATH.write_text(routing_markdown(data, heading="###"), encoding="utf-8")
    except OSError:
        pass  # not on the project's machine: the table is in BENCHMARKS.md anyway
