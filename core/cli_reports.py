"""The reporting side of the ``budgetwarden`` command: loading, options and rich rendering.

``cli.py`` declares the commands (report, dashboard, estimate, breakeven, alerts) and calls
these helpers; they import the reporting modules only when a command runs.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

if TYPE_CHECKING:
    from .alerts import AlertRules, Firing
    from .analytics import SpendRow
    from .breakeven import Breakeven
    from .estimate import Estimate
    from .spend_report import SpendReport
    from .store import LoadedEvents

__all__ = ["Settings", "load_with_progress", "parse_when", "post_json", "settings"]

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
#: Dimensions shown by default, in this order (others with ``--by``).
DEFAULT_BY = ("day", "agent", "workflow", "user", "workspace", "model", "task_class")


def parse_when(text: str | None, *, now: float, tz: str = "UTC") -> float | None:
    """Epoch seconds of ``2026-01-31``, ``2026-01-31T12:00``, or ``7d``/``24h``/``30m`` ago."""
    if text is None:
        return None
    match = _RELATIVE.match(text.strip())
    if match:
        return now - float(match[1]) * _UNIT_SECONDS[match[2]]
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ValueError(
            f"cannot read {text!r} as a time: use a date (2026-01-31), a date and time "
            "(2026-01-31T12:00) or an age (7d, 24h, 30m)"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(tz))
    return moment.timestamp()


@dataclass(frozen=True, slots=True)
class Settings:
    """Alert rules and time zone for a command: from the policy file, then the flags."""

    rules: AlertRules
    timezone: str


def settings(
    policy_path: Path | None,
    *,
    envelope: float | None = None,
    run_usd: float | None = None,
    timezone: str | None = None,
) -> Settings:
    """The policy's alert rules (a global monthly cost budget is the default envelope)."""
    from .alerts import AlertRules

    rules, tz = AlertRules(), "UTC"
    if policy_path is not None:
        from .policy import Policy

        policy = Policy.from_file(policy_path)
        rules, tz = policy.alerts or AlertRules(), policy.timezone
        if rules.monthly_envelope_usd is None:
            rules = rules.model_copy(update={"monthly_envelope_usd": _month_budget(policy)})
    update: dict[str, Any] = {}
    if envelope is not None:
        update["monthly_envelope_usd"] = envelope
    if run_usd is not None:
        update["run_usd"] = run_usd
    if update:
        rules = AlertRules.model_validate({**rules.model_dump(), **update})
    return Settings(rules, _known_zone(timezone or tz))


def _known_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"unknown time zone {name!r}: use an IANA name such as 'UTC' or 'Europe/Paris'"
        ) from exc
    return name


def _month_budget(policy: Any) -> float | None:
    for budget in policy.budgets:
        if budget.scope == "global" and budget.window == "month" and budget.metric == "cost":
            return float(budget.limit)
    return None


@contextmanager
def _progress(console: Console, label: str) -> Iterator[Callable[[int, int], None]]:
    if not console.is_terminal:
        yield lambda done, total: None
        return
    columns = (TextColumn(label), BarColumn(), TextColumn("{task.percentage:>3.0f}%"))
    with Progress(*columns, TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def load_with_progress(
    path: Path, console: Console, *, since: float | None, until: float | None
) -> LoadedEvents:
    """Read events, with a progress bar on a terminal."""
    from .store import load_events

    with _progress(console, f"reading {path.name}") as progress:
        return load_events(path, since=since, until=until, progress=progress)


# ====================================================================== report


def _usd(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.2f}" if abs(value) >= 100 else f"{value:.4f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _label(value: str | None) -> str:
    return "(none)" if value is None else value


def _table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], *, text: int = 1
) -> Table:
    """A table whose first ``text`` columns are left-aligned text, the rest right-aligned."""
    table = Table(title=title, title_justify="left")
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i < text else "right", overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def _spend_table(dimension: str, rows: Sequence[SpendRow], top: int) -> Table:
    shown = list(rows) if dimension == "day" else list(rows[:top])
    body = [
        [
            _label(r.key),
            _usd(r.cost_usd),
            _pct(r.share),
            f"{r.calls:,}",
            f"{r.runs:,}",
            f"{r.input_tokens:,}",
            f"{r.output_tokens:,}",
        ]
        for r in shown
    ]
    rest = rows[len(shown) :]
    if rest:
        cost = sum(r.cost_usd for r in rest)
        body.append([f"({len(rest)} more)", _usd(cost), "", "", "", "", ""])
    columns = [dimension.replace("_", " "), "USD", "share", "calls", "runs", "input", "output"]
    return _table(f"Spend by {dimension.replace('_', ' ')}", columns, body)


def render_report(report: SpendReport, console: Console, by: Sequence[str], top: int) -> None:
    """Print the report as rich tables."""
    console.print(
        f"[bold]${report.total_usd:,.4f}[/bold] spent over {report.calls:,} calls in "
        f"{report.runs:,} runs ({report.events:,} events, {report.alerts} alerts; days in "
        f"{report.timezone})"
        + (f"; {report.skipped} unreadable records skipped" if report.skipped else "")
    )
    console.print(_budget_line(report))
    for dimension in by:
        rows = report.by.get(dimension, [])
        if rows and not (len(rows) == 1 and rows[0].key is None):
            console.print(_spend_table(dimension, rows, top))
    console.print(_task_class_table(report))
    if any(s.known for s in report.success):
        console.print(_success_table(report))
    else:
        console.print("Success rate: no run in these events recorded its outcome.")
    console.print(_cache_table(report))
    if report.anomalies:
        console.print(_anomaly_table(report))
    else:
        console.print("Anomalies: none.")


def _budget_line(report: SpendReport) -> str:
    b = report.budget
    envelope = f" of ${b.envelope_usd:,.2f}" if b.envelope_usd else ""
    ratio = f" ({b.spent_ratio:.0%})" if b.spent_ratio is not None else ""
    return (
        f"Budget {b.month}: ${b.spent_usd:,.2f}{envelope}{ratio} after {b.days_elapsed:.1f} of "
        f"{b.days_in_month} days; month-end projection ${b.projected_usd:,.2f} "
        f"[bold]{b.status_text}[/bold]"
    )


def _task_class_table(report: SpendReport) -> Table:
    rows = [
        [
            _label(t.task_class),
            f"{t.runs:,}",
            _usd(t.cost_p50),
            _usd(t.cost_p95),
            f"{t.tokens_p50:,.0f}",
            f"{t.tokens_p95:,.0f}",
            f"{t.steps_p50:g}",
            f"{t.steps_p95:g}",
        ]
        for t in report.task_classes
    ]
    columns = ["task class", "runs", "USD P50", "USD P95", "tok P50", "tok P95", "steps P50", "P95"]
    return _table("Per run, by task class", columns, rows)


def _success_table(report: SpendReport) -> Table:
    rows = [
        [
            _label(s.task_class),
            f"{s.runs:,}",
            f"{s.known:,}",
            f"{s.succeeded:,}",
            _pct(s.success_rate),
            _usd(s.cost_per_success),
        ]
        for s in report.success
    ]
    columns = ["task class", "runs", "known", "succeeded", "success rate", "USD / success"]
    return _table("Success (runs with a recorded outcome)", columns, rows)


def _cache_table(report: SpendReport) -> Table:
    rows = [
        [c.model, f"{c.input_tokens:,}", f"{c.cache_read_tokens:,}", _pct(c.hit_rate)]
        for c in report.cache
    ]
    return _table("Prompt cache by model", ["model", "input", "cache read", "hit rate"], rows)


def _anomaly_table(report: SpendReport) -> Table:
    rows = [[a.kind.replace("_", " "), a.subject, a.message] for a in report.anomalies]
    return _table(f"Anomalies ({len(rows)})", ["kind", "about", "what"], rows, text=3)


# ====================================================================== estimate, breakeven


def render_estimate(result: Estimate, console: Console, observed: Any | None = None) -> None:
    """Print an estimate: the task shape, P50/P95 per task, the month, and growth by steps."""
    s = result.shape
    console.print(
        f"[bold]{s.model}[/bold]: {s.system_prompt_tokens:,} system+task tokens, "
        f"{s.tool_output_tokens:,} tool and {s.output_tokens:,} output tokens per step, "
        f"steps P50 {s.steps_p50:g} / P95 {s.steps_p95:g}"
        + (f" (capped at {s.max_steps})" if s.max_steps else "")
        + (f", cache hit rate {s.cache_hit_rate:.0%}" if s.cache_hit_rate else "")
    )
    rows = [
        ["P50", f"{result.steps_p50}", f"{result.input_tokens_p50:,}", _usd(result.cost_p50)],
        ["P95", f"{result.steps_p95}", f"{result.input_tokens_p95:,}", _usd(result.cost_p95)],
        ["mean", f"{result.steps_mean:.2f}", "", _usd(result.cost_mean)],
    ]
    if observed is not None:
        rows.append(["observed P50", f"{observed.steps_p50:g}", "", _usd(observed.cost_p50)])
        rows.append(["observed P95", f"{observed.steps_p95:g}", "", _usd(observed.cost_p95)])
    console.print(_table("Cost of one task", ["", "steps", "input tokens", "USD"], rows))
    growth = [[f"{n}", _usd(cost)] for n, cost in sorted(result.cost_by_steps.items())]
    console.print(_table("Cost by steps (context re-sent)", ["steps", "USD"], growth))
    if result.tasks_per_day:
        console.print(
            f"{result.tasks_per_day:,.0f} tasks a day: [bold]${result.monthly_usd:,.2f}[/bold] "
            "a month (30 days, mean cost per task)"
        )


def render_breakeven(result: Breakeven, console: Console) -> None:
    """Print the API-versus-self-hosted comparison."""
    rows = [
        ["API", _usd(result.api_monthly_usd), f"${result.api_usd_per_token * 1e6:.4f} / M tokens"],
        ["self-hosted", _usd(result.self_hosted_monthly_usd), f"{result.gpus} GPU(s)"],
    ]
    console.print(
        _table(
            f"{result.tokens_per_day:,.0f} tokens a day with {result.model}, per 30-day month",
            ["", "USD / month", ""],
            rows,
        )
    )
    console.print(f"Cheaper now: [bold]{result.cheaper}[/bold]")
    if result.breakeven_tokens_per_day is None:
        console.print(
            "Break-even: never (the API serves one GPU's capacity for less than it costs)"
        )
    else:
        console.print(
            f"Break-even: {result.breakeven_tokens_per_day:,.0f} tokens a day "
            f"({result.breakeven_gpus} GPU(s)); self-hosting is cheaper above it"
        )


# ====================================================================== alerts


def render_firings(firings: Sequence[Firing], console: Console, *, delivered: bool) -> None:
    """Print the alerts that fired."""
    verb = "delivered" if delivered else "firing (dry run: nothing delivered)"
    rows = [[f.kind.replace("_", " "), f.key, f.message] for f in firings]
    console.print(_table(f"{len(rows)} alert(s) {verb}", ["kind", "key", "what"], rows, text=3))


def post_json(url: str, timeout: float = 10.0) -> Callable[[Firing], None]:
    """A callback posting each firing as JSON to ``url`` (raises on a non-2xx answer)."""

    def post(firing: Firing) -> None:
        body = json.dumps(firing.to_dict(), default=str).encode()
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            if not 200 <= answer.status < 300:
                raise OSError(f"webhook {url} answered {answer.status}")

    return post


def now_or(text: str | None, tz: str) -> float:
    """``--now`` as epoch seconds, or the wall clock."""
    wall = time.time()
    parsed = parse_when(text, now=wall, tz=tz)
    return wall if parsed is None else parsed


def to_json(data: Any) -> str:
    """Indented JSON for ``--json`` output."""
    return json.dumps(data, indent=2, default=str)
