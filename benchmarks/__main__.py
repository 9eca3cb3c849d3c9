"""``python -m benchmarks [--quick] [--only NAME[,NAME]] [--out DIR] [--processes N]``: run,
record, summarise.

Each benchmark writes ``<out>/<name>.json``; the summary (``BENCHMARKS.md`` at the repo root,
or ``<out>/BENCHMARKS.md`` when ``--out`` is given) is regenerated from every JSON in ``out``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import time
import traceback
from pathlib import Path

from . import _env  # noqa: F401  (offline environment before any framework import)
from ._harness import RESULTS, ROOT, Context
from ._ledgers import probe, redis_server, sqlite_file

SUITES = ("core", "adapters", "ledgers", "imports", "containment", "routing")
#: Run only when named in ``--only`` (slow, and needs valgrind).
OPT_IN = ("callgrind",)
NEEDS_LEDGERS = {"adapters", "ledgers"}
#: Adapter overheads are pooled from this many fresh processes (see ``Context.processes``).
PROCESSES = 4


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (< 1 min)")
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated benchmarks: {', '.join(SUITES + OPT_IN)} "
        f"(all but {', '.join(OPT_IN)} by default)",
    )
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument(
        "--processes",
        type=int,
        default=None,
        help=f"fresh processes that share the adapter rounds (default {PROCESSES}; 1 if --quick)",
    )
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()] or list(SUITES)
    unknown = sorted(set(chosen) - set(SUITES + OPT_IN))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}: choose from {', '.join(SUITES + OPT_IN)}")
    args.suites = [s for s in SUITES + OPT_IN if s in chosen]
    if args.processes is None:
        args.processes = 1 if args.quick else PROCESSES
    elif args.processes < 1:
        parser.error("--processes must be 1 or more")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks; 1 if one of them crashed."""
    args = _parse(argv)
    out = args.out or RESULTS
    markdown = (args.out / "BENCHMARKS.md") if args.out else ROOT / "BENCHMARKS.md"
    ctx = Context(quick=args.quick, out=out, processes=args.processes)
    failed = []
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if NEEDS_LEDGERS & set(args.suites):
            _open_ledgers(ctx, stack)
        for name in args.suites:
            t0 = time.perf_counter()
            print(f"[benchmarks] {name} ...", flush=True)
            try:
                module = importlib.import_module(f"benchmarks.{name}")
                module.run(ctx)
            except Exception:
                traceback.print_exc()
                failed.append(name)
            print(f"[benchmarks] {name} done in {time.perf_counter() - t0:.1f} s", flush=True)
    from .report import render

    markdown.write_text(render(out), encoding="utf-8")
    print(f"[benchmarks] {len(args.suites)} benchmark(s) in {time.perf_counter() - started:.0f} s")
    print(f"[benchmarks] results in {out}, summary in {markdown}")
    if failed:
        print(f"[benchmarks] FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def _open_ledgers(ctx: Context, stack: contextlib.ExitStack) -> None:
    uri = stack.enter_context(sqlite_file())
    reason = probe(uri)
    if reason is None:
        ctx.sqlite_uri = uri
    else:
        ctx.notes.append(f"SQLite ledger not measured: {reason}")
    redis_uri = stack.enter_context(redis_server())
    if redis_uri is None:
        ctx.notes.append("Redis ledger not measured: no redis-server on this machine")
        return
    reason = probe(redis_uri)
    if reason is None:
        ctx.redis_uri = redis_uri
    else:
        ctx.notes.append(f"Redis ledger not measured: {reason}")


if __name__ == "__main__":
    sys.exit(main())
