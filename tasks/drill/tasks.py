"""Tasks: the drill's steps as thin Prefect tasks, each with the one I/O retry policy and no cache."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.states import State

from opsflow.config import BackupSet, Config, Database, Drill, Storage
from tasks.drill.backup import Downloaded, download_backup, select_backup
from tasks.drill.guard import check_target, forbidden_databases, resolve_target
from tasks.drill.leftovers import LeftoverReport, Teardown, finish_target, remove_leftovers
from tasks.drill.restore import MIN_RESTORE_TIMEOUT_SECONDS, Restored, restore_backup
from tasks.drill.targets import Target, TargetPlan, create_target, plan_target, teardown_partial
from tasks.drill.validate import Validation, validate_restore
from tasks.retry import IO_RETRIES
from tasks.routine import finding_state
from tasks.storage import StoredObject


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


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="restore[{target.plan.scratch}]")
def restore_task(target: Target, path: Path, name: str, jobs: int, rto_target: float) -> Restored | State[Restored]:
    # A failed pg_restore is a finding (Failed, never retried into a half-filled database), not an exception.
    restored = restore_backup(target, path, name, jobs, timeout=max(MIN_RESTORE_TIMEOUT_SECONDS, 3 * rto_target))
    return finding_state(restored, [] if restored.ok else [f"restore: {restored.check.detail}"])


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="validate[{target.plan.scratch}]")
def validate_task(target: Target, drill: Drill) -> Validation | State[Validation]:
    validation = validate_restore(target, drill)
    failing = [c for c in validation.checks if c.status in ("fail", "error")]
    return finding_state(validation, [f"{c.check}: {c.detail}" for c in failing])


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="teardown[{plan.scratch}]")
def teardown_task(plan: TargetPlan, keep: bool) -> Teardown:
    return finish_target(plan, keep)
