"""Import time and memory: ``import budgetwarden`` and each integration beyond its framework.

Every figure comes from a fresh interpreter: the framework (and, for the "adapter alone" row,
budgetwarden's core) is imported first, untimed; then the module under test is imported
between two ``perf_counter_ns`` readings and two readings of the process's resident memory
(VmRSS). A separate interpreter measures the Python allocations with tracemalloc (which slows
imports down, so its run is not timed).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from typing import Any

from ._harness import ROOT, Context, stats, write_result

FRAMEWORKS = ("litellm", "langchain", "langchain_core", "langgraph", "crewai", "agents")
#: Modules whose presence after ``import budgetwarden`` would mean a heavy, unwanted import.
HEAVY = (
    "litellm",
    "langchain",
    "langchain_core",
    "langgraph",
    "crewai",
    "agents",
    "openai",
    "redis",
    "structlog",
    "tiktoken",
)

_PROBE = r"""
import json, sys, time, tracemalloc
def rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
import benchmarks._env
for name in {pre!r}:
    __import__(name)
if {trace!r}:
    tracemalloc.start()
out = []
for stmt in {stmts!r}:
    before = set(sys.modules)
    r0 = rss_kb(); t0 = time.perf_counter_ns(); a0 = tracemalloc.get_traced_memory()[0]
    exec(stmt, {{}})
    t1 = time.perf_counter_ns(); r1 = rss_kb(); a1 = tracemalloc.get_traced_memory()[0]
    new = {{m.split(".")[0] for m in set(sys.modules) - before}}
    out.append({{"ms": (t1 - t0) / 1e6, "rss_kb": r1 - r0, "alloc_kb": (a1 - a0) / 1024,
                "heavy_loaded": sorted(new & set({heavy!r}))}})
print(json.dumps(out))
"""

#: group -> (framework modules imported first, untimed; [(case name, statement), ...]).
#: Each group's statements run in order in one fresh interpreter, so each case is measured
#: beyond everything above it.
GROUPS: dict[str, tuple[tuple[str, ...], list[tuple[str, str]]]] = {
    "no framework": (
        (),
        [
            ("import budgetwarden", "import budgetwarden"),
            (
                "first Warden(Policy()) (structlog sink)",
                "import budgetwarden as b; b.Warden(b.Policy())",
            ),
            (
                "first PriceBook.cost (reads LiteLLM's cost map)",
                "import budgetwarden as b; b.PriceBook().cost('gpt-4o', b.Usage(input_tokens=1))",
            ),
        ],
    ),
    "langchain": (
        ("langchain.agents", "langchain_core", "langgraph"),
        [
            ("import budgetwarden, after langchain", "import budgetwarden"),
            ("integrations.langchain, after both", "import budgetwarden.integrations.langchain"),
        ],
    ),
    "openai_agents": (
        ("agents",),
        [
            ("import budgetwarden, after agents", "import budgetwarden"),
            (
                "integrations.openai_agents, after both",
                "import budgetwarden.integrations.openai_agents",
            ),
        ],
    ),
    "crewai": (
        ("crewai",),
        [
            ("import budgetwarden, after crewai", "import budgetwarden"),
            ("integrations.crewai, after both", "import budgetwarden.integrations.crewai"),
        ],
    ),
    "reference": ((), [("reference: import litellm", "import litellm")]),
}


def _probe(pre: tuple[str, ...], stmts: list[str], trace: bool) -> list[dict[str, Any]]:
    code = _PROBE.format(pre=pre, stmts=stmts, trace=trace, heavy=HEAVY)
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if done.returncode != 0:
        raise RuntimeError(f"import probe failed for {stmts!r}: {done.stderr[-2000:]}")
    result: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure(group: str, repeats: int, trace: bool) -> dict[str, Any]:
    """Median time and RSS over ``repeats`` fresh interpreters (and one tracemalloc run)."""
    pre, cases = GROUPS[group]
    stmts = [stmt for _, stmt in cases]
    runs = [_probe(pre, stmts, trace=False) for _ in range(repeats)]
    traced = _probe(pre, stmts, trace=True) if trace else None
    out: dict[str, Any] = {}
    for i, (name, stmt) in enumerate(cases):
        row: dict[str, Any] = {
            "framework_imported_first": list(pre),
            "statement": stmt,
            "ms": stats([r[i]["ms"] for r in runs], 1),
            "rss_mb": round(statistics.median(r[i]["rss_kb"] for r in runs) / 1024, 1),
            "heavy_modules_it_loaded": runs[0][i]["heavy_loaded"],
        }
        if traced is not None:
            row["python_alloc_mb"] = round(traced[i]["alloc_kb"] / 1024, 1)
        out[name] = row
    if len(cases) == 2:
        total = [r[0]["ms"] + r[1]["ms"] for r in runs]
        out[f"budgetwarden + integrations.{group}, beyond {group}"] = {
            "framework_imported_first": list(pre),
            "statement": "both of the above",
            "ms": stats(total, 1),
            "rss_mb": round(
                statistics.median(r[0]["rss_kb"] + r[1]["rss_kb"] for r in runs) / 1024, 1
            ),
        }
    return out


def import_profile(top: int = 10) -> list[dict[str, Any]]:
    """``-X importtime`` of ``import budgetwarden``: the modules with the most own time."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import budgetwarden"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    rows: list[dict[str, Any]] = []
    for line in done.stderr.splitlines():
        found = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if found:
            rows.append(
                {
                    "module": found.group(4),
                    "self_ms": int(found.group(1)) / 1000,
                    "cumulative_ms": int(found.group(2)) / 1000,
                }
            )
    return sorted(rows, key=lambda r: -float(r["self_ms"]))[:top]


def run(ctx: Context) -> dict[str, Any]:
    """Every import figure; writes results/imports.json."""
    started = time.perf_counter()
    cases: dict[str, Any] = {}
    for group in GROUPS:
        if ctx.quick and group == "reference":
            continue
        repeats = 1 if ctx.quick or group == "reference" else 3
        cases.update(measure(group, repeats, trace=not ctx.quick and group == "no framework"))
    heavy = cases["import budgetwarden"]["heavy_modules_it_loaded"]
    data = {
        "cases": cases,
        "import_budgetwarden_loads": heavy,
        "budgetwarden_imports_no_framework": not set(heavy) & set(FRAMEWORKS),
        "importtime_top": import_profile(),
    }
    write_result(ctx, "imports", data, started)
    return data
