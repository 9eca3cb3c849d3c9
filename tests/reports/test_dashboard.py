"""The dashboard: one offline HTML file whose charts render in headless Chromium, and in
which no name from an event can run as code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from budgetwarden.alerts import AlertRules
from budgetwarden.dashboard import render_dashboard, script_json, write_dashboard
from budgetwarden.spend_report import SpendReport, build_report

from .chromium import chromium, parse, render, with_probe
from .eventsets import HOSTILE_AGENT, HOSTILE_MODEL, HOSTILE_USER, at, hand_events, hostile_events


@pytest.fixture(scope="module")
def report() -> SpendReport:
    events = hand_events() + hostile_events()
    return build_report(events, rules=AlertRules(monthly_envelope_usd=40, run_usd=5), now=at(11, 0))


def test_the_page_fetches_nothing_and_escapes_every_name(report: SpendReport) -> None:
    page = render_dashboard(report)
    # the only URL is the SVG namespace, which is a name, never fetched
    assert re.findall(r"https?://[^\s\"']+", page) == ["http://www.w3.org/2000/svg"]
    assert "default-src 'none'" in page  # the browser refuses any fetch
    assert HOSTILE_AGENT not in page and "<img" not in page and "<b>bold" not in page
    data = page.split('id="bw-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in data and "\u2028" not in data
    assert page.count("</script>") == 2  # the data block and the page's script
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # names in tables, escaped


def test_script_json_cannot_close_its_script_element() -> None:
    assert script_json({"a": "</script><!--\u2028&"}) == (
        '{"a":"\\u003c/script\\u003e\\u003c!--\\u2028\\u0026"}'
    )


def test_dashboard_renders_its_charts_in_headless_chromium(
    report: SpendReport, tmp_path: Path
) -> None:
    binary = chromium()
    page = tmp_path / "dashboard.html"
    page.write_text(with_probe(render_dashboard(report)), encoding="utf-8")
    shown = render(binary, page, tmp_path / "profile")
    assert "Uncaught" not in shown.log and "Refused to" not in shown.log, shown.log[-3000:]
    dom = parse(shown.dom)
    (html,) = dom.find_all("html")
    assert "data-errors" not in html.attrs, html.attrs.get("data-errors")
    assert "data-alerted" not in html.attrs  # no name ran as code
    assert dom.find_all("body")[0].attrs.get("data-rendered") == "1"
    assert dom.find_all("img") == []

    daily = dom.by_id("daily")
    bars = daily.find_all("rect", "bar")
    assert len(bars) == 10  # Jan 1..10, Jan 5 included at $0
    assert [b for b in bars if "anomaly" in b.attrs["class"]] == [bars[9]]  # the Jan 10 spike
    assert float(bars[9].attrs["height"]) > float(bars[0].attrs["height"]) > 0
    assert len(daily.find_all("circle", "point")) == 10
    assert len(daily.find_all("polyline", "trend")[0].attrs["points"].split()) == 10

    agents = dom.by_id("by-agent")
    assert len(agents.find_all("rect", "hbar")) == 5
    tips = [t.all_text() for t in agents.find_all("title")]
    assert f"{HOSTILE_AGENT}: $20.00" in tips and "researcher: $15.00" in tips
    models = [t.all_text() for t in dom.by_id("by-model").find_all("title")]
    assert f"{HOSTILE_MODEL}: $20.00" in models

    budget = dom.by_id("budget")
    assert budget.find_all("rect", "spent") and budget.find_all("line", "envelope")
    assert "over the envelope" in budget.all_text()  # $43.50 of $40
    anomalies = dom.by_id("anomalies").all_text()
    assert HOSTILE_USER.replace("\u2028", "") in anomalies.replace("\u2028", "")
    assert "2026-01-10 spent $10.00" in anomalies


def test_dashboard_screenshot_is_taken(report: SpendReport, tmp_path: Path) -> None:
    binary = chromium()
    page = write_dashboard(report, tmp_path / "dashboard.html")
    shot = tmp_path / "dashboard.png"
    render(binary, page, tmp_path / "profile", screenshot=shot)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_an_empty_event_set_still_gives_a_page(tmp_path: Path) -> None:
    binary = chromium()
    page = tmp_path / "empty.html"
    empty = build_report([], now=at(11, 0))
    page.write_text(with_probe(render_dashboard(empty)), encoding="utf-8")
    dom = parse(render(binary, page, tmp_path / "profile").dom)
    assert "data-errors" not in dom.find_all("html")[0].attrs
    assert "No spend recorded." in dom.by_id("daily").all_text()
