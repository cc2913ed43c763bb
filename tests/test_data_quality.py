"""data-quality through ``opsflow run`` on real PostgreSQL tables with planted defects, a Prefect server and
the ops store (SPEC §5 data-quality). The GX engine and the history checks are tested on their own in
tests/test_quality_gx.py and tests/test_quality_history.py; here, the routine a user runs.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from opsflow.cli import run
from opsflow.store import OpsStore
from tests.test_notify import latest_artifact

NOW = datetime(2026, 11, 22, 5, 30, tzinfo=UTC)

# 1,000 events: user_id null in 3 rows, event_id 10 and 20 loaded twice (4 rows of duplicated values),
# amount exactly at the bound 10,000 once (passes: inclusive) and beyond it twice; newest row 2 h old.
EVENTS = """
create table events (event_id bigint not null, user_id int, amount numeric(12, 2) not null,
                     created_at timestamptz not null);
insert into events select g, case when g in (5, 6, 7) then null else g end,
       case when g = 100 then 10000 when g in (200, 300) then 10000.01 else g end,
       {newest}::timestamptz - (998 - g) * interval '1 minute'
  from generate_series(1, 998) g;
insert into events select event_id, user_id, amount, created_at from events where event_id in (10, 20);
create table clean (id int primary key, created_at timestamptz not null);
insert into clean select g, {now}::timestamptz - g * interval '1 second' from generate_series(1, 500) g;
"""


@pytest.fixture
def warehouse(pg_url: str) -> str:
    with psycopg.connect(pg_url) as conn:
        conn.execute(sql.SQL(EVENTS).format(newest=sql.Literal(NOW - timedelta(hours=2)), now=sql.Literal(NOW)))
    return pg_url


def write_config(path: Path, url: str) -> Path:
    config = path / "opsflow.yaml"
    config.write_text(
        "quality:\n"
        "  - name: events\n"
        f"    url: '{url}'\n"
        "    table: public.events\n"
        "    expectations:\n"
        "      - expect_column_values_to_not_be_null: {column: user_id}\n"
        "      - expect_column_values_to_be_unique: {column: event_id}\n"
        "      - expect_column_values_to_be_between: {column: amount, min_value: 0, max_value: 10000}\n"
        "      - expect_table_row_count_to_be_between: {min_value: 900}\n"
        "    freshness: {column: created_at, max_age: 1h}\n"
        "    row_count_change: {max_change: 20%, runs: 3}\n"
        "    schema: {allow_new_columns: true}\n"
        "  - name: clean\n"
        f"    url: '{url}'\n"
        "    table: clean\n"
        "    expectations:\n"
        "      - expect_column_values_to_be_unique: {column: id}\n"
        "    freshness: {column: created_at, max_age: 1h}\n"
        "  - name: gone\n"
        f"    url: '{url}'\n"
        "    table: 'events; drop table clean; --'\n"
        "    expectations:\n"
        "      - expect_column_values_to_not_be_null: {column: id}\n"
    )
    return config


def quality_run(capsys: pytest.CaptureFixture[str], config: Path, as_of: datetime) -> tuple[int, dict[str, Any]]:
    code = run(["run", "data-quality", "--as-of", as_of.isoformat(), "--json", "--config", str(config)])
    out, err = capsys.readouterr()
    assert out, f"exit {code}, no JSON: {err}"
    return code, json.loads(out)


def checks_of(document: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    [item] = [item for item in document["items"] if item["name"] == name]
    return {check["check"]: check for check in item["checks"]}


def test_planted_defects_are_counted_exactly_a_clean_table_passes_and_a_missing_one_errors_alone(
    prefect_api: None,
    store: OpsStore,
    pg_url: str,
    warehouse: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPSFLOW_STORE_URL", pg_url)
    config = write_config(tmp_path, warehouse)
    code, document = quality_run(capsys, config, NOW)
    assert code == 1
    events = checks_of(document, "events")
    nulls = events["expect_column_values_to_not_be_null:user_id"]
    assert (nulls["status"], nulls["unexpected_count"]) == ("fail", 3)
    assert nulls["unexpected_percent"] == pytest.approx(0.3)
    dups = events["expect_column_values_to_be_unique:event_id"]
    assert (dups["status"], dups["unexpected_count"]) == ("fail", 4)  # every row of a duplicated value
    out_of_range = events["expect_column_values_to_be_between:amount"]
    assert (out_of_range["status"], out_of_range["unexpected_count"]) == ("fail", 2)  # 10,000 itself passes
    rows = events["expect_table_row_count_to_be_between"]
    assert (rows["status"], rows["observed_value"], rows["unexpected_count"]) == ("ok", 1000, None)
    assert events["freshness:created_at"]["status"] == "fail"  # 2 h old, max 1 h
    assert {"unexpected_count", "unexpected_percent", "observed_value"} <= set(events["freshness:created_at"])
    assert events["row_count_change"]["status"] == "ok"  # first run
    assert events["schema"]["status"] == "ok"
    assert {check["status"] for check in checks_of(document, "clean").values()} == {"ok"}
    gone = checks_of(document, "gone")
    assert [c["status"] for c in gone.values()] == ["error"]
    assert "events; drop table clean; --" in next(iter(gone.values()))["detail"]
    with psycopg.connect(warehouse) as conn:  # a hostile name is a missing table, nothing more
        assert conn.execute("select count(*) from clean").fetchone() == (500,)

    [item] = [item for item in document["items"] if item["name"] == "events"]
    assert item["metrics"]["row_count"] == 1000
    docs = item["metrics"]["data_docs"]
    assert docs and Path(docs.removeprefix("file://")).exists()
    artifact = latest_artifact("data-quality")
    assert artifact is not None and "## events: ❌ fail" in artifact.data and "Unexpected values of" in artifact.data


def test_a_row_count_drop_and_a_dropped_column_against_stored_history_fail(
    prefect_api: None,
    store: OpsStore,
    pg_url: str,
    warehouse: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPSFLOW_STORE_URL", pg_url)
    config = write_config(tmp_path, warehouse)
    for days in (3, 2, 1):  # three stored runs of 1,000 rows
        quality_run(capsys, config, NOW - timedelta(days=days))
    with psycopg.connect(warehouse) as conn:
        conn.execute("delete from events where event_id > 600")  # a load that half failed
        conn.execute("alter table events drop column amount")
    code, document = quality_run(capsys, config, NOW)
    events = checks_of(document, "events")
    assert events["row_count_change"]["status"] == "fail"
    assert "median of last 3 runs 1,000" in events["row_count_change"]["detail"]
    assert events["schema"]["status"] == "fail"
    assert "dropped: amount" in events["schema"]["detail"]
    assert events["expect_column_values_to_be_between:amount"]["status"] == "error"
    assert "amount" in events["expect_column_values_to_be_between:amount"]["detail"]
    assert code == 1
