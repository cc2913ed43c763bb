"""Data quality — daily: are the tables we rely on complete, unique, in range, fresh, and as big as usual?

For every table of ``opsflow.yaml`` (``quality:``), one task run ``quality[NAME]`` (run concurrently):
its exact row count and columns, its Great Expectations suite (any GX expectation by its name and
kwargs, computed inside PostgreSQL through a GX SQL data source, Data Docs built under
``$OPSFLOW_HOME/gx``), and the checks GX lacks, from the table and this routine's own stored history:
``freshness:COLUMN`` against ``--as-of``, ``row_count_change`` against the median of the table's last
runs, ``schema`` (a dropped or retyped column since the last run). A table that is missing is that
item's ``error``; the other tables still run. Connection errors are retried; findings never are.

Schedule: daily at 05:30 (``prefect.yaml``). Needs: the ops store, read access to each table.
Result: stored, alerted, and published under the artifact key ``data-quality`` (with the unexpected
values GX samples, and each table's Data Docs page).

    opsflow run data-quality [--as-of 2026-11-22T05:30:00Z] [--json]
"""

# No ``from __future__ import annotations`` in a flow module: Prefect builds the flow's parameter
# model from the signature where it runs the flow (a worker, a served deployment).

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from flows._routine import Routine, RoutineRun, item_of, routine_flow
from opsflow.config import Config, expectation_problems
from opsflow.errors import UsageError
from opsflow.results import Item, RoutineResult
from reports.quality import quality_markdown
from tasks.quality.checks import quality_task
from tasks.retry import with_retries

ROUTINE_NAME = "data-quality"


def stored_history(run: RoutineRun) -> list[RoutineResult]:
    """This routine's stored results, newest first: enough of them for every table's ``row_count_change``."""
    runs = max((s.row_count_change.runs for s in run.config.quality if s.row_count_change is not None), default=1)
    # Error runs are skipped by the checks, so read a margin beyond the runs they need.
    return with_retries(lambda: run.store.results(ROUTINE_NAME, limit=2 * runs + 10), "read the stored history")


def check_every_table(run: RoutineRun) -> list[Item]:
    """One ``quality[NAME]`` task run per configured table, all at once."""
    if not run.config.quality:
        return []
    history = stored_history(run)
    run_name = f"{ROUTINE_NAME}-{run.now:%Y%m%dT%H%M%SZ}"
    futures = {suite.name: quality_task.submit(suite, run.now, history, run_name) for suite in run.config.quality}
    return [item_of(name, future, check="table") for name, future in futures.items()]


def check_expectations(config: Config, params: Mapping[str, Any], now: datetime) -> None:
    """Refuse, before a run (exit 2), expectations Great Expectations would refuse: ``opsflow check-config``
    says the same with their lines. (Loading a config never imports GX: it takes seconds.)"""
    problems = expectation_problems(config)
    if problems:
        raise UsageError("data-quality: " + "; ".join(problems))


ROUTINE = Routine(
    name=ROUTINE_NAME,
    description="Validate tables with Great Expectations, plus freshness, row-count change and schema drift.",
    work=check_every_table,
    report=quality_markdown,
    preflight=check_expectations,
)

data_quality = routine_flow(ROUTINE, __name__)
