"""The reporting commands through typer's runner: report, dashboard, estimate, breakeven,
alerts."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from budgetwarden.cli import app
from budgetwarden.events import CostEvent, Event
from budgetwarden.store import SQLiteEventStore, write_jsonl

from .eventsets import at, hand_events

runner = CliRunner()
WIDE = {"COLUMNS": "200"}


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "events.db"
    with SQLiteEventStore(path) as sink:
        for event in hand_events():
            sink.emit(event)
    return path


def _json(args: list[str]) -> Any:
    result = runner.invoke(app, args, env=WIDE)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_report_json_has_every_figure(store: Path) -> None:
    data = _json(
        ["report", "--events", str(store), "--json", "--envelope", "25", "--run-usd", "5",
         "--now", "2026-01-11"]
    )  # fmt: skip
    assert data["total_usd"] == pytest.approx(21.0)
    assert {r["key"]: r["cost_usd"] for r in data["by"]["agent"]} == pytest.approx(
        {"researcher": 15.0, "writer": 5.0, "summarizer": 1.0}
    )
    assert data["budget"]["projected_usd"] == pytest.approx(65.1)
    assert data["budget"]["status"] == "at_risk"
    assert sorted(a["kind"] for a in data["anomalies"]) == [
        "daily_surge",
        "day_spike",
        "expensive_run",
        "heavy_user",
    ]
    research = next(t for t in data["task_classes"] if t["task_class"] == "research")
    assert research["cost_p95"] == pytest.approx(7.4)
    assert data["success"][-1]["cost_per_success"] == pytest.approx(19 / 7)
    assert set(data["by"]) == {"day", "agent", "workflow", "user", "workspace", "model",
                               "task_class"}  # fmt: skip


def test_report_reads_jsonl_the_same_and_groups_by_what_is_asked(
    store: Path, tmp_path: Path
) -> None:
    jsonl = tmp_path / "events.jsonl"
    write_jsonl(hand_events(), jsonl)
    args = ["report", "--json", "--by", "model", "--by", "user", "--now", "2026-01-11"]
    from_db = _json([*args, "--events", str(store)])
    from_jsonl = _json([*args, "--events", str(jsonl)])
    assert from_db == from_jsonl
    assert list(from_db["by"]) == ["model", "user"]


def test_report_since_and_until_select_days(store: Path) -> None:
    data = _json(
        ["report", "--events", str(store), "--json", "--since", "2026-01-08",
         "--until", "2026-01-10"]
    )  # fmt: skip
    assert data["total_usd"] == pytest.approx(4.0)  # Jan 8 and 9: 2 + 2
    assert list(data["daily"]) == ["2026-01-08", "2026-01-09"]


def test_the_month_budget_counts_the_whole_month_whatever_since_says(store: Path) -> None:
    args = ["report", "--events", str(store), "--json", "--envelope", "25", "--now", "2026-01-11"]
    whole = _json(args)["budget"]
    for since in ("2026-01-08", "3d"):
        assert _json([*args, "--since", since])["budget"] == whole  # $21 to date, not $14
    assert whole["spent_usd"] == pytest.approx(21.0)


def test_a_report_until_a_month_end_projects_that_month(store: Path) -> None:
    data = _json(["report", "--events", str(store), "--json", "--until", "2026-02-01"])
    budget = data["budget"]
    assert budget["month"] == "2026-01"  # --until is exclusive: its last moment is in January
    assert budget["spent_usd"] == pytest.approx(21.0)
    assert budget["projected_usd"] == pytest.approx(21.0)  # the whole month has elapsed


def test_report_prints_tables_for_people(store: Path) -> None:
    result = runner.invoke(
        app, ["report", "--events", str(store), "--now", "2026-01-11", "--envelope", "25"],
        env=WIDE,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = result.output
    assert "$21.0000 spent over 17 calls in 12 runs" in out
    assert "Spend by agent" in out and "researcher" in out and "15.0000" in out
    assert "month-end projection $65.10 projected over the envelope" in out
    assert "Per run, by task class" in out and "7.4000" in out
    assert "Prompt cache by model" in out and "42.2%" in out
    assert "Anomalies (5)" in out  # run_usd defaults to $1: R5 ($2) and R11 ($9)


def test_report_reads_rules_and_envelope_from_a_policy(store: Path, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "budgets:\n  - {scope: global, window: month, max_cost_usd: 30}\n"
        "alerts: {run_usd: 1.5, user_share: null}\n"
    )
    data = _json(["report", "--events", str(store), "--json", "--policy", str(policy),
                  "--now", "2026-01-11"])  # fmt: skip
    assert data["budget"]["envelope_usd"] == 30.0  # the global monthly budget
    assert data["rules"]["run_usd"] == 1.5
    assert {a["subject"] for a in data["anomalies"] if a["kind"] == "expensive_run"} == {
        "R5",
        "R11",
    }
    assert not [a for a in data["anomalies"] if a["kind"] == "heavy_user"]


def test_report_explains_bad_input(store: Path, tmp_path: Path) -> None:
    bad_by = runner.invoke(app, ["report", "--events", str(store), "--by", "colour"])
    assert bad_by.exit_code == 2 and "cannot group by ['colour']" in bad_by.output
    missing = runner.invoke(app, ["report", "--events", str(tmp_path / "nope.db")])
    assert missing.exit_code == 2 and "no event file" in missing.output
    bad_since = runner.invoke(app, ["report", "--events", str(store), "--since", "last week"])
    assert bad_since.exit_code == 2 and "7d, 24h, 30m" in bad_since.output
    bad_tz = runner.invoke(app, ["report", "--events", str(store), "--tz", "Mars/Olympus"])
    assert bad_tz.exit_code == 2 and "unknown time zone 'Mars/Olympus'" in bad_tz.output
    for flag, value in (("--top", "0"), ("--envelope", "-5"), ("--run-usd", "-1")):
        bad = runner.invoke(app, ["report", "--events", str(store), flag, value], env=WIDE)
        assert bad.exit_code == 2 and f"Invalid value for '{flag}'" in bad.output
    policy = tmp_path / "policy.yaml"
    policy.write_text("".join(f"key{i}: {i}\n" for i in range(20)))
    for command in ("report", "dashboard", "alerts"):
        yaml = runner.invoke(app, [command, "--events", str(policy)], env=WIDE)
        assert yaml.exit_code == 2, yaml.output
        assert "none of its 20 lines is a budgetwarden event" in yaml.output
        assert "unreadable records skipped" not in yaml.output
    mostly = tmp_path / "events.jsonl"
    write_jsonl(hand_events(), mostly)
    with mostly.open("a") as handle:
        handle.write("not json\n")
    noted = runner.invoke(app, ["report", "--events", str(mostly), "--now", "2026-01-11"], env=WIDE)
    assert noted.exit_code == 0 and "1 unreadable records skipped" in noted.output
    negative = runner.invoke(app, ["breakeven", "--tokens-per-day", "-5"], env=WIDE)
    assert negative.exit_code == 2 and "'--tokens-per-day'" in negative.output


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--system-tokens", "-5"], "Invalid value for '--system-tokens': Input should be greater"),
        (["--tool-tokens", "-1"], "Invalid value for '--tool-tokens'"),
        (["--cache-hit-rate", "2"], "Invalid value for '--cache-hit-rate'"),
        (["--max-steps", "0"], "Invalid value for '--max-steps'"),
        (["--steps-p50", "10", "--steps-p95", "3"], "--steps-p95 (3.0) must be >= --steps-p50"),
        (["--steps-p95", "1000"], "set --max-steps"),
        (["--tasks-per-day", "inf"], "--tasks-per-day must be a finite number"),
    ],
)
def test_estimate_errors_name_the_flag_not_the_model_field(args: list[str], said: str) -> None:
    result = runner.invoke(app, ["estimate", "--output-tokens", "100", *args])
    assert result.exit_code == 2, result.output
    assert said in result.output
    for internal in ("TaskShape", "validation error", "system_prompt_tokens", "steps_p95"):
        assert internal not in result.output


@pytest.mark.parametrize(
    ("command", "flag"),
    [("report", "--envelope"), ("report", "--run-usd"), ("breakeven", "--gpu-usd-per-hour")],
)
def test_help_and_validation_agree_that_zero_is_not_allowed(
    store: Path, command: str, flag: str
) -> None:
    helped = runner.invoke(app, [command, "--help"], env=WIDE)
    line = next(line for line in helped.output.splitlines() if flag in line)
    assert "above 0" in line and "x>=0" not in line
    events = ["--events", str(store)] if command == "report" else []
    zero = runner.invoke(app, [command, *events, flag, "0"], env=WIDE)
    assert zero.exit_code == 2
    assert f"Invalid value for '{flag}': Input should be greater than 0" in zero.output
    assert "validation error" not in zero.output
    assert runner.invoke(app, [command, *events, flag, "0.5"], env=WIDE).exit_code == 0


def test_price_refuses_negative_tokens_naming_the_flag() -> None:
    for flag in ("--input-tokens", "--output-tokens"):
        result = runner.invoke(app, ["price", "gpt-4o", flag, "-5"])
        assert result.exit_code == 2
        assert f"Invalid value for '{flag}'" in result.output
        assert "Traceback" not in result.output and "validation error" not in result.output


def test_dashboard_into_a_directory_is_a_one_line_error(store: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["dashboard", "--events", str(store), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert f"--out {tmp_path} is a directory" in result.output
    assert "Traceback" not in result.output and "IsADirectoryError" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    (tmp_path / "a-file").write_text("")
    beneath_a_file = str(tmp_path / "a-file" / "dashboard.html")
    result = runner.invoke(app, ["dashboard", "--events", str(store), "--out", beneath_a_file])
    assert result.exit_code == 2 and f"cannot write --out {beneath_a_file}" in result.output
    assert "Traceback" not in result.output


def test_a_since_later_than_until_is_refused(store: Path) -> None:
    for command in ("report", "dashboard", "report --since 1d --until 3d"):
        args = command.split()
        if len(args) == 1:
            args += ["--since", "2026-01-10", "--until", "2026-01-08"]
        result = runner.invoke(app, [*args, "--events", str(store)])
        assert result.exit_code == 2
        assert "is not before --until" in result.output and "Traceback" not in result.output
    said = runner.invoke(
        app, ["report", "--events", str(store), "--since", "2026-01-10", "--until", "2026-01-08"]
    ).output
    assert "--since 2026-01-10 is not before --until 2026-01-08" in said


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--input-usd-per-m", "-1"), ("--output-usd-per-m", "-0.5"), ("--tokens-per-day", "inf")],
)
def test_breakeven_refuses_negative_prices_and_endless_volumes(flag: str, value: str) -> None:
    result = runner.invoke(app, ["breakeven", "--model", "gpt-4o", flag, value], env=WIDE)
    assert result.exit_code == 2
    assert flag in result.output and "Traceback" not in result.output


def test_dashboard_command_writes_one_html_file(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "site" / "dashboard.html"
    result = runner.invoke(
        app, ["dashboard", "--events", str(store), "--out", str(out), "--envelope", "25",
              "--now", "2026-01-11"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "19 events" in result.output
    assert "projected over the envelope" in page


def test_estimate_command_gives_p50_p95_and_a_month() -> None:
    data = _json(
        ["estimate", "--model", "gpt-4o", "--steps-p50", "4", "--steps-p95", "4",
         "--system-tokens", "1000", "--tool-tokens", "500", "--output-tokens", "100",
         "--tasks-per-day", "100", "--json"]
    )  # fmt: skip
    # gpt-4o at $2.50 / M in, $10 / M out: 7600 in + 400 out = 0.019 + 0.004
    assert data["cost_p50"] == data["cost_p95"] == pytest.approx(0.023)
    assert data["monthly_usd"] == pytest.approx(69.0)  # 0.023 * 100 * 30
    result = runner.invoke(app, ["estimate", "--steps-p50", "4", "--steps-p95", "8"], env=WIDE)
    assert result.exit_code == 0 and "Cost of one task" in result.output


@pytest.mark.parametrize("p95", ["1e6", "inf", "nan", "1000"])
def test_estimate_refuses_step_counts_it_cannot_follow_at_once(p95: str) -> None:
    started = time.perf_counter()
    result = runner.invoke(app, ["estimate", "--steps-p95", p95, "--system-tokens", "1000"])
    assert result.exit_code == 2, result.output
    assert "steps_p95" in result.output or "--steps-p95" in result.output
    assert "Traceback" not in result.output
    assert time.perf_counter() - started < 10


def test_estimate_warns_that_without_token_figures_every_cost_is_zero() -> None:
    bare = runner.invoke(app, ["estimate", "--json"], env=WIDE)
    assert bare.exit_code == 0
    assert json.loads(bare.stdout)["cost_p95"] == 0.0  # stdout stays JSON
    assert "--system-tokens, --tool-tokens and --output-tokens are all 0" in bare.stderr
    sized = runner.invoke(app, ["estimate", "--output-tokens", "100"], env=WIDE)
    assert sized.exit_code == 0 and "are all 0" not in sized.output


def _recorded(path: Path) -> None:
    events: list[Event] = []
    for r, steps in enumerate([2, 3, 3, 4, 10]):
        for k in range(1, steps + 1):
            events.append(
                CostEvent(ts=at(1, 3600 * r + k), run_id=f"run{r}", model="gpt-4o",
                          input_tokens=1200 + (k - 1) * 400, output_tokens=100, cost_usd=0.01)
            )  # fmt: skip
    write_jsonl(events, path)


def test_estimate_fits_recorded_runs_and_shows_what_was_observed(tmp_path: Path) -> None:
    _recorded(tmp_path / "runs.jsonl")
    data = _json(["estimate", "--from-events", str(tmp_path / "runs.jsonl"), "--json"])
    shape = data["shape"]
    assert (shape["system_prompt_tokens"], shape["tool_output_tokens"]) == (1200, 300)
    assert (shape["steps_p50"], shape["steps_p95"]) == (3, pytest.approx(8.8))
    assert data["observed"]["steps_p95"] == pytest.approx(8.8)
    assert data["observed"]["cost_p50"] == pytest.approx(0.03)  # 3 calls of $0.01
    # a flag overrides the fitted figure
    over = _json(["estimate", "--from-events", str(tmp_path / "runs.jsonl"), "--json",
                  "--output-tokens", "500"])  # fmt: skip
    assert over["shape"]["output_tokens"] == 500


def test_a_fitted_tail_too_long_to_follow_can_be_capped_with_max_steps(tmp_path: Path) -> None:
    events: list[Event] = []
    for r, steps in enumerate([1] * 18 + [60, 80]):  # steps P50 1, P95 61: a ~4e5-step tail
        for k in range(1, steps + 1):
            events.append(
                CostEvent(ts=at(1, 3600 * r + k), run_id=f"run{r}", model="gpt-4o",
                          input_tokens=1000 + (k - 1) * 100, output_tokens=50, cost_usd=0.01)
            )  # fmt: skip
    write_jsonl(events, tmp_path / "runs.jsonl")
    args = ["estimate", "--from-events", str(tmp_path / "runs.jsonl"), "--json"]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2 and "set --max-steps" in refused.output
    capped = _json([*args, "--max-steps", "100"])
    assert capped["shape"]["max_steps"] == 100 and capped["steps_p95"] == 61


def test_breakeven_command_compares_a_month_each_way() -> None:
    data = _json(
        ["breakeven", "--model", "my-llama", "--tokens-per-day", "10000000",
         "--gpu-usd-per-hour", "2", "--tokens-per-second", "1000", "--utilisation", "0.5",
         "--ops-usd-per-month", "560", "--input-usd-per-m", "1", "--output-usd-per-m", "3",
         "--json"]
    )  # fmt: skip
    assert data["api_monthly_usd"] == pytest.approx(450.0)
    assert data["self_hosted_monthly_usd"] == pytest.approx(2000.0)
    assert data["breakeven_tokens_per_day"] == pytest.approx(6320 / 4.5e-5)  # see test_estimate
    mini = _json(["breakeven", "--model", "gpt-4o-mini", "--json"])
    # gpt-4o-mini: 0.75 * $0.15/M + 0.25 * $0.60/M
    assert mini["api_usd_per_token"] == pytest.approx(0.2625e-6)
    result = runner.invoke(app, ["breakeven", "--model", "no-such-model-x"])
    assert result.exit_code == 2 and "no-such-model-x" in result.output


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Any:
    _Hook.received = []
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", _Hook.received
    server.shutdown()


def test_alerts_command_delivers_each_alert_once_to_a_webhook(store: Path, webhook: Any) -> None:
    url, received = webhook
    args = ["alerts", "--events", str(store), "--envelope", "25", "--run-usd", "5",
            "--now", "2026-01-11", "--webhook", url]  # fmt: skip
    first = runner.invoke(app, args, env=WIDE)
    assert first.exit_code == 0, first.output
    assert "7 alert(s) delivered" in first.output
    assert sorted(r["key"] for r in received) == [
        "daily_surge|2026-01-10",
        "day_spike|2026-01-10",
        "envelope_projection|2026-01",
        "envelope|2026-01|0.5",
        "envelope|2026-01|0.8",
        "expensive_run|R11",
        "heavy_user|2026-01|whale",
    ]
    envelope = next(r for r in received if r["key"] == "envelope|2026-01|0.8")
    assert envelope["event"]["type"] == "BudgetAlert" and envelope["event"]["level"] == 0.8
    second = runner.invoke(app, args, env=WIDE)
    assert "0 alert(s) delivered" in second.output and len(received) == 7


def test_alerts_that_a_webhook_did_not_take_fail_the_command_and_go_again(
    store: Path, webhook: Any
) -> None:
    """Cron must see a webhook that is down: exit 1, one line per run, no traceback."""
    args = ["alerts", "--events", str(store), "--envelope", "25", "--now", "2026-01-11"]
    down = runner.invoke(app, [*args, "--webhook", "http://127.0.0.1:9/down"], env=WIDE)
    assert down.exit_code == 1
    assert "not delivered" in down.output and "retried at the next run" in down.output
    assert "Traceback" not in down.output
    url, received = webhook
    back = runner.invoke(app, [*args, "--webhook", url], env=WIDE)
    assert back.exit_code == 0 and len(received) > 0  # what failed is delivered now


def test_alerts_dry_run_and_jsonl_state(tmp_path: Path) -> None:
    jsonl = tmp_path / "events.jsonl"
    write_jsonl(hand_events(), jsonl)
    args = ["alerts", "--events", str(jsonl), "--envelope", "25", "--now", "2026-01-11"]
    dry = _json([*args, "--dry-run", "--json"])
    assert len(dry) == 8  # run_usd 1.0 by default: R5 ($2) and R11 ($9)
    assert not Path(f"{jsonl}.alerts.db").exists()
    assert len(_json([*args, "--json"])) == 8
    assert Path(f"{jsonl}.alerts.db").exists()
    assert _json([*args, "--json"]) == []


def test_commands_refuse_a_damaged_store_and_a_webhook_that_is_no_url_in_one_line(
    tmp_path: Path, store: Path
) -> None:
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(b"SQLite format 3\x00" + b"\x07" * 4096)
    for args in (["report", "--events", str(damaged)], ["dashboard", "--events", str(damaged)]):
        result = runner.invoke(app, args, env=WIDE)
        assert result.exit_code == 2 and "damaged SQLite file" in result.output, args
        assert "Traceback" not in result.output
    bad = runner.invoke(app, ["alerts", "--events", str(store), "--webhook", "notaurl"])
    assert bad.exit_code == 2 and "give an http:// or https:// URL" in bad.output
    unknown = runner.invoke(app, ["report", "--events", str(store), "--by", "color"])
    assert unknown.exit_code == 2 and len(unknown.output.strip().splitlines()) == 1
