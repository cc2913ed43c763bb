"""Teardown and leftovers: removing (or, with ``--keep``, keeping) the drill's own target, and sweeping what
earlier drills left behind (work directories, embedded servers, scratch databases)."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psutil
import psycopg

from opsflow.config import Database
from opsflow.owners import owner_alive
from opsflow.redact import first_line
from opsflow.results import format_instant
from tasks.drill.clock import Phase
from tasks.drill.common import log
from tasks.drill.names import DB_PREFIX, MARKER, WORKDIR_PREFIX, is_scratch_database_of, scratch_prefix
from tasks.drill.roles import RESTORE_ROLE_PREFIX, restore_role_name
from tasks.drill.sql import RESTORE_ROLES, SCRATCH_DATABASES, drop_role
from tasks.drill.targets import (
    TargetPlan,
    _connect_server,
    _drop_database,
    comment_scratch_database,
    drill_root,
    stop_embedded,
)
from tasks.retry import TransientFailure


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
        try:
            if _drop_database(plan.drill_server, plan.scratch):
                removed.append(f"dropped {plan.scratch}")
        except (psycopg.Error, TransientFailure) as exc:
            problems.append(f"could not drop {plan.scratch}: {first_line(exc)}")
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
    """``--keep``: only the download goes; the target stays up for an engineer to look at, marked as kept
    (its drill is over: ``--cleanup`` may remove it even while the process that ran the drill lives on)."""
    started = time.monotonic()
    shutil.rmtree(plan.workdir / "download", ignore_errors=True)
    problems = []
    try:
        mark_kept(plan)
    except (OSError, psycopg.Error, TransientFailure) as exc:
        problems.append(f"could not mark {plan.scratch} as kept: {first_line(exc)}")
    return Teardown(removed=[], problems=problems, phase=Phase.since("teardown", started))


def mark_kept(plan: TargetPlan) -> None:
    """Record in the target's markers (work directory, scratch database comment) that its drill finished."""
    kept_at = format_instant(datetime.now(UTC))
    marker = plan.workdir / MARKER
    info = _read_json(marker.read_text()) if marker.exists() else {}
    marker.write_text(json.dumps({**info, "kept_at": kept_at}, indent=2) + "\n")
    if plan.kind == "server":
        comment_scratch_database(plan.drill_server, plan.scratch, {**info, "opsflow": "dr-drill", "kept_at": kept_at})


def finish_target(plan: TargetPlan, keep: bool) -> Teardown:
    """Tear the target down, or with ``keep`` (and a target to keep) leave it up."""
    return keep_target(plan) if keep else teardown(plan)


def _read_json(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@dataclass
class LeftoverReport:
    """What a leftover sweep removed, what it left (in use) and what it could not remove. ``kept`` names
    those of ``removed`` that a drill kept on purpose (``--keep``): removing them is the plan, not a mess
    left by a drill that crashed or was killed."""

    removed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    @property
    def leftovers(self) -> list[str]:
        """What was removed that no drill meant to keep."""
        return [name for name in self.removed if name not in self.kept]

    def merge(self, other: LeftoverReport) -> None:
        self.removed += other.removed
        self.skipped += other.skipped
        self.problems += other.problems
        self.kept += other.kept

    def describe(self) -> str:
        parts = []
        kept = [name for name in self.removed if name in self.kept]
        if kept:
            targets = "the kept drill target" if len(kept) == 1 else "the kept drill targets"
            parts.append(f"removed {targets} {', '.join(kept)}")
        if self.leftovers:
            leftovers = self.leftovers
            parts.append(f"removed {len(leftovers)} leftovers of earlier drills: {', '.join(leftovers)}")
        if self.skipped:
            parts.append(f"left {', '.join(self.skipped)}")
        if self.problems:
            parts.append(f"could not remove: {'; '.join(self.problems)}")
        return "; ".join(parts)


def _removable(info: Mapping[str, Any], holding_slot: bool) -> tuple[bool, str]:
    """Whether a target ``info`` describes may go, and why. Never while its drill runs: a drill on this host
    is alive by its pid; one elsewhere is known to be over only when no drill of the database holds the
    slot (``holding_slot``: the sweeper holds it). A ``--keep`` target is fair game once its drill finished."""
    if info.get("kept_at"):
        return True, "kept by --keep"
    alive = owner_alive(info) if info else None
    if alive:
        return False, f"in use by the running drill pid {info.get('pid')}"
    if alive is False:
        return True, f"its drill (pid {info.get('pid')}) is gone"
    if holding_slot:
        return True, "no drill of this database is running"
    return False, "a drill of this database is running, and this was made on another host or has no marker"


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
            if info.get("kept_at"):
                report.kept.append(str(workdir))
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
        rows = conn.execute(SCRATCH_DATABASES, (scratch_prefix(database),)).fetchall()
        if flow_run_id is None:
            _remove_orphan_roles(conn, report)
    for datname, comment in rows:
        if not is_scratch_database_of(datname, database):
            continue
        info = _read_json(comment)
        if info and info.get("database") not in (None, database):
            continue  # another database's drill whose name folds to the same prefix
        if flow_run_id is not None:
            if info.get("flow_run_id") != flow_run_id:
                continue
        else:
            removable, why = _removable(info, holding_slot)
            if not removable:
                report.skipped.append(f"{datname} ({why})")
                continue
        try:
            _drop_database(server_url, datname)
            report.removed.append(datname)
            if info.get("kept_at"):
                report.kept.append(datname)
        except (psycopg.Error, TransientFailure) as exc:
            report.problems.append(f"{datname}: {first_line(exc)}")
    return report


def _remove_orphan_roles(conn: psycopg.Connection, report: LeftoverReport) -> None:
    """Restore roles whose scratch database is gone (a drill killed between dropping the two). A role is
    created after its database and dropped after it, so one without its database belongs to no drill."""
    roles = [row[0] for row in conn.execute(RESTORE_ROLES, (RESTORE_ROLE_PREFIX,)).fetchall()]
    if not roles:
        return
    databases = {row[0] for row in conn.execute(SCRATCH_DATABASES, (DB_PREFIX,)).fetchall()}
    owned = {restore_role_name(name) for name in databases}
    for role in roles:
        if role in owned:
            continue
        try:
            conn.execute(drop_role(role))
            report.removed.append(f"role {role}")
        except psycopg.Error as exc:
            report.problems.append(f"role {role}: {first_line(exc)}")


def remove_leftovers(database: Database, target: str, *, holding_slot: bool) -> LeftoverReport:
    """Everything earlier drills of ``database`` left behind: work directories, embedded servers, scratch databases."""
    report = remove_workdir_leftovers(database.name, holding_slot=holding_slot)
    if target != "embedded":
        report.merge(remove_server_leftovers(database.name, target, holding_slot=holding_slot))
    if report.leftovers or report.problems:
        log.warning("dr-drill %s: %s", database.name, report.describe())
    elif report.removed:  # only what --keep kept: removing it is the plan, nothing to warn about
        log.info("dr-drill %s: %s", database.name, report.describe())
    return report


def remove_flow_run_targets(flow_run_id: str, database: Database | None, target: str | None) -> LeftoverReport:
    """Everything one (cancelled or crashed) flow run created, found by its flow run id."""
    report = remove_workdir_leftovers(None, flow_run_id=flow_run_id)
    if database is not None and target is not None and target != "embedded":
        server = remove_server_leftovers(database.name, target, flow_run_id=flow_run_id)
        report.removed += server.removed
        report.problems += server.problems
        report.kept += server.kept
    return report
