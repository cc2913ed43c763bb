"""The ops store: PostgreSQL (through psycopg 3) holding every routine's history.

Everything lives in the schema ``opsflow``, created and upgraded by the ordered
SQL files in ``opsflow/migrations/`` (``NNNN_name.sql``). Migrations run when a
store is opened, each in its own transaction, recorded in
``opsflow.schema_version``, under an advisory lock so two processes starting at
once apply each migration exactly once.

Where the store is (first match wins):

1. ``store.url`` in the config;
2. ``$OPSFLOW_STORE_URL``;
3. an embedded PostgreSQL under ``$OPSFLOW_HOME`` (default ``./.opsflow``),
   started on first use and left running for the next command.

Writing imported history (a real server: not a doctest)::

    store = OpsStore.open(config)
    check_probe_csv(path)  # the first pass: every row valid, or nothing is written
    store.import_probe_results(probe_rows(path), source=str(path))  # HistoryImport(rows=130000, inserted=130000, ...)
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources
from itertools import islice
from typing import TYPE_CHECKING, Any, BinaryIO

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from opsflow.errors import StoreUnavailable, UsageError
from opsflow.history_csv import MAX_REPORTED_PROBLEMS, CapacityRow, ProbeRow, repeated_key_problems
from opsflow.results import RoutineResult

if TYPE_CHECKING:
    from datetime import datetime

    from opsflow.config import Config
    from opsflow.retention import Pruned

log = logging.getLogger(__name__)

STORE_DATABASE = "opsflow"
CONNECT_TIMEOUT_SECONDS = 10
#: Connections an :class:`OpsStore` keeps open between operations, and for how long at most.
IDLE_CONNECTIONS = 8
IDLE_SECONDS = 30.0
_MIGRATION_LOCK = "opsflow.migrate"
_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
#: A history import sends its rows in COPYs of this many (all in one transaction).
IMPORT_CHUNK_ROWS = 50_000


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


@dataclass(frozen=True)
class ImportCount:
    """Rows read from a file, and how many of them were new to the store."""

    rows: int
    inserted: int
    updated: int = 0

    @property
    def unchanged(self) -> int:
        return self.rows - self.inserted - self.updated


@dataclass(frozen=True)
class HistoryImport(ImportCount):
    """An imported file's counts (``rows``: distinct keys), with, for a probe import, each of the
    named services' first and last result in the file (the rollup hours to refresh) and the first
    few services it holds that were not named."""

    spans: tuple[tuple[str, datetime, datetime], ...] = ()
    unknown: tuple[str, ...] = ()


def bundled_migrations() -> list[Migration]:
    """The migrations shipped in ``opsflow/migrations``, in version order."""
    found = []
    for entry in resources.files("opsflow.migrations").iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in opsflow/migrations: {versions}")
    return found


def resolve_store_url(config: Config | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The store's libpq URL: config, then ``$OPSFLOW_STORE_URL``, then the embedded server."""
    env = os.environ if environ is None else environ
    configured = ""
    if config is not None and config.store is not None:
        from opsflow.config import resolve_secret

        configured = resolve_secret(config.store.url) or ""
    url = configured or env.get("OPSFLOW_STORE_URL", "")
    if url:
        from opsflow.redact import register_url_secrets

        # Its password is masked in every spelling before anything (libpq included) can echo it.
        register_url_secrets(url)
        problem = store_url_problem(url)
        if problem:
            source = "store.url in the config" if configured else "$OPSFLOW_STORE_URL"
            raise UsageError(f"the ops store URL ({source}) {problem}")
        return url
    from opsflow.embedded import EmbeddedPostgres, home_dir

    server = EmbeddedPostgres.start(home_dir(dict(env)) / "pgdata", keep_running=True)
    return server.ensure_database(STORE_DATABASE)


def store_url_problem(url: str) -> str | None:
    """Why libpq cannot use ``url`` as its author meant it, in words that never quote it; None if it can.

    >>> store_url_problem("postgresql://ops:Hunter@2Secret@db/opsflow")
    "has an '@' in its user name or password: write it as %40"
    >>> store_url_problem("postgresql://ops:Hunter%zz@db/opsflow")
    'is not a valid PostgreSQL URL (invalid percent-encoded token: "...")'
    >>> store_url_problem("postgresql://ops:Hunter%402Secret@db/opsflow") is None
    True
    """
    _, separator, rest = url.partition("://")
    if separator:
        authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
        if authority.count("@") > 1:  # libpq takes the first "@"; the host would be the password's tail
            return "has an '@' in its user name or password: write it as %40"
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(url)
    except psycopg.Error as exc:
        return f"is not a valid PostgreSQL URL ({_unquoted(exc)})"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _copy_in_chunks(conn: psycopg.Connection, statement: str, rows: Iterable[Sequence[object]]) -> int:
    """COPY ``rows`` with ``statement``, :data:`IMPORT_CHUNK_ROWS` at a time (psycopg streams each
    COPY's data as it is written: nothing accumulates); return how many rows went."""
    remaining = iter(rows)
    total = 0
    with conn.cursor() as cursor:
        while True:
            sent = 0
            with cursor.copy(statement) as copy:
                for row in islice(remaining, IMPORT_CHUNK_ROWS):
                    copy.write_row(row)
                    sent += 1
            total += sent
            if sent < IMPORT_CHUNK_ROWS:
                return total


def _refuse_conflicting_repeats(
    conn: psycopg.Connection, table: str, key: str, values: str, source: str, copied: int
) -> int:
    """The number of distinct keys among ``copied`` staged rows; raises CsvProblems (``source:LINE``)
    when a key comes again with different ``values`` than its first row. One hash aggregate when no
    key repeats (the usual file); the window over the repeated keys only when some do."""
    row = conn.execute(
        f"""select count(*), coalesce(sum(n - 1), 0)
            from (select count(*) as n from {table} group by {key} having count(*) > 1) repeated"""  # noqa: S608
    ).fetchone()
    repeats = int(row[1]) if row else 0
    if not repeats:
        return copied
    conflicts = conn.execute(
        f"""select line, first_line, count(*) over () from (
                select line, first_value(line) over w as first_line,
                       row({values}) is distinct from first_value(row({values})) over w as differs
                from {table}
                where ({key}) in (select {key} from {table} group by {key} having count(*) > 1)
                window w as (partition by {key} order by line)) lines
            where differs order by line limit %s""",  # noqa: S608 - fixed texts
        (MAX_REPORTED_PROBLEMS,),
    ).fetchall()
    if conflicts:
        raise repeated_key_problems(source, [(line, first) for line, first, _ in conflicts], int(conflicts[0][2]))
    return copied - repeats


def _unquoted(exc: BaseException) -> str:
    """libpq's first line of ``exc`` with every quoted text (a token of the URL) left out."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return re.sub(r'"[^"]*"', '"..."', text)


#: What an update of the probe states stores: ``(states, opened, closed)``, as ``save_probe_states`` takes them.
ProbeStateChanges = tuple[Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]]]
_PROBE_STATE_LOCK = "opsflow.probe_state"


def _read_probe_states(conn: psycopg.Connection) -> dict[str, dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """select coalesce(s.service, i.service) as service,
                      coalesce(s.consecutive_failures, 0) as consecutive_failures,
                      s.first_failure_at, i.opened_at as incident_opened_at, s.last_checked_at
               from opsflow.probe_state s
               full join (select service, opened_at from opsflow.incidents where closed_at is null) i
                      on i.service = s.service"""
        ).fetchall()
    return {row["service"]: row for row in rows}


def _write_probe_states(
    conn: psycopg.Connection,
    states: Sequence[Mapping[str, Any]],
    opened: Sequence[Mapping[str, Any]],
    closed: Sequence[Mapping[str, Any]],
) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            """insert into opsflow.probe_state (service, consecutive_failures, first_failure_at, last_checked_at)
               values (%(service)s, %(consecutive_failures)s, %(first_failure_at)s, %(last_checked_at)s)
               on conflict (service) do update set consecutive_failures = excluded.consecutive_failures,
                   first_failure_at = excluded.first_failure_at, last_checked_at = excluded.last_checked_at""",
            states,
        )
        cur.executemany(
            """update opsflow.incidents set closed_at = %(closed_at)s
               where service = %(service)s and closed_at is null""",
            closed,
        )
        cur.executemany(
            """insert into opsflow.incidents (service, opened_at, closed_at, last_error)
               values (%(service)s, %(opened_at)s, %(closed_at)s, %(last_error)s) on conflict do nothing""",
            [{"closed_at": None, **row} for row in opened],
        )


#: A sharded run's stored scope (``shard 2/4``), and how far apart the shard runs of one round may start.
_SHARD_SCOPE = re.compile(r"shard \d+/(\d+)")
SHARD_ROUND = timedelta(minutes=1)


def _result_of(stored: Any) -> RoutineResult:
    return RoutineResult.model_validate(stored if isinstance(stored, dict) else json.loads(stored))


def _round_of(conn: psycopg.Connection, routine: str, scope: str, as_of: datetime) -> RoutineResult:
    """The newest result of every shard ``K/N`` of ``routine`` (N as in ``scope``) within :data:`SHARD_ROUND`
    up to ``as_of``, as one result: their items, the newest one's instant and flow run."""
    shards = _SHARD_SCOPE.fullmatch(scope)[1]  # type: ignore[index]
    rows = conn.execute(
        """select distinct on (scope) result from opsflow.routine_runs
           where routine = %s and scope like %s and as_of > %s and as_of <= %s
           order by scope, as_of desc""",
        (routine, f"shard %/{shards}", as_of - SHARD_ROUND, as_of),
    ).fetchall()
    parts = sorted((_result_of(row[0]) for row in rows), key=lambda result: result.as_of)
    latest = parts[-1]
    items = [item for part in parts for item in part.items]
    return RoutineResult(routine=routine, as_of=latest.as_of, flow_run_id=latest.flow_run_id, items=items)


def _close_idle(idle: list[tuple[psycopg.Connection, float]], pid: int) -> None:
    """A collected store's idle connections, closed in the process that opened them (never a fork's)."""
    if os.getpid() != pid:
        return
    for conn, _ in list(idle):
        with suppress(Exception):  # at interpreter shutdown there may be nothing left to close them with
            conn.close()
    idle.clear()


class OpsStore:
    """Access to the ops store. Cheap to create; each operation takes a connection in a transaction of its own.

    Connections are reused: one that ended its operation without an error goes back to a small idle list
    (at most :data:`IDLE_CONNECTIONS`, reset with ``DISCARD ALL``), and the next operation takes it instead
    of connecting again — a routine's task runs share a handful of connections rather than opening one
    per operation (``bench orchestration``). One idle longer than :data:`IDLE_SECONDS`, one that fails a
    ping, or one of another process (a fork) is never handed out; :attr:`connections_opened` counts the
    connections this store made.
    """

    def __init__(self, url: str) -> None:
        self._url = url
        self._fresh_idle()
        self.connections_opened = 0

    def _fresh_idle(self) -> None:
        """An empty idle list for this process, its connections closed when the store is collected. The
        finalizer holds the list, so a store dropped in a reference cycle never leaves its connections to
        be deleted open (psycopg's ResourceWarning) in whatever order the cycle is collected."""
        self._idle: list[tuple[psycopg.Connection, float]] = []
        self._idle_lock = threading.Lock()
        self._pid = os.getpid()
        weakref.finalize(self, _close_idle, self._idle, self._pid)

    def __getstate__(self) -> dict[str, Any]:  # connections stay with the process that made them
        return {"_url": self._url}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["_url"])  # type: ignore[misc]

    @classmethod
    def open(cls, config: Config | None = None, environ: Mapping[str, str] | None = None) -> OpsStore:
        """Resolve the store's location, connect, and apply pending migrations."""
        store = cls(resolve_store_url(config, environ))
        store.migrate()
        return store

    @property
    def url(self) -> str:
        """The store's libpq URL (it may carry a password: compare it, never print it)."""
        return self._url

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A connection in a transaction that commits on success and rolls back on error."""
        conn = self._reused() or self._connect()
        try:
            yield conn
        except BaseException:
            conn.close()  # rolls back; a connection an error went through is not reused
            raise
        try:
            if not conn.closed:
                conn.commit()
        except BaseException:
            conn.close()
            raise
        self._keep(conn)

    def close(self) -> None:
        """Close the idle connections (the store stays usable: the next operation connects again)."""
        if os.getpid() != self._pid:
            return
        with self._idle_lock:
            idle = list(self._idle)
            self._idle.clear()
        for conn, _ in idle:
            with suppress(psycopg.Error):  # one that fails to close must not leave the others open
                conn.close()

    def _connect(self) -> psycopg.Connection:
        try:
            conn = psycopg.connect(self._url, connect_timeout=CONNECT_TIMEOUT_SECONDS)
        except psycopg.ProgrammingError as exc:
            # The URL does not parse: retrying cannot change that, and libpq quotes the bad token.
            raise UsageError(f"the ops store URL is not a valid PostgreSQL URL ({_unquoted(exc)})") from None
        except psycopg.OperationalError as exc:
            # libpq's message can echo the host but never the password; keep it short anyway.
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreUnavailable(f"ops store unreachable: {first_line}") from None
        # No server-side prepared statements: ``DISCARD ALL`` between operations would drop them under psycopg.
        conn.prepare_threshold = None
        self.connections_opened += 1
        return conn

    def _reused(self) -> psycopg.Connection | None:
        """An idle connection that still answers, ready for a new transaction; None when there is none."""
        if os.getpid() != self._pid:  # a forked child: the parent's connections are not ours to use or close
            self._fresh_idle()
            return None
        while True:
            with self._idle_lock:
                if not self._idle:
                    return None
                conn, since = self._idle.pop()
            if time.monotonic() - since > IDLE_SECONDS:
                conn.close()
                continue
            try:
                conn.execute("select 1")  # autocommit while idle: a server gone since is noticed here
                conn.autocommit = False
            except psycopg.Error:
                conn.close()
                continue
            return conn

    def _keep(self, conn: psycopg.Connection) -> None:
        """Back to the idle list, reset, or closed when the list is full or the reset fails."""
        if conn.closed or conn.broken or os.getpid() != self._pid:
            return
        try:
            conn.autocommit = True
            conn.execute("discard all")  # temp tables, session settings, advisory locks: as a new session
        except psycopg.Error:
            conn.close()
            return
        with self._idle_lock:
            if len(self._idle) < IDLE_CONNECTIONS:
                self._idle.append((conn, time.monotonic()))
                return
        conn.close()

    # -- schema -----------------------------------------------------------------

    def schema_version(self) -> int:
        """The highest applied migration, 0 for an empty store."""
        with self.connection() as conn:
            if conn.execute("select to_regclass('opsflow.schema_version')").fetchone() == (None,):
                return 0
            row = conn.execute("select coalesce(max(version), 0) from opsflow.schema_version").fetchone()
            return int(row[0]) if row else 0

    def created_at(self) -> datetime | None:
        """When this store was set up (its first migration applied); None before."""
        with self.connection() as conn:
            exists = conn.execute("select to_regclass('opsflow.schema_version')").fetchone()
            if not exists or exists[0] is None:
                return None
            row = conn.execute("select min(applied_at) from opsflow.schema_version").fetchone()
        return row[0] if row else None

    def migrate(self, migrations: Sequence[Migration] | None = None) -> list[int]:
        """Apply pending migrations in order; return the versions applied by this call."""
        pending = list(bundled_migrations() if migrations is None else migrations)
        applied: list[int] = []
        with self.connection() as conn:
            conn.autocommit = True
            # A session-level lock held across every migration's own transaction.
            conn.execute("select pg_advisory_lock(hashtext(%s))", (_MIGRATION_LOCK,))
            try:
                conn.execute("create schema if not exists opsflow")
                conn.execute(
                    """create table if not exists opsflow.schema_version (
                        version    integer primary key,
                        name       text not null,
                        applied_at timestamptz not null default now())"""
                )
                done = {row[0] for row in conn.execute("select version from opsflow.schema_version")}
                for migration in pending:
                    if migration.version in done:
                        continue
                    with conn.transaction():
                        conn.execute(migration.sql.encode())
                        conn.execute(
                            "insert into opsflow.schema_version (version, name) values (%s, %s)",
                            (migration.version, migration.name),
                        )
                    log.info("ops store: applied migration %04d_%s", migration.version, migration.name)
                    applied.append(migration.version)
            finally:
                conn.execute("select pg_advisory_unlock(hashtext(%s))", (_MIGRATION_LOCK,))
        return applied

    # -- routine results -------------------------------------------------------

    def save_result(self, result: RoutineResult, scope: str = "") -> None:
        """Record a routine's result; a re-run for the same routine, scope and instant replaces it."""
        with self.connection() as conn:
            conn.execute(
                """insert into opsflow.routine_runs (routine, scope, as_of, status, flow_run_id, result)
                   values (%s, %s, %s, %s, %s, %s)
                   on conflict (routine, scope, as_of) do update
                   set status = excluded.status, flow_run_id = excluded.flow_run_id,
                       result = excluded.result, recorded_at = now()""",
                (result.routine, scope, result.as_of, result.status, result.flow_run_id, result.to_json()),
            )

    def results(self, routine: str, scope: str = "", limit: int = 100) -> list[RoutineResult]:
        """The most recent results of ``routine`` (newest ``as_of`` first)."""
        with self.connection() as conn:
            rows = conn.execute(
                """select result from opsflow.routine_runs where routine = %s and scope = %s
                   order by as_of desc limit %s""",
                (routine, scope, limit),
            ).fetchall()
        return [
            RoutineResult.model_validate(row[0] if isinstance(row[0], dict) else json.loads(row[0])) for row in rows
        ]

    def results_between(
        self, routine: str, start: datetime, end: datetime, scope: str | None = None
    ) -> list[tuple[str, RoutineResult]]:
        """``(scope, result)`` of every stored result of ``routine`` with ``start <= as_of < end``, oldest
        first (ties by scope); only ``scope``'s when given, any scope when None."""
        with self.connection() as conn:
            rows = conn.execute(
                """select scope, result from opsflow.routine_runs
                   where routine = %(routine)s and as_of >= %(start)s and as_of < %(end)s
                     and (%(scope)s::text is null or scope = %(scope)s)
                   order by as_of, scope""",
                {"routine": routine, "start": start, "end": end, "scope": scope},
            ).fetchall()
        return [
            (row[0], RoutineResult.model_validate(row[1] if isinstance(row[1], dict) else json.loads(row[1])))
            for row in rows
        ]

    def latest_results(self, routines: Sequence[str], end: datetime | None = None) -> dict[str, RoutineResult]:
        """The newest stored result of each of ``routines`` (any scope) with ``as_of < end`` (any time when
        None), by routine; a routine without one is left out. One index probe per routine. A sharded
        routine's (scope ``shard K/N``) is its round: the newest result of each of the N shards within
        :data:`SHARD_ROUND` before the newest, their items together."""
        with self.connection() as conn:
            rows = conn.execute(
                """select r.name, newest.scope, newest.as_of, newest.result from unnest(%(routines)s::text[]) r(name)
                   cross join lateral (
                       select scope, as_of, result from opsflow.routine_runs
                       where routine = r.name and (%(end)s::timestamptz is null or as_of < %(end)s)
                       order by as_of desc limit 1) newest""",
                {"routines": list(routines), "end": end},
            ).fetchall()
            newest = {name: _result_of(result) for name, _, _, result in rows}
            for name, scope, as_of, _ in rows:
                if _SHARD_SCOPE.fullmatch(scope):
                    newest[name] = _round_of(conn, name, scope, as_of)
        return newest

    def run_counts(self, start: datetime, end: datetime) -> dict[str, dict[str, int]]:
        """Stored runs with ``start <= as_of < end`` by routine and status (``{routine: {status: n}}``),
        counted in PostgreSQL: a week of minute probes is ten thousand results."""
        with self.connection() as conn:
            rows = conn.execute(
                """select routine, status, count(*) from opsflow.routine_runs
                   where as_of >= %s and as_of < %s group by routine, status""",
                (start, end),
            ).fetchall()
        counts: dict[str, dict[str, int]] = {}
        for routine, status, count in rows:
            counts.setdefault(routine, {})[status] = int(count)
        return counts

    def result_of_flow_run(self, routine: str, flow_run_id: str) -> RoutineResult | None:
        """The result a given flow run of ``routine`` recorded, if it recorded one."""
        with self.connection() as conn:
            row = conn.execute(
                """select result from opsflow.routine_runs where routine = %s and flow_run_id = %s
                   order by recorded_at desc limit 1""",
                (routine, flow_run_id),
            ).fetchone()
        if row is None:
            return None
        return RoutineResult.model_validate(row[0] if isinstance(row[0], dict) else json.loads(row[0]))

    # -- probe and capacity history -------------------------------------------

    def write_probe_results(self, rows: Sequence[ProbeRow]) -> ImportCount:
        """Write probe results in one COPY; rows already stored (same service and instant) are kept as they are."""
        with self.connection() as conn:
            conn.execute(
                """create temp table probe_batch (like opsflow.probe_results including defaults)
                   on commit drop"""
            )
            with conn.cursor().copy(
                "copy probe_batch (service, checked_at, ok, latency_ms, status_code, error) from stdin"
            ) as copy:
                for row in rows:
                    copy.write_row(row)
            conn.execute(
                """select opsflow.ensure_probe_partition(month)
                   from (select distinct date_trunc('month', checked_at, 'UTC') as month from probe_batch) months"""
            )
            inserted = conn.execute(
                """insert into opsflow.probe_results select * from probe_batch
                   on conflict (service, checked_at) do nothing"""
            ).rowcount
        return ImportCount(rows=len(rows), inserted=inserted)

    def export_probe_results(
        self,
        out: BinaryIO,
        services: Sequence[str] = (),
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> int:
        """Write stored probe results as CSV in ``opsflow probes import``'s format (so an export imports
        back unchanged), ordered by service and time; ``services`` empty means all, ``[start, end)``
        bounds the time. Latency to at most 3 decimals (a microsecond: ``67.744``, ``0.5``; what a timer
        adds beyond is noise), so importing an export and exporting again gives the same file. Streams with
        COPY; returns the rows written."""
        query = """
            copy (
                select service,
                       to_char(checked_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
                       || case when extract(microseconds from checked_at)::bigint %% 1000000 <> 0
                               then to_char(checked_at at time zone 'UTC', '.US') else '' end
                       || 'Z' as checked_at,
                       case when ok then 'true' else 'false' end as ok,
                       trim_scale(round(latency_ms::numeric, 3)) as latency_ms, status_code, error
                from opsflow.probe_results
                where (cardinality(%(services)s::text[]) = 0 or service = any(%(services)s::text[]))
                  and checked_at >= coalesce(%(start)s::timestamptz, '-infinity')
                  and checked_at < coalesce(%(end)s::timestamptz, 'infinity')
                order by service, checked_at
            ) to stdout with (format csv, header)"""
        try:
            with self.connection() as conn, conn.cursor() as cursor:
                with cursor.copy(query, {"services": list(services), "start": start, "end": end}) as copy:
                    for chunk in copy:
                        out.write(chunk)
                return cursor.rowcount
        except psycopg.OperationalError as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreUnavailable(f"ops store lost during the export: {first_line}") from None

    def services_with_results(
        self, names: Sequence[str], start: datetime | None = None, end: datetime | None = None
    ) -> set[str]:
        """Those of ``names`` with at least one stored probe result in ``[start, end)`` (None: unbounded)."""
        with self.connection() as conn:
            rows = conn.execute(
                """select name from unnest(%(services)s::text[]) as name where exists (
                       select 1 from opsflow.probe_results r where r.service = name
                         and r.checked_at >= coalesce(%(start)s::timestamptz, '-infinity')
                         and r.checked_at < coalesce(%(end)s::timestamptz, 'infinity'))""",
                {"services": list(names), "start": start, "end": end},
            ).fetchall()
        return {row[0] for row in rows}

    def write_capacity_samples(self, rows: Sequence[CapacityRow]) -> ImportCount:
        """Write metric samples in one COPY; a sample for an existing (metric, ts) replaces its value."""
        with self.connection() as conn:
            conn.execute(
                """create temp table capacity_batch (like opsflow.capacity_samples including defaults)
                   on commit drop"""
            )
            with conn.cursor().copy("copy capacity_batch (metric, ts, value) from stdin") as copy:
                for row in rows:
                    copy.write_row(row)
            # xmax = 0 tells a fresh insert from an update of an existing row.
            written = conn.execute(
                """insert into opsflow.capacity_samples select * from capacity_batch
                   on conflict (metric, ts) do update set value = excluded.value
                   where capacity_samples.value is distinct from excluded.value
                   returning (xmax = 0)"""
            ).fetchall()
        inserted = sum(1 for (is_new,) in written if is_new)
        return ImportCount(rows=len(rows), inserted=inserted, updated=len(written) - inserted)

    def import_probe_results(
        self, rows: Iterable[tuple[int, ProbeRow]], source: str, services: Sequence[str] = ()
    ) -> HistoryImport:
        """Import a history file's ``(line, row)`` pairs (streamed, see ``history_csv.probe_rows``) in one
        transaction: all or nothing. The rows go in COPYs of :data:`IMPORT_CHUNK_ROWS` to a temporary
        table, so memory here stays flat with the file's size; PostgreSQL then refuses a key repeated
        with different values (a :class:`CsvProblems` naming ``source`` and the lines), drops exact
        repeats, creates the months' partitions and skips rows already stored. ``services`` (the
        configured ones) get their ``spans``; others in the file are ``unknown``."""
        with self._importing("probe results") as conn:
            conn.execute(
                """create temp table probe_import (line integer not null, service text not null,
                       checked_at timestamptz not null, ok boolean not null, latency_ms double precision,
                       status_code integer, error text) on commit drop"""
            )
            copied = _copy_in_chunks(
                conn,
                "copy probe_import (line, service, checked_at, ok, latency_ms, status_code, error) from stdin",
                ((line, *row) for line, row in rows),
            )
            distinct = _refuse_conflicting_repeats(
                conn, "probe_import", "service, checked_at", "ok, latency_ms, status_code, error", source, copied
            )
            conn.execute(
                """select opsflow.ensure_probe_partition(month)
                   from (select distinct date_trunc('month', checked_at, 'UTC') as month from probe_import) months"""
            )
            # Exact repeats within the file are skipped like rows already stored (do nothing, not update).
            inserted = conn.execute(
                """insert into opsflow.probe_results (service, checked_at, ok, latency_ms, status_code, error)
                   select service, checked_at, ok, latency_ms, status_code, error from probe_import
                   on conflict (service, checked_at) do nothing"""
            ).rowcount
            spans = conn.execute(
                """select service, min(checked_at), max(checked_at) from probe_import
                   where service = any(%s::text[]) group by service order by service""",
                (list(services),),
            ).fetchall()
            unknown = []
            if services:
                unknown = conn.execute(
                    """select distinct service from probe_import where service <> all(%s::text[])
                       order by service limit %s""",
                    (list(services), MAX_REPORTED_PROBLEMS + 1),
                ).fetchall()
        return HistoryImport(
            rows=distinct,
            inserted=inserted,
            spans=tuple((name, first, last) for name, first, last in spans),
            unknown=tuple(name for (name,) in unknown),
        )

    def import_capacity_samples(self, rows: Iterable[tuple[int, CapacityRow]], source: str) -> HistoryImport:
        """Import a history file's ``(line, sample)`` pairs like :meth:`import_probe_results` (one
        transaction, chunked COPYs, repeats checked by PostgreSQL); a sample for an existing
        (metric, ts) replaces its value."""
        with self._importing("samples") as conn:
            conn.execute(
                """create temp table capacity_import (line integer not null, metric text not null,
                       ts timestamptz not null, value double precision not null) on commit drop"""
            )
            copied = _copy_in_chunks(
                conn,
                "copy capacity_import (line, metric, ts, value) from stdin",
                ((line, *row) for line, row in rows),
            )
            distinct = _refuse_conflicting_repeats(conn, "capacity_import", "metric, ts", "value", source, copied)
            # An upsert may not touch one row twice: exact repeats go first (only when there are any).
            chosen = (
                "select metric, ts, value from capacity_import"
                if distinct == copied
                else "select distinct on (metric, ts) metric, ts, value from capacity_import order by metric, ts, line"
            )
            # xmax = 0 tells a fresh insert from an update of an existing row; counted there, not fetched.
            row = conn.execute(
                f"""with written as (
                        insert into opsflow.capacity_samples (metric, ts, value) {chosen}
                        on conflict (metric, ts) do update set value = excluded.value
                        where capacity_samples.value is distinct from excluded.value
                        returning (xmax = 0) as is_new)
                    select count(*) filter (where is_new), count(*) from written"""  # noqa: S608 - fixed texts
            ).fetchone()
        inserted, written = (int(row[0]), int(row[1])) if row else (0, 0)
        return HistoryImport(rows=distinct, inserted=inserted, updated=written - inserted)

    @contextmanager
    def _importing(self, what: str) -> Iterator[psycopg.Connection]:
        """The import's one transaction; the store lost or refusing midway is said in one line (exit 3),
        and rolls everything back."""
        try:
            with self.connection() as conn:
                yield conn
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"ops store lost during the import, nothing written: {_first_line(exc)}") from None
        except psycopg.Error as exc:
            raise StoreUnavailable(f"the ops store refused the {what}, nothing written: {_first_line(exc)}") from None

    # -- alerts -------------------------------------------------------------------

    def alert_states(self, routine: str) -> list[dict[str, Any]]:
        """Every item's alert state for ``routine`` as column dicts (see ``tasks.alert_rules.AlertState``)."""
        with self.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                """select routine, item, status, is_open, opened_at, paged, last_paged_at
                   from opsflow.alert_state where routine = %s""",
                (routine,),
            ).fetchall()

    def save_alert_outcome(self, states: Sequence[Mapping[str, Any]], deliveries: Sequence[Mapping[str, Any]]) -> None:
        """Store new alert states and the delivery log in one transaction."""
        with self.connection() as conn, conn.cursor() as cur:
            cur.executemany(
                """insert into opsflow.alert_state
                       (routine, item, status, is_open, opened_at, paged, last_paged_at, updated_at)
                   values (%(routine)s, %(item)s, %(status)s, %(is_open)s, %(opened_at)s, %(paged)s,
                           %(last_paged_at)s, now())
                   on conflict (routine, item) do update set
                       status = excluded.status, is_open = excluded.is_open, opened_at = excluded.opened_at,
                       paged = excluded.paged, last_paged_at = excluded.last_paged_at, updated_at = now()""",
                states,
            )
            cur.executemany(
                """insert into opsflow.alert_deliveries
                       (routine, item, kind, channel, delivered, error, as_of, flow_run_id)
                   values (%(routine)s, %(item)s, %(kind)s, %(channel)s, %(delivered)s, %(error)s,
                           %(as_of)s, %(flow_run_id)s)""",
                deliveries,
            )

    # -- backup verification ledger ----------------------------------------------

    def latest_verifications(self, backup_set: str) -> dict[str, dict[str, Any]]:
        """The newest verification of each object of ``backup_set``, by key."""
        with self.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                """select distinct on (key) key, size, etag, sha256, written_at, verified_at, outcome, checks
                   from opsflow.backup_verifications where backup_set = %s
                   order by key, verified_at desc""",
                (backup_set,),
            ).fetchall()
        return {row["key"]: row for row in rows}

    def count_verifications(self, start: datetime, end: datetime) -> int:
        """Backup objects verified (ledger rows) by runs with ``start <= as_of < end``."""
        with self.connection() as conn:
            row = conn.execute(
                "select count(*) from opsflow.backup_verifications where as_of >= %s and as_of < %s",
                (start, end),
            ).fetchone()
        return int(row[0]) if row else 0

    def record_verifications(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append verifications to the ledger (``backup_set, storage, key, size, etag, sha256, written_at,
        as_of, outcome, checks, flow_run_id``)."""
        if not rows:
            return
        with self.connection() as conn, conn.cursor() as cur:
            cur.executemany(
                """insert into opsflow.backup_verifications
                       (backup_set, storage, key, size, etag, sha256, written_at, as_of, outcome, checks, flow_run_id)
                   values (%(backup_set)s, %(storage)s, %(key)s, %(size)s, %(etag)s, %(sha256)s, %(written_at)s,
                           %(as_of)s, %(outcome)s, %(checks)s, %(flow_run_id)s)""",
                [{**row, "checks": Jsonb(row["checks"])} for row in rows],
            )

    # -- uptime incidents ---------------------------------------------------------

    def probe_states(self) -> dict[str, dict[str, Any]]:
        """Each service's failure run and open incident: ``consecutive_failures, first_failure_at,
        incident_opened_at, last_checked_at`` by service. To change them, :meth:`update_probe_states`."""
        with self.connection() as conn:
            return _read_probe_states(conn)

    def update_probe_states(self, update: Callable[[dict[str, dict[str, Any]]], ProbeStateChanges]) -> None:
        """Read the probe states (as :meth:`probe_states`), hand them to ``update`` and store what it returns
        (as :meth:`save_probe_states`), in one transaction under a transaction-level advisory lock of this
        store: two probe runs at once (the scheduled one and a manual one) take turns, so neither loses the
        other's failures nor opens an incident the other opened. ``update`` may run again on a retry."""
        with self.connection() as conn:
            conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (_PROBE_STATE_LOCK,))
            states, opened, closed = update(_read_probe_states(conn))
            _write_probe_states(conn, states, opened, closed)

    def save_probe_states(
        self,
        states: Sequence[Mapping[str, Any]],
        opened: Sequence[Mapping[str, Any]],
        closed: Sequence[Mapping[str, Any]],
    ) -> None:
        """Store failure runs, open new incidents and close recovered ones, in one transaction.

        ``states``: ``service, consecutive_failures, first_failure_at, last_checked_at``;
        ``opened``: ``service, opened_at, last_error`` and optionally ``closed_at`` (opened and closed by
        results written together, e.g. spooled ones); ``closed``: ``service, closed_at``.
        """
        with self.connection() as conn:
            _write_probe_states(conn, states, opened, closed)

    def incidents(self, service: str | None = None, open_only: bool = False) -> list[dict[str, Any]]:
        """Incidents, oldest first: ``service, opened_at, closed_at, last_error``; only the open ones
        (an index lookup: at most one per service) when ``open_only``."""
        with self.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                """select service, opened_at, closed_at, last_error from opsflow.incidents
                   where (%(service)s::text is null or service = %(service)s)
                     and (not %(open_only)s or closed_at is null)
                   order by opened_at""",
                {"service": service, "open_only": open_only},
            ).fetchall()

    def drop_raw_probe_partitions(
        self, older_than: datetime, services: Sequence[tuple[str, float]] = (), dry_run: bool = False
    ) -> Pruned:
        """Raw retention (``store.raw_probe_retention``): drop the monthly partitions of probe results whose
        month ended before ``older_than`` (never the current or previous month), each only once its hourly,
        daily and weekly rollups are complete (built first for ``services``, the configured ``(name,
        interval)``); one that cannot be completed is kept, said in one warning line and in ``refused``.
        With ``dry_run``, nothing changes: ``dropped`` names the partitions old enough. See ``opsflow.retention``."""
        from opsflow.retention import prune

        return prune(self.connection, services, older_than, dry_run)

    def count_probe_results(self, service: str | None = None) -> int:
        with self.connection() as conn:
            if service is None:
                row = conn.execute("select count(*) from opsflow.probe_results").fetchone()
            else:
                row = conn.execute(
                    "select count(*) from opsflow.probe_results where service = %s", (service,)
                ).fetchone()
        return int(row[0]) if row else 0

    def capacity_metrics_with_samples(self, metrics: Sequence[str]) -> set[str]:
        """Those of ``metrics`` that have at least one stored sample."""
        with self.connection() as conn:
            rows = conn.execute(
                """select m from unnest(%s::text[]) m
                   where exists (select 1 from opsflow.capacity_samples s where s.metric = m)""",
                (list(metrics),),
            ).fetchall()
        return {row[0] for row in rows}

    def capacity_series(
        self, metrics: Sequence[str], start: datetime, end: datetime
    ) -> dict[str, tuple[list[datetime], list[float]]]:
        """Samples of each of ``metrics`` in ``(start, end]``, in time order, as ``(times, values)``; one
        query for all of them (a weekly forecast of a thousand metrics reads ~2 M rows)."""
        series: dict[str, tuple[list[datetime], list[float]]] = {metric: ([], []) for metric in metrics}
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                """select metric, ts, value from opsflow.capacity_samples
                   where metric = any(%s) and ts > %s and ts <= %s order by metric, ts""",
                (list(metrics), start, end),
            )
            for metric, ts, value in cursor:
                times, values = series[metric]
                times.append(ts)
                values.append(value)
        return series

    def count_capacity_samples(self, metric: str | None = None) -> int:
        with self.connection() as conn:
            if metric is None:
                row = conn.execute("select count(*) from opsflow.capacity_samples").fetchone()
            else:
                row = conn.execute(
                    "select count(*) from opsflow.capacity_samples where metric = %s", (metric,)
                ).fetchone()
        return int(row[0]) if row else 0
