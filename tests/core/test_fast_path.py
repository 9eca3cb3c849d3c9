"""The fast paths (``run_fast``) decide exactly as the general path: side by side on random
call sequences, every step, refusal, counter, event and bucket must be the same."""

from __future__ import annotations

import random
from typing import Any

import pytest

from budgetwarden import (
    Budget,
    BudgetError,
    CostEvent,
    Limits,
    ListSink,
    Policy,
    ToolRules,
    Usage,
    Warden,
)
from budgetwarden.run import Run

from .helpers import FakeClock

POLICIES = {
    "caps": Policy(
        limits=Limits(
            max_iterations=12,
            max_tool_calls=9,
            max_cost_usd=0.02,
            max_input_tokens=40_000,
            max_output_tokens=3_000,
            max_retries=2,
            max_consecutive_errors=3,
            max_repeated_tool_calls=2,
            max_wall_seconds=50,
        ),
        tools=ToolRules(max_calls={"fetch": 3}),
    ),
    "budgets": Policy(
        limits=Limits(max_cost_usd=1.0, max_repeated_tool_calls=3),
        budgets=[
            Budget(scope="user", window="day", max_cost_usd=0.01),
            Budget(scope="global", window="1m", max_requests=7),
            Budget(scope="user", window="8h", max_tokens=30_000),
        ],
    ),
    "plain": Policy(),
    "tools": Policy(
        tools=ToolRules(deny=["rm"], price_usd={"serp": 0.001}, max_calls={"search": 4}),
        budgets=[Budget(scope="user", window="day", max_cost_usd=0.004)],
    ),
    "allow list": Policy(  # the fast path reads each tool's rules once per run
        limits=Limits(max_repeated_tool_calls=2),
        tools=ToolRules(allow=["search", "fetch", "serp"], max_calls={"fetch": 2}),
    ),
}
MODELS = ["gpt-4o-mini", "gpt-4o", "claude-sonnet-4-20250514"]
TOOLS = ["search", "fetch", "serp", "rm"]


class _NoCostEvents(ListSink):
    """A sink that takes alerts and notices only (adapters then skip their CostEvents)."""

    def wants(self, kind: type[Any]) -> bool:
        return kind is not CostEvent


class _SlowSettling(Warden):
    """Pools close only when told (not by the background thread, on the wall clock)."""

    settle_seconds = 3600.0


def _play(policy: Policy, seed: int, fast: bool, ledger: str | None = None) -> list[Any]:
    """One random sequence of calls; everything observable, in order (odd seeds: with a
    sink that wants no CostEvents). ``ledger``: a shared ledger (pools) instead of memory."""
    rng = random.Random(seed)
    clock, sink = FakeClock(), (_NoCostEvents() if seed % 2 else ListSink())
    warden = _SlowSettling(
        policy, clock=clock, sinks=[sink], log_events=False, ledger=ledger or "memory://"
    )
    run = warden.run(user="u1", agent="a", run_id="run-1")
    if not fast:
        run._fast_ok = False
    seen: list[Any] = []
    for _ in range(40):
        clock.advance(rng.choice([0.5, 2.0, 7.0]))
        seen.append(_llm(run, rng) if rng.random() < 0.55 else _tool(run, rng))
    run.finish()
    seen.append(run.report.model_dump(exclude={"run_id"}))
    seen.append([_event(e) for e in sink.events])
    if ledger is None:
        seen.append(sorted((k, round(b.committed, 12)) for k, b in warden.ledger._buckets.items()))
    else:
        seen.append(
            [
                round(warden.spent(b.scope, "u1" if b.scope == "user" else None, b.window), 12)
                for b in policy.budgets
            ]
        )
        warden.close()
    return seen


def _llm(run: Run, rng: random.Random) -> Any:
    messages = [{"role": "user", "content": "x" * rng.randint(10, 4000)}]
    try:
        step = run.before_llm_call(
            rng.choice(MODELS), messages, max_tokens=rng.choice([None, 50, 400, 900])
        )
    except BudgetError as exc:
        return ("refused", type(exc).__name__, getattr(exc, "cap", None))
    kept = _step(step)
    outcome = rng.choice(["ok", "ok", "ok", "invalid_json", "provider_error"])
    usage = Usage(input_tokens=step.input_tokens, output_tokens=rng.randint(0, step.max_tokens))
    if rng.random() < 0.5:  # the adapters' variant, which has a fast path of its own
        run.record_llm_call(step, usage, outcome=outcome, latency_s=0.3)
    else:
        run.after_llm_call(step, usage, outcome=outcome, latency_s=0.3)
    return kept


def _tool(run: Run, rng: random.Random) -> Any:
    name = rng.choice(TOOLS)
    try:
        step = run.before_tool_call(name, {"q": rng.choice(["a", "b"])}, call_id="c")
    except BudgetError as exc:
        return ("refused", type(exc).__name__, getattr(exc, "cap", None))
    ok = rng.random() < 0.8
    if rng.random() < 0.5:
        run.record_tool_call(step, ok=ok, latency_s=0.1)
    else:
        run.after_tool_call(step, ok=ok, latency_s=0.1)
    return _step(step)


def _step(step: Any) -> dict[str, Any]:
    fields = {k: getattr(step, k) for k in step.__slots__ if k not in ("id", "buckets")}
    fields["buckets"] = [ref.key for ref in getattr(step, "buckets", ())]
    return fields


def _event(event: Any) -> dict[str, Any]:
    data = event.to_dict()
    data.pop("run_id", None)
    return data


@pytest.mark.parametrize("name", sorted(POLICIES))
@pytest.mark.parametrize("seed", range(12))
def test_fast_and_general_paths_agree_on_everything(name: str, seed: int) -> None:
    fast, general = _play(POLICIES[name], seed, True), _play(POLICIES[name], seed, False)
    assert fast == general


#: Budgets large enough for pools (a shared ledger reserves many calls at once), and run caps
#: that refuse along the way.
POOLED = Policy(
    limits=Limits(max_cost_usd=0.05, max_iterations=15, max_repeated_tool_calls=2),
    budgets=[
        Budget(scope="user", window="day", max_cost_usd=1_000.0),
        Budget(scope="global", window="1m", max_requests=10**9),
    ],
)


@pytest.mark.parametrize("seed", range(6))
def test_fast_and_general_paths_agree_on_a_pooled_sqlite_ledger(seed: int, tmp_path: Any) -> None:
    fast = _play(POOLED, seed, True, f"sqlite:///{tmp_path}/fast.db")
    general = _play(POOLED, seed, False, f"sqlite:///{tmp_path}/general.db")
    assert fast == general


def test_pooled_calls_take_the_one_pass_path(tmp_path: Any) -> None:
    warden = _SlowSettling(POOLED, log_events=False, ledger=f"sqlite:///{tmp_path}/p.db")
    run = warden.run(user="u1")
    for _ in range(3):  # one to the ledger, one opens a pool, one asks about cancels
        step = run.before_llm_call("gpt-4o-mini", input_tokens=100, max_tokens=10)
        run.record_llm_call(step, Usage(input_tokens=100, output_tokens=10))
    served = run._local_llm_step("gpt-4o-mini", 10, 100)  # no trip due: one pass
    assert served is not None and run._local_step(served)
    run.record_llm_call(served, Usage(input_tokens=100, output_tokens=5))
    run.finish()
    assert warden.spent("user", "u1") > 0
    warden.close()


@pytest.mark.parametrize("seed", range(4))
def test_fast_and_general_paths_agree_without_budgets_on_a_shared_ledger(
    seed: int, tmp_path: Any
) -> None:
    """No budgets on SQLite: the one-pass path skips the cancel trip only between polls."""
    fast = _play(POLICIES["caps"], seed, True, f"sqlite:///{tmp_path}/fast.db")
    general = _play(POLICIES["caps"], seed, False, f"sqlite:///{tmp_path}/general.db")
    assert fast == general


def test_a_run_without_budgets_takes_the_one_pass_path_until_it_is_cancelled() -> None:
    warden = Warden(POLICIES["caps"], clock=FakeClock(), log_events=False)
    run = warden.run(user="u1")
    step = run._local_llm_step("gpt-4o-mini", 10, 10)  # nothing to reserve: one pass
    assert step is not None and step.buckets == () and run._local_step(step)
    run.record_llm_call(step, Usage(input_tokens=10, output_tokens=5))
    assert run.report.iterations == 1 and run.report.cost_usd > 0
    warden.cancel(run.id, reason="stop")
    assert run._local_llm_step("gpt-4o-mini", 10, 10) is None  # the general path says
    with pytest.raises(BudgetError):
        run.before_llm_call("gpt-4o-mini", input_tokens=10, max_tokens=10)


@pytest.mark.parametrize("name", ["caps", "budgets", "tools"])
def test_the_sequences_reach_refusals_and_alerts(name: str) -> None:
    """The comparison above means something only if the sequences hit the hard cases."""
    plays = [_play(POLICIES[name], seed, True) for seed in range(12)]
    refusals = {x[2] for play in plays for x in play[:-3] if isinstance(x, tuple)}
    alerts = [e for play in plays for e in play[-2] if e["type"] == "BudgetAlert"]
    assert len(refusals) >= 2 and alerts


def test_the_fast_paths_serve_plain_runs_and_step_aside_for_the_rest() -> None:
    warden = Warden(POLICIES["budgets"], clock=FakeClock(), log_events=False)
    plain = warden.run(user="u1")
    assert plain._plain()
    assert plain._quick_llm_claim("gpt-4o-mini", 10, 10) is not None
    step = plain._local_llm_step("gpt-4o-mini", 10, 10)  # in-process ledger, budgets
    assert step is not None and plain._local_step(step)
    child = warden.run(user="u1", parent=plain)
    assert not child._plain()  # a child counts for its parent: the general path does that
    routed = Warden(Policy(routing={"tiers": ["gpt-4o-mini", "gpt-4o"]}), log_events=False).run()
    assert not routed._plain()
    final = Warden(Policy(limits=Limits(final_answer=True, max_iterations=2))).run()
    assert not final._plain()


@pytest.mark.parametrize(
    "args",
    [
        {"q": "a", "n": 2},
        {"b": [1, {"z": None, "a": 1.5}], "a": "é"},
        {"when": __import__("datetime").date(2026, 1, 1)},
        "plain text",
        None,
    ],
)
def test_tool_signatures_are_the_canonical_json_of_the_arguments(args: Any) -> None:
    import json

    from budgetwarden.checks import tool_signature

    expected = json.dumps(args, sort_keys=True, default=str, separators=(",", ":"))
    assert tool_signature("t", args) == f"t:{expected}"


def test_the_cached_estimate_equals_a_fresh_one_as_transcripts_grow_and_change() -> None:
    from budgetwarden.usage import TokenCache, estimate_message_tokens

    def msg(n: int) -> dict[str, str]:
        return {"role": "user", "content": "x" * n}

    a, b, c, d, big = msg(40), msg(400), msg(80), msg(120), msg(9000)
    cache: TokenCache = {}
    for transcript in ([a, b], [a, b, c], [a, b, c], [a, big, c], [a, big, c, d], [d], [a, b]):
        assert estimate_message_tokens(transcript, cache) == estimate_message_tokens(transcript)
