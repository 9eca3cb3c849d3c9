"""Adapter overhead per agent step, each adapter against the same agent with do-nothing hooks.

For each framework the same scripted agent (``STEPS`` tool turns, then an answer: ``STEPS + 1``
model calls and ``STEPS`` tool calls per invocation) runs in interleaved rounds as:

- ``bare``: no hook at all;
- ``noop``: a do-nothing hook of the kind our adapter uses (the framework's own cost of a
  hook, which is not ours to remove);
- ``budgetwarden/<ledger>``: our adapter with a production-like policy (run caps and two
  budgets) on the memory, SQLite and Redis ledgers;
- for the LangChain middleware, ``budgetwarden/memory, empty Policy()`` as well: no cap and
  no budget, what the accounting every run does costs on its own.
- and a counting middleware: a model-call cap and a usage total, the least a guard of the
  same kind does (``_lc.CountingMiddleware``).

Overhead is ours against ``noop``, per round (same moment, same load), in % of the time per
step; targets (issue 9): <= 3% memory, <= 10% SQLite, <= 15% Redis on loopback.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from budgetwarden import Budget, Limits, Policy, Warden

from . import _env  # noqa: F401  (offline environment, also in a worker process)
from ._harness import (
    ROOT,
    Context,
    bytecodes,
    interleave,
    our_code_dirs,
    paired_overhead,
    stats,
    verdict,
    write_result,
)

STEPS = 8
TARGETS = {"memory": 3.0, "sqlite": 10.0, "redis": 15.0}
#: The LangChain middleware again, on the memory ledger with ``Policy()``: no cap, no budget,
#: only the accounting every run does (estimate, pricing, counters, attribution).
EMPTY = "budgetwarden/memory, empty Policy()"
#: A do-almost-nothing guard of the same kind: a call cap and a usage total (``_lc``).
COUNTING = "counting middleware (call cap, usage total)"


def policy() -> Policy:
    """Run caps and two budgets, none of them reached: the guard does all its work."""
    return Policy(
        limits=Limits(
            max_iterations=10_000,
            max_tool_calls=10_000,
            max_cost_usd=1_000.0,
            max_repeated_tool_calls=100,
        ),
        budgets=[
            Budget(scope="user", window="day", max_cost_usd=1e9),
            Budget(scope="global", window="1m", max_requests=10**12),
        ],
    )


def wardens(ctx: Context) -> dict[str, Warden]:
    """One warden per available ledger, all on the same policy."""
    uris = {"memory": "memory://", "sqlite": ctx.sqlite_uri, "redis": ctx.redis_uri}
    return {name: Warden(policy(), ledger=uri) for name, uri in uris.items() if uri}


def summarize(times: Times, base: str, ours: dict[str, str]) -> dict[str, Any]:
    """Per-variant stats, and each of ``ours`` (ledger -> variant) against ``base``."""
    out: dict[str, Any] = {
        "variants": {
            name: {
                "wall_us_per_step": stats(wall, 1),
                "cpu_us_per_step": stats(times["cpu_us"][name], 1),
            }
            for name, wall in times["wall_us"].items()
        },
        "overhead_vs": base,
        "overhead_pct": {},
        "verdict": {},
    }
    for ledger, variant in ours.items():
        wall = paired_overhead(times["wall_us"][variant], times["wall_us"][base])
        cpu = paired_overhead(times["cpu_us"][variant], times["cpu_us"][base])
        out["overhead_pct"][ledger] = {"wall": wall, "cpu": cpu}
        out["verdict"][ledger] = verdict(wall["median"], TARGETS[ledger])
    return out


def _extra(times: Times, name: str, base: str) -> dict[str, Any]:
    return {
        "wall": paired_overhead(times["wall_us"][name], times["wall_us"][base]),
        "cpu": paired_overhead(times["cpu_us"][name], times["cpu_us"][base]),
    }


#: Times of one process's rounds: "wall_us" / "cpu_us" -> variant -> µs per step, per round.
Times = dict[str, dict[str, list[float]]]
#: Comparisons besides the targets' (noop vs bare, ...): result key -> (variant, base).
_VS_BARE = {
    "noop_vs_bare_pct": ("noop", "bare"),
    "budgetwarden_memory_vs_bare_pct": ("budgetwarden/memory", "bare"),
}


@dataclass(frozen=True)
class Share:
    """A process's part of a section: 1/``of`` of its rounds; ``count``: count bytecodes."""

    of: int
    count: bool

    def rounds(self, ctx: Context, full: int, quick: int) -> int:
        """This process's rounds of a section that runs ``full`` (``quick``) in all."""
        return max(-(-ctx.scale(full, quick) // self.of), 1)


@dataclass(frozen=True)
class Measured:
    """What one process measured of a section, before it is pooled with the others."""

    times: Times
    ours: dict[str, str]  # ledger -> our variant
    comparisons: dict[str, tuple[str, str]]
    bytecodes: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        """As JSON, for a worker process to hand back."""
        return {
            "times": self.times,
            "ours": self.ours,
            "comparisons": {key: list(pair) for key, pair in self.comparisons.items()},
            "bytecodes": self.bytecodes,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Measured | dict[str, Any]:
        """What ``to_json`` wrote (or a section's "skipped" answer, as it is)."""
        if "times" not in raw:
            return raw
        comparisons = {key: (pair[0], pair[1]) for key, pair in raw["comparisons"].items()}
        return cls(raw["times"], raw["ours"], comparisons, raw["bytecodes"])


def _call_into(variant: Callable[[], int], made: list[int]) -> None:
    made.append(variant())


def count_bytecodes(
    variants: dict[str, Callable[[], int]],
    names: list[str],
    setup: dict[str, Callable[[], None]] | None = None,
) -> dict[str, Any]:
    """Bytecodes per step of one traced invocation of each named variant: in all, and in
    budgetwarden's own code; each against the do-nothing variant ("noop")."""
    ours = our_code_dirs()
    out: dict[str, Any] = {}
    for name in names:
        if setup and name in setup:
            setup[name]()
        made: list[int] = []
        counts = bytecodes(functools.partial(_call_into, variants[name], made), ours)
        steps = max(made[0] if made else 1, 1)
        out[name] = {
            "per_step": round(counts["total"] / steps),
            "budgetwarden_per_step": round(counts["ours"] / steps),
        }
    base = out.get("noop", {}).get("per_step")
    for counted in out.values():
        if base:
            counted["vs_noop_pct"] = round((counted["per_step"] / base - 1.0) * 100.0, 2)
    return out


# ---------------------------------------------------------------------------- LangChain
def langchain_middleware(
    ctx: Context, guards: dict[str, Warden], share: Share, client: bool = False
) -> Measured:
    """create_agent: no middleware, a do-nothing one, ModelCallLimitMiddleware, BudgetMiddleware
    (``client``: over the real ChatOpenAI client and a canned endpoint)."""
    from langchain.agents.middleware import ModelCallLimitMiddleware

    from budgetwarden.integrations.langchain import BudgetMiddleware

    from . import _lc

    make = _lc.openai_client_agent if client else _lc.agent
    variants: dict[str, Callable[[], int]] = {
        "bare": _lc.invoker(make(STEPS), STEPS),
        "noop": _lc.invoker(make(STEPS, [_lc.NoopMiddleware()]), STEPS),
        "ModelCallLimitMiddleware": _lc.invoker(
            make(STEPS, [ModelCallLimitMiddleware(run_limit=10_000)]), STEPS
        ),
    }
    ours = {}
    for ledger, warden in guards.items():
        graph = make(STEPS, [BudgetMiddleware(warden, user="u1")])
        variants[f"budgetwarden/{ledger}"] = _lc.invoker(graph, STEPS)
        ours[ledger] = f"budgetwarden/{ledger}"
    floor = []
    if not client:  # the accounting alone, and the least a guard does
        empty = Warden(Policy())
        variants[EMPTY] = _lc.invoker(make(STEPS, [BudgetMiddleware(empty, user="u1")]), STEPS)
        floor.append(EMPTY)
        variants[COUNTING] = _lc.invoker(make(STEPS, [_lc.CountingMiddleware()]), STEPS)
        floor.append(COUNTING)
    times = interleave(variants, rounds=share.rounds(ctx, 100, 3), warmup=ctx.scale(3, 1))
    counted = None
    if share.count:
        names = ["noop", "ModelCallLimitMiddleware", *ours.values(), *floor]
        counted = count_bytecodes(variants, names)
    comparisons = {}
    if floor:
        comparisons["budgetwarden_memory_empty_policy_vs_noop_pct"] = (EMPTY, "noop")
        comparisons["counting_middleware_vs_noop_pct"] = (COUNTING, "noop")
    comparisons |= {
        "noop_vs_bare_pct": ("noop", "bare"),
        "ModelCallLimitMiddleware_vs_bare_pct": ("ModelCallLimitMiddleware", "bare"),
        "budgetwarden_memory_vs_bare_pct": ("budgetwarden/memory", "bare"),
        "budgetwarden_memory_vs_ModelCallLimitMiddleware_pct": (
            "budgetwarden/memory",
            "ModelCallLimitMiddleware",
        ),
    }
    return Measured(times, ours, comparisons, counted)


def langchain_handler(
    ctx: Context, guards: dict[str, Warden], share: Share, client: bool = False
) -> Measured:
    """The same create_agent agent: no callbacks, a do-nothing handler, BudgetCallbackHandler
    (``client``: over the real ChatOpenAI client and a canned endpoint)."""
    from budgetwarden.integrations.langchain import BudgetCallbackHandler

    from . import _lc

    graph = _lc.openai_client_agent(STEPS) if client else _lc.agent(STEPS)
    variants: dict[str, Callable[[], int]] = {
        "bare": _lc.invoker(graph, STEPS),
        "noop": _lc.invoker(graph, STEPS, [_lc.NoopHandler()]),
    }
    ours = {}
    for ledger, warden in guards.items():
        handler = BudgetCallbackHandler(warden, user="u1")
        variants[f"budgetwarden/{ledger}"] = _lc.invoker(graph, STEPS, [handler])
        ours[ledger] = f"budgetwarden/{ledger}"
    times = interleave(variants, rounds=share.rounds(ctx, 100, 3), warmup=ctx.scale(3, 1))
    counted = count_bytecodes(variants, ["noop", *ours.values()]) if share.count else None
    return Measured(times, ours, _VS_BARE, counted)


# ---------------------------------------------------------------------------- Agents SDK
def openai_agents(
    ctx: Context, guards: dict[str, Warden], share: Share, client: bool = False
) -> Measured:
    """Runner.run with no hooks, do-nothing RunHooks, BudgetRunHooks (a fresh one per run);
    ``client``: over the SDK's OpenAIChatCompletionsModel, the real client, a canned endpoint."""
    from budgetwarden.integrations.openai_agents import BudgetRunHooks

    from . import _oa

    loop = asyncio.new_event_loop()
    agent = _oa.make_openai_client_agent(STEPS) if client else _oa.make_agent(STEPS)
    try:
        variants: dict[str, Callable[[], int]] = {
            "bare": _oa.invoker(loop, STEPS, lambda: None, agent),
            "noop": _oa.invoker(loop, STEPS, _oa.NoopHooks, agent),
        }
        ours = {}
        for ledger, warden in guards.items():

            def hooks(w: Warden = warden) -> BudgetRunHooks:
                return BudgetRunHooks(w, user="u1")

            variants[f"budgetwarden/{ledger}"] = _oa.invoker(loop, STEPS, hooks, agent)
            ours[ledger] = f"budgetwarden/{ledger}"
        times = interleave(variants, rounds=share.rounds(ctx, 100, 3), warmup=ctx.scale(3, 1))
        counted = count_bytecodes(variants, ["noop", *ours.values()]) if share.count else None
    finally:
        loop.close()
    return Measured(times, ours, _VS_BARE, counted)


# ---------------------------------------------------------------------------- CrewAI
def crewai(ctx: Context, guards: dict[str, Warden], share: Share) -> Measured:
    """crew.kickoff() bare, inside do-nothing scoped hooks, and guard_crew(...).kickoff()."""
    # CrewAI logs a warning per call about its own approximate token count: same for every
    # variant, silenced so the output stays readable.
    logging.getLogger("crewai.llms.base_llm").setLevel(logging.ERROR)
    from budgetwarden.integrations.crewai import guard_crew

    from . import _crew

    def bare(crew: Any) -> Any:
        return crew.kickoff()

    def noop(crew: Any) -> Any:
        with _crew.noop_hooks():
            return crew.kickoff()

    kickoffs = {"bare": _crew.Kickoff(STEPS, bare), "noop": _crew.Kickoff(STEPS, noop)}
    ours = {}
    for ledger, warden in guards.items():

        def guarded(crew: Any, w: Warden = warden) -> Any:
            result = guard_crew(crew, w, user="u1").kickoff()
            if result.stopped:
                raise AssertionError(f"guarded crew stopped: {result.cap}")
            return result

        kickoffs[f"budgetwarden/{ledger}"] = _crew.Kickoff(STEPS, guarded)
        ours[ledger] = f"budgetwarden/{ledger}"
    setups: dict[str, Callable[[], None]] = {name: k.setup for name, k in kickoffs.items()}
    times = interleave(
        dict(kickoffs.items()),
        rounds=share.rounds(ctx, 120, 2),
        warmup=ctx.scale(3, 1),
        setup=setups,
    )
    counted = None
    if share.count:
        counted = count_bytecodes(dict(kickoffs.items()), ["noop", *ours.values()], setups)
    return Measured(times, ours, _VS_BARE, counted)


SECTIONS: dict[str, Callable[[Context, dict[str, Warden], Share], Measured]] = {
    "langchain_middleware": langchain_middleware,
    "langchain_callback_handler": langchain_handler,
    "openai_agents_run_hooks": openai_agents,
    "crewai_guard_crew": crewai,
    # The same agents over the frameworks' real OpenAI clients (request building, response
    # parsing), answered by a canned HTTP endpoint: a step as an application pays for it.
    "langchain_middleware_openai_client": functools.partial(langchain_middleware, client=True),
    "langchain_callback_handler_openai_client": functools.partial(langchain_handler, client=True),
    "openai_agents_run_hooks_openai_client": functools.partial(openai_agents, client=True),
}


def run(ctx: Context) -> dict[str, Any]:
    """Every adapter's overhead, measured in ``ctx.processes`` fresh processes one after
    another (a share of the rounds each) and pooled; writes results/adapters.json."""
    started = time.perf_counter()
    data: dict[str, Any] = {
        "steps_per_invocation": {"model_calls": STEPS + 1, "tool_calls": STEPS},
        "policy": policy().model_dump(mode="json", exclude_defaults=True),
        "ledgers": sorted(["memory", *(n for n, uri in _shared_uris(ctx).items() if uri)]),
        "targets_pct": TARGETS,
        "processes": ctx.processes,
        "notes": list(ctx.notes),
        "sections": {},
    }
    if ctx.processes <= 1:
        parts = [measure(ctx, list(SECTIONS), Share(1, True))]
    else:
        parts = [_in_worker(ctx, index, list(SECTIONS)) for index in range(ctx.processes)]
    for name in SECTIONS:
        data["sections"][name] = pooled([part[name] for part in parts])
    write_result(ctx, "adapters", data, started)
    return data


def measure(ctx: Context, names: list[str], share: Share) -> dict[str, Any]:
    """The named sections measured in this process (a section that cannot run: skipped)."""
    guards = wardens(ctx)
    got: dict[str, Any] = {}
    try:
        for name in names:
            t0 = time.perf_counter()
            try:
                got[name] = SECTIONS[name](ctx, guards, share)
            except ImportError as exc:
                got[name] = {"skipped": f"{type(exc).__name__}: {exc}"}
            except Exception as exc:  # one broken adapter must not lose the others' figures
                traceback.print_exc()
                got[name] = {"skipped": f"crashed: {type(exc).__name__}: {exc}"}
            print(f"[benchmarks]   adapters/{name}: {time.perf_counter() - t0:.1f} s", flush=True)
    finally:
        for warden in guards.values():
            warden.close()
    return got


def pooled(parts: list[Measured | dict[str, Any]]) -> dict[str, Any]:
    """One section's figures from every process's share: per-round samples pooled (each
    round stays paired with its own base), bytecodes from the process that counted them,
    and each process's own median overhead beside the pooled one."""
    skipped = next((p for p in parts if not isinstance(p, Measured)), None)
    if skipped is not None:
        return skipped
    measured = [p for p in parts if isinstance(p, Measured)]
    first = measured[0]
    times = {
        clock: {name: [x for m in measured for x in m.times[clock][name]] for name in samples}
        for clock, samples in first.times.items()
    }
    out = summarize(times, "noop", first.ours)
    if len(measured) > 1:
        out["overhead_by_process_pct"] = {
            ledger: [
                paired_overhead(m.times["wall_us"][variant], m.times["wall_us"]["noop"])["median"]
                for m in measured
            ]
            for ledger, variant in first.ours.items()
        }
    counted = next((m.bytecodes for m in measured if m.bytecodes is not None), None)
    if counted is not None:
        out["bytecodes"] = counted
    for key, (name, base) in first.comparisons.items():
        out[key] = _extra(times, name, base)
    return out


def _shared_uris(ctx: Context) -> dict[str, str | None]:
    return {"sqlite": ctx.sqlite_uri, "redis": ctx.redis_uri}


def _in_worker(ctx: Context, index: int, names: list[str]) -> dict[str, Any]:
    """Measure every section in a fresh process (its share of the rounds; the first one also
    counts bytecodes) and read back what it measured."""
    print(f"[benchmarks]   adapters: process {index + 1} of {ctx.processes}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bw-bench-worker-") as folder:
        answer = Path(folder) / "measured.json"
        order = {
            "quick": ctx.quick,
            "processes": ctx.processes,
            "count": index == 0,
            "uris": _shared_uris(ctx),
            "sections": names,
            "answer": str(answer),
        }
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.adapters", json.dumps(order)],
            cwd=ROOT,
            check=False,
        )
        if done.returncode != 0 or not answer.exists():
            reason = {"skipped": f"crashed: worker process exited with {done.returncode}"}
            return dict.fromkeys(names, reason)
        raw = json.loads(answer.read_text(encoding="utf-8"))
    return {name: Measured.from_json(got) for name, got in raw.items()}


def _worker(order: dict[str, Any]) -> None:
    """A worker process's part of ``run``: measure, and write the raw samples as JSON."""
    ctx = Context(
        quick=order["quick"],
        out=Path(order["answer"]).parent,
        sqlite_uri=order["uris"]["sqlite"],
        redis_uri=order["uris"]["redis"],
        processes=order["processes"],
    )
    got = measure(ctx, order["sections"], Share(ctx.processes, order["count"]))
    raw = {name: m.to_json() if isinstance(m, Measured) else m for name, m in got.items()}
    Path(order["answer"]).write_text(json.dumps(raw), encoding="utf-8")


if __name__ == "__main__":
    _worker(json.loads(sys.argv[1]))
