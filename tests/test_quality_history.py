"""The data-quality checks Great Expectations lacks (``tasks/quality/history.py``): the table profile,
``freshness``, ``row_count_change`` and ``schema``, on real PostgreSQL tables (a fresh database per
test) and, for the pure rules, directly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from opsflow.config import Freshness, RowCountChange, SchemaCheck
from opsflow.embedded import url_with_database
from opsflow.results import Item, RoutineResult
from tasks.quality.history import (
    MissingTable,
    TableProfile,
    freshness_check,
    history_of,
    profile_metrics,
    profile_table,
    row_count_change_check,
    schema_check,
)
from tasks.retry import PermanentFailure, TransientFailure
from tests.conftest import free_port

AS_OF = datetime(2026, 11, 22, 6, tzinfo=UTC)
HOUR = Freshness(column="created_at", max_age=3600)


def run(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def events_table(url: str, *created_at: datetime, column_type: str = "timestamptz") -> TableProfile:
    """``public.events`` holding one row per ``created_at``, profiled."""
    run(url, f"create table events (event_id bigint primary key, created_at {column_type})")
    with psycopg.connect(url, autocommit=True) as conn:
        for number, moment in enumerate(created_at):
            conn.execute("insert into events values (%s, %s)", (number, moment))
    return profile_table(url, "public.events")


# -- profile ------------------------------------------------------------------------------


def test_profile_has_the_exact_count_and_the_columns_in_order(pg_url: str) -> None:
    run(
        pg_url,
        "create table events (event_id bigint, user_id int, gone text, amount numeric(10,2), created_at timestamptz)",
        "insert into events (event_id) select g from generate_series(1, 12345) g",
        "alter table events drop column gone",  # a dropped column stays in pg_attribute, marked dropped
    )
    profile = profile_table(pg_url, "events")
    assert profile == TableProfile(
        table="events",
        regclass="events",
        row_count=12345,
        columns={
            "event_id": "bigint",
            "user_id": "integer",
            "amount": "numeric(10,2)",
            "created_at": "timestamp with time zone",
        },
    )
    assert list(profile.columns) == ["event_id", "user_id", "amount", "created_at"]


def test_profile_of_schema_qualified_and_quoted_mixed_case_names(pg_url: str) -> None:
    run(
        pg_url,
        "create schema analytics",
        'create table analytics."Events" ("UserId" int, "odd ""name""" text)',
        "insert into analytics.\"Events\" values (1, 'a'), (2, 'b')",
        "create table analytics.events (id int)",  # the lower-case one is another table
    )
    profile = profile_table(pg_url, 'analytics."Events"')
    assert (profile.regclass, profile.row_count) == ('analytics."Events"', 2)
    assert profile.columns == {"UserId": "integer", 'odd "name"': "text"}
    assert profile_table(pg_url, "analytics.Events").regclass == "analytics.events"  # unquoted folds


@pytest.mark.parametrize("table", ["public.nope", "Events", "nope.events", "a.b.c.d", "other_db.public.events", "1259"])
def test_a_missing_table_is_missing_table_naming_it(pg_url: str, table: str) -> None:
    run(pg_url, 'create table "Events" (id int)', "create table events_seq_free (id int)")
    with pytest.raises(MissingTable) as caught:
        profile_table(pg_url, table)
    assert repr(table) in str(caught.value)
    assert isinstance(caught.value, PermanentFailure)  # never retried


def test_an_index_or_a_sequence_is_not_a_table(pg_url: str) -> None:
    run(pg_url, "create table t (id serial primary key)")
    for name in ("t_pkey", "t_id_seq"):
        with pytest.raises(MissingTable, match=r"is an index|is a sequence"):
            profile_table(pg_url, name)
    run(pg_url, "create view v as select * from t")
    assert profile_table(pg_url, "v").columns == {"id": "integer"}


@pytest.mark.parametrize(
    "hostile",
    [
        "events; drop table x; --",
        'events"; drop table x; --',
        "events where false; drop table x; --",
        "(select 1); drop table x",
        "pg_sleep(5)",
    ],
)
def test_a_hostile_table_name_is_a_missing_table_and_the_canary_survives(pg_url: str, hostile: str) -> None:
    run(pg_url, "create table x (canary text)", "insert into x values ('alive')", "create table events (id int)")
    with pytest.raises(MissingTable):
        profile_table(pg_url, hostile)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("select canary from x").fetchall() == [("alive",)]


def test_hostile_column_names_are_quoted_never_run(pg_url: str) -> None:
    run(
        pg_url,
        "create table x (canary text)",
        "insert into x values ('alive')",
        'create table events ("t); drop table x; --" timestamptz)',
        "insert into events values ('2026-11-22T05:30:00Z')",
    )
    profile = profile_table(pg_url, "events")
    hostile = Freshness(column="t); drop table x; --", max_age=3600)
    assert freshness_check(pg_url, profile, hostile, AS_OF, now=AS_OF).status == "ok"
    missing = Freshness(column="created_at) from x; drop table x; --", max_age=3600)
    assert freshness_check(pg_url, profile, missing, AS_OF, now=AS_OF).status == "error"
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("select canary from x").fetchall() == [("alive",)]


def test_an_unparseable_url_is_permanent_and_an_unreachable_server_transient_neither_echoing_the_password() -> None:
    with pytest.raises(PermanentFailure) as bad:
        profile_table("postgresql://ops:Sekrit-p4ss@db.example/shop?no_such_option=1", "events")
    assert "Sekrit" not in str(bad.value)
    with pytest.raises(TransientFailure) as down:
        profile_table(f"postgresql://ops:Sekrit-p4ss@127.0.0.1:{free_port()}/shop", "events")
    assert "Sekrit" not in str(down.value)
    assert "shop on 127.0.0.1" in str(down.value)


def test_a_missing_database_is_permanent(pg_url: str) -> None:
    with pytest.raises(PermanentFailure, match="no_such_db") as caught:
        profile_table(url_with_database(pg_url, "no_such_db"), "events")
    assert not isinstance(caught.value, (MissingTable, TransientFailure))


# -- freshness ----------------------------------------------------------------------------


def test_stale_data_fails_against_as_of(pg_url: str) -> None:
    profile = events_table(pg_url, AS_OF - timedelta(hours=3), AS_OF - timedelta(hours=2))
    check = freshness_check(pg_url, profile, HOUR, AS_OF, now=AS_OF)
    assert check.check == "freshness:created_at"
    assert check.status == "fail"
    assert check.observed == "2026-11-22T04:00:00Z"
    assert check.expected == "within 1h of 2026-11-22T06:00:00Z"
    assert check.age_seconds == 7200
    assert check.detail == "newest created_at is 2h old, limit 1h"


def test_fresh_data_passes(pg_url: str) -> None:
    profile = events_table(pg_url, AS_OF - timedelta(days=3), AS_OF - timedelta(minutes=30))
    check = freshness_check(pg_url, profile, HOUR, AS_OF, now=AS_OF)
    assert (check.status, check.age_seconds, check.observed) == ("ok", 1800, "2026-11-22T05:30:00Z")


def test_a_naive_timestamp_is_utc_and_a_date_is_its_midnight_utc_whatever_the_server_time_zone(pg_url: str) -> None:
    dbname = psycopg.conninfo.conninfo_to_dict(pg_url)["dbname"]
    run(pg_url, f"alter database {dbname} set timezone to 'Asia/Tokyo'")
    run(
        pg_url,
        "create table naive (created_at timestamp(3))",
        "insert into naive values ('2026-11-22 05:30:00')",
        "create table daily (created_at date)",
        "insert into daily values ('2026-11-21')",
    )
    naive = freshness_check(pg_url, profile_table(pg_url, "naive"), HOUR, AS_OF, now=AS_OF)
    assert (naive.status, naive.age_seconds) == ("ok", 1800)
    daily = freshness_check(pg_url, profile_table(pg_url, "daily"), HOUR, AS_OF, now=AS_OF)
    assert (daily.status, daily.age_seconds, daily.observed) == ("fail", 30 * 3600, "2026-11-21T00:00:00Z")


def test_an_empty_table_fails_with_no_rows_and_an_all_null_column_says_so(pg_url: str) -> None:
    profile = events_table(pg_url)
    assert profile.row_count == 0
    check = freshness_check(pg_url, profile, HOUR, AS_OF, now=AS_OF)
    assert (check.status, check.detail, check.observed) == ("fail", "no rows", None)
    run(pg_url, "insert into events values (1, null)")
    check = freshness_check(pg_url, profile_table(pg_url, "public.events"), HOUR, AS_OF, now=AS_OF)
    assert (check.status, check.detail) == ("fail", "created_at is null in every row")


def test_a_missing_or_mistyped_freshness_column_is_an_error_naming_it(pg_url: str) -> None:
    run(pg_url, "create table events (id int, created_at text)", "insert into events values (1, 'x')")
    profile = profile_table(pg_url, "events")
    missing = freshness_check(pg_url, profile, Freshness(column="updated_at", max_age=60), AS_OF, now=AS_OF)
    assert missing.check == "freshness:updated_at"
    assert missing.status == "error"
    assert "'updated_at' not found in events" in missing.detail
    mistyped = freshness_check(pg_url, profile, HOUR, AS_OF, now=AS_OF)
    assert (mistyped.status, mistyped.detail) == ("error", "column 'created_at' is text, not a timestamp or date")


def test_a_newest_value_in_the_future_is_clock_skew_beyond_a_small_tolerance(pg_url: str) -> None:
    profile = events_table(pg_url, AS_OF - timedelta(hours=5), AS_OF + timedelta(minutes=1))
    within = freshness_check(pg_url, profile, HOUR, AS_OF, now=AS_OF)
    assert (within.status, within.age_seconds) == ("ok", -60)
    run(pg_url, "insert into events values (99, '2026-11-22T08:00:00Z')")
    skewed = freshness_check(pg_url, profile_table(pg_url, "events"), HOUR, AS_OF, now=AS_OF)
    assert skewed.status == "warn"
    assert skewed.detail == "newest created_at is 2h in the future (clock skew?), limit 1h"
    assert skewed.observed == "2026-11-22T08:00:00Z"


def test_an_as_of_in_the_past_sees_the_data_as_it_stood_then(pg_url: str) -> None:
    # Rows written after a past --as-of neither make it fresh nor count as clock skew.
    profile = events_table(pg_url, AS_OF - timedelta(minutes=30), AS_OF + timedelta(days=1))
    later = AS_OF + timedelta(days=2)
    then = freshness_check(pg_url, profile, HOUR, AS_OF, now=later)
    assert (then.status, then.observed) == ("ok", "2026-11-22T05:30:00Z")
    assert then.detail == "newest created_at is 30m old, limit 1h; 1 row after the as-of time not counted"
    before_any = freshness_check(pg_url, profile, HOUR, AS_OF - timedelta(days=1), now=later)
    assert (before_any.status, before_any.observed) == ("fail", None)
    assert before_any.detail.startswith("no created_at at or before the as-of time; 2 rows")


def test_the_table_is_resolved_again_never_taken_from_the_profiles_text(pg_url: str) -> None:
    events_table(pg_url, AS_OF)
    run(pg_url, "create table x (canary text)", "insert into x values ('alive')")
    forged = TableProfile(
        table="events; drop table x; --",
        regclass="events; drop table x; --",
        row_count=1,
        columns={"created_at": "timestamp with time zone"},
    )
    with pytest.raises(MissingTable):
        freshness_check(pg_url, forged, HOUR, AS_OF, now=AS_OF)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("select count(*) from x").fetchone() == (1,)


# -- row_count_change ---------------------------------------------------------------------

WEEK = RowCountChange(max_change=50, runs=7)
STEADY = [1000, 1010, 990, 1005, 995, 1000, 1002]


def test_a_row_count_drop_against_the_stored_median_fails() -> None:
    check = row_count_change_check(400, STEADY, WEEK)
    assert check.check == "row_count_change"
    assert (check.status, check.observed, check.expected) == ("fail", -60.0, "within ±50%")
    assert check.detail == "400 rows, median of last 7 runs 1,000: -60.0%, limit ±50%"
    assert (check.median, check.runs, check.row_count) == (1000, 7, 400)


def test_a_change_within_the_limit_passes_and_the_limit_itself_is_within() -> None:
    assert row_count_change_check(1400, STEADY, WEEK).status == "ok"
    assert row_count_change_check(500, [1000], WEEK).status == "ok"  # exactly -50%
    assert row_count_change_check(1501, [1000], WEEK).status == "fail"


def test_first_run_has_no_history_yet() -> None:
    check = row_count_change_check(1234, [], WEEK)
    assert (check.status, check.observed) == ("ok", None)
    assert check.detail == "no history yet (first run): 1,234 rows"


def test_fewer_runs_than_configured_say_so_and_only_the_last_runs_count() -> None:
    check = row_count_change_check(1000, [900, 1100], WEEK)
    assert check.detail == "1,000 rows, median of 2 of 7 runs so far 1,000: +0.0%, limit ±50%"
    # Only the newest 3 of these count: the older, larger counts would hide the drop.
    three = RowCountChange(max_change=10, runs=3)
    assert row_count_change_check(100, [100, 101, 99, 5000, 5000, 5000], three).status == "ok"
    assert row_count_change_check(100, [5000, 5000, 5000, 100], three).status == "fail"


def test_an_empty_history_median_is_no_change_when_still_empty_and_a_fail_when_not() -> None:
    assert row_count_change_check(0, [0, 0], WEEK).status == "ok"
    grown = row_count_change_check(10, [0, 0, 5], WEEK)
    assert (grown.status, grown.observed) == ("fail", None)


# -- schema -------------------------------------------------------------------------------


def test_a_dropped_and_a_retyped_column_fail(pg_url: str) -> None:
    run(pg_url, "create table events (event_id bigint, user_id int, note text, amount numeric(10,2))")
    before = profile_table(pg_url, "events").columns
    run(pg_url, "alter table events drop column user_id, drop column note, alter column amount type text")
    after = profile_table(pg_url, "events").columns
    check = schema_check(after, before, SchemaCheck(allow_new_columns=True))
    assert check.status == "fail"
    assert check.detail == "dropped: user_id, note; retyped: amount numeric(10,2) → text"
    assert (check.dropped, check.retyped, check.added) == (["user_id", "note"], {"amount": "numeric(10,2) → text"}, [])
    assert (check.observed, check.expected) == (2, 4)


def test_a_new_column_passes_when_allowed_and_fails_when_not(pg_url: str) -> None:
    run(pg_url, "create table events (event_id bigint)")
    before = profile_table(pg_url, "events").columns
    run(pg_url, "alter table events add column channel text")
    after = profile_table(pg_url, "events").columns
    allowed = schema_check(after, before, SchemaCheck(allow_new_columns=True))
    assert (allowed.status, allowed.detail) == ("ok", "new: channel")
    refused = schema_check(after, before, SchemaCheck(allow_new_columns=False))
    assert (refused.status, refused.detail) == ("fail", "new (not allowed): channel")


def test_schema_first_run_records_and_an_unchanged_schema_passes() -> None:
    columns = {"a": "integer", "b": "text"}
    first = schema_check(columns, None, SchemaCheck())
    assert (first.status, first.detail) == ("ok", "first run: 2 columns recorded")
    same = schema_check(columns, dict(columns), SchemaCheck(allow_new_columns=False))
    assert (same.status, same.detail) == ("ok", "2 columns, unchanged since the last run")


# -- history_of ---------------------------------------------------------------------------


def stored(as_of: datetime, metrics: dict[str, object], name: str = "events") -> RoutineResult:
    """A data-quality result as the store hands it back (through JSON, as stored)."""
    result = RoutineResult(
        routine="data-quality",
        as_of=as_of,
        items=[Item(name=name, metrics=metrics), Item(name="other", metrics={"row_count": 7, "columns": {}})],
    )
    return RoutineResult.model_validate_json(result.model_dump_json())


def test_history_of_reads_the_last_runs_strictly_before_as_of_skipping_error_runs() -> None:
    day = timedelta(days=1)
    newest_columns = {"id": "bigint", "amount": "numeric"}
    results = [
        stored(AS_OF + day, {"row_count": 1, "columns": {"future": "text"}}),  # a what-if ahead of this run
        stored(AS_OF, {"row_count": 2, "columns": {"same": "text"}}),  # this very instant: a re-run
        stored(AS_OF - 3 * day, {"row_count": 300, "columns": {"id": "bigint"}}),
        stored(AS_OF - day, {"row_count": 100, "columns": newest_columns}),
        stored(AS_OF - 2 * day, {"error": "table 'events' not found"}),  # could not profile: skipped
        stored(AS_OF - 4 * day, {"row_count": 400, "columns": {}}),
        stored(AS_OF - 5 * day, {"row_count": 500}, name="renamed-suite"),
    ]
    counts, previous = history_of(results, "events", 7, AS_OF)
    assert counts == [100, 300, 400]
    assert previous == newest_columns
    assert history_of(results, "events", 2, AS_OF) == ([100, 300], newest_columns)
    assert history_of(results, "missing", 7, AS_OF) == ([], None)
    assert history_of([], "events", 7, AS_OF) == ([], None)


def test_history_of_skips_runs_of_another_table_and_round_trips_profile_metrics() -> None:
    profile = TableProfile(table="public.events", regclass="events", row_count=42, columns={"id": "bigint"})
    results = [
        stored(AS_OF - timedelta(days=1), profile_metrics(profile)),
        stored(AS_OF - timedelta(days=2), {**profile_metrics(profile), "table": "public.old_events", "row_count": 9}),
    ]
    assert history_of(results, "events", 7, AS_OF, table="public.events") == ([42], {"id": "bigint"})
    assert history_of(results, "events", 7, AS_OF) == ([42, 9], {"id": "bigint"})
