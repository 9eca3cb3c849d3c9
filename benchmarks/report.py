"""Render BENCHMARKS.md from the JSON results: the preface, then one section per benchmark."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

PREFACE = Path(__file__).resolve().parent / "PREFACE.md"
Result = dict[str, Any]


def render(out: Path) -> str:
    """The whole BENCHMARKS.md for the results in ``out``."""
    results: dict[str, Result] = {}
    for path in sorted(out.glob("*.json")):
        results[path.stem] = json.loads(path.read_text(encoding="utf-8"))
    parts = [PREFACE.read_text(encoding="utf-8").rstrip() + "\n"]
    parts.append(_environment(results))
    parts.append(_verdicts(results))
    for name, section in SECTIONS:
        if name in results:
            parts.append(section(results[name]))
    return "\n".join(parts)


# ---------------------------------------------------------------------------- helpers
def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _spread(s: dict[str, Any], unit: str = "") -> str:
    if not s or s.get("n", 0) == 0:
        return "n/a"
    return f"{s['median']:g}{unit} ({s['p25']:g}-{s['p75']:g})"


def _pct(s: dict[str, Any]) -> str:
    if not s or s.get("n", 0) == 0:
        return "n/a"
    return f"{s['median']:+.1f}% ({s['p25']:+.1f} … {s['p75']:+.1f})"


def _mark(v: str) -> str:
    return {"pass": "**pass**", "fail": "**FAIL**"}.get(v, v)


def _environment(results: dict[str, Result]) -> str:
    if not results:
        return "_No results yet: run `python -m benchmarks`._\n"
    first = next(iter(results.values()))
    env = first["environment"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    rows = [
        [
            name,
            r["environment"]["date"],
            "quick" if r.get("quick") else "full",
            f"{r.get('seconds', 0):g} s",
            " / ".join(str(x) for x in r["environment"]["load_average"]),
        ]
        for name, r in results.items()
    ]
    return (
        "## This run\n\n"
        f"Python {env['python']} on {env['platform']}, {env['cpu_count']} CPUs "
        f"({env.get('cpu_model') or 'unknown CPU'}), commit {env.get('git_commit')}.\n"
        f"Versions: {versions}.\n\n"
        + _table(["benchmark", "date", "mode", "took", "load avg"], rows)
    )


def _verdicts(results: dict[str, Result]) -> str:
    rows: list[list[Any]] = []
    core = results.get("core")
    if core:
        hot = core["hot_path"]
        rows.append(
            [
                "before + after pair, memory ledger",
                f"≤ {hot['target_us']:g} µs",
                f"{hot['policies'][hot['headline_policy']]['pair_us']['median']:g} µs",
                _mark(hot["verdict"]),
            ]
        )
        p = core["pricing"]
        rows.append(
            [
                "PriceBook.cost vs LiteLLM (slowest case)",
                f"≥ {p['target_speedup']:g}x, equal figures",
                f"{p['min_speedup']:g}x, equal: {p['all_equal']}",
                _mark(p["verdict"]),
            ]
        )
    adapters = results.get("adapters")
    if adapters:
        for name, sec in adapters["sections"].items():
            for ledger, v in sec.get("verdict", {}).items():
                o = sec["overhead_pct"][ledger]["wall"]
                rows.append(
                    [
                        f"{name} overhead, {ledger}",
                        f"≤ {adapters['targets_pct'][ledger]:g}%",
                        f"{o['median']:+.1f}%",
                        _mark(v),
                    ]
                )
    containment = results.get("containment")
    if containment:
        rows.append(
            [
                "overspend beyond any cap (containment)",
                "0",
                f"${containment['max_overspend_usd']:g}",
                _mark(containment["verdict"]),
            ]
        )
    if not rows:
        return ""
    return "## Targets\n\n" + _table(["what", "target", "measured (median)", "verdict"], rows)


# ---------------------------------------------------------------------------- sections
def _core(r: Result) -> str:
    hot = r["hot_path"]
    rows = [
        [name, _spread(v["pair_us"], " µs"), _mark(hot["verdict_per_policy"][name])]
        for name, v in hot["policies"].items()
    ]
    out = [
        "## Core hot path\n",
        "`run.before_llm_call` + `run.after_llm_call` on the memory ledger, µs per pair "
        f"(batches of {hot['batch']}; median and interquartile range over batches); messages of "
        f"{hot['messages_chars']:,} characters. Target ≤ {hot['target_us']:g} µs.\n",
        _table(["policy", "µs per pair", "verdict"], rows),
        f"Opening and finishing a run: {_spread(hot['run_open_finish_us'], ' µs')}.\n",
        "What the pieces of a pair cost alone (µs per call):\n",
        _table(["piece", "µs"], [[k, _spread(v)] for k, v in r["breakdown_us"].items()]),
        f"cProfile of {r['profile']['pairs']:,} pairs (run caps + 2 budgets), by own time:\n",
        _table(
            ["function", "own %", "cumulative %", "calls per pair"],
            [
                [f"`{x['function']}`", x["self_pct"], x["cumulative_pct"], x["calls_per_pair"]]
                for x in r["profile"]["by_self_time"]
            ],
        ),
    ]
    p = r["pricing"]
    out += [
        "### PriceBook.cost against LiteLLM\n",
        "Same usage priced by `PriceBook.cost`, `litellm.cost_per_token` and "
        "`litellm.completion_cost` (batches interleaved; µs per call, median).\n",
        _table(
            [
                "model",
                "tokens in/out",
                "USD",
                "equal",
                "PriceBook µs",
                "cost_per_token µs",
                "completion_cost µs",
                "speed-up",
            ],
            [
                [
                    c["model"],
                    f"{c['input_tokens']:,}/{c['output_tokens']:,}",
                    f"{c['pricebook_usd']:.6g}",
                    "yes" if c["equal"] else "**NO**",
                    c["pricebook_us"]["median"],
                    c["cost_per_token_us"]["median"],
                    c["completion_cost_us"]["median"],
                    f"{c['speedup_vs_cost_per_token']:g}x / {c['speedup_vs_completion_cost']:g}x",
                ]
                for c in p["cases"]
            ],
        ),
        f"Slowest case {p['min_speedup']:g}x (target ≥ {p['target_speedup']:g}x): "
        f"{_mark(p['verdict'])}.\n",
    ]
    e = r["estimate"]
    out += [
        "### Reservation token estimate against `litellm.token_counter`\n",
        f"A two-message chat of {e['chars']:,} characters (a different one each call, so no "
        "tokenizer cache helps), µs per call:\n",
        _table(
            ["counter", "µs", "estimate is faster by"],
            [
                [
                    name,
                    _spread(s),
                    f"{e['speedup'].get(name, 1):g}x" if name in e["speedup"] else "—",
                ]
                for name, s in e["timing_us"].items()
            ],
        ),
        "How far the estimate is from the real count (" + e["error_note"] + "):\n",
        _table(
            [
                "text (2,400 chars)",
                "estimate",
                "gpt-4o tokens",
                "error",
                "claude-sonnet-4 tokens",
                "error",
            ],
            [
                [
                    name,
                    x["estimate"],
                    x["gpt-4o"]["token_counter"],
                    f"{x['gpt-4o']['error_pct']:+g}%",
                    x["claude-sonnet-4-20250514"]["token_counter"],
                    f"{x['claude-sonnet-4-20250514']['error_pct']:+g}%",
                ]
                for name, x in e["error_by_text"].items()
            ],
        ),
    ]
    return "\n".join(out)


def _adapters(r: Result) -> str:
    out = [
        "## Adapter overhead per agent step\n",
        f"Each invocation: {r['steps_per_invocation']['model_calls']} model calls and "
        f"{r['steps_per_invocation']['tool_calls']} tool calls of a scripted agent; time per "
        "model call (µs, wall and CPU). Overhead: budgetwarden against the do-nothing hook of "
        "the same kind, median of per-round ratios (interquartile range in brackets). "
        f"Ledgers measured: {', '.join(r['ledgers'])}.\n",
    ]
    out += [f"> {note}\n" for note in r.get("notes", [])]
    for name, sec in r["sections"].items():
        out.append(f"### {name}\n")
        if "skipped" in sec:
            out.append(f"Skipped: {sec['skipped']}\n")
            continue
        out.append(
            _table(
                ["variant", "wall µs/step", "CPU µs/step"],
                [
                    [v, _spread(x["wall_us_per_step"]), _spread(x["cpu_us_per_step"])]
                    for v, x in sec["variants"].items()
                ],
            )
        )
        rows = [
            [
                f"budgetwarden/{ledger} vs {sec['overhead_vs']}",
                _pct(o["wall"]),
                _pct(o["cpu"]),
                f"≤ {r['targets_pct'][ledger]:g}%",
                _mark(sec["verdict"][ledger]),
            ]
            for ledger, o in sec["overhead_pct"].items()
        ]
        for key, o in sec.items():
            if key.endswith("_pct") and key != "overhead_pct" and isinstance(o, dict):
                label = key.removesuffix("_pct").replace("_vs_", " vs ").replace("_", " ")
                rows.append([label, _pct(o["wall"]), _pct(o["cpu"]), "", ""])
        out.append(_table(["comparison", "wall", "CPU", "target", "verdict"], rows))
    return "\n".join(out)


SECTIONS: list[tuple[str, Callable[[Result], str]]] = [
    ("core", _core),
    ("adapters", _adapters),
]
