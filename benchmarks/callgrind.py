"""What our adapters cost an agent step in machine instructions and cache misses (callgrind).

Timings move by half a point between runs and bytecode counts miss what the interpreter
does for each bytecode (a keyword parsed in C, an attribute read that is never specialised).
This benchmark counts what the CPU executes instead (fixed hash seed, fixed simulated
caches, counts averaged over a few memory layouts, see ``LAYOUTS``): the scripted
LangChain and Agents SDK agents of the adapter benchmark run under
``valgrind --tool=callgrind`` with do-nothing hooks and with ours (the LangChain
middleware, the Agents SDK run hooks), and only their invocations are counted
(collection is toggled on ``calliter_iternext``: the worker calls each one through
``next(iter(invoke, None))``, which neither framework uses; both sort, so ``sorted`` would
not do). The warm-up invocations run without instrumentation, which
the worker turns on with ``callgrind_control`` (valgrind's package).

Per step: instructions (Ir), L1 misses (I1mr, D1mr, D1mw) and last-level misses (ILmr,
DLmr, DLmw), and an estimate of cycles, ``Ir + 10 * L1 misses + 100 * LL misses`` (the
usual cachegrind weights). Needs valgrind (``apt-get install valgrind``); run it with
``python -m benchmarks --only callgrind`` (about three minutes; not in the default run).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ._harness import ROOT, Context, write_result

#: The simulated caches: 32 KiB L1i, 48 KiB L1d, 2 MiB last level (64-byte lines).
CACHES = ("--I1=32768,8,64", "--D1=49152,12,64", "--LL=2097152,16,64")
L1_WEIGHT, LL_WEIGHT = 10, 100
EVENTS = ("Ir", "I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "DLmw")
AGENTS = ("langchain_middleware", "openai_agents_run_hooks")
VARIANTS = ("noop", "budgetwarden/memory")
#: Memory layouts: each count of small lists a worker allocates first shifts where every
#: later object lands, and with it hash collisions and so the instruction counts (by up to
#: 0.5 % of a step: as much as a small change to our code). Counts are averaged over these.
LAYOUTS = (0, 2500, 5000, 7500)
STEPS = 8  # tool turns per invocation, as in the adapter benchmark


def run(ctx: Context) -> dict[str, Any]:
    """Count both variants under callgrind (in parallel); writes results/callgrind.json."""
    started = time.perf_counter()
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise RuntimeError("valgrind not found: install it (apt-get install valgrind) first")
    invocations, warmup = ctx.scale(4, 1), ctx.scale(5, 2)
    layouts = LAYOUTS if not ctx.quick else LAYOUTS[:1]
    jobs = [(a, v, pad) for a in AGENTS for v in VARIANTS for pad in layouts]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = list(
            pool.map(lambda j: _count(valgrind, j[0], j[1], j[2], invocations, warmup), jobs)
        )
    by_job = dict(zip(jobs, results, strict=True))
    counted = {
        agent: {v: _mean([by_job[agent, v, pad] for pad in layouts]) for v in VARIANTS}
        for agent in AGENTS
    }
    by_layout = {
        agent: [
            _added(by_job[agent, "budgetwarden/memory", pad], by_job[agent, "noop", pad])
            for pad in layouts
        ]
        for agent in AGENTS
    }
    data: dict[str, Any] = {
        "layouts": list(layouts),
        "invocations": invocations,
        "warmup_invocations": warmup,
        "steps_per_invocation": {"model_calls": STEPS + 1, "tool_calls": STEPS},
        "caches": list(CACHES),
        "weights": {"l1_miss": L1_WEIGHT, "ll_miss": LL_WEIGHT},
        "per_step": counted,
        "added_pct": {
            agent: _added(by_variant["budgetwarden/memory"], by_variant["noop"])
            for agent, by_variant in counted.items()
        },
        "added_pct_by_layout": by_layout,
    }
    write_result(ctx, "callgrind", data, started)
    return data


def _count(
    valgrind: str, agent: str, variant: str, layout: int, invocations: int, warmup: int
) -> dict[str, float]:
    """Events per step (model call) of ``invocations`` counted invocations of ``agent`` with
    ``variant`` in memory ``layout``, after ``warmup`` uncounted ones."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        command = [
            valgrind,
            "--tool=callgrind",
            "--cache-sim=yes",
            *CACHES,
            "--instr-atstart=no",  # the worker turns it on after its warm-up (callgrind_control)
            "--collect-atstart=no",
            "--toggle-collect=calliter_iternext",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "benchmarks.callgrind",
            agent,
            variant,
            str(layout),
            str(invocations),
            str(warmup),
        ]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
        totals = _totals(out.read_text(encoding="utf-8"))
    steps = invocations * (STEPS + 1)
    per_step = {event: totals.get(event, 0) / steps for event in EVENTS}
    per_step["est_cycles"] = _cycles(per_step)
    return {k: round(v, 1) for k, v in per_step.items()}


def _totals(text: str) -> dict[str, int]:
    """The event totals of a callgrind output file."""
    names: list[str] = []
    for line in text.splitlines():
        if line.startswith("events:"):
            names = line.split()[1:]
        elif line.startswith(("totals:", "summary:")):
            return dict(zip(names, map(int, line.split()[1:]), strict=True))
    raise ValueError("no totals in the callgrind output")


def _cycles(events: dict[str, float]) -> float:
    l1 = events["I1mr"] + events["D1mr"] + events["D1mw"]
    ll = events["ILmr"] + events["DLmr"] + events["DLmw"]
    return events["Ir"] + L1_WEIGHT * l1 + LL_WEIGHT * ll


def _mean(samples: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(sum(s[k] for s in samples) / len(samples), 1) for k in samples[0]}


def _added(ours: dict[str, float], base: dict[str, float]) -> dict[str, float]:
    """What ours adds to the do-nothing middleware, in % of it, per event."""
    return {k: round((ours[k] / base[k] - 1.0) * 100.0, 2) for k in base if base[k]}


def _worker(agent: str, variant: str, layout: int, invocations: int, warmup: int) -> None:
    """Under valgrind: ``warmup`` invocations, then ``invocations`` counted ones, after
    ``layout`` small lists that move every later object."""
    import gc

    padding = [[i] for i in range(layout)]
    invoke = _invoker(agent, variant)
    for _ in range(warmup):  # not instrumented: at near native speed
        invoke()
    command = ["callgrind_control", "--instr=on", str(os.getpid())]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    invoke()  # instrumented, not counted: fills the simulated caches
    gc.collect()
    gc.disable()
    for _ in range(invocations):
        next(iter(invoke, None))  # counted: collection toggles on calliter_iternext
    del padding  # kept alive until here, so the layout holds while counting


def _invoker(agent: str, variant: str) -> Callable[[], int]:
    """One invocation of the scripted ``agent`` with do-nothing hooks or ours."""
    from budgetwarden import Warden

    from .adapters import policy

    warden = Warden(policy())
    if agent == "openai_agents_run_hooks":
        import asyncio

        from budgetwarden.integrations.openai_agents import BudgetRunHooks

        from . import _oa

        def hooks() -> Any:
            return _oa.NoopHooks() if variant == "noop" else BudgetRunHooks(warden, user="u1")

        return _oa.invoker(asyncio.new_event_loop(), STEPS, hooks)
    from budgetwarden.integrations.langchain import BudgetMiddleware

    from . import _lc

    if variant == "noop":
        middleware: Any = _lc.NoopMiddleware()
    else:
        middleware = BudgetMiddleware(warden, user="u1")
    return _lc.invoker(_lc.agent(STEPS, [middleware]), STEPS)


if __name__ == "__main__":
    from . import _env  # noqa: F401  (offline, before any framework import)

    _worker(sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6]))
