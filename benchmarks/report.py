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
def _cold(cold: dict[str, Any] | None) -> list[str]:
    """The warm and cold agent step of the core section (absent from older results)."""
    if not cold:
        return []
    rows = []
    for name, m in cold["step_us"].items():
        warm, chilled = m["warm"]["median"], m["cold"]["median"]
        rows.append(
            [name, _spread(m["warm"], " µs"), _spread(m["cold"], " µs"), f"{chilled / warm:.1f}x"]
        )
    return [
        "### One agent step, warm and cold\n",
        "A model call and a tool call as the adapters make them (`before_llm_call`, "
        "`record_llm_call`, `before_tool_call`, `record_tool_call`), µs per step: back to back "
        "(warm caches), and each after a walk over "
        f"{cold['evict_objects']:,} small dicts (cold caches), as in an agent, whose framework "
        "evicts our code and data between two of our calls. Cold is what an agent step pays "
        "for the core; the adapter tables below add the glue of each framework. The "
        "do-nothing step (four empty method calls) is what a cold measurement costs by itself.\n",
        _table(["step", "warm", "cold", "cold / warm"], rows),
    ]


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
        f"Opening and finishing a run: {_spread(hot['run_open_finish_us'], ' µs')}. "
        + (
            f"A tool call (`before_tool_call` + `after_tool_call`, unpriced tool, same policy): "
            f"{_spread(hot['tool_pair_us'], ' µs')}.\n"
            if "tool_pair_us" in hot
            else "\n"
        ),
        *_cold(r.get("cold_step")),
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


#: Keys of an adapter section ending in "_pct" that are not comparisons of two variants.
_NOT_COMPARISONS = {"overhead_pct", "overhead_by_process_pct"}


def _pooled_from(processes: int) -> str:
    if processes <= 1:
        return ", from one process"
    return (
        f", pooled from {processes} fresh processes run one after another (each with its "
        "share of the rounds; each one's own median is shown beside)"
    )


def _adapters(r: Result) -> str:
    out = [
        "## Adapter overhead per agent step\n",
        f"Each invocation: {r['steps_per_invocation']['model_calls']} model calls and "
        f"{r['steps_per_invocation']['tool_calls']} tool calls of a scripted agent; time per "
        "model call (µs, wall and CPU). Overhead: budgetwarden against the do-nothing hook of "
        "the same kind, median of per-round ratios (interquartile range in brackets)"
        f"{_pooled_from(r.get('processes', 1))}. Ledgers measured: {', '.join(r['ledgers'])}.\n",
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
        by_process = sec.get("overhead_by_process_pct", {})
        rows = [
            [
                f"budgetwarden/{ledger} vs {sec['overhead_vs']}",
                _pct(o["wall"]),
                _pct(o["cpu"]),
                f"{o['cpu']['delta_median']:+,.0f}",
                " / ".join(f"{x:+.1f}" for x in by_process.get(ledger, [])),
                f"≤ {r['targets_pct'][ledger]:g}%",
                _mark(sec["verdict"][ledger]),
            ]
            for ledger, o in sec["overhead_pct"].items()
        ]
        for key, o in sec.items():
            if key.endswith("_pct") and key not in _NOT_COMPARISONS and isinstance(o, dict):
                label = key.removesuffix("_pct").replace("_vs_", " vs ").replace("_", " ")
                delta = f"{o['cpu']['delta_median']:+,.0f}"
                rows.append([label, _pct(o["wall"]), _pct(o["cpu"]), delta, "", "", ""])
        header = [
            "comparison",
            "wall",
            "CPU",
            "CPU µs/step added",
            "wall, each process",
            "target",
            "verdict",
        ]
        out.append(_table(header, rows))
        if counted := sec.get("bytecodes"):
            out.append(
                "Python bytecodes per step, one traced invocation (deterministic: what the "
                "timings above vary around):\n"
            )
            out.append(
                _table(
                    ["variant", "bytecodes/step", "of which budgetwarden's", "vs noop"],
                    [
                        [
                            name,
                            f"{c['per_step']:,}",
                            f"{c['budgetwarden_per_step']:,}",
                            f"{c['vs_noop_pct']:+.1f}%" if "vs_noop_pct" in c else "",
                        ]
                        for name, c in counted.items()
                    ],
                )
            )
    return "\n".join(out)


SECTIONS: list[tuple[str, Callable[[Result], str]]] = [
    ("core", _core),
    ("adapters", _adapters),
]


def _ledgers(r: Result) -> str:
    out = [
        "## Ledger throughput and latency\n",
        f"Guarded calls (`before_llm_call` + `after_llm_call` on a user budget and a global "
        f"request budget, both far from their limits) from N processes sharing one budget, "
        f"{r['seconds_per_measure']:g} s each after a barrier: as a warden does by default "
        "(pools: 32 calls' worst case reserved per trip while a budget has room), and with "
        "pools off (one trip per call, its commit riding on the next call's: what calls near "
        "a limit cost). Redis `PING` from as many processes, in the same run, is the floor "
        "of one trip.\n",
    ]
    out += [f"> {note}\n" for note in r.get("notes", [])]
    rows = []
    for row in r["rows"]:
        if "skipped" in row:
            rows.append([row["ledger"], "-", row["skipped"], "", "", ""])
            continue
        rows.append(
            [
                row["ledger"],
                row["processes"],
                f"{row['calls_per_s']:,.0f}",
                f"{row['p50_us']:,.0f}",
                f"{row['p99_us']:,.0f}",
                f"{row['max_us']:,.0f}",
            ]
        )
    out.append(_table(["ledger", "processes", "calls/s (all)", "p50 µs", "p99 µs", "max µs"], rows))
    return "\n".join(out)


def _imports(r: Result) -> str:
    rows = [
        [
            name,
            ", ".join(c.get("framework_imported_first", [])) or "-",
            _spread(c["ms"], " ms"),
            f"{c['rss_mb']:g}",
            c.get("python_alloc_mb", ""),
            ", ".join(c.get("heavy_modules_it_loaded", []) or []) or "-",
        ]
        for name, c in r["cases"].items()
    ]
    top = ", ".join(f"`{x['module']}` {x['self_ms']:.1f} ms" for x in r["importtime_top"][:6])
    return "\n".join(
        [
            "## Import time and memory\n",
            "Fresh interpreters; the framework is imported first (untimed), then each statement "
            "in turn, so each row is the cost beyond everything above it (median of runs; RSS "
            "growth in MB; Python allocations from a tracemalloc run where measured).\n",
            _table(
                [
                    "what",
                    "imported first",
                    "ms",
                    "RSS MB",
                    "Python alloc MB",
                    "heavy modules it loaded",
                ],
                rows,
            ),
            f"`import budgetwarden` imports no framework and not LiteLLM: "
            f"{r['budgetwarden_imports_no_framework']}. Most own time (`-X importtime`): {top}.\n",
        ]
    )


def _containment(r: Result) -> str:
    out = [
        "## Containment: runaway loops on LiteLLM `mock_response`\n",
        "Each agent is replayed unguarded for N steps, then under one cap at a time (set at "
        "30% of the unguarded run's figure). Every call goes through `dispatch.complete` to "
        "`litellm.completion` with a mock response whose usage is `litellm.token_counter` of the "
        'real prompt and reply; "LiteLLM $" prices the calls that really reached LiteLLM '
        "with `litellm.cost_per_token`, independently of budgetwarden. Overspend beyond each "
        "cap must be 0.\n",
    ]
    for kind, s in r["scenarios"].items():
        u = s["unguarded"]
        out.append(f"### {kind} ({s['model']}, N = {s['steps']})\n")
        out.append(
            f"Unguarded: {u['calls']} calls, ${u['cost_usd']:.4f} "
            f"(LiteLLM ${u['litellm_cost_usd']:.4f}), "
            f"{u['input_tokens']:,} input tokens, {u['wall_s']:g} s.\n"
        )
        rows = [
            [
                g["cap"],
                f"{g['limit']:g} {g['unit']}",
                f"{g['used']:g}",
                f"**{g['overspend']:g}**",
                g["calls"],
                f"${g['cost_usd']:.4f}",
                f"${g['litellm_cost_usd']:.4f}",
                f"{g['saved_pct']:g}%",
                g["stop"],
                f"{g['wall_s']:g} s",
                f"{g['refusal_us']:g}" if g["refusal_us"] is not None else "-",
            ]
            for g in s["guarded"]
        ]
        out.append(
            _table(
                [
                    "cap",
                    "limit",
                    "used",
                    "overspend",
                    "calls",
                    "spend",
                    "LiteLLM $",
                    "saved",
                    "stopped by",
                    "time to stop",
                    "refusal µs",
                ],
                rows,
            )
        )
    sh = r["shared_budget_threads"]
    out.append(
        f"**Shared budget, {sh['runs']} runaway agents in threads at once** (N = "
        f"{sh['steps_each']} each, ${sh['unguarded_total_usd']:.4f} unguarded together): user "
        f"budget ${sh['budget_usd']:g}, spent ${sh['spent_usd']:g} (LiteLLM "
        f"${sh['litellm_cost_usd']:g}), overspend **${sh['overspend_usd']:g}**; stopped by "
        f"{', '.join(sorted(set(sh['stops'])))}.\n"
    )
    out.append(f"Verdict (overspend 0 everywhere): {_mark(r['verdict'])}.\n")
    return "\n".join(out)


def routing_markdown(r: Result, heading: str = "##") -> str:
    """The routing simulation's table and assumptions (also the README's section)."""
    rows = [
        [
            name,
            f"${p['cost_per_success_usd'] * 1000:.3f}",
            f"{p['vs_strong_only']:.2f}x",
            f"{p['success_rate'] * 100:.1f}%",
            f"{p['calls_per_task']:.2f}",
            " / ".join(str(p["first_seed"]["calls_by_model"][m]) for m in r["tiers"]),
        ]
        for name, p in r["policies"].items()
    ]
    classes = [
        [
            name,
            f"{c['share'] * 100:g}%",
            f"{c['input_tokens']:,} / {c['output_tokens']:,}",
            " / ".join(f"{x:.2f}" for x in c["success"]),
            r["tiers"][c["start_tier"]],
        ]
        for name, c in r["classes"].items()
    ]
    by_class = [
        [name] + [_cps(p["first_seed"]["by_class"][name]) for p in r["policies"].values()]
        for name in r["classes"]
    ]
    return "\n".join(
        [
            f"{heading} Routing simulation: cost per successful task\n",
            f"{r['tasks_per_seed']:,} tasks per seed, {r['seeds']} seed(s), up to "
            f"{r['attempts']} attempts per task, tiers {' < '.join(r['tiers'])}; replayed "
            "through `budgetwarden.dispatch.complete` on LiteLLM `mock_response` "
            "(`python -m benchmarks --only routing`).\n",
            _table(
                [
                    "policy",
                    "$ per 1,000 successful tasks",
                    "vs strong only",
                    "success rate",
                    "calls per task",
                    "calls per tier (first seed)",
                ],
                rows,
            ),
            "Per task class ($ per 1,000 successful tasks, success rate; first seed):\n",
            _table(["class", *r["policies"]], by_class),
            "Workload (the assumptions, stated in `benchmarks/routing.py`):\n",
            _table(
                ["class", "share", "tokens in / out", "p(success) per tier", "starting tier"],
                classes,
            ),
            r["assumptions"] + "\n",
        ]
    )


def _cps(c: dict[str, Any]) -> str:
    if c["cost_per_success_usd"] is None:
        return "-"
    return f"${c['cost_per_success_usd'] * 1000:.3f}, {c['success_rate'] * 100:.0f}%"


def _routing(r: Result) -> str:
    return routing_markdown(r)


def _range(samples: list[dict[str, float]], key: str) -> str:
    return f"{min(x[key] for x in samples):+.2f} … {max(x[key] for x in samples):+.2f}"


def _callgrind(r: Result) -> str:
    events = list(next(iter(r["added_pct"].values())))
    rows = []
    for agent, by_variant in r["per_step"].items():
        rows += [[agent, name, *(f"{v[e]:,.0f}" for e in events)] for name, v in by_variant.items()]
        added = r["added_pct"][agent]
        rows.append([agent, "**added**", *(f"{added[e]:+.2f}%" for e in events)])
        spread = r.get("added_pct_by_layout", {}).get(agent, [])
        if len(spread) > 1:
            rows.append([agent, "added, range over layouts", *(_range(spread, e) for e in events)])
    return "\n".join(
        [
            "## Instructions and cache misses per step (callgrind)\n",
            "The scripted LangChain middleware and Agents SDK agents of the adapter section "
            f"({r['steps_per_invocation']['model_calls']} model calls per invocation), "
            f"{r['invocations']} invocation(s) under `valgrind --tool=callgrind` with "
            f"simulated caches ({', '.join(r['caches'])}), hash seed fixed, averaged over "
            f"{len(r.get('layouts', [0]))} memory layouts (a layout moves the counts by up to "
            "0.5 % of a step, through hash collisions: as much as a small change to our "
            "code; the range over layouts is shown). Per model call: "
            "instructions (Ir), L1 misses (I1mr, D1mr, D1mw), "
            "last-level misses (ILmr, DLmr, DLmw) and estimated cycles "
            f"(Ir + {r['weights']['l1_miss']} * L1 misses + {r['weights']['ll_miss']} * LL "
            "misses): a yardstick for changes to our code, not a time (the weights are "
            "the usual ones, not this CPU's; what a step takes is in the adapter section). "
            "Run with `python -m benchmarks --only callgrind` (needs valgrind; about three "
            "minutes).\n",
            _table(["agent", "variant", *events], rows),
        ]
    )


SECTIONS += [
    ("callgrind", _callgrind),
    ("ledgers", _ledgers),
    ("containment", _containment),
    ("routing", _routing),
    ("imports", _imports),
]
