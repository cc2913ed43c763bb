"""Data-quality checks Great Expectations lacks: from the table itself and from our own stored history.

Plain functions, no Prefect (the flow wraps them in its ``quality[NAME]`` task):

- :func:`profile_table` reads what the other checks need in one read-only transaction: the table
  resolved safely, its exact row count and its columns with their types;
- :func:`freshness_check` — ``freshness:COLUMN``: the newest value of a timestamp/date column no
  older than ``max_age`` at the run's ``as_of``;
- :func:`row_count_change_check` — ``row_count_change``: today's count within ±X% of the median of
  the table's last N stored runs;
- :func:`schema_check` — ``schema``: no column dropped or retyped (nor added, when not allowed)
  since the last run;
- :func:`history_of` reads those last runs back out of stored ``data-quality`` results, whose item
  carries :func:`profile_metrics` as its metrics.

The configured table name is data, never SQL text: it is resolved by ``to_regclass(%s)`` as a query
parameter and every later statement names the table by ``sql.Identifier`` built from the catalog's
own schema and relation names, so ``events; drop table x; --`` is a missing table and nothing more.

>>> from opsflow.config import RowCountChange, SchemaCheck
>>> row_count_change_check(400, [1000, 980, 1020], RowCountChange(max_change=50, runs=7)).status
'fail'
>>> schema_check({"id": "integer"}, {"id": "integer", "amount": "numeric"}, SchemaCheck()).detail
'dropped: amount'
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from opsflow.config import Freshness, RowCountChange, SchemaCheck
from opsflow.errors import PermanentFailure, TransientFailure
from opsflow.redact import first_line, redact, register_url_secrets
from opsflow.results import Check, RoutineResult, format_instant
from opsflow.units import format_duration

__all__ = [
    "CLOCK_SKEW_TOLERANCE_SECONDS",
    "MissingTable",
    "TableProfile",
    "freshness_check",
    "history_of",
    "profile_metrics",
    "profile_table",
    "row_count_change_check",
    "schema_check",
]

CONNECT_TIMEOUT_SECONDS = 10
LOCK_TIMEOUT_SECONDS = 30
#: A newest value this far past "now" is clock skew of the writer, not yet worth a warning.
CLOCK_SKEW_TOLERANCE_SECONDS = 300.0

# Tables, partitioned tables, views, materialized views and foreign tables can all be counted;
# an index, sequence or composite type under the configured name is not a table to check.
_QUERYABLE_KINDS = {"r": "table", "p": "table", "v": "view", "m": "materialized view", "f": "foreign table"}
_OTHER_KINDS = {"i": "an index", "I": "an index", "S": "a sequence", "c": "a composite type", "t": "a TOAST table"}
# As format_type spells them, precision included: "timestamp(3) with time zone".
_TIME_TYPE = re.compile(r"timestamp(\(\d+\))? with(out)? time zone|date")


class MissingTable(PermanentFailure):
    """The configured table does not exist (or is not visible to the URL's user): that item's ``error``."""


@dataclass(frozen=True)
class TableProfile:
    """What :func:`profile_table` read of one table."""

    table: str  # as configured
    regclass: str  # the resolved name as PostgreSQL prints it, safely quoted (``public."Events"``)
    row_count: int  # exact ``count(*)``
    columns: dict[str, str]  # column -> type as ``format_type`` spells it, in ordinal order


# -- connecting ---------------------------------------------------------------------------


def _where(url: str) -> str:
    """``DATABASE on HOST``, for messages: never the URL itself, which may hold a password."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        return "(database)"
    host = str(params.get("host") or "localhost")
    port = f":{params['port']}" if params.get("port") else ""
    return redact(f"{params.get('dbname') or '(default database)'} on {host}{port}")


# A refused login or a missing database is the same on every retry; a refused or timed-out connection is not.
_PERMANENT_CONNECT_ERRORS = (
    "password authentication failed",
    "authentication failed",
    "does not exist",  # database "x" / role "x" does not exist
    "no pg_hba.conf entry",
    "permission denied",
)


def _connect_failure(exc: psycopg.OperationalError, url: str) -> Exception:
    message = f"postgres {_where(url)}: {first_line(exc)}"
    permanent = any(marker in message.lower() for marker in _PERMANENT_CONNECT_ERRORS)
    return PermanentFailure(message) if permanent else TransientFailure(message)


@contextmanager
def _read_only(url: str) -> Iterator[psycopg.Connection[Any]]:
    """One read-only transaction on ``url``: one attempt (Prefect's task retries are the retry policy).

    A connection problem is a :class:`TransientFailure`; a refused login, a missing database and a URL
    that does not parse are a :class:`PermanentFailure` (the last without libpq's text, which may quote
    the password's token)."""
    register_url_secrets(url)
    try:
        conn = psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_SECONDS)
    except psycopg.ProgrammingError:
        raise PermanentFailure("the table's URL is not a valid PostgreSQL URL") from None
    except psycopg.OperationalError as exc:
        raise _connect_failure(exc, url) from None
    try:
        with conn:
            # Read-only: a quality check must never write to a production database. Repeatable read:
            # the statements of one call see one snapshot. UTC: a naive timestamp (and a date, at its
            # midnight) compares with our aware instants as UTC.
            conn.read_only = True
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.execute("set local time zone 'UTC'")
            # A table locked by a migration: give up (and retry later) rather than hang the run.
            conn.execute(f"set local lock_timeout = '{LOCK_TIMEOUT_SECONDS}s'")
            yield conn
    except psycopg.OperationalError as exc:  # lost connection, lock time-out, server shutting down
        raise TransientFailure(f"postgres {_where(url)}: {first_line(exc)}") from None
    except psycopg.Error as exc:  # permission denied and the like: the same on every retry
        raise PermanentFailure(f"postgres {_where(url)}: {first_line(exc)}") from None


# -- the table itself ---------------------------------------------------------------------


def _resolve(conn: psycopg.Connection[Any], table: str) -> tuple[int, str, sql.Identifier]:
    """``(oid, regclass text, identifier)`` of the configured ``table``, else :class:`MissingTable`.

    The name goes to ``to_regclass`` as a parameter, so it is parsed as a name and never run; the
    identifier is rebuilt from the catalog's schema and relation names, never from the config text."""
    # PostgreSQL 16+ takes a bare number as an OID: `table: 1259` would be pg_class. A table named
    # with digits only must be quoted ("2024") anyway, so a bare number names no table here.
    if table.strip().isdigit():
        raise MissingTable(f"table {table!r} not found (a bare number is not a table name)")
    try:
        row = conn.execute(
            """select c.oid, c.oid::regclass::text, n.nspname, c.relname, c.relkind
               from pg_class c join pg_namespace n on n.oid = c.relnamespace
               where c.oid = to_regclass(%s)""",
            (table,),
        ).fetchone()
    except (psycopg.ProgrammingError, psycopg.NotSupportedError) as exc:
        # "too many dotted names", a cross-database reference: a name no table can have here.
        raise MissingTable(f"table {table!r} not found: {first_line(exc)}") from None
    if row is None:
        raise MissingTable(f"table {table!r} not found (or not visible to the connecting user)")
    oid, regclass, schema, name, kind = row
    if kind not in _QUERYABLE_KINDS:
        raise MissingTable(f"table {table!r} not found: {regclass} is {_OTHER_KINDS.get(kind, 'not a table')}")
    return int(oid), str(regclass), sql.Identifier(schema, name)


def _columns(conn: psycopg.Connection[Any], oid: int) -> dict[str, str]:
    rows = conn.execute(
        """select attname, format_type(atttypid, atttypmod) from pg_attribute
           where attrelid = %s::oid and attnum > 0 and not attisdropped order by attnum""",
        (oid,),
    ).fetchall()
    return {str(name): str(type_name) for name, type_name in rows}


def profile_table(url: str, table: str) -> TableProfile:
    """Resolve ``table`` on ``url`` and read its exact row count and its columns (in ordinal order).

    Raises :class:`MissingTable` (naming the table as configured) when it does not resolve to
    something countable, :class:`TransientFailure` when the database cannot be reached (retry),
    :class:`PermanentFailure` for what a retry cannot change (a URL that does not parse, a refused
    login, a missing database, no permission on the table). Messages never carry the URL or its
    password. One attempt: the caller's task retries are the retry policy."""
    with _read_only(url) as conn:
        oid, regclass, identifier = _resolve(conn, table)
        columns = _columns(conn, oid)
        row = conn.execute(sql.SQL("select count(*) from {}").format(identifier)).fetchone()
    return TableProfile(table=table, regclass=regclass, row_count=int(row[0]) if row else 0, columns=columns)


def profile_metrics(profile: TableProfile) -> dict[str, Any]:
    """The item metrics :func:`history_of` reads back next run: store them on the table's item."""
    return {"table": profile.table, "row_count": profile.row_count, "columns": dict(profile.columns)}


# -- freshness ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Newest:
    rows: int  # rows in the table now
    at_as_of: float | None  # epoch of the newest value at or before as_of (+ tolerance)
    overall: float | None  # epoch of the newest value of all (inf for 'infinity')
    later: int  # rows whose value is past as_of (+ tolerance)


def _newest(conn: psycopg.Connection[Any], identifier: sql.Identifier, column: str, horizon: datetime) -> _Newest:
    # One scan for all four. extract(epoch ...) reads a naive timestamp as UTC and a date as its
    # midnight UTC, and yields Infinity rather than a value Python's datetime cannot hold.
    query = sql.SQL(
        """select count(*),
                  extract(epoch from max({col}) filter (where {col} <= %(horizon)s))::float8,
                  extract(epoch from max({col}))::float8,
                  count(*) filter (where {col} > %(horizon)s)
           from {table}"""
    ).format(col=sql.Identifier(column), table=identifier)
    row = conn.execute(query, {"horizon": horizon}).fetchone()
    if row is None:  # an aggregate always returns its one row; a server that says otherwise is not trusted
        raise PermanentFailure(f"no answer to the freshness query of {column!r}")
    return _Newest(rows=int(row[0]), at_as_of=row[1], overall=row[2], later=int(row[3]))


def _iso(epoch: float) -> str:
    try:
        return format_instant(datetime.fromtimestamp(epoch, UTC))
    except (OverflowError, ValueError, OSError):  # infinity, or past year 9999
        return "infinity" if epoch > 0 else "-infinity"


def freshness_check(
    url: str,
    profile: TableProfile,
    freshness: Freshness,
    as_of: datetime,
    *,
    now: datetime | None = None,
) -> Check:
    """``freshness:COLUMN``: the newest value of the column is no older than ``max_age`` at ``as_of``.

    - ``fail``: older than ``max_age``; the table has no rows; the column is null in every row;
    - ``warn``: the newest value lies in the future (clock skew) by more than
      :data:`CLOCK_SKEW_TOLERANCE_SECONDS`;
    - ``error``: the column does not exist, or is not a ``timestamptz``, ``timestamp`` or ``date``.

    A naive ``timestamp`` is read as UTC, a ``date`` as its midnight UTC. A run ``--as-of`` the past
    (before ``now``, the wall clock) sees only values at or before ``as_of``, as the data stood then;
    values past it are not counted (the detail says how many) and are not clock skew unless they are
    past ``now`` too. ``observed`` is the newest value (ISO 8601, UTC), ``expected`` "within MAX_AGE
    of AS_OF"; ``age_seconds`` rides along (null when there is no value). Raises like
    :func:`profile_table` when the database cannot be read."""
    column, max_age = freshness.column, float(freshness.max_age)
    as_of = as_of.astimezone(UTC)
    now = (now or datetime.now(UTC)).astimezone(UTC)
    name = f"freshness:{column}"
    expected = f"within {format_duration(max_age)} of {format_instant(as_of)}"
    column_type = profile.columns.get(column)
    if column_type is None:
        return Check(
            check=name,
            status="error",
            detail=f"column {column!r} not found in {profile.regclass}",
            expected=expected,
            age_seconds=None,
        )
    if not _TIME_TYPE.fullmatch(column_type):
        return Check(
            check=name,
            status="error",
            expected=expected,
            age_seconds=None,
            detail=f"column {column!r} is {column_type}, not a timestamp or date",
        )

    tolerance = timedelta(seconds=CLOCK_SKEW_TOLERANCE_SECONDS)
    what_if_past = as_of < now - tolerance
    with _read_only(url) as conn:
        _, _, identifier = _resolve(conn, profile.table)
        seen = _newest(conn, identifier, column, as_of + tolerance)
    return _judge_freshness(name, column, seen, as_of, now, max_age, expected, what_if_past)


def _judge_freshness(
    name: str,
    column: str,
    seen: _Newest,
    as_of: datetime,
    now: datetime,
    max_age: float,
    expected: str,
    what_if_past: bool,
) -> Check:
    """The check from what :func:`_newest` read (pure: the rules of :func:`freshness_check`)."""
    limit = format_duration(max_age)
    # A past as-of counts only what existed then; a live run counts everything, future values included.
    newest = seen.at_as_of if what_if_past else seen.overall
    skew_from = max(as_of, now).timestamp() + CLOCK_SKEW_TOLERANCE_SECONDS
    skewed = seen.overall is not None and seen.overall > skew_from
    later = f"{seen.later} row{'' if seen.later == 1 else 's'}"
    not_counted = f"; {later} after the as-of time not counted" if what_if_past and seen.later else ""

    if seen.rows == 0:
        return Check(check=name, status="fail", detail="no rows", expected=expected, age_seconds=None)
    if newest is None:
        # Rows exist: either every value is null, or (a past as-of) every value came later.
        detail = (
            f"no {column} at or before the as-of time{not_counted}" if seen.later else f"{column} is null in every row"
        )
        return Check(check=name, status="fail", detail=detail, expected=expected, age_seconds=None)

    observed = _iso(newest)
    if skewed and not what_if_past:
        finite = math.isfinite(newest)
        ahead = format_duration(newest - as_of.timestamp()) if finite else "infinitely far"
        return Check(
            check=name,
            status="warn",
            observed=observed,
            expected=expected,
            age_seconds=round(as_of.timestamp() - newest, 3) if finite else None,
            detail=f"newest {column} is {ahead} in the future (clock skew?), limit {limit}",
        )
    age = as_of.timestamp() - newest
    age_text = f"{format_duration(age)} old" if age >= 0 else f"{format_duration(-age)} in the future"
    skew_note = f"; newest of all is in the future of now ({_iso(seen.overall)}): clock skew?" if skewed else ""
    status = "fail" if age > max_age else ("warn" if skewed else "ok")
    return Check(
        check=name,
        status=status,
        observed=observed,
        expected=expected,
        age_seconds=round(age, 3),
        detail=f"newest {column} is {age_text}, limit {limit}{not_counted}{skew_note}",
    )


# -- history ------------------------------------------------------------------------------


def row_count_change_check(row_count: int, history: Sequence[int], cfg: RowCountChange) -> Check:
    """``row_count_change``: ``row_count`` against the median of the newest ``cfg.runs`` counts of
    ``history`` (newest first); a change larger than ``cfg.max_change`` percent, up or down, fails
    (exactly the limit passes). No history yet is ``ok`` — there is nothing to compare with.
    ``observed`` is the change in percent (null when the median is 0), ``expected`` "within ±X%"."""
    expected = f"within ±{cfg.max_change:g}%"
    counts = list(history[: cfg.runs])
    if not counts:
        return Check(
            check="row_count_change",
            status="ok",
            expected=expected,
            row_count=row_count,
            median=None,
            runs=0,
            detail=f"no history yet (first run): {row_count:,} rows",
        )
    median = statistics.median(counts)
    of_runs = f"last {len(counts)} runs" if len(counts) == cfg.runs else f"{len(counts)} of {cfg.runs} runs so far"
    extra = {"row_count": row_count, "median": median, "runs": len(counts)}
    if median == 0:
        # No percentage of nothing: growing from empty is a change too large to measure.
        status = "ok" if row_count == 0 else "fail"
        return Check(
            check="row_count_change",
            status=status,
            observed=0.0 if row_count == 0 else None,
            expected=expected,
            detail=f"{row_count:,} rows, median of {of_runs} 0 rows",
            **extra,
        )
    change = (row_count - median) / median * 100.0
    status = "fail" if abs(change) > cfg.max_change else "ok"
    return Check(
        check="row_count_change",
        status=status,
        observed=round(change, 2),
        expected=expected,
        detail=f"{row_count:,} rows, median of {of_runs} {_count(median)}: {change:+.1f}%, limit ±{cfg.max_change:g}%",
        **extra,
    )


def schema_check(columns: Mapping[str, str], previous: Mapping[str, str] | None, cfg: SchemaCheck) -> Check:
    """``schema``: ``columns`` (name -> type) against the previous run's. A dropped or retyped column
    fails; a new one fails unless ``cfg.allow_new_columns``. A rename shows as dropped + new. No
    previous run is ``ok``: the columns are recorded for the next run. ``observed``/``expected`` are
    the column counts now and then; ``dropped``, ``retyped`` (name -> "old → new") and ``added`` ride along."""
    if previous is None:
        return Check(
            check="schema",
            status="ok",
            observed=len(columns),
            expected=None,
            detail=f"first run: {len(columns)} columns recorded",
            dropped=[],
            retyped={},
            added=[],
        )
    dropped = [name for name in previous if name not in columns]
    retyped = {
        name: f"{previous[name]} → {kind}"
        for name, kind in columns.items()
        if name in previous and previous[name] != kind
    }
    added = [name for name in columns if name not in previous]
    parts = []
    if dropped:
        parts.append("dropped: " + ", ".join(dropped))
    if retyped:
        parts.append("retyped: " + ", ".join(f"{name} {change}" for name, change in retyped.items()))
    if added:
        parts.append(("new: " if cfg.allow_new_columns else "new (not allowed): ") + ", ".join(added))
    failed = bool(dropped or retyped or (added and not cfg.allow_new_columns))
    detail = "; ".join(parts) if parts else f"{len(columns)} columns, unchanged since the last run"
    return Check(
        check="schema",
        status="fail" if failed else "ok",
        observed=len(columns),
        expected=len(previous),
        detail=detail,
        dropped=dropped,
        retyped=retyped,
        added=added,
    )


def history_of(
    results: Sequence[RoutineResult],
    suite_name: str,
    runs: int,
    before: datetime,
    *,
    table: str | None = None,
) -> tuple[list[int], dict[str, str] | None]:
    """``(row counts of the last runs, newest first, at most runs; the previous run's columns or None)``.

    From stored ``data-quality`` results: only those strictly before ``before`` (the run's as_of, so a
    re-run or a what-if in the past never compares with itself or its future), newest first whatever
    the input order; in each, the item named ``suite_name`` with :func:`profile_metrics`. A run that
    could not profile the table (no ``row_count``) is skipped. With ``table``, a run that profiled
    another table (the config was changed) is skipped too: its counts say nothing of this one."""
    counts: list[int] = []
    previous: dict[str, str] | None = None
    for result in sorted((r for r in results if r.as_of < before), key=lambda r: r.as_of, reverse=True):
        metrics = next((item.metrics for item in result.items if item.name == suite_name), None)
        if metrics is None or not _is_count(metrics.get("row_count")):
            continue
        if table is not None and metrics.get("table") not in (None, table):
            continue
        if previous is None and isinstance(metrics.get("columns"), dict):
            previous = {str(name): str(kind) for name, kind in metrics["columns"].items()}
        if len(counts) < runs:
            counts.append(int(metrics["row_count"]))
        if len(counts) >= runs and previous is not None:
            break
    return counts, previous


def _count(value: float) -> str:
    """A row count for a detail: ``1,234``, or ``1,234.5`` for the median of an even number of runs."""
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,.1f}"


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
