"""Measurement helpers: interleaved A/B timing, robust statistics, environment, results."""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import importlib.metadata
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
PACKAGES = (
    "budgetwarden",
    "pydantic",
    "structlog",
    "litellm",
    "tiktoken",
    "langchain",
    "langchain-core",
    "langgraph",
    "crewai",
    "openai-agents",
    "openai",
    "redis",
)


@dataclass
class Context:
    """What a suite needs to know: how long to measure and where the ledgers are."""

    quick: bool
    out: Path
    sqlite_uri: str | None = None
    redis_uri: str | None = None
    notes: list[str] = field(default_factory=list)
    #: Fresh processes that share the adapter benchmark's rounds, one after another: a
    #: process's memory layout moves its median overhead by a point or two.
    processes: int = 1

    def scale(self, full: int, quick: int) -> int:
        """``full`` repetitions normally, ``quick`` under ``--quick``."""
        return quick if self.quick else full


# ---------------------------------------------------------------------------- statistics
def stats(samples: Sequence[float], digits: int = 3) -> dict[str, Any]:
    """Median, quartiles, min, max and count of ``samples``."""
    if not samples:
        return {"n": 0}
    ordered = sorted(samples)
    return {
        "median": round(statistics.median(ordered), digits),
        "p25": round(_quantile(ordered, 0.25), digits),
        "p75": round(_quantile(ordered, 0.75), digits),
        "min": round(ordered[0], digits),
        "max": round(ordered[-1], digits),
        "n": len(ordered),
    }


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``samples``, linearly interpolated."""
    return _quantile(sorted(samples), q)


def _quantile(ordered: Sequence[float], q: float) -> float:
    if len(ordered) == 1:
        return float(ordered[0])
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (pos - low))


def paired_overhead(ours: Sequence[float], base: Sequence[float]) -> dict[str, Any]:
    """Overhead of ``ours`` over ``base`` in %, from per-round pairs (same round, same load).

    The headline is the median of the per-round ratios; the quartiles of those ratios are the
    spread. The ratio of the two medians is given too.
    """
    ratios = [(a / b - 1.0) * 100.0 for a, b in zip(ours, base, strict=True) if b > 0]
    out = stats(ratios, 2)
    out["ratio_of_medians_pct"] = round(
        (statistics.median(ours) / statistics.median(base) - 1.0) * 100.0, 2
    )
    out["delta_median"] = round(statistics.median(ours) - statistics.median(base), 3)
    return out


# ---------------------------------------------------------------------------- timing
Variant = Callable[[], int]


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Move every object alive now out of the collector's sight (``gc.freeze``).

    With frameworks and LiteLLM loaded a full collection takes ~0.1 s; frozen, the per-sample
    ``gc.collect()`` only walks what the benchmark itself allocated.
    """
    global _frozen_depth
    if _frozen_depth == 0:
        gc.collect()
        gc.freeze()
    _frozen_depth += 1
    try:
        yield
    finally:
        _frozen_depth -= 1
        if _frozen_depth == 0:
            gc.unfreeze()


_frozen_depth = 0


def interleave(
    variants: Mapping[str, Variant],
    *,
    rounds: int,
    warmup: int = 2,
    seed: int = 7,
    setup: Mapping[str, Callable[[], None]] | None = None,
) -> dict[str, dict[str, list[float]]]:
    """Run every variant once per round, in a shuffled order, ``rounds`` times.

    Each variant does one unit of work and returns how many steps it made; the result holds,
    per variant, wall-clock (``perf_counter_ns``) and CPU (``process_time_ns``) microseconds
    per step, one sample per round. ``warmup`` rounds run first and are discarded. GC is
    collected before and disabled during each sample so one variant does not pay for
    another's garbage. ``setup[name]``, when given, runs untimed before each sample.
    """
    prepare = setup or {}
    rng = random.Random(seed)
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            if name in prepare:
                prepare[name]()
            variants[name]()
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    with frozen_heap():
        _rounds(variants, prepare, rounds, rng, wall, cpu)
    return {"wall_us": wall, "cpu_us": cpu}


def _rounds(
    variants: Mapping[str, Variant],
    prepare: Mapping[str, Callable[[], None]],
    rounds: int,
    rng: random.Random,
    wall: dict[str, list[float]],
    cpu: dict[str, list[float]],
) -> None:
    names = list(variants)
    for _ in range(rounds):
        order = names[:]
        rng.shuffle(order)
        for name in order:
            if name in prepare:
                prepare[name]()
            gc.collect()
            gc.disable()
            try:
                c0, t0 = time.process_time_ns(), time.perf_counter_ns()
                steps = variants[name]()
                t1, c1 = time.perf_counter_ns(), time.process_time_ns()
            finally:
                gc.enable()
            steps = max(steps, 1)
            wall[name].append((t1 - t0) / 1000.0 / steps)
            cpu[name].append((c1 - c0) / 1000.0 / steps)


def timed_batches(
    fn: Callable[[], object], *, batch: int, batches: int, warmup: int = 1
) -> list[float]:
    """Microseconds per call of ``fn``, one sample per batch of ``batch`` calls."""
    for _ in range(warmup * batch):
        fn()
    out: list[float] = []
    with frozen_heap():
        for _ in range(batches):
            gc.collect()
            gc.disable()
            try:
                t0 = time.perf_counter_ns()
                for _ in range(batch):
                    fn()
                out.append((time.perf_counter_ns() - t0) / 1000.0 / batch)
            finally:
                gc.enable()
    return out


def interleaved_batches(
    fns: Mapping[str, tuple[Callable[[], object], int]], *, rounds: int, warmup: int = 1
) -> dict[str, list[float]]:
    """µs per call of each function, one batch (of its own size) each per round, interleaved.

    Batches of the functions alternate within each round, so a burst of load from elsewhere
    on the machine falls on all of them alike.
    """
    out: dict[str, list[float]] = {name: [] for name in fns}
    for fn, size in fns.values():
        timed_batches(fn, batch=size, batches=0, warmup=warmup)
    with frozen_heap():
        for _ in range(rounds):
            for name, (fn, size) in fns.items():
                out[name] += timed_batches(fn, batch=size, batches=1, warmup=0)
    return out


# ---------------------------------------------------------------------------- bytecodes
def our_code_dirs() -> tuple[str, ...]:
    """Where budgetwarden's own code lives (the core and the adapters), as loaded."""
    import budgetwarden
    import budgetwarden.integrations

    return tuple(
        str(Path(module.__file__).resolve().parent)
        for module in (budgetwarden, budgetwarden.integrations)
        if module.__file__
    )


def bytecodes(fn: Callable[[], object], ours: tuple[str, ...]) -> dict[str, int]:
    """Python bytecodes one call of ``fn`` executes, in every thread: in all, and in files
    under ``ours``. Deterministic where timings are noisy; tracing makes the call ~50x
    slower, so this is counted once, apart from the timed rounds. The collector is run
    before and held off during the call, as in the timed rounds."""
    counts = {"total": 0, "ours": 0}
    known: dict[str, bool] = {}

    def trace(frame: Any, event: str, arg: Any) -> Any:
        filename = frame.f_code.co_filename
        mine = known.get(filename)
        if mine is None:
            mine = known[filename] = str(Path(filename).resolve()).startswith(ours)
        frame.f_trace_opcodes = True
        key = "ours" if mine else "total"

        def local(frame: Any, event: str, arg: Any) -> Any:
            if event == "opcode":
                counts[key] += 1
            return local

        return local

    import threading

    gc.collect()  # as in the timed rounds: no variant runs another's finalizers or cleanup
    gc.disable()
    threading.settrace(trace)
    sys.settrace(trace)
    try:
        fn()
    finally:
        sys.settrace(None)
        threading.settrace(None)  # type: ignore[arg-type]
        gc.enable()
    counts["total"] += counts["ours"]
    return counts


# ---------------------------------------------------------------------------- environment
def environment() -> dict[str, Any]:
    """Versions, CPU count, load and date of this run."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "git_commit": _git_commit(),
        "versions": versions,
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def write_result(ctx: Context, name: str, data: dict[str, Any], started: float) -> Path:
    """Write ``results/<name>.json`` with the environment, the mode and the run time."""
    ctx.out.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "quick": ctx.quick,
        "seconds": round(time.perf_counter() - started, 2),
        "environment": environment(),
        **data,
    }
    path = ctx.out / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def verdict(value: float | None, target: float, *, higher_is_better: bool = False) -> str:
    """'pass' or 'fail' against a target (None: 'n/a')."""
    if value is None:
        return "n/a"
    ok = value >= target if higher_is_better else value <= target
    return "pass" if ok else "fail"
