"""The benchmark harness still runs: ``python -m benchmarks --quick --only core`` writes its JSON.

Timing targets are not asserted here (CI machines are noisy); only that the harness works, that
every figure is there, and that PriceBook and LiteLLM agree on every price it compares.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from services import binary_or_skip

ROOT = Path(__file__).resolve().parent.parent


def _quick_run(tmp_path: Path, name: str, timeout: float) -> dict[str, Any]:
    """``python -m benchmarks --quick --only NAME --out tmp_path``; its JSON results."""
    command = ["-m", "benchmarks", "--quick", "--only", name, "--out", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    data: dict[str, Any] = json.loads((tmp_path / f"{name}.json").read_text())
    return data


def test_quick_core_benchmark_writes_its_results(tmp_path: Path) -> None:
    data = _quick_run(tmp_path, "core", timeout=600)
    assert data["benchmark"] == "core" and data["quick"] is True
    env = data["environment"]
    assert env["cpu_count"] >= 1 and env["versions"]["budgetwarden"] and env["date"]
    hot = data["hot_path"]
    for policy in hot["policies"].values():
        assert policy["pair_us"]["median"] > 0
    assert hot["verdict"] in ("pass", "fail")
    pricing = data["pricing"]
    assert pricing["all_equal"] is True, [c for c in pricing["cases"] if not c["equal"]]
    assert all(case["speedup_vs_cost_per_token"] > 0 for case in pricing["cases"])
    estimate = data["estimate"]
    assert estimate["timing_us"]["estimate_message_tokens"]["median"] > 0
    errors = estimate["error_by_text"]
    assert set(errors) == {"english prose", "python code", "json", "chinese prose"}
    # Counted in UTF-8 bytes, Chinese is estimated within a third of GPT-4o's count (by
    # characters it was a third of it).
    assert abs(errors["chinese prose"]["gpt-4o"]["error_pct"]) < 33
    assert data["profile"]["by_self_time"]
    cold = data["cold_step"]["step_us"]
    assert set(cold) == {"do-nothing step", "run caps + 2 budgets", "no caps"}
    guarded = cold["run caps + 2 budgets"]
    # evicting the caches before each step makes it dearer: the measurement measures something
    assert guarded["cold"]["median"] > guarded["warm"]["median"] > 0
    summary = (tmp_path / "BENCHMARKS.md").read_text()
    assert "Core hot path" in summary and "One agent step, warm and cold" in summary


def test_bytecodes_are_counted_in_all_and_in_our_code() -> None:
    sys.path.insert(0, str(ROOT))
    from benchmarks._harness import bytecodes, our_code_dirs
    from budgetwarden.usage import estimate_message_tokens

    def theirs() -> int:
        return sum(range(3))

    messages = [{"role": "user", "content": "hello " * 20}] * 3
    ours = bytecodes(lambda: estimate_message_tokens(messages), our_code_dirs())
    assert 0 < ours["ours"] <= ours["total"]
    assert (
        bytecodes(lambda: estimate_message_tokens(messages * 2), our_code_dirs())["ours"]
        > ours["ours"]
    ), "more messages, more of our bytecodes"
    other = bytecodes(theirs, our_code_dirs())
    assert other["ours"] == 0 and other["total"] > 0


def test_the_openai_client_agents_run_against_the_canned_endpoint() -> None:
    """The real ChatOpenAI and AsyncOpenAI clients, answered by the canned endpoint, make the
    scripted number of calls (the benchmark checks this at every invocation too)."""
    import asyncio

    sys.path.insert(0, str(ROOT))
    from benchmarks import _lc, _oa

    assert _lc.invoker(_lc.openai_client_agent(3), 3)() == 4
    loop = asyncio.new_event_loop()
    try:
        assert _oa.invoker(loop, 3, lambda: None, _oa.make_openai_client_agent(3))() == 4
    finally:
        loop.close()


def test_the_langchain_middleware_section_measures_the_empty_policy_and_counting_floors(
    tmp_path: Path,
) -> None:
    import benchmarks._env  # noqa: F401  (offline, telemetry off)
    from benchmarks import adapters
    from benchmarks._harness import Context
    from budgetwarden import Warden

    warden = Warden(adapters.policy())
    try:
        measured = adapters.langchain_middleware(
            Context(quick=True, out=tmp_path), {"memory": warden}, adapters.Share(1, True)
        )
    finally:
        warden.close()
    out = adapters.pooled([measured])
    for key in ("budgetwarden_memory_empty_policy_vs_noop_pct", "counting_middleware_vs_noop_pct"):
        floor = out[key]
        assert math.isfinite(floor["wall"]["median"]) and math.isfinite(floor["cpu"]["median"])
    counted = out["bytecodes"]
    empty, full = counted[adapters.EMPTY], counted["budgetwarden/memory"]
    assert 0 < empty["budgetwarden_per_step"] < full["budgetwarden_per_step"], (
        "caps and budgets are work the empty policy does not do"
    )
    counting = counted[adapters.COUNTING]
    assert counting["budgetwarden_per_step"] == 0  # benchmark code, not ours
    # The counting middleware runs a few dozen bytecodes a step beyond the do-nothing one, less
    # than a pool thread the framework reuses (untraced) or starts (traced) can move a count.
    noop = counted["noop"]["per_step"]
    assert abs(counting["per_step"] - noop) < 0.01 * noop < full["per_step"] - noop
    assert out["verdict"]["memory"] in ("pass", "fail")


def test_the_counting_middleware_adds_up_usage_and_caps_model_calls() -> None:
    """The floor the LangChain section compares against does a guard's least: it counts each
    model call's usage, and refuses the call after its cap."""
    import benchmarks._env  # noqa: F401  (offline, telemetry off)
    from benchmarks import _lc

    counting = _lc.CountingMiddleware()
    assert _lc.invoker(_lc.agent(3, [counting]), 3)() == 4
    assert (counting.model_calls, counting.total_tokens) == (4, 4 * 640)
    capped = _lc.CountingMiddleware(max_calls=2)
    with pytest.raises(RuntimeError, match="model call cap 2"):
        _lc.invoker(_lc.agent(3, [capped]), 3)()
    assert capped.model_calls == 2


def test_adapter_rounds_from_several_processes_are_pooled(tmp_path: Path) -> None:
    """Two worker processes measure a section (a share of the rounds each, the first one
    counting bytecodes); the pooled figures hold every process's rounds."""
    import benchmarks._env  # noqa: F401  (offline, telemetry off)
    from benchmarks import adapters
    from benchmarks._harness import Context

    ctx = Context(quick=True, out=tmp_path, processes=2)
    names = ["langchain_callback_handler"]
    parts = [adapters._in_worker(ctx, index, names)[names[0]] for index in range(2)]
    assert all(isinstance(part, adapters.Measured) for part in parts), parts
    first, second = parts
    assert first.bytecodes is not None and second.bytecodes is None
    out = adapters.pooled(parts)
    per_process = len(first.times["wall_us"]["noop"])
    assert per_process == 2  # 3 quick rounds, shared by 2 processes, rounded up
    assert out["variants"]["noop"]["wall_us_per_step"]["n"] == 2 * per_process
    assert len(out["overhead_by_process_pct"]["memory"]) == 2
    assert out["bytecodes"]["budgetwarden/memory"]["budgetwarden_per_step"] > 0


def test_callgrind_counts_what_the_middleware_adds(tmp_path: Path) -> None:
    """``--only callgrind`` counts the agent's instructions and cache misses under valgrind,
    with a do-nothing middleware and with ours: ours adds instructions, deterministically."""
    binary_or_skip("valgrind", install="valgrind")
    data = _quick_run(tmp_path, "callgrind", timeout=1500)
    assert set(data["per_step"]) == {"langchain_middleware", "openai_agents_run_hooks"}
    assert data["layouts"] == [0]  # --quick: one memory layout
    assert all(len(v) == 1 for v in data["added_pct_by_layout"].values())
    for agent, by_variant in data["per_step"].items():
        noop, ours = by_variant["noop"], by_variant["budgetwarden/memory"]
        assert noop["Ir"] > 100_000, "a step of the agent runs well over 100k instructions"
        assert ours["Ir"] > noop["Ir"] and ours["est_cycles"] > noop["est_cycles"], agent
        assert 0 < data["added_pct"][agent]["Ir"] < 50
    summary = (tmp_path / "BENCHMARKS.md").read_text()
    assert "Instructions and cache misses per step (callgrind)" in summary
