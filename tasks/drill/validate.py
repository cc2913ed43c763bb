"""Validate: the restored database's tables and their minimum rows, the SQL checks, and ``pg_amcheck``."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg

from opsflow.config import Drill, SqlCheck, TableCheck
from opsflow.embedded import client_bin
from opsflow.redact import first_line, redact
from opsflow.results import Check, format_instant
from opsflow.units import format_duration
from tasks.backups import count_rows
from tasks.drill.clock import Phase
from tasks.drill.common import CONNECT_TIMEOUT_SECONDS, _check, _error_line, _libpq
from tasks.drill.sql import READ_ONLY, TABLE_REGCLASS, count_rows_of
from tasks.drill.targets import Target
from tasks.retry import TransientFailure


def _plain(value: Any) -> Any:
    """A query result as a JSON-friendly value."""
    if isinstance(value, bool) or value is None or isinstance(value, int | float | str):
        return value
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime):
        return format_instant(value) if value.tzinfo else value.isoformat()
    return str(value)


def values_equal(observed: Any, expected: Any) -> bool:
    """A SQL check's scalar against its ``expect``: numbers by value (``0`` = ``0.0`` = ``Decimal('0')``),
    booleans as booleans, anything else by its text.

    >>> values_equal(Decimal("1.10"), 1.1), values_equal(3, "3"), values_equal(True, 1), values_equal(None, None)
    (True, True, False, True)
    """
    if observed is None or expected is None:
        return observed is None and expected is None
    if isinstance(observed, bool) or isinstance(expected, bool):
        return isinstance(observed, bool) and isinstance(expected, bool) and observed == expected
    numbers = (int, float, Decimal)
    if isinstance(observed, numbers) and isinstance(expected, numbers):
        return Decimal(str(observed)) == Decimal(str(expected))
    return str(_plain(observed)) == str(expected)


def check_tables(conn: psycopg.Connection, tables: Mapping[str, TableCheck], url: str) -> tuple[Check, dict[str, int]]:
    """``tables``: every configured table exists with at least ``min_rows``; counts by configured name.

    With no table configured, every user table's count is reported and the check only needs one table.
    """
    if not tables:
        counts = count_rows(url)
        if not counts:
            return _check("tables", "fail", "the restored database has no tables", observed=counts), counts
        total = sum(counts.values())
        detail = f"{len(counts)} tables, {total} rows restored (no table expectations configured)"
        return _check("tables", "ok", detail, observed=counts), counts
    counts: dict[str, int] = {}
    problems: list[str] = []
    for name, expectation in tables.items():
        try:
            regclass = conn.execute(TABLE_REGCLASS, (name,)).fetchone()
        except psycopg.Error:
            regclass = None
        if regclass is None or regclass[0] is None:
            problems.append(f"table {name} is missing")
            continue
        row = conn.execute(count_rows_of(regclass[0])).fetchone()
        counts[name] = int(row[0]) if row else 0
        if counts[name] < expectation.min_rows:
            problems.append(f"{name} has {counts[name]} rows, minimum {expectation.min_rows}")
    expected = {name: expectation.min_rows for name, expectation in tables.items()}
    if problems:
        return _check("tables", "fail", "; ".join(problems), observed=counts, expected=expected), counts
    shown = ", ".join(f"{name} {rows}" for name, rows in counts.items())
    return _check("tables", "ok", f"{len(counts)} tables meet their minimum rows ({shown})", counts, expected), counts


def run_sql_check(conn: psycopg.Connection, check: SqlCheck) -> Check:
    """``sql:NAME``: the query, read-only, must return one value equal to ``expect``."""
    name = f"sql:{check.name}"
    try:
        with conn.transaction():
            conn.execute(READ_ONLY)
            cursor = conn.execute(check.query)  # type: ignore[arg-type]  # the operator's own SQL, from the config
            rows = cursor.fetchall() if cursor.description else []
            columns = len(cursor.description or [])
    except psycopg.Error as exc:
        return _check(name, "fail", f"query failed: {first_line(exc)}", expected=check.expect)
    if len(rows) != 1 or columns != 1:
        detail = f"expected a single value, got {len(rows)} rows of {columns} columns"
        return _check(name, "fail", detail, expected=check.expect)
    value = rows[0][0]
    if values_equal(value, check.expect):
        return _check(name, "ok", f"returned {_plain(value)!r} as expected", _plain(value), check.expect)
    detail = f"returned {_plain(value)!r}, expected {check.expect!r}"
    return _check(name, "fail", detail, _plain(value), check.expect)


def start_amcheck(url: str, jobs: int) -> subprocess.Popen[str] | None:
    """Start ``pg_amcheck`` over every table and B-tree index (in the background); None when it is not installed."""
    try:
        binary = client_bin("pg_amcheck")
    except RuntimeError:
        return None
    conninfo, env = _libpq(url)
    # --install-missing creates the amcheck extension in our own scratch database.
    command = [str(binary), "--install-missing", "--jobs", str(jobs), conninfo]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def amcheck_verdict(process: subprocess.Popen[str], timeout: float = 3600) -> Check:
    """``amcheck``: ``ok``, ``fail`` naming the first corruption found, ``warn`` when it could not run."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return _check("amcheck", "warn", f"pg_amcheck did not finish within {format_duration(timeout)}")
    if process.returncode == 0 and not stdout.strip():
        return _check("amcheck", "ok", "pg_amcheck found no corruption in tables and B-tree indexes")
    if stdout.strip():  # pg_amcheck reports corruption on stdout
        lines = [line for line in stdout.splitlines() if line.strip()]
        return _check("amcheck", "fail", f"pg_amcheck found corruption: {redact(lines[0])}", observed=len(lines))
    detail = f"pg_amcheck could not run: {_error_line(stderr, 'pg_amcheck', process.returncode or 0)}"
    return _check("amcheck", "warn", detail)


@dataclass(frozen=True)
class Validation:
    checks: list[Check]
    tables: dict[str, int]
    phase: Phase


def validate_restore(target: Target, drill: Drill) -> Validation:
    """Tables, SQL checks and pg_amcheck on the restored scratch database.

    Tables and SQL checks run as the restore role (not a superuser: what the backup defined runs without
    superuser powers); pg_amcheck as the drill server's account (amcheck runs index functions as the owner).
    """
    started = time.monotonic()
    try:
        conn = psycopg.connect(target.restore_url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS)
    except psycopg.OperationalError as exc:
        raise TransientFailure(f"restored database unreachable: {first_line(exc)}") from None
    amcheck = start_amcheck(target.url, drill.jobs)  # reads the same data meanwhile, in its own processes
    try:
        with conn:
            tables_check, tables = check_tables(conn, drill.tables, target.restore_url)
            checks = [tables_check] + [run_sql_check(conn, check) for check in drill.sql]
    finally:
        verdict = amcheck_verdict(amcheck) if amcheck is not None else None
    if verdict is not None:
        checks.append(verdict)
    return Validation(checks=checks, tables=tables, phase=Phase.since("validate", started))
