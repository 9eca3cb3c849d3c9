"""What our adapter costs an agent step in machine instructions and cache misses (callgrind).

Timings move by half a point between runs and bytecode counts miss what the interpreter
does for each bytecode (a keyword parsed in C, an attribute read that is never specialised).
This benchmark counts what the CPU executes instead, deterministically (fixed hash seed,
fixed simulated caches): the LangChain agent of the adapter benchmark runs under
``valgrind --tool=callgrind`` with a do-nothing middleware and with ours, and only its
invocations are counted (collection is toggled on ``builtin_sorted``, through which the
worker calls them; the agent sorts nothing itself). The warm-up invocations run without
instrumentation, which the worker turns on with ``callgrind_control`` (valgrind's package).

Per step: instructions (Ir), L1 misses (I1mr, D1mr, D1mw) and last-level misses (ILmr,
DLmr, DLmw), and an estimate of cycles, ``Ir + 10 * L1 misses + 100 * LL misses`` (the
usual cachegrind weights). Needs valgrind (``apt-get install valgrind``); run it with
``python -m benchmarks --only callgrind`` (about 30 s; not part of the default run).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ._harness import ROOT, Context, write_result

#: The simulated caches: 32 KiB L1i, 48 KiB L1d, 2 MiB last level (64-byte lines).
CACHES = ("--I1=32768,8,64", "--D1=49152,12,64", "--LL=2097152,16,64")
L1_WEIGHT, LL_WEIGHT = 10, 100
EVENTS = ("Ir", "I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "DLmw")
VARIANTS = ("noop", "budgetwarden/memory")
STEPS = 8  # tool turns per invocation, as in the adapter benchmark


def run(ctx: Context) -> dict[str, Any]:
    """Count both variants under callgrind (in parallel); writes results/callgrind.json."""
    started = time.perf_counter()
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise RuntimeError("valgrind not found: install it (apt-get install valgrind) first")
    invocations, warmup = ctx.scale(4, 1), ctx.scale(5, 2)
    with ThreadPoolExecutor(max_workers=len(VARIANTS)) as pool:
        counted = dict(
            zip(
                VARIANTS,
                pool.map(lambda v: _count(valgrind, v, invocations, warmup), VARIANTS),
                strict=True,
            )
        )
    data: dict[str, Any] = {
        "invocations": invocations,
        "warmup_invocations": warmup,
        "steps_per_invocation": {"model_calls": STEPS + 1, "tool_calls": STEPS},
        "caches": list(CACHES),
        "weights": {"l1_miss": L1_WEIGHT, "ll_miss": LL_WEIGHT},
        "per_step": counted,
        "added_pct": _added(counted["budgetwarden/memory"], counted["noop"]),
    }
    write_result(ctx, "callgrind", data, started)
    return data


def _count(valgrind: str, variant: str, invocations: int, warmup: int) -> dict[str, float]:
    """Events per step (model call) of ``invocations`` counted invocations of ``variant``,
    after ``warmup`` uncounted ones."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        command = [
            valgrind,
            "--tool=callgrind",
            "--cache-sim=yes",
            *CACHES,
            "--instr-atstart=no",  # the worker turns it on after its warm-up (callgrind_control)
            "--collect-atstart=no",
            "--toggle-collect=builtin_sorted",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "benchmarks.callgrind",
            variant,
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


def _added(ours: dict[str, float], base: dict[str, float]) -> dict[str, float]:
    """What ours adds to the do-nothing middleware, in % of it, per event."""
    return {k: round((ours[k] / base[k] - 1.0) * 100.0, 2) for k in base if base[k]}


def _worker(variant: str, invocations: int, warmup: int) -> None:
    """Under valgrind: ``warmup`` invocations, then ``invocations`` counted ones."""
    import gc

    from budgetwarden import Warden
    from budgetwarden.integrations.langchain import BudgetMiddleware

    from . import _lc
    from .adapters import policy

    if variant == "noop":
        middleware: Any = _lc.NoopMiddleware()
    else:
        middleware = BudgetMiddleware(Warden(policy()), user="u1")
    invoke = _lc.invoker(_lc.agent(STEPS, [middleware]), STEPS)
    for _ in range(warmup):  # not instrumented: at near native speed
        invoke()
    command = ["callgrind_control", "--instr=on", str(os.getpid())]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    invoke()  # instrumented, not counted: fills the simulated caches
    gc.collect()
    gc.disable()
    for _ in range(invocations):
        sorted((0,), key=lambda _: invoke())  # counted: collection toggles on builtin_sorted


if __name__ == "__main__":
    from . import _env  # noqa: F401  (offline, before any framework import)

    _worker(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
