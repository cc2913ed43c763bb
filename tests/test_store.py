"""Ops store: migrations, results that replace rather than duplicate, history writes."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from opsflow.errors import StoreUnavailable
from opsflow.history_csv import CapacityRow, ProbeRow
from opsflow.results import Check, Item, RoutineResult
from opsflow.store import Migration, OpsStore, bundled_migrations

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def test_migrations_apply_once_and_record_their_version(pg_url: str) -> None:
    store = OpsStore(pg_url)
    latest = bundled_migrations()[-1].version
    assert store.schema_version() == 0
    assert store.migrate() == [m.version for m in bundled_migrations()]
    assert store.schema_version() == latest
    assert store.migrate() == []
    with psycopg.connect(pg_url) as conn:
        tables = {row[0] for row in conn.execute("select tablename from pg_tables where schemaname = 'opsflow'")}
    assert {"schema_version", "routine_runs", "capacity_samples"} <= tables


def test_two_processes_migrating_at_once_apply_each_migration_once(pg_url: str) -> None:
    slow = [*bundled_migrations(), Migration(9999, "slow", "select pg_sleep(0.5); create table opsflow.slow (x int);")]
    errors: list[BaseException] = []
    applied: list[list[int]] = []

    def migrate() -> None:
        try:
            applied.append(OpsStore(pg_url).migrate(slow))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(len(a) for a in applied) == [0, 0, len(slow)]


def test_a_failing_migration_leaves_no_trace_and_reports(pg_url: str) -> None:
    store = OpsStore(pg_url)
    broken = [*bundled_migrations(), Migration(9998, "broken", "create table opsflow.half (x int); select 1/0;")]
    with pytest.raises(psycopg.errors.DivisionByZero):
        store.migrate(broken)
    assert store.schema_version() == bundled_migrations()[-1].version
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("select to_regclass('opsflow.half')").fetchone() == (None,)


def _result(status: str, as_of: datetime = T0) -> RoutineResult:
    return RoutineResult(
        routine="backup-verification",
        as_of=as_of,
        items=[Item(name="orders-db", checks=[Check(check="fresh", status=status, detail="x")])],  # type: ignore[arg-type]
    )


def test_rerun_for_the_same_instant_replaces_the_result(store: OpsStore) -> None:
    store.save_result(_result("fail"))
    store.save_result(_result("ok"))
    store.save_result(_result("warn", T0 + timedelta(days=1)))
    results = store.results("backup-verification")
    assert [(r.as_of, r.status) for r in results] == [(T0 + timedelta(days=1), "warn"), (T0, "ok")]
    assert results[1].items[0].checks[0].detail == "x"


def test_probe_results_span_monthly_partitions_and_are_never_written_twice(store: OpsStore, pg_url: str) -> None:
    rows = [
        ProbeRow("api", T0 - timedelta(minutes=1), True, 12.5, 200, None),  # October
        ProbeRow("api", T0, False, None, 503, "HTTPStatusError: 503"),  # November
        ProbeRow("db", T0 + timedelta(days=31), True, 3.0, None, None),  # December
    ]
    assert store.write_probe_results(rows).inserted == 3
    again = store.write_probe_results(rows)
    assert (again.rows, again.inserted, again.unchanged) == (3, 0, 3)
    assert store.count_probe_results() == 3
    with psycopg.connect(pg_url) as conn:
        partitions = {
            row[0]
            for row in conn.execute(
                "select inhrelid::regclass::text from pg_inherits where inhparent = 'opsflow.probe_results'::regclass"
            )
        }
    assert partitions == {
        "opsflow.probe_results_2026_10",
        "opsflow.probe_results_2026_11",
        "opsflow.probe_results_2026_12",
    }


def test_services_with_results_names_those_with_rows_in_the_range(store: OpsStore) -> None:
    store.write_probe_results(
        [
            ProbeRow("api", T0 - timedelta(minutes=1), True, 12.5, 200, None),
            ProbeRow("db", T0 + timedelta(days=31), True, 3.0, None, None),
        ]
    )
    names = ["api", "db", "nosuch"]
    assert store.services_with_results(names) == {"api", "db"}
    assert store.services_with_results(names, start=T0) == {"db"}
    assert store.services_with_results(names, end=T0) == {"api"}
    assert store.services_with_results(names, T0, T0 + timedelta(days=31)) == set()  # end is exclusive
    assert store.services_with_results([]) == set()


def test_capacity_samples_upsert_by_metric_and_time(store: OpsStore) -> None:
    first = store.write_capacity_samples(
        [CapacityRow("disk", T0, 1.0), CapacityRow("disk", T0 + timedelta(hours=1), 2.0)]
    )
    assert (first.inserted, first.updated) == (2, 0)
    second = store.write_capacity_samples(
        [CapacityRow("disk", T0, 1.5), CapacityRow("disk", T0 + timedelta(hours=1), 2.0)]
    )
    assert (second.inserted, second.updated, second.unchanged) == (0, 1, 1)
    assert store.count_capacity_samples("disk") == 2


def test_unreachable_store_is_a_clear_error_without_the_password(tmp_path) -> None:
    url = f"postgresql://ops:hunter2@/opsflow?host={tmp_path}&port=1"
    with pytest.raises(StoreUnavailable) as caught:
        OpsStore(url).migrate()
    assert "ops store unreachable" in str(caught.value)
    assert "hunter2" not in str(caught.value)
