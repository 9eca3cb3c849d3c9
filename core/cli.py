"""The ``budgetwarden`` command: demo, price, report, dashboard, estimate, breakeven, alerts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .cli_errors import in_flag_words

__all__ = ["app", "main"]

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
app = typer.Typer(
    help="Keep LLM agents inside their budgets.", no_args_is_help=True, add_completion=False
)
console = Console()
err_console = Console(stderr=True)


def _fail(message: str) -> NoReturn:
    """Print ``message`` as one red line on stderr and leave with exit code 2 (bad input)."""
    err_console.print(f"[red]{escape(message)}[/red]", soft_wrap=True)
    raise typer.Exit(2)


@app.command()
def demo() -> None:
    """Run a runaway agent unguarded and guarded (offline), and show what each cost."""
    from .demo import run_demo

    with console.status("running the demo agents...") as status:
        rows = run_demo(progress=lambda name: status.update(f"running {name}..."))
    if not console.is_terminal:  # a log or a pipe: do not squeeze the table into 80 columns
        console.width = max(console.width, 150)
    table = Table(title="budgetwarden demo: the same runaway agent, with and without a guard")
    for column in (
        "agent",
        "model calls",
        "tool calls",
        "input tok",
        "output tok",
        "cost $",
        "why it stopped",
    ):
        table.add_column(
            column, justify="left" if column in ("agent", "why it stopped") else "right"
        )
    for row in rows:
        table.add_row(
            str(row.get("agent", "")),
            str(row.get("model_calls", "")),
            str(row.get("tool_calls", "")),
            str(row.get("input_tokens", "")),
            str(row.get("output_tokens", "")),
            f"{row['cost_usd']:.4f}" if "cost_usd" in row else "",
            str(row.get("stop", "")),
        )
    console.print(table)


_PRICE_FLAGS = {"input_tokens": "--input-tokens", "output_tokens": "--output-tokens"}


@app.command()
def price(
    model: str,
    input_tokens: Annotated[int, typer.Option(min=0, help="Input tokens of the call.")] = 1000,
    output_tokens: Annotated[int, typer.Option(min=0, help="Output tokens of the call.")] = 1000,
) -> None:
    """Show what a model costs per token and for a call of the given size."""
    from .pricing import PriceBook, UnknownModelError
    from .usage import Usage

    book = PriceBook()
    try:
        unit = book.price(model)
        cost = book.cost(model, Usage(input_tokens=input_tokens, output_tokens=output_tokens))
    except UnknownModelError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    except ValueError as exc:
        _fail(in_flag_words(exc, _PRICE_FLAGS))
    console.print(
        f"{model}: ${unit.input_cost_per_token * 1e6:.4f} / M input tokens, "
        f"${unit.output_cost_per_token * 1e6:.4f} / M output tokens"
    )
    console.print(f"{input_tokens} in + {output_tokens} out = ${cost:.6f}")


# ====================================================================== reports
# The reporting commands import their modules when they run (see cli_reports.py).
EventsOption = Annotated[
    Path,
    typer.Option(
        "--events",
        envvar="BUDGETWARDEN_EVENTS",
        help="Event store (.db, SQLiteEventStore) or JSONL file (JSONLSink).",
    ),
]
PolicyOption = Annotated[
    Path | None,
    typer.Option("--policy", help="Policy file: its `alerts` rules and time zone."),
]
SinceOption = Annotated[
    str | None,
    typer.Option(help="Only events from this time: 2026-01-31, 2026-01-31T12:00, 7d, 24h."),
]
UntilOption = Annotated[
    str | None,
    typer.Option(help="Only events before this time (same forms as --since)."),
]
# --envelope and --run-usd must be above 0, which typer's ranges cannot show ([x>=0] would
# promise 0): AlertRules checks them and the error names the flag (_ALERT_FLAGS).
EnvelopeOption = Annotated[
    float | None,
    typer.Option("--envelope", help="Monthly envelope in USD, above 0 (overrides the policy)."),
]
RunUsdOption = Annotated[
    float | None,
    typer.Option("--run-usd", help="Flag runs that cost more than this (USD, above 0)."),
]
TzOption = Annotated[
    str | None,
    typer.Option("--tz", help="Time zone of days and months (default: the policy's, or UTC)."),
]
NowOption = Annotated[
    str | None,
    typer.Option("--now", help="The instant the month projection is made at (default: now)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]
_ALERT_FLAGS = {"monthly_envelope_usd": "--envelope", "run_usd": "--run-usd"}


def _load_report(
    events: Path,
    policy: Path | None,
    since: str | None,
    until: str | None,
    envelope: float | None,
    run_usd: float | None,
    tz: str | None,
    now: str | None,
    dimensions: tuple[str, ...],
) -> Any:
    from .anomalies import month_bounds
    from .cli_reports import load_with_progress, now_or, parse_when, settings
    from .spend_report import build_report

    try:
        chosen = settings(policy, envelope=envelope, run_usd=run_usd, timezone=tz)
        wall = now_or(now, chosen.timezone)
        start = parse_when(since, now=wall, tz=chosen.timezone)
        end = parse_when(until, now=wall, tz=chosen.timezone)
        _check_window(since, start, until, end)
        # the month projection is made at --now, else at the window's last moment (--until
        # is exclusive), and counts the whole month to then whatever --since says
        instant = wall if now is not None or end is None else min(end - _LAST_MOMENT, wall)
        month_start = month_bounds(instant, chosen.timezone)[0].timestamp()
        read_from = start if start is None or start <= month_start else month_start
        loaded = load_with_progress(events, err_console, since=read_from, until=end)
    except (OSError, ValueError) as exc:
        _fail(in_flag_words(exc, _ALERT_FLAGS))
    window = loaded.events
    if start is not None and read_from != start:
        window = [e for e in loaded.events if e.ts >= start]
    return build_report(
        window,
        rules=chosen.rules,
        now=instant,
        tz=chosen.timezone,
        dimensions=dimensions,
        skipped=loaded.skipped,
        month_events=loaded.events,
    )


#: How far before an exclusive ``--until`` its window's last moment is (seconds).
_LAST_MOMENT = 1e-3


def _check_window(
    since: str | None, start: float | None, until: str | None, end: float | None
) -> None:
    """Refuse a ``--since`` that is not before ``--until``: the window would be empty."""
    if start is not None and end is not None and start >= end:
        raise ValueError(
            f"--since {since} is not before --until {until}: nothing is in that window; "
            "give a --since earlier than --until"
        )


@app.command()
def report(
    events: EventsOption = Path("events.db"),
    by: Annotated[
        list[str] | None,
        typer.Option(
            help="Group spend by: agent, workflow, user, workspace, model, task_class, "
            "day, provider, feature, key, tool (repeat for several)."
        ),
    ] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    policy: PolicyOption = None,
    envelope: EnvelopeOption = None,
    run_usd: RunUsdOption = None,
    tz: TzOption = None,
    now: NowOption = None,
    top: Annotated[int, typer.Option(min=1, help="Rows per table (days: all).")] = 15,
    json_out: JsonOption = False,
) -> None:
    """Where the money went: spend by agent, model, user, day...; P50/P95; anomalies; budget."""
    from .analytics import DIMENSIONS
    from .cli_reports import DEFAULT_BY, render_report, to_json

    chosen = tuple(by or DEFAULT_BY)
    unknown = [d for d in chosen if d not in DIMENSIONS]
    if unknown:
        _fail(f"cannot group by {unknown}: use {', '.join(DIMENSIONS)}")
    result = _load_report(events, policy, since, until, envelope, run_usd, tz, now, chosen)
    if json_out:
        typer.echo(to_json(result.model_dump(mode="json")))
        return
    render_report(result, console, chosen, top)


@app.command()
def dashboard(
    events: EventsOption = Path("events.db"),
    out: Annotated[Path, typer.Option(help="The HTML file to write.")] = Path("dashboard.html"),
    since: SinceOption = None,
    until: UntilOption = None,
    policy: PolicyOption = None,
    envelope: EnvelopeOption = None,
    run_usd: RunUsdOption = None,
    tz: TzOption = None,
    now: NowOption = None,
    title: Annotated[str, typer.Option(help="Page title.")] = "budgetwarden: where the money went",
) -> None:
    """Write one self-contained, offline HTML dashboard (charts, budget, anomalies)."""
    from .dashboard import write_dashboard

    if out.is_dir():
        example = out / "dashboard.html"
        _fail(f"--out {out} is a directory: give the HTML file to write, such as --out {example}")
    result = _load_report(
        events, policy, since, until, envelope, run_usd, tz, now, ("agent", "model")
    )
    try:
        path = write_dashboard(result, out, title=title)
    except OSError as exc:
        _fail(f"cannot write --out {out}: {exc.strerror or exc}")
    console.print(f"wrote {path} ({path.stat().st_size:,} bytes, {result.events:,} events)")


@app.command()
def estimate(
    model: Annotated[str | None, typer.Option(help="Model of every step (default gpt-4o).")] = None,
    steps_p50: Annotated[
        float | None, typer.Option(help="Median steps per task (default 5).")
    ] = None,
    steps_p95: Annotated[
        float | None, typer.Option(help="95th pct steps per task (default 15).")
    ] = None,
    max_steps: Annotated[int | None, typer.Option(help="Step cap (max_iterations).")] = None,
    system_tokens: Annotated[
        int | None, typer.Option(help="System prompt + task input tokens.")
    ] = None,
    tool_tokens: Annotated[int | None, typer.Option(help="Tool output tokens per step.")] = None,
    output_tokens: Annotated[int | None, typer.Option(help="Output tokens per step.")] = None,
    cache_hit_rate: Annotated[
        float | None, typer.Option(help="Share of re-sent prompt read from cache.")
    ] = None,
    tasks_per_day: Annotated[float, typer.Option(min=0, help="Tasks a day, for the month.")] = 0.0,
    from_events: Annotated[
        Path | None,
        typer.Option(help="Fit the shape to recorded runs in this .db or .jsonl file."),
    ] = None,
    task_class: Annotated[
        str | None, typer.Option(help="With --from-events: only this task class.")
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Pre-launch cost model: P50/P95 per task and a month, context re-sent every step."""
    from .cli_reports import render_estimate, to_json
    from .estimate import TaskShape
    from .estimate import estimate as run_estimate

    given = {
        "model": model,
        "steps_p50": steps_p50,
        "steps_p95": steps_p95,
        "max_steps": max_steps,
        "system_prompt_tokens": system_tokens,
        "tool_output_tokens": tool_tokens,
        "output_tokens": output_tokens,
        "cache_hit_rate": cache_hit_rate,
    }
    given = {k: v for k, v in given.items() if v is not None}
    observed = None
    try:
        base: dict[str, Any] = {"model": "gpt-4o", "steps_p50": 5.0, "steps_p95": 15.0}
        if from_events is not None:  # flags override fitted figures before they are checked
            observed, base = _fit(from_events, task_class, model)
        if "steps_p50" in given and "steps_p95" not in given:
            given["steps_p95"] = max(given["steps_p50"], base["steps_p95"])
        shape = TaskShape.model_validate({**base, **given})
        result = run_estimate(shape, tasks_per_day=tasks_per_day)
    except (OSError, ValueError, LookupError) as exc:
        _fail(in_flag_words(exc, _ESTIMATE_FLAGS))
    _warn_if_tokenless(shape)
    if json_out:
        data = result.model_dump(mode="json")
        if observed is not None:
            data["observed"] = observed.model_dump(mode="json")
        typer.echo(to_json(data))
        return
    render_estimate(result, console, observed)


_ESTIMATE_FLAGS = {
    "steps_p50": "--steps-p50",
    "steps_p95": "--steps-p95",
    "max_steps": "--max-steps",
    "system_prompt_tokens": "--system-tokens",
    "tool_output_tokens": "--tool-tokens",
    "output_tokens": "--output-tokens",
    "cache_hit_rate": "--cache-hit-rate",
    "tasks_per_day": "--tasks-per-day",
    "model": "--model",
}


def _warn_if_tokenless(shape: Any) -> None:
    """Say so when no token figure was given (or fitted): every cost would be $0."""
    if shape.system_prompt_tokens or shape.tool_output_tokens or shape.output_tokens:
        return
    err_console.print(
        "[yellow]warning: --system-tokens, --tool-tokens and --output-tokens are all 0, so "
        "every cost is $0: give the tokens of a step (or fit them with --from-events)[/yellow]",
        soft_wrap=True,
    )


def _fit(path: Path, task_class: str | None, model: str | None) -> tuple[Any, dict[str, Any]]:
    """The observed per-run figures of recorded runs, and the shape's fields fitted to them."""
    from .analytics import run_stats, runs_of
    from .cli_reports import load_with_progress
    from .estimate import fitted_figures

    loaded = load_with_progress(path, err_console, since=None, until=None)
    figures = fitted_figures(loaded.events, task_class=task_class, model=model)
    runs = [r for r in runs_of(loaded.events) if task_class in (None, r.task_class)]
    return run_stats(task_class, [r for r in runs if r.steps > 0]), figures


@app.command()
def breakeven(
    model: Annotated[str, typer.Option(help="The API model to compare with.")] = "gpt-4o-mini",
    tokens_per_day: Annotated[
        float, typer.Option(min=0, help="Input + output tokens a day.")
    ] = 10e6,
    gpu_usd_per_hour: Annotated[
        float, typer.Option(help="Price of one GPU per hour (above 0).")
    ] = 2.0,
    tokens_per_second: Annotated[
        float, typer.Option(help="Sustained tokens/s of one GPU on your mix (above 0).")
    ] = 1000.0,
    utilisation: Annotated[
        float, typer.Option(help="Share of paid GPU hours serving (above 0, at most 1).")
    ] = 0.5,
    ops_usd_per_month: Annotated[
        float, typer.Option(min=0, help="Fixed ops cost per month.")
    ] = 0.0,
    input_share: Annotated[
        float, typer.Option(min=0, max=1, help="Share of the tokens that are input.")
    ] = 0.75,
    input_usd_per_m: Annotated[
        float | None,
        typer.Option(min=0, help="API input price per M tokens (default: PriceBook)."),
    ] = None,
    output_usd_per_m: Annotated[
        float | None,
        typer.Option(min=0, help="API output price per M tokens (default: PriceBook)."),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Self-hosted GPU against an API: cost of each per month and the break-even volume."""
    from .breakeven import SelfHosted
    from .breakeven import breakeven as run_breakeven
    from .cli_reports import render_breakeven, to_json
    from .pricing import UnknownModelError

    try:
        hosting = SelfHosted(
            gpu_usd_per_hour=gpu_usd_per_hour,
            tokens_per_second=tokens_per_second,
            utilisation=utilisation,
            ops_usd_per_month=ops_usd_per_month,
        )
        prices_in, prices_out = _api_prices(model, input_usd_per_m, output_usd_per_m)
        result = run_breakeven(
            model,
            tokens_per_day,
            hosting,
            input_usd_per_token=prices_in,
            output_usd_per_token=prices_out,
            input_share=input_share,
        )
    except (ValueError, UnknownModelError) as exc:
        _fail(in_flag_words(exc, _BREAKEVEN_FLAGS))
    if json_out:
        typer.echo(to_json(result.model_dump(mode="json")))
        return
    render_breakeven(result, console)


_BREAKEVEN_FLAGS = {
    "tokens_per_day": "--tokens-per-day",
    "gpu_usd_per_hour": "--gpu-usd-per-hour",
    "tokens_per_second": "--tokens-per-second",
    "utilisation": "--utilisation",
    "ops_usd_per_month": "--ops-usd-per-month",
    "input_share": "--input-share",
    "input_usd_per_token": "--input-usd-per-m",
    "output_usd_per_token": "--output-usd-per-m",
}


def _api_prices(
    model: str, input_per_m: float | None, output_per_m: float | None
) -> tuple[float, float]:
    """USD per input and output token: the flags' per-million prices, else PriceBook's."""
    from .pricing import PriceBook

    if input_per_m is not None and output_per_m is not None:
        return input_per_m / 1e6, output_per_m / 1e6
    unit = PriceBook().price(model)
    return (
        unit.input_cost_per_token if input_per_m is None else input_per_m / 1e6,
        unit.output_cost_per_token if output_per_m is None else output_per_m / 1e6,
    )


@app.command()
def alerts(
    events: EventsOption = Path("events.db"),
    policy: PolicyOption = None,
    envelope: EnvelopeOption = None,
    run_usd: RunUsdOption = None,
    tz: TzOption = None,
    now: NowOption = None,
    webhook: Annotated[
        str | None, typer.Option(help="POST each new alert as JSON to this URL.")
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option(
            help="Where sent alerts are remembered (default: the .db itself, or "
            "<events>.alerts.db beside a JSONL file)."
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Show what fires; deliver nothing.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Check the alert rules and deliver each new alert once (structlog, webhook)."""
    from .alerts import AlertEvaluator
    from .cli_reports import (
        load_with_progress,
        now_or,
        post_json,
        render_firings,
        settings,
        to_json,
    )
    from .store import SQLiteEventStore, is_sqlite_file

    if webhook is not None and not webhook.lower().startswith(("http://", "https://")):
        _fail(f"--webhook {webhook!r}: give an http:// or https:// URL")
    try:
        chosen = settings(policy, envelope=envelope, run_usd=run_usd, timezone=tz)
        instant = now_or(now, chosen.timezone)
        loaded = load_with_progress(events, err_console, since=None, until=None)
        marks_path = state or (events if is_sqlite_file(events) else Path(f"{events}.alerts.db"))
        marks = None if dry_run else SQLiteEventStore(marks_path)
    except (OSError, ValueError) as exc:
        _fail(in_flag_words(exc, _ALERT_FLAGS))
    evaluator = AlertEvaluator(
        chosen.rules,
        callback=post_json(webhook) if webhook else None,
        marks=marks,
        timezone=chosen.timezone,
    )
    if marks is None:
        fired = evaluator.check(loaded.events, instant)
    else:
        with marks:
            fired = evaluator.evaluate(loaded.events, instant)
    if json_out:
        typer.echo(to_json([f.to_dict() for f in fired]))
    else:
        render_firings(fired, console, delivered=not dry_run)
    if evaluator.undelivered:
        _, error = evaluator.undelivered[0]
        err_console.print(
            f"[red]{len(evaluator.undelivered)} alert(s) not delivered ({error}); they are "
            "retried at the next run[/red]",
            soft_wrap=True,
        )
        raise typer.Exit(1)


@app.command()
def cancel(
    ledger: str = typer.Option(
        ..., envvar="BUDGETWARDEN_LEDGER", help="Ledger URI: sqlite:///spend.db, redis://..."
    ),
    run_id: str | None = typer.Option(None, help="Cancel one run by its id."),
    user: str | None = typer.Option(None, help="Cancel every run of this user."),
    workspace: str | None = typer.Option(None, help="Cancel every run of this workspace."),
    key: str | None = typer.Option(None, help="Cancel every run of this API key."),
    agent: str | None = typer.Option(None, help="Cancel every run of this agent."),
    thread: str | None = typer.Option(None, help="Cancel every run of this thread."),
    workflow: str | None = typer.Option(None, help="Cancel every run of this workflow."),
    task_class: str | None = typer.Option(None, help="Cancel every run of this task class."),
    tag: list[str] = typer.Option(  # noqa: B008 (typer's way of declaring a repeatable option)
        [], help="Cancel every run opened with this tag, as name=value (repeatable)."
    ),
    reason: str = typer.Option("", help="Why (kept with the cancel, shown in events)."),
    lift: bool = typer.Option(False, "--lift", help="Lift a cancel instead of setting it."),
    namespace: str = typer.Option(
        "default",
        envvar="BUDGETWARDEN_NAMESPACE",
        help="The namespace of the wardens whose runs to stop (their Warden(namespace=)).",
    ),
) -> None:
    """Stop matching runs at their next model or tool call, in every process on the ledger
    (or lift that with --lift). A cancel stays until it is lifted."""
    from .warden import Warden

    scopes = {
        name: value
        for name, value in (
            ("user", user),
            ("workspace", workspace),
            ("key", key),
            ("agent", agent),
            ("thread", thread),
            ("workflow", workflow),
            ("task_class", task_class),
        )
        if value is not None
    }
    tags = _tags_given(tag)
    _refuse_a_private_ledger(ledger)
    try:
        warden = Warden(ledger=ledger, namespace=namespace, log_events=False)
    except (OSError, ValueError) as exc:  # an unknown scheme, a file that cannot be opened
        _fail(str(exc))
    try:
        if lift:
            targets = warden.uncancel(run_id, tags=tags, **scopes)
        else:
            targets = warden.cancel(run_id, reason=reason, tags=tags, **scopes)
    except ValueError as exc:  # no target given
        _fail(str(exc))
    except OSError as exc:  # LedgerUnavailable: a Redis that does not answer, a locked file
        _fail(f"{str(exc).rstrip('.')}: nothing was {'lifted' if lift else 'cancelled'}")
    finally:
        warden.close()
    verb = "lifted the cancel of" if lift else "cancelled"
    where = ledger if namespace == "default" else f"{ledger} (namespace {namespace!r})"
    console.print(f"{verb} {', '.join(targets)} on {where}")


def _tags_given(given: list[str]) -> dict[str, str]:
    """``--tag name=value`` options as the tags of ``warden.cancel``."""
    tags = {}
    for item in given:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            _fail(f"--tag {item!r}: give it as name=value, such as --tag team=search")
        tags[name] = value
    return tags


def _refuse_a_private_ledger(uri: str) -> None:
    """A ``memory://`` ledger dies with this command: a cancel set there would reach no run."""
    if uri.split("://", 1)[0].strip().lower() == "memory":
        _fail(
            f"--ledger {uri} lives only as long as this command, so no run would ever see "
            "the cancel: give the ledger your wardens share, such as --ledger "
            "sqlite:///spend.db or --ledger redis://host:6379/0"
        )


def main() -> None:
    """Entry point of the ``budgetwarden`` console script."""
    app()
