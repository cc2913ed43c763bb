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


# -- the store URL: refused when it does not parse, its password masked in every spelling ----------


def test_a_url_that_does_not_parse_is_a_usage_error_naming_no_token(tmp_path) -> None:
    from opsflow.errors import UsageError

    with pytest.raises(UsageError) as caught:
        OpsStore("postgresql://ops:Hunter%zz2Secret@127.0.0.1:9/opsflow").migrate()  # not retried: not transient
    assert str(caught.value) == 'the ops store URL is not a valid PostgreSQL URL (invalid percent-encoded token: "...")'


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("postgresql://ops:Hunter@2Secret@db:5432/ops", "has an '@' in its user name or password: write it as %40"),
        (
            "postgresql://ops:Hunter%zz2Secret@db/ops",
            'is not a valid PostgreSQL URL (invalid percent-encoded token: "...")',
        ),
        (
            "postgresql://ops@db/ops?password=Hunter%zz2",
            'is not a valid PostgreSQL URL (invalid percent-encoded token: "...")',
        ),
        ("postgresql://ops:Hunter%402Secret@db/ops", None),
        ("postgresql://postgres@/orders?host=/run/pg", None),
        ("host=/tmp dbname=x password=pw", None),
    ],
)
def test_store_url_problem(url: str, problem: str | None) -> None:
    from opsflow.store import store_url_problem

    assert store_url_problem(url) == problem


def test_a_store_url_from_the_environment_registers_its_password_in_every_spelling() -> None:
    from opsflow.errors import UsageError
    from opsflow.redact import redact
    from opsflow.store import resolve_store_url

    url = "postgresql://ops:Pa%40ss-word-91@db/ops?sslmode=disable&password=Other%20pw-92"
    assert resolve_store_url(environ={"OPSFLOW_STORE_URL": url}) == url
    for spelling in ("Pa%40ss-word-91", "Pa@ss-word-91", "Other%20pw-92", "Other pw-92"):
        assert redact(f"libpq said {spelling!r}") == "libpq said '***'"
    with pytest.raises(UsageError) as caught:
        resolve_store_url(environ={"OPSFLOW_STORE_URL": "postgresql://ops:Tigers1@3Secret@db/ops"})
    assert str(caught.value) == (
        "the ops store URL ($OPSFLOW_STORE_URL) has an '@' in its user name or password: write it as %40"
    )
    # The password as meant (up to the last "@") and as libpq would read it (up to the first) are both masked.
    assert redact("pw Tigers1@3Secret, libpq's Tigers1") == "pw ***, libpq's ***"


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("postgresql://ops:hunter2@db/ops", "postgresql://ops:***@db/ops"),
        ("at postgresql://ops:Hun@ter/2@db:5432/ops failed", "at postgresql://ops:***@db:5432/ops failed"),
        (
            "postgresql://ops@db/ops?sslmode=require&password=s3cr%20t",
            "postgresql://ops@db/ops?sslmode=require&password=***",
        ),
        ("host=db password='a b\\'c' dbname=ops", "host=db password=*** dbname=ops"),
        (
            '{"url": "postgresql://u:pw@h/db", "to": "ops@example.com"}',
            '{"url": "postgresql://u:***@h/db", "to": "ops@example.com"}',
        ),
        ("http://example.com:8080/status", "http://example.com:8080/status"),
    ],
)
def test_redaction_knows_passwords_beyond_user_colon_password_at(text: str, redacted: str) -> None:
    from opsflow.redact import redact

    assert redact(text) == redacted


# -- connections reused between operations (bench orchestration) ---------------------------


def backends(pg_url: str) -> int:
    """Sessions open on the test's database, this query's own left out."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        row = conn.execute(
            "select count(*) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()"
        ).fetchone()
    return int(row[0]) if row else 0


def test_operations_reuse_one_connection_each_as_a_new_session(pg_url: str) -> None:
    store = OpsStore(pg_url)
    store.migrate()
    for _ in range(20):
        assert store.latest_verifications("orders-db") == {}
        store.save_result(RoutineResult(routine="r", as_of=T0, items=[]))
    with store.connection() as conn:  # a temporary table, a setting: gone for the next operation
        conn.execute("create temp table scratch (x int)")
        conn.execute("set time zone 'Asia/Tokyo'")
    with store.connection() as conn:
        assert conn.execute("select to_regclass('pg_temp.scratch')").fetchone() == (None,)
        assert conn.execute("show time zone").fetchone() != ("Asia/Tokyo",)
    assert store.connections_opened == 1
    assert backends(pg_url) == 1
    store.close()
    assert backends(pg_url) == 0


def test_a_failed_operation_rolls_back_and_its_connection_is_not_reused(pg_url: str) -> None:
    store = OpsStore(pg_url)
    store.migrate()

    def failing() -> None:
        with store.connection() as conn:
            conn.execute("insert into opsflow.schema_version (version, name) values (99999, 'x')")
            conn.execute("select 1 / 0")

    with pytest.raises(psycopg.errors.DivisionByZero):
        failing()
    assert store.schema_version() < 99999
    assert store.connections_opened == 2


def test_an_idle_connection_the_server_dropped_is_replaced_not_handed_out(pg_url: str) -> None:
    store = OpsStore(pg_url)
    store.migrate()
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity "
            "where datname = current_database() and pid <> pg_backend_pid()"
        )
    assert store.schema_version() > 0  # no error: the dead connection failed its ping and a new one was made
    assert store.connections_opened == 2


def test_concurrent_operations_keep_a_bounded_number_of_connections(pg_url: str) -> None:
    from opsflow.store import IDLE_CONNECTIONS

    store = OpsStore(pg_url)
    store.migrate()
    barrier = threading.Barrier(4)

    def work() -> None:
        for index in range(25):
            with store.connection() as conn:
                if index == 0:
                    barrier.wait()  # four operations at once: four connections
                conn.execute("select 1")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.connections_opened <= 4  # 100 operations
    assert backends(pg_url) <= IDLE_CONNECTIONS


def test_a_pickled_store_takes_no_connection_with_it(pg_url: str) -> None:
    import pickle

    store = OpsStore(pg_url)
    store.migrate()
    copy = pickle.loads(pickle.dumps(store))
    assert copy.url == store.url and copy.connections_opened == 0
    assert copy.schema_version() == store.schema_version()
    copy.close()
    store.close()


def test_stores_collected_in_reference_cycles_close_their_connections_without_a_resource_warning(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stores dropped in cycles (a run's objects pointing at each other) are collected by the cyclic GC, in a
    later test's time: none of their idle connections may be deleted open (psycopg's ResourceWarning, an
    error in this suite). A CI run once failed on one such connection of a probe run's store."""
    import gc
    import sys

    unraisable: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda hook: unraisable.append(repr(hook.exc_value)))
    gc.collect()
    gc.disable()  # collected below, all at once, as a busy process would
    try:
        for _ in range(20):
            store = OpsStore(pg_url)
            with store.connection() as conn:
                conn.execute("select 1")
            store.cycle = {"store": store}  # type: ignore[attr-defined]
            del store, conn
        gc.collect()
    finally:
        gc.enable()
    assert [text for text in unraisable if "was deleted while still open" in text] == []
