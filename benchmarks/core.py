"""Core hot path: a before/after pair, PriceBook against LiteLLM, the token estimate.

Targets (issue 9): a ``before_llm_call`` + ``after_llm_call`` pair on the memory ledger in
<= 20 µs; ``PriceBook.cost`` >= 100x faster than ``litellm.cost_per_token`` /
``litellm.completion_cost`` with identical figures.
"""

from __future__ import annotations

import cProfile
import gc
import itertools
import math
import pstats
import statistics
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from budgetwarden import Budget, Limits, Policy, PriceBook, Usage, Warden
from budgetwarden.events import CostEvent
from budgetwarden.ledger.base import Charge
from budgetwarden.ledger.memory import MemoryLedger
from budgetwarden.usage import estimate_message_tokens

from . import texts
from ._harness import Context, interleaved_batches, stats, timed_batches, verdict, write_result

PAIR_TARGET_US = 20.0
PRICE_TARGET_X = 100.0
MODEL = "gpt-4o-mini"
USAGE = Usage(input_tokens=620, output_tokens=180)

#: Models priced by both PriceBook and LiteLLM, with the usage each is priced on.
PRICE_CASES: list[tuple[str, Usage]] = [
    ("gpt-4o", Usage(input_tokens=1200, output_tokens=300)),
    ("gpt-4o-mini", Usage(input_tokens=1200, output_tokens=300)),
    ("gpt-4.1-nano", Usage(input_tokens=1200, output_tokens=300)),
    ("claude-sonnet-4-20250514", Usage(input_tokens=1200, output_tokens=300)),
    ("gemini/gemini-2.5-pro", Usage(input_tokens=250_000, output_tokens=2_000)),
    (
        "bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0",
        Usage(input_tokens=900, output_tokens=50),
    ),
    ("mistral/mistral-large-latest", Usage(input_tokens=1200, output_tokens=300)),
    ("deepseek/deepseek-chat", Usage(input_tokens=1200, output_tokens=300)),
]


def policies() -> dict[str, Policy]:
    """The policies the pair is timed under, from none to a typical production one."""
    caps = Limits(
        max_iterations=10**9,
        max_tool_calls=10**9,
        max_cost_usd=1e9,
        max_input_tokens=10**12,
        max_output_tokens=10**12,
    )
    budgets = [
        Budget(scope="user", window="day", max_cost_usd=1e9),
        Budget(scope="global", window="1m", max_requests=10**12),
    ]
    return {
        "no caps": Policy(),
        "run caps": Policy(limits=caps),
        "run caps + 2 budgets": Policy(limits=caps, budgets=budgets),
    }


def _pair(run: Any, messages: list[dict[str, str]]) -> Callable[[], None]:
    def pair() -> None:
        step = run.before_llm_call(MODEL, messages, max_tokens=512)
        run.after_llm_call(step, USAGE, latency_s=0.5)

    return pair


def _recorded_pair(run: Any, messages: list[dict[str, str]]) -> Callable[[], None]:
    """The pair as adapters make it: ``record_llm_call`` (no CostEvent nobody reads)."""

    def pair() -> None:
        step = run.before_llm_call(MODEL, messages, max_tokens=512)
        run.record_llm_call(step, USAGE, latency_s=0.5)

    return pair


def hot_path(ctx: Context) -> dict[str, Any]:
    """µs per before/after pair on the memory ledger, per policy, interleaved."""
    messages = texts.chat(texts.prose(2400))
    pairs = {}
    for name, policy in policies().items():
        run = Warden(policy).run(user="u1", agent="bench")
        pairs[name] = _pair(run, messages)
    adapters_run = Warden(policies()["run caps + 2 budgets"]).run(user="u1", agent="bench")
    pairs["run caps + 2 budgets, record_llm_call (as adapters)"] = _recorded_pair(
        adapters_run, messages
    )
    batch = 500
    samples = interleaved_batches(
        {name: (fn, batch) for name, fn in pairs.items()}, rounds=ctx.scale(40, 4)
    )
    out: dict[str, Any] = {"batch": batch, "messages_chars": 2400, "policies": {}}
    for name, values in samples.items():
        out["policies"][name] = {"pair_us": stats(values, 2)}
    headline = out["policies"]["run caps + 2 budgets"]["pair_us"]["median"]
    out["target_us"] = PAIR_TARGET_US
    out["headline_policy"] = "run caps + 2 budgets"
    out["verdict"] = verdict(headline, PAIR_TARGET_US)
    out["verdict_per_policy"] = {
        name: verdict(v["pair_us"]["median"], PAIR_TARGET_US) for name, v in out["policies"].items()
    }
    out["run_open_finish_us"] = stats(_run_lifecycle(ctx), 2)
    out["tool_pair_us"] = stats(_tool_pairs(ctx), 2)
    return out


def _tool_pairs(ctx: Context) -> list[float]:
    """before_tool_call + after_tool_call (an unpriced tool) under the production policy."""
    run = Warden(policies()["run caps + 2 budgets"]).run(user="u1", agent="bench")
    counter = itertools.count()

    def tool_pair() -> None:
        step = run.before_tool_call("search", {"q": f"query {next(counter)}"})
        run.after_tool_call(step, latency_s=0.1)

    return timed_batches(tool_pair, batch=500, batches=ctx.scale(20, 3))


def _run_lifecycle(ctx: Context) -> list[float]:
    warden = Warden(policies()["run caps + 2 budgets"])

    def open_finish() -> None:
        with warden.run(user="u1", agent="bench"):
            pass

    return timed_batches(open_finish, batch=200, batches=ctx.scale(20, 3))


# ---------------------------------------------------------------------------- cold caches
#: Small dicts walked before each cold step: about 10 MB, more than this machine's caches,
#: as an agent framework's own work between two of our calls is.
EVICT_OBJECTS = 100_000


def cold_step(ctx: Context) -> dict[str, Any]:
    """One agent step as the adapters make it (model call, then tool call) with the CPU
    caches warm (back to back) and cold (after walking ``EVICT_OBJECTS`` dicts, untimed).

    In an agent the framework runs between our calls and evicts our code and data from the
    caches, so every object we touch costs a trip to memory. Cold is what a step of ours
    costs there, which the adapters' "µs per step added" figures show; the do-nothing step
    (four calls to empty methods) is the floor a cold measurement itself pays.
    """
    messages = texts.chat(texts.prose(2400))
    junk = [{"n": i, "s": str(i), "l": [i]} for i in range(EVICT_OBJECTS)]
    production = Warden(policies()["run caps + 2 budgets"])
    steps: dict[str, tuple[Callable[[], Any], Callable[[Any], None]]] = {
        "do-nothing step": (_Idle, _idle_step),
        "run caps + 2 budgets": (
            lambda: production.run(user="u1", agent="bench"),
            partial(_guarded_step, messages, itertools.count()),
        ),
        "no caps": (
            lambda: Warden(Policy()).run(user="u1", agent="bench"),
            partial(_guarded_step, messages, itertools.count()),
        ),
    }
    per_round = ctx.scale(50, 10)
    samples: dict[str, dict[str, list[float]]] = {n: {"warm": [], "cold": []} for n in steps}
    for _ in range(ctx.scale(20, 3)):
        for name, (open_run, step) in steps.items():
            for mode in ("warm", "cold"):
                run = open_run()
                samples[name][mode].append(_timed_steps(run, step, per_round, junk, mode))
                run.finish()
    out: dict[str, Any] = {"evict_objects": EVICT_OBJECTS, "steps_per_sample": per_round}
    out["step_us"] = {
        name: {mode: stats(values, 2) for mode, values in by_mode.items()}
        for name, by_mode in samples.items()
    }
    return out


def _timed_steps(
    run: Any, step: Callable[[Any], None], count: int, junk: list[dict[str, Any]], mode: str
) -> float:
    """µs per step of ``count`` steps, each after a walk over ``junk`` when ``mode`` is cold."""
    step(run)  # warm up the run's caches (buckets, rates)
    total = 0
    gc.collect()
    gc.disable()
    try:
        for _ in range(count):
            if mode == "cold":
                _walk(junk)
            t0 = time.perf_counter_ns()
            step(run)
            total += time.perf_counter_ns() - t0
    finally:
        gc.enable()
    return total / count / 1000.0


def _walk(junk: list[dict[str, Any]]) -> int:
    """Touch every object of ``junk`` (evicts what the caches held)."""
    total = 0
    for item in junk:
        total += item["n"] + len(item["l"])
    return total


def _guarded_step(messages: list[dict[str, str]], ids: Iterator[int], run: Any) -> None:
    """A model call and a tool call, recorded as the adapters record them."""
    step = run.before_llm_call(MODEL, messages, max_tokens=512)
    run.record_llm_call(step, USAGE, latency_s=0.5)
    tool = run.before_tool_call("search", {"query": f"query {next(ids)}"})
    run.record_tool_call(tool, ok=True)


class _Idle:
    """A run whose four calls do nothing (the floor of a cold measurement)."""

    def before_llm_call(self) -> None:
        """Nothing."""

    def record_llm_call(self) -> None:
        """Nothing."""

    def before_tool_call(self) -> None:
        """Nothing."""

    def record_tool_call(self) -> None:
        """Nothing."""

    def finish(self) -> None:
        """Nothing."""


def _idle_step(run: Any) -> None:
    run.before_llm_call()
    run.record_llm_call()
    run.before_tool_call()
    run.record_tool_call()


# ---------------------------------------------------------------------------- breakdown
def breakdown(ctx: Context) -> dict[str, Any]:
    """What the pieces of a pair cost alone (µs per call), to say where the time goes."""
    messages = texts.chat(texts.prose(2400))
    prices = PriceBook()
    prices.cost(MODEL, USAGE)
    ledger = MemoryLedger()
    charges = [
        Charge("bench|user=u1|day", 0.01, 1e9, math.inf),
        Charge("bench|global=*|1m", 1.0, 1e12, math.inf),
    ]
    ids = iter(range(10**9))

    def ledger_pair() -> None:
        rid = f"r{next(ids)}"
        ledger.reserve(rid, charges, now=1.0, lease_until=301.0, watch=("run=r", "user=u1"))
        ledger.commit(rid, charges, now=1.0)

    event_fields = _event_fields()
    pieces: dict[str, Callable[[], object]] = {
        "estimate_message_tokens (2,400 chars)": lambda: estimate_message_tokens(messages),
        "PriceBook.cost": lambda: prices.cost(MODEL, USAGE),
        "PriceBook.worst_case_cost": lambda: prices.worst_case_cost(MODEL, 600, 512),
        "Usage(...) (validated)": lambda: Usage(input_tokens=620, output_tokens=180),
        "CostEvent.model_construct (as Run does)": lambda: CostEvent.model_construct(
            None, **event_fields
        ),
        "CostEvent(...) (validated)": lambda: CostEvent(**event_fields),
        "MemoryLedger reserve + commit (2 buckets)": ledger_pair,
    }
    batches = ctx.scale(15, 3)
    out = {}
    for name, fn in pieces.items():
        out[name] = stats(timed_batches(lambda f=fn: f(), batch=500, batches=batches), 2)  # type: ignore[misc]
    return out


def _event_fields() -> dict[str, Any]:
    """The keyword arguments ``Run._record_llm`` passes for one model call."""
    return {
        "ts": time.time(),
        "run_id": "run-0123456789ab",
        "parent_run_id": None,
        "agent": "bench",
        "user": "u1",
        "workspace": None,
        "workflow": None,
        "task_class": None,
        "key": None,
        "thread": None,
        "feature": None,
        "kind": "llm",
        "provider": "openai",
        "model": MODEL,
        "tier": None,
        "route": MODEL,
        "route_reason": "caller model (unrouted)",
        "input_tokens": 620,
        "output_tokens": 180,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
        "estimated": False,
        "cost_usd": 0.0002,
        "reserved_usd": 0.0004,
        "overshoot_usd": 0.0,
        "latency_s": 0.5,
        "retries": 0,
        "retry": False,
        "outcome": "ok",
        "validation": None,
        "status": "ok",
        "budget_ratios": {"run:max_cost_usd": 0.0},
        "success": None,
        "prompt": None,
        "response": None,
    }


def profile(ctx: Context, top: int = 14) -> dict[str, Any]:
    """cProfile of pairs under the production-like policy: where the time goes (% of total)."""
    messages = texts.chat(texts.prose(2400))
    run = Warden(policies()["run caps + 2 budgets"]).run(user="u1", agent="bench")
    pair = _pair(run, messages)
    n = ctx.scale(5000, 500)
    for _ in range(500):
        pair()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(n):
        pair()
    profiler.disable()
    st = pstats.Stats(profiler)
    total = st.total_tt  # type: ignore[attr-defined]
    rows = []
    for (file, line, func), (_cc, ncalls, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "function": f"{_short(file)}:{line}({func})",
                "self_pct": round(100 * tt / total, 1),
                "cumulative_pct": round(100 * ct / total, 1),
                "calls_per_pair": round(ncalls / n, 2),
            }
        )
    by_self = sorted(rows, key=lambda r: -r["self_pct"])[:top]
    by_cum = sorted(
        (r for r in rows if "core/" in r["function"] or "pydantic" in r["function"]),
        key=lambda r: -r["cumulative_pct"],
    )[:top]
    return {"pairs": n, "by_self_time": by_self, "by_cumulative_time": by_cum}


def _short(path: str) -> str:
    for marker in ("/work/main/", "site-packages/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


# ---------------------------------------------------------------------------- pricing
def pricing(ctx: Context) -> dict[str, Any]:
    """PriceBook.cost against litellm.cost_per_token and completion_cost: same figure, speed."""
    import litellm

    prices = PriceBook()
    rows = []
    rounds = ctx.scale(9, 2)
    all_equal = True
    for model, usage in PRICE_CASES:
        ours = prices.cost(model, usage)
        per_token = sum(_litellm_cost_per_token(litellm, model, usage))
        response = _litellm_response(litellm, model, usage)
        by_response = litellm.completion_cost(completion_response=response, model=model)
        equal = math.isclose(ours, per_token, rel_tol=1e-9, abs_tol=1e-15) and math.isclose(
            ours, by_response, rel_tol=1e-9, abs_tol=1e-15
        )
        all_equal = all_equal and equal
        fns: dict[str, tuple[Callable[[], object], int]] = {
            "pricebook": (partial(prices.cost, model, usage), 2000),
            "cost_per_token": (partial(_litellm_cost_per_token, litellm, model, usage), 40),
            "completion_cost": (
                partial(litellm.completion_cost, completion_response=response, model=model),
                40,
            ),
        }
        times = interleaved_batches(fns, rounds=rounds)
        pb, cpt, cc = (stats(times[k], 3) for k in fns)
        rows.append(
            {
                "model": model,
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "pricebook_usd": ours,
                "cost_per_token_usd": per_token,
                "completion_cost_usd": by_response,
                "equal": equal,
                "pricebook_us": pb,
                "cost_per_token_us": cpt,
                "completion_cost_us": cc,
                "speedup_vs_cost_per_token": round(cpt["median"] / pb["median"], 1),
                "speedup_vs_completion_cost": round(cc["median"] / pb["median"], 1),
            }
        )
    worst = min(min(r["speedup_vs_cost_per_token"], r["speedup_vs_completion_cost"]) for r in rows)
    return {
        "cases": rows,
        "all_equal": all_equal,
        "min_speedup": worst,
        "median_speedup_vs_cost_per_token": round(
            statistics.median(r["speedup_vs_cost_per_token"] for r in rows), 1
        ),
        "median_speedup_vs_completion_cost": round(
            statistics.median(r["speedup_vs_completion_cost"] for r in rows), 1
        ),
        "target_speedup": PRICE_TARGET_X,
        "verdict": "pass" if all_equal and worst >= PRICE_TARGET_X else "fail",
    }


def _litellm_cost_per_token(litellm: Any, model: str, usage: Usage) -> tuple[float, float]:
    result: tuple[float, float] = litellm.cost_per_token(
        model=model,
        prompt_tokens=usage.input_tokens,
        completion_tokens=usage.output_tokens,
    )
    return result


def _litellm_response(litellm: Any, model: str, usage: Usage) -> Any:
    return litellm.ModelResponse(
        model=model,
        choices=[{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
        usage=litellm.Usage(
            prompt_tokens=usage.input_tokens,
            completion_tokens=usage.output_tokens,
            total_tokens=usage.input_tokens + usage.output_tokens,
        ),
    )


# ---------------------------------------------------------------------------- estimate
def _varied_chats(count: int, chars: int = 2400) -> list[list[dict[str, str]]]:
    """``count`` different chats of ``chars`` characters (no tokenizer cache can help)."""
    base = texts.prose(chars + 32)
    return [texts.chat((f"[{i}] " + base)[:chars]) for i in range(count)]


def _cycler(
    fn: Callable[[list[dict[str, str]]], object], chats: list[list[dict[str, str]]]
) -> Callable[[], object]:
    pool = itertools.cycle(chats)
    return lambda: fn(next(pool))


def _count(litellm: Any, model: str, messages: list[dict[str, str]]) -> int:
    count: int = litellm.token_counter(model=model, messages=messages)
    return count


def estimate(ctx: Context) -> dict[str, Any]:
    """The reservation's estimate against ``litellm.token_counter``: speed and error."""
    import litellm

    chats = _varied_chats(ctx.scale(400, 60))
    fns: dict[str, tuple[Callable[[], object], int]] = {
        "estimate_message_tokens": (_cycler(estimate_message_tokens, chats), 1000),
        "token_counter gpt-4o (tiktoken)": (
            _cycler(partial(_count, litellm, "gpt-4o"), chats),
            20,
        ),
        "token_counter claude-sonnet-4 (HF tokenizer)": (
            _cycler(partial(_count, litellm, "claude-sonnet-4-20250514"), chats),
            2,
        ),
    }
    times = interleaved_batches(fns, rounds=ctx.scale(9, 2))
    timing = {name: stats(values, 2) for name, values in times.items()}
    ours = timing["estimate_message_tokens"]["median"]
    errors = {}
    for name, make in texts.SAMPLES.items():
        sample = texts.chat(make(2400))
        est = estimate_message_tokens(sample)
        row: dict[str, Any] = {"estimate": est}
        for model in ("gpt-4o", "claude-sonnet-4-20250514"):
            real = litellm.token_counter(model=model, messages=sample)
            row[model] = {"token_counter": real, "error_pct": round(100 * (est - real) / real, 1)}
        errors[name] = row
    return {
        "chars": 2400,
        "timing_us": timing,
        "speedup": {
            name: round(stat["median"] / ours, 1)
            for name, stat in timing.items()
            if name != "estimate_message_tokens"
        },
        "error_by_text": errors,
        "error_note": "error_pct = (estimate - token_counter) / token_counter; negative means "
        "the reservation under-counts the prompt",
    }


def run(ctx: Context) -> dict[str, Any]:
    """Every core figure; writes results/core.json."""
    started = time.perf_counter()
    data: dict[str, Any] = {}
    sections: dict[str, Callable[[Context], dict[str, Any]]] = {
        "hot_path": hot_path,
        "cold_step": cold_step,
        "breakdown_us": breakdown,
        "profile": profile,
        "pricing": pricing,
        "estimate": estimate,
    }
    for name, section in sections.items():
        t0 = time.perf_counter()
        data[name] = section(ctx)
        print(f"[benchmarks]   core/{name}: {time.perf_counter() - t0:.1f} s", flush=True)
    write_result(ctx, "core", data, started)
    return data
