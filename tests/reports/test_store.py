"""The event store and the JSONL reader: same events back, safe across processes."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import statistics
from pathlib import Path

import pytest

from budgetwarden import JSONLSink, Limits, Policy, Usage, Warden
from budgetwarden.analytics import runs_of, spend_by, task_class_stats
from budgetwarden.events import CostEvent, Event
from budgetwarden.store import SQLiteEventStore, is_sqlite_file, load_events, write_jsonl

from .eventsets import at, hand_events, random_events


def _dicts(events: list[Event]) -> list[dict[str, object]]:
    return [e.to_dict() for e in sorted(events, key=lambda e: e.ts)]


def test_store_gives_back_every_event_type_unchanged(tmp_path: Path) -> None:
    events = hand_events()
    with SQLiteEventStore(tmp_path / "events.db") as store:
        for event in events:
            store.emit(event)
        assert store.count() == 19
    loaded = load_events(tmp_path / "events.db")
    assert loaded.skipped == 0
    assert _dicts(loaded.events) == _dicts(events)
    assert {e.type for e in loaded.events} == {"CostEvent", "BudgetAlert", "Notice"}


def test_jsonl_sink_output_reads_the_same_as_the_store(tmp_path: Path) -> None:
    events = random_events(runs=60)
    sink = JSONLSink(tmp_path / "events.jsonl")
    with SQLiteEventStore(tmp_path / "events.db") as store:
        for event in events:
            sink.emit(event)
            store.emit(event)
    from_jsonl = load_events(tmp_path / "events.jsonl")
    from_db = load_events(tmp_path / "events.db")
    assert _dicts(from_jsonl.events) == _dicts(from_db.events) == _dicts(events)
    assert is_sqlite_file(tmp_path / "events.db") and not is_sqlite_file(tmp_path / "events.jsonl")


def test_since_and_until_select_a_time_range_in_both_formats(tmp_path: Path) -> None:
    events = hand_events()
    write_jsonl(events, tmp_path / "e.jsonl")
    with SQLiteEventStore(tmp_path / "e.db") as store:
        for event in events:
            store.emit(event)
    for name in ("e.jsonl", "e.db"):
        loaded = load_events(tmp_path / name, since=at(8, 0), until=at(10, 0))
        assert sorted({e.run_id for e in loaded.events}) == ["R10", "R7", "R8", "R9"]


def test_unreadable_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    write_jsonl(hand_events()[:3], path)
    with path.open("a") as handle:
        handle.write('{"type": "FutureEvent", "ts": 1}\n')  # a type this version lacks
        handle.write("[1, 2]\n")
        handle.write('{"type": "CostEvent", "ts": 17672')  # cut short by a writer
    loaded = load_events(path)
    assert (len(loaded.events), loaded.skipped) == (3, 3)


def test_a_file_without_a_single_event_is_refused_not_reported_empty(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("budgets:\n  - {scope: global, window: month, max_cost_usd: 30}\n")
    with pytest.raises(ValueError, match=r"not an event file: none of its 2 lines"):
        load_events(policy)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert load_events(empty).events == []  # nothing written yet is not an error
    mostly = tmp_path / "events.jsonl"
    write_jsonl(hand_events()[:1], mostly)
    with mostly.open("a") as handle:
        handle.write("not json\n")
    outside = load_events(mostly, until=0.0)  # its one event falls outside the window
    assert (outside.events, outside.skipped) == ([], 1)


def test_a_sqlite_file_that_is_not_a_store_is_refused_clearly(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "other.db")
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(ValueError, match="not a budgetwarden event store"):
        load_events(tmp_path / "other.db")
    with pytest.raises(FileNotFoundError, match="no event file"):
        load_events(tmp_path / "missing.db")


def test_batched_store_writes_at_batch_size_and_on_close(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = SQLiteEventStore(path, batch_size=5, flush_seconds=3600)
    events = hand_events()
    for event in events[:4]:
        store.emit(event)
    assert len(load_events(path).events) == 0  # still buffered
    store.emit(events[4])
    assert len(load_events(path).events) == 5  # the fifth filled the batch
    for event in events[5:7]:
        store.emit(event)
    store.close()
    assert len(load_events(path).events) == 7


def _write_from_child(path: str, worker: int, count: int) -> None:
    store = SQLiteEventStore(path)
    for i in range(count):
        store.emit(CostEvent(ts=at(1) + i, run_id=f"w{worker}-{i}", cost_usd=0.01, agent="a"))
    store.close()


def test_processes_writing_at_once_lose_no_event(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    SQLiteEventStore(path).close()
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_write_from_child, args=(path, w, 150)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    loaded = load_events(path)
    assert len(loaded.events) == 600
    assert len({e.run_id for e in loaded.events}) == 600
    assert spend_by(loaded.events, "agent")[0].cost_usd == pytest.approx(6.0)
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_an_alert_key_is_marked_once_across_store_objects(tmp_path: Path) -> None:
    first, second = SQLiteEventStore(tmp_path / "s.db"), SQLiteEventStore(tmp_path / "s.db")
    assert first.mark_once("envelope|2026-01|0.5") is True
    assert second.mark_once("envelope|2026-01|0.5") is False
    second.forget("envelope|2026-01|0.5")
    assert first.mark_once("envelope|2026-01|0.5") is True
    assert list(first.marks()) == ["envelope|2026-01|0.5"]


def test_spend_by_dimension_agrees_with_sql_over_the_random_month(tmp_path: Path) -> None:
    events = random_events(seed=11)
    with SQLiteEventStore(tmp_path / "events.db") as store:
        for event in events:
            store.emit(event)
    db = sqlite3.connect(tmp_path / "events.db")
    for dimension, column in (("agent", "agent"), ("user", '"user"'), ("model", "model")):
        sql = dict(
            db.execute(
                f"SELECT {column}, SUM(cost_usd) FROM events WHERE type = 'CostEvent' "
                f"AND json_extract(data, '$.kind') = 'llm' GROUP BY {column}"
            ).fetchall()
        )
        ours = {r.key: r.cost_usd for r in spend_by(events, dimension) if r.key is not None}
        ours = {k: v for k, v in ours.items() if not k.startswith("tool:")}
        if dimension != "model":  # tool calls carry agent and user, so add them back
            tools = dict(
                db.execute(
                    f"SELECT {column}, SUM(cost_usd) FROM events "
                    f"WHERE json_extract(data, '$.kind') = 'tool' GROUP BY {column}"
                ).fetchall()
            )
            sql = {k: v + tools.get(k, 0.0) for k, v in sql.items()}
        assert ours == pytest.approx(sql)


def _stdlib_percentile(values: list[float], p: int) -> float:
    """The stdlib's 'inclusive' quantiles: the same definition (type 7), another code."""
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def test_percentiles_per_task_class_agree_with_the_stdlib_over_the_random_month() -> None:
    events = random_events(seed=3)
    runs = runs_of(events)
    for stats in task_class_stats(runs):
        mine = [r for r in runs if r.task_class == stats.task_class]
        costs = [r.cost_usd for r in mine]
        tokens = [float(r.tokens) for r in mine]
        assert stats.cost_p50 == pytest.approx(_stdlib_percentile(costs, 50))
        assert stats.cost_p95 == pytest.approx(_stdlib_percentile(costs, 95))
        assert stats.tokens_p95 == pytest.approx(_stdlib_percentile(tokens, 95))


def test_a_warden_with_the_store_as_sink_records_what_reports_read(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    warden = Warden(Policy(limits=Limits(max_iterations=2)), sinks=[store], log_events=False)
    with warden.run(agent="researcher", user="u1", task_class="extraction") as run:
        for _ in range(3):
            step = run.before_llm_call(model="gpt-4o", input_tokens=1000, max_tokens=100)
            run.after_llm_call(step, usage=Usage(input_tokens=1000, output_tokens=100))
    warden.close()
    loaded = load_events(tmp_path / "events.db")
    kinds = [e.type for e in loaded.events]
    assert kinds.count("CostEvent") == 2  # the third call was refused by max_iterations
    refusals = [e for e in loaded.events if getattr(e, "code", None) == "refused"]
    assert len(refusals) == 1 and refusals[0].run_id == run.id  # the refusal is kept too
    costs = [e for e in loaded.events if isinstance(e, CostEvent)]
    # gpt-4o: $2.50 / M input, $10 / M output -> 1000 * 2.5e-6 + 100 * 1e-5 = 0.0035 per call
    assert sum(e.cost_usd for e in costs) == pytest.approx(0.007)
    assert json.loads(json.dumps(loaded.events[0].to_dict()))["run_id"] == run.id


def test_a_damaged_store_is_refused_clearly(tmp_path: Path) -> None:
    """A file with SQLite's header and garbage after it (or a store cut short) is a
    ValueError that says so, which the commands print as one line: it was a traceback."""
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(b"SQLite format 3\x00" + b"\x07" * 4096)
    with pytest.raises(ValueError, match="damaged SQLite file"):
        load_events(damaged)
