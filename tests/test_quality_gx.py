"""The Great Expectations engine of data-quality (tasks/quality/gx.py) on real PostgreSQL tables
with planted defects, and the config validation of expectations (opsflow/config.py)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from opsflow.config import ConfigError, QualitySuite, parse_config
from opsflow.errors import TransientFailure
from tasks.quality.gx import ExpectationOutcome, GxRun, MissingTable, run_expectations, split_table

# 1,000 rows: id 1..1000 with 5 and 6 each written twice more (so 6 rows carry a duplicated id),
# user_id null in every 100th row, amount 0..1000 with the inclusive bounds hit exactly (0, 1000)
# and two rows beyond (-1, 1001), code 'A-<n>' with two rows not matching.
DEFECTS = """
create table public.events (id int, user_id int, amount numeric, code text);
insert into public.events
select g, case when g % 100 = 0 then null else g end, g - 1, 'A-' || g from generate_series(1, 994) g;
insert into public.events values
    (5, 5, 10, 'A-5'), (5, 5, 10, 'A-5'), (6, 6, 10, 'A-6'), (6, 6, 10, 'A-6'),
    (995, 995, -1, 'bad'), (996, 996, 1001, 'worse');
"""


def expectation(name: str, **kwargs: Any) -> dict[str, Any]:
    return {name: kwargs}


def suite(url: str, table: str = "public.events", *items: dict[str, Any], name: str = "events") -> QualitySuite:
    return QualitySuite.model_validate({"name": name, "url": url, "table": table, "expectations": list(items)})


def run(url: str, gx_home: Path, quality: QualitySuite, run_name: str = "test") -> GxRun:
    return run_expectations(quality, url, gx_home, run_name)


def by_check(result: GxRun) -> dict[str, ExpectationOutcome]:
    return {outcome.check: outcome for outcome in result.outcomes}


@pytest.fixture
def defects(pg_url: str) -> str:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(DEFECTS)
    return pg_url


def test_planted_defects_report_exact_counts(defects: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    quality = suite(
        defects,
        "public.events",
        expectation("expect_column_values_to_not_be_null", column="user_id"),
        expectation("expect_column_values_to_be_unique", column="id"),
        expectation("expect_column_values_to_be_between", column="amount", min_value=0, max_value=1000),
        expectation("expect_table_row_count_to_be_between", min_value=2000),
        expectation("expect_column_values_to_match_regex", column="code", regex="^A-[0-9]+$"),
    )
    result = run(defects, tmp_path / "gx", quality)
    assert [o.check for o in result.outcomes] == [  # config order, SPEC §5 names
        "expect_column_values_to_not_be_null:user_id",
        "expect_column_values_to_be_unique:id",
        "expect_column_values_to_be_between:amount",
        "expect_table_row_count_to_be_between",
        "expect_column_values_to_match_regex:code",
    ]
    checks = by_check(result)
    nulls = checks["expect_column_values_to_not_be_null:user_id"]
    assert (nulls.status, nulls.unexpected_count) == ("fail", 9)  # 100, 200, ..., 900
    assert nulls.detail == "9 of 1,000 rows (0.9%) null"
    assert nulls.unexpected_percent == pytest.approx(0.9)
    assert nulls.sample == [None] * 9
    unique = checks["expect_column_values_to_be_unique:id"]
    assert (unique.status, unique.unexpected_count) == ("fail", 6)  # GX counts every row of a duplicated value
    assert sorted(unique.sample) == [5, 5, 5, 6, 6, 6]
    between = checks["expect_column_values_to_be_between:amount"]
    assert (between.status, between.unexpected_count) == ("fail", 2)  # 0 and 1000 are in (inclusive), -1 and 1001 not
    assert sorted(float(v) for v in between.sample) == [-1.0, 1001.0]
    rows = checks["expect_table_row_count_to_be_between"]
    assert (rows.status, rows.observed_value, rows.unexpected_count) == ("fail", 1000, None)
    assert rows.detail == "observed 1,000, expected >= 2,000"
    regex = checks["expect_column_values_to_match_regex:code"]
    assert (regex.status, regex.unexpected_count, sorted(regex.sample)) == ("fail", 2, ["bad", "worse"])
    assert "Calculating Metrics" not in capfd.readouterr().err  # GX's progress bars are off


def test_clean_table_passes(pg_url: str, tmp_path: Path) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("create table clean as select g as id, g % 7 as amount from generate_series(1, 500) g")
    quality = suite(
        pg_url,
        "clean",
        expectation("expect_column_values_to_not_be_null", column="id"),
        expectation("expect_column_values_to_be_unique", column="id"),
        expectation("expect_column_values_to_be_between", column="amount", min_value=0, max_value=6),
        expectation("expect_table_row_count_to_be_between", min_value=500, max_value=500),
        expectation("expect_column_values_to_be_in_set", column="amount", value_set=[0, 1, 2, 3, 4, 5, 6]),
    )
    result = run(pg_url, tmp_path / "gx", quality)
    assert [(o.status, o.unexpected_count, o.sample) for o in result.outcomes] == [
        ("ok", 0, []),
        ("ok", 0, []),
        ("ok", 0, []),
        ("ok", None, []),
        ("ok", 0, []),
    ]


def test_missing_table_raises_missing_table(pg_url: str, tmp_path: Path) -> None:
    quality = suite(pg_url, "public.nope", expectation("expect_table_row_count_to_be_between", min_value=1))
    with pytest.raises(MissingTable, match=r"table 'public.nope' does not exist"):
        run(pg_url, tmp_path / "gx", quality)


def test_hostile_table_name_is_a_missing_table_and_injects_nothing(pg_url: str, tmp_path: Path) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("create table canary (x int); insert into canary values (1); create table events (x int)")
    for hostile in (
        "events; drop table canary; --",
        'events"; drop table canary; --',
        "public.events; drop table canary",
    ):
        quality = suite(pg_url, hostile, expectation("expect_table_row_count_to_be_between", min_value=1))
        with pytest.raises(MissingTable, match="does not exist"):
            run(pg_url, tmp_path / "gx", quality)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("select count(*) from canary").fetchone() == (1,)


def test_missing_column_is_that_outcomes_error(defects: str, tmp_path: Path) -> None:
    quality = suite(
        defects,
        "public.events",
        expectation("expect_column_values_to_not_be_null", column="no_such_column"),
        expectation("expect_column_values_to_not_be_null", column="user_id"),
    )
    missing, other = run(defects, tmp_path / "gx", quality).outcomes
    assert (missing.check, missing.status) == ("expect_column_values_to_not_be_null:no_such_column", "error")
    assert "no_such_column" in missing.detail and "\n" not in missing.detail
    assert (other.status, other.unexpected_count) == ("fail", 9)


def test_second_run_is_idempotent_and_builds_data_docs(defects: str, tmp_path: Path) -> None:
    first = suite(defects, "public.events", expectation("expect_column_values_to_not_be_null", column="user_id"))
    run(defects, tmp_path / "gx", first, "first")
    with psycopg.connect(defects, autocommit=True) as conn:
        conn.execute("update public.events set user_id = 0 where user_id is null")
    # The same suite again, with one more expectation: everything in GX is replaced, nothing collides.
    second = suite(
        defects,
        "public.events",
        expectation("expect_column_values_to_not_be_null", column="user_id"),
        expectation("expect_table_row_count_to_be_between", min_value=1),
    )
    result = run(defects, tmp_path / "gx", second, "second")
    assert [(o.status, o.unexpected_count) for o in result.outcomes] == [("ok", 0), ("ok", None)]
    assert result.data_docs is not None and result.data_docs.startswith("file://")
    page = Path(result.data_docs.removeprefix("file://"))
    assert page.is_file() and page.is_relative_to(tmp_path / "gx") and "second" in page.parts


def test_password_is_never_written_into_gx_files(defects: str, tmp_path: Path) -> None:
    if "://postgres:@/" not in defects:
        pytest.skip("needs the suite's own socket PostgreSQL URL")
    role, password = f"gx_{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    with psycopg.connect(defects, autocommit=True) as conn:
        conn.execute(f"create role {role} login password '{password}'")
        conn.execute(f"grant select on public.events to {role}")
    try:
        url = defects.replace("://postgres:@/", f"://{role}:{password}@/", 1)
        quality = suite(url, "public.events", expectation("expect_column_values_to_not_be_null", column="user_id"))
        result = run(url, tmp_path / "gx", quality)
        assert result.outcomes[0].unexpected_count == 9
        files = [path for path in (tmp_path / "gx").rglob("*") if path.is_file()]
        assert files
        for path in files:
            assert password.encode() not in path.read_bytes(), path
    finally:
        with psycopg.connect(defects, autocommit=True) as conn:
            conn.execute(f"drop owned by {role}; drop role {role}")


def test_unreachable_server_is_transient(tmp_path: Path) -> None:
    url = f"postgresql://postgres@/db?host={tmp_path}/no-server&port=1"
    quality = suite(url, "events", expectation("expect_table_row_count_to_be_between", min_value=1))
    with pytest.raises(TransientFailure, match="cannot connect"):
        run(url, tmp_path / "gx", quality)


def test_split_table() -> None:
    assert split_table("analytics.events") == ("analytics", "events")
    assert split_table("events") == (None, "events")


# -- config validation ---------------------------------------------------------------------------


def quality_config(*lines: str) -> str:
    body = "\n".join(f"      - {line}" for line in lines)
    return (
        "quality:\n  - name: events\n    url: postgresql://u@localhost/db\n    table: public.events\n"
        f"    expectations:\n{body}\n"
    )


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, file="opsflow.yaml")
    return [str(problem) for problem in caught.value.problems]


def test_config_unknown_expectation_suggests_the_closest() -> None:
    assert problems(quality_config("expect_column_values_to_not_be_nul: {column: user_id}")) == [
        "opsflow.yaml:6: quality.0.expectations.0.expect_column_values_to_not_be_nul: unknown Great Expectations "
        "expectation 'expect_column_values_to_not_be_nul' (did you mean 'expect_column_values_to_not_be_null'?)"
    ]


def test_config_unknown_and_missing_kwargs() -> None:
    found = problems(
        quality_config(
            "expect_table_row_count_to_be_between: {min_value: 1}",
            "expect_column_values_to_be_unique: {colum: id}",
            "expect_column_values_to_be_in_set: {column: kind}",
            "expect_column_values_to_be_between: {column: amount, min_value: lots}",
        )
    )
    assert found == [
        "opsflow.yaml:7: quality.0.expectations.1.expect_column_values_to_be_unique.column: required key is missing",
        "opsflow.yaml:7: quality.0.expectations.1.expect_column_values_to_be_unique.colum: "
        "unknown argument 'colum' (did you mean 'column'?)",
        "opsflow.yaml:8: quality.0.expectations.2.expect_column_values_to_be_in_set.value_set: required key is missing",
    ]


def test_values_are_judged_by_gx_itself_before_a_run() -> None:
    from opsflow.config import expectation_problems

    config = parse_config(quality_config("expect_column_values_to_be_between: {column: amount, min_value: lots}"))
    assert expectation_problems(config) == [
        "quality.0.expectations.0.expect_column_values_to_be_between.min_value: value is not a valid float"
    ]


def test_the_catalog_of_expectations_is_the_installed_gx() -> None:
    from opsflow.expectations import catalog, snapshot

    assert catalog() == snapshot(), "GX changed: uv run python -m opsflow.expectations --write"


def test_config_reserved_kwarg_is_refused() -> None:
    assert problems(quality_config("expect_table_row_count_to_be_between: {min_value: 1, batch_id: x}")) == [
        "opsflow.yaml:6: quality.0.expectations.0.expect_table_row_count_to_be_between.batch_id: "
        "'batch_id' is set by opsflow, not in the config"
    ]


def test_config_valid_expectations_pass_and_a_run_refuses_bad_ones_before_it_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from opsflow.cli import run

    config = parse_config(quality_config("expect_column_values_to_be_between: {column: amount, min_value: 0}"))
    assert config.quality[0].expectations[0].kwargs == {"column": "amount", "min_value": 0}
    bad = tmp_path / "opsflow.yaml"
    bad.write_text(quality_config("expect_column_values_to_be_unique: {colum: id}"))
    assert run(["run", "data-quality", "--config", str(bad)]) == 2  # no flow run exists yet
    err = capsys.readouterr().err
    assert "quality.0.expectations.0.expect_column_values_to_be_unique.colum: unknown argument 'colum'" in err
    assert run(["check-config", "--config", str(bad)]) == 2
    assert f"{bad}:6: quality.0.expectations.0.expect_column_values_to_be_unique.colum" in capsys.readouterr().err


def test_loading_a_config_with_expectations_does_not_import_great_expectations() -> None:
    code = (
        "import sys; from opsflow.config import parse_config; "
        f"parse_config({quality_config('expect_column_values_to_be_unique: {column: id}')!r}); "
        "print('great_expectations' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_config_without_expectations_does_not_import_great_expectations() -> None:
    code = (
        "import sys; from opsflow.config import parse_config; "
        "parse_config('services: []\\nquality: []\\n'); "
        "print('great_expectations' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
