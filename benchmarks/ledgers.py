"""Ledger throughput and latency: guarded calls from 1, 4 and 8 processes on one budget.

Each process opens its own warden on the shared ledger (SQLite file, or our loopback
redis-server) and makes guarded calls (``before_llm_call`` + ``after_llm_call`` against the
same two buckets, a user budget and a global request budget, both far from their limits)
for a fixed time, after a barrier. Reported: calls/s of all processes together and the
per-call latency percentiles, twice: as a warden does by default (pools: 32 calls reserved
per trip while a budget has room, see ``budgetwarden.pools``), and with pools off
(``pool_calls = 0``: every call one trip, its commit riding on the next call's), which is
what calls near a limit cost. Redis ``PING`` from the same number of processes, in the same
run, is the floor of a trip.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any

from ._harness import Context, percentile, write_result

MAX_SAMPLES = 20_000


def _policy() -> Any:
    from budgetwarden import Budget, Policy

    return Policy(
        budgets=[
            Budget(scope="user", window="day", max_cost_usd=1e12),
            Budget(scope="global", window="1m", max_requests=10**15),
        ]
    )


def _guarded_loop(uri: str, pooled: bool = True) -> tuple[Any, Any]:
    from budgetwarden import Usage, Warden

    class Unpooled(Warden):
        pool_calls = 0

    warden = (Warden if pooled else Unpooled)(_policy(), ledger=uri)
    run = warden.run(user="shared", agent="bench")
    messages = [{"role": "user", "content": "x" * 400}]
    usage = Usage(input_tokens=100, output_tokens=20)

    def call() -> None:
        step = run.before_llm_call("gpt-4o-mini", messages, max_tokens=128)
        run.after_llm_call(step, usage)

    return call, warden


def _ping_loop(uri: str) -> tuple[Any, Any]:
    import redis

    client = redis.Redis.from_url(uri)
    return client.ping, client


def _worker(kind: str, uri: str, seconds: float, barrier: Any, queue: Any) -> None:
    from . import _env  # noqa: F401

    if kind == "ping":
        call, resource = _ping_loop(uri)
    else:
        call, resource = _guarded_loop(uri, pooled=kind == "guarded")
    for _ in range(50):
        call()
    barrier.wait()
    latencies: list[float] = []
    count = 0
    start = time.perf_counter_ns()
    deadline = start + int(seconds * 1e9)
    now = start
    while now < deadline:
        call()
        after = time.perf_counter_ns()
        count += 1
        if len(latencies) < MAX_SAMPLES:
            latencies.append((after - now) / 1000)
        now = after
    queue.put({"count": count, "elapsed_s": (now - start) / 1e9, "latencies_us": latencies})
    close = getattr(resource, "close", None)
    if callable(close):
        close()


def measure(kind: str, uri: str, processes: int, seconds: float) -> dict[str, Any]:
    """``processes`` workers of ``kind`` ("guarded", "unpooled" or "ping") on ``uri``."""
    spawn = mp.get_context("spawn")
    barrier = spawn.Barrier(processes)
    queue = spawn.Queue()
    workers = [
        spawn.Process(target=_worker, args=(kind, uri, seconds, barrier, queue))
        for _ in range(processes)
    ]
    for w in workers:
        w.start()
    results = [queue.get(timeout=300) for _ in workers]
    for w in workers:
        w.join(timeout=60)
    latencies = [x for r in results for x in r["latencies_us"]]
    calls = sum(r["count"] for r in results)
    elapsed = max(r["elapsed_s"] for r in results)
    return {
        "processes": processes,
        "calls": calls,
        "calls_per_s": round(calls / elapsed, 1),
        "p50_us": round(percentile(latencies, 0.5), 1),
        "p99_us": round(percentile(latencies, 0.99), 1),
        "max_us": round(max(latencies), 1),
    }


def run(ctx: Context) -> dict[str, Any]:
    """Every ledger at every process count; writes results/ledgers.json."""
    started = time.perf_counter()
    seconds = 0.4 if ctx.quick else 2.0
    counts = (1, 4) if ctx.quick else (1, 4, 8)
    data: dict[str, Any] = {"seconds_per_measure": seconds, "notes": list(ctx.notes), "rows": []}
    data["rows"].append(
        {"ledger": "memory (one process, reference)", **measure("guarded", "memory://", 1, seconds)}
    )
    targets = [
        ("sqlite", ctx.sqlite_uri, "guarded"),
        ("sqlite, pools off", ctx.sqlite_uri, "unpooled"),
        ("redis", ctx.redis_uri, "guarded"),
        ("redis, pools off", ctx.redis_uri, "unpooled"),
    ]
    if ctx.redis_uri:
        targets.append(("redis PING (floor)", ctx.redis_uri, "ping"))
    for name, uri, kind in targets:
        if uri is None:
            data["rows"].append({"ledger": name, "skipped": "not available in this run"})
            continue
        for n in counts:
            data["rows"].append({"ledger": name, **measure(kind, uri, n, seconds)})
    write_result(ctx, "ledgers", data, started)
    return data
