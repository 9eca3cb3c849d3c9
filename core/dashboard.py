"""The dashboard: one self-contained, offline HTML file drawn from a ``SpendReport``.

``write_dashboard(report, "dashboard.html")``. The file needs no network (its Content
Security Policy forbids every fetch): CSS and JavaScript are inline, and the charts (daily
trend with a 7-day average, spend by agent and by model, budget with its projection) are
SVG drawn by a few lines of the page's own script. Tables (summary, anomalies, task classes)
are written in HTML.

Names come from events, so nothing from an event reaches the page unescaped: HTML text is
escaped with ``html.escape``; the chart data travel as JSON in a
``<script type="application/json">`` block with ``<``, ``>``, ``&`` and the JavaScript line
separators written as ``\\uXXXX`` escapes (no ``</script>`` can close it), and the script sets
every label with ``textContent``.
"""

from __future__ import annotations

import html
import json
import os
import re
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

from .analytics import SpendRow
from .spend_report import SpendReport

__all__ = ["render_dashboard", "write_dashboard"]

_TOP = 12
_PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")
_JSON_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def script_json(data: Any) -> str:
    """JSON that is safe inside a ``<script>`` element: no ``<``, ``>`` or ``&`` left."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return "".join(_JSON_ESCAPES.get(ch, ch) for ch in text)


def _top(rows: list[SpendRow]) -> list[list[Any]]:
    """The dearest rows as [name, usd]; the rest summed as '(others)'."""
    head = [[row.key, round(row.cost_usd, 6)] for row in rows[:_TOP]]
    rest = sum(row.cost_usd for row in rows[_TOP:])
    return [*head, ["(others)", round(rest, 6)]] if rows[_TOP:] else head


def _chart_data(report: SpendReport) -> dict[str, Any]:
    return {
        "daily": [[day, round(usd, 6)] for day, usd in report.daily.items()],
        "by_agent": _top(report.by.get("agent", [])),
        "by_model": _top(report.by.get("model", [])),
        "budget": report.budget.model_dump(mode="json"),
        "anomalies": [a.model_dump(mode="json") for a in report.anomalies],
    }


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:,.2f}" if value >= 1 else f"${value:.4f}"


def _cards(report: SpendReport) -> str:
    budget = report.budget
    cards = [
        ("total spend", _usd(report.total_usd)),
        ("model and tool calls", f"{report.calls:,}"),
        ("runs", f"{report.runs:,}"),
        (f"spent in {budget.month}", _usd(budget.spent_usd)),
        ("month-end projection", _usd(budget.projected_usd)),
        ("anomalies", str(len(report.anomalies))),
    ]
    return "".join(
        f'<div class="card"><b>{_esc(v)}</b><span>{_esc(k)}</span></div>' for k, v in cards
    )


def _table(headers: list[str], rows: list[list[str]], numeric: set[int]) -> str:
    def cell(tag: str, i: int, value: str) -> str:
        cls = ' class="num"' if i in numeric else ""
        return f"<{tag}{cls}>{_esc(value)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _anomalies(report: SpendReport) -> str:
    if not report.anomalies:
        return '<p class="empty">Nothing unusual.</p>'
    rows = [[a.kind.replace("_", " "), a.subject, a.message] for a in report.anomalies]
    return _table(["kind", "about", "what"], rows, set())


def _task_classes(report: SpendReport) -> str:
    if not report.task_classes:
        return '<p class="empty">No runs recorded.</p>'
    rows = [
        [
            t.task_class or "(none)",
            str(t.runs),
            _usd(t.cost_p50),
            _usd(t.cost_p95),
            f"{t.tokens_p50:,.0f}",
            f"{t.tokens_p95:,.0f}",
            _usd(t.cost_usd),
        ]
        for t in report.task_classes
    ]
    headers = ["task class", "runs", "cost P50", "cost P95", "tokens P50", "tokens P95", "total"]
    return _table(headers, rows, {1, 2, 3, 4, 5, 6})


def _budget_text(report: SpendReport) -> str:
    b = report.budget
    envelope = f" of a {_usd(b.envelope_usd)} envelope" if b.envelope_usd else ""
    return (
        f"{_usd(b.spent_usd)} spent{envelope} after {b.days_elapsed:.1f} of {b.days_in_month} "
        f"days; at this rate the month ends at {_usd(b.projected_usd)}."
    )


def _span(report: SpendReport) -> str:
    if report.first_ts is None or report.last_ts is None:
        return "no events"
    first = datetime.fromtimestamp(report.first_ts, UTC).strftime("%Y-%m-%d %H:%M")
    last = datetime.fromtimestamp(report.last_ts, UTC).strftime("%Y-%m-%d %H:%M")
    return f"{report.events:,} events from {first} to {last} UTC"


def render_dashboard(
    report: SpendReport, *, title: str = "budgetwarden: where the money went"
) -> str:
    """The dashboard page as one HTML string."""
    template = files("budgetwarden").joinpath("dashboard.html").read_text(encoding="utf-8")
    status = report.budget.status
    values = {
        "TITLE": _esc(title),
        "SUBTITLE": _esc(f"{_span(report)}; days in {report.timezone}"),
        "CARDS": _cards(report),
        "MONTH": _esc(report.budget.month),
        "STATUS": _esc(status),
        "STATUS_TEXT": _esc(report.budget.status_text),
        "BUDGET_TEXT": _esc(_budget_text(report)),
        "ANOMALIES": _anomalies(report),
        "TASK_CLASSES": _task_classes(report),
        "DATA": script_json(_chart_data(report)),
    }
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def write_dashboard(
    report: SpendReport, path: str | os.PathLike[str], *, title: str | None = None
) -> Path:
    """Write the dashboard to ``path`` and return it."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    page = render_dashboard(report) if title is None else render_dashboard(report, title=title)
    out.write_text(page, encoding="utf-8")
    return out
