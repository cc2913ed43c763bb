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
5. ``restore`` — ``pg_restore -j N --no-owner --no-privileges --exit-on-error``, as the scratch
   database's restore role (not a superuser: a backup cannot run programs on the drill host);
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
recovering: after the database's drill slot is held and leftovers are removed, just
before the backup is selected.

The package, one module a step or concern (this module re-exports their public names):

- :mod:`~tasks.drill.names` — scratch database, work directory, marker and slot names; :func:`safe_url`;
- :mod:`~tasks.drill.guard` — :func:`check_target` and :func:`resolve_target`;
- :mod:`~tasks.drill.clock` — :class:`DrillClock`, :class:`Phase`, and :func:`measure` (RTO, RPO);
- :mod:`~tasks.drill.backup` — :func:`select_backup` and :func:`download_backup`;
- :mod:`~tasks.drill.targets` — plan, create and stop targets, create and drop scratch databases;
- :mod:`~tasks.drill.restore` — :func:`restore_backup`;
- :mod:`~tasks.drill.roles` — the restore role (not a superuser, owning only the scratch database);
- :mod:`~tasks.drill.validate` — :func:`validate_restore` (tables, SQL checks, pg_amcheck);
- :mod:`~tasks.drill.leftovers` — :func:`teardown`, ``--keep``, and the sweep for leftovers;
- :mod:`~tasks.drill.record` — :class:`DrillRecord`, the ``cleanup`` check, the item;
- :mod:`~tasks.drill.slot` — one drill per database (:func:`drill_slot`, a lock in the ops store);
- :mod:`~tasks.drill.sql` — every statement the drill runs on a drill server and on a restored database;
- :mod:`~tasks.drill.tasks` — the thin tasks;
- :mod:`~tasks.drill.common` — what they share (logger, check order, small helpers).
"""

from __future__ import annotations

from tasks.drill.backup import Downloaded, download_backup, select_backup
from tasks.drill.clock import DrillClock, Phase, measure
from tasks.drill.common import CHECK_ORDER, CONNECT_TIMEOUT_SECONDS
from tasks.drill.guard import Endpoint, TargetRefused, check_target, endpoint, forbidden_databases, resolve_target
from tasks.drill.leftovers import (
    LeftoverReport,
    Teardown,
    finish_target,
    keep_target,
    remove_flow_run_targets,
    remove_leftovers,
    remove_server_leftovers,
    remove_workdir_leftovers,
    teardown,
)
from tasks.drill.names import (
    DB_PREFIX,
    MARKER,
    WORKDIR_PREFIX,
    database_slug,
    is_scratch_database_of,
    safe_url,
    scratch_database_name,
    scratch_prefix,
    slot_name,
)
from tasks.drill.record import DrillRecord, DrillStopped, cleanup_check, refused_item, settle_leftovers, target_metrics
from tasks.drill.restore import MIN_RESTORE_TIMEOUT_SECONDS, Restored, restore_backup
from tasks.drill.slot import drill_slot, slot_if_free
from tasks.drill.targets import (
    STOP_TIMEOUT_SECONDS,
    Target,
    TargetPlan,
    create_target,
    drill_root,
    plan_target,
    stop_embedded,
    teardown_partial,
)
from tasks.drill.tasks import (
    check_target_task,
    create_target_task,
    download_task,
    plan_target_task,
    remove_leftovers_task,
    restore_task,
    select_backup_task,
    teardown_task,
    validate_task,
)
from tasks.drill.validate import (
    Validation,
    amcheck_verdict,
    check_tables,
    run_sql_check,
    start_amcheck,
    validate_restore,
    values_equal,
)

# Every public name of the drill, as ``from tasks.drill import X`` has always offered. Not the slot's
# SLOT_WAIT_SECONDS: drill_slot reads it in tasks.drill.slot, so patch it there.
__all__ = [
    "CHECK_ORDER",
    "CONNECT_TIMEOUT_SECONDS",
    "DB_PREFIX",
    "MARKER",
    "MIN_RESTORE_TIMEOUT_SECONDS",
    "STOP_TIMEOUT_SECONDS",
    "WORKDIR_PREFIX",
    "Downloaded",
    "DrillClock",
    "DrillRecord",
    "DrillStopped",
    "Endpoint",
    "LeftoverReport",
    "Phase",
    "Restored",
    "Target",
    "TargetPlan",
    "TargetRefused",
    "Teardown",
    "Validation",
    "amcheck_verdict",
    "check_tables",
    "check_target",
    "check_target_task",
    "cleanup_check",
    "create_target",
    "create_target_task",
    "database_slug",
    "download_backup",
    "download_task",
    "drill_root",
    "drill_slot",
    "endpoint",
    "finish_target",
    "forbidden_databases",
    "is_scratch_database_of",
    "keep_target",
    "measure",
    "plan_target",
    "plan_target_task",
    "refused_item",
    "remove_flow_run_targets",
    "remove_leftovers",
    "remove_leftovers_task",
    "remove_server_leftovers",
    "remove_workdir_leftovers",
    "resolve_target",
    "restore_backup",
    "restore_task",
    "run_sql_check",
    "safe_url",
    "scratch_database_name",
    "scratch_prefix",
    "select_backup",
    "select_backup_task",
    "settle_leftovers",
    "slot_if_free",
    "slot_name",
    "start_amcheck",
    "stop_embedded",
    "target_metrics",
    "teardown",
    "teardown_partial",
    "teardown_task",
    "validate_restore",
    "validate_task",
    "values_equal",
]
