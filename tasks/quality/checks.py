"""One table's data-quality item: its profile, its Great Expectations suite, and the checks GX lacks.

:func:`check_table` profiles the table (exact row count, columns and types; a missing table is that
item's ``error``), runs its expectations in PostgreSQL through GX (:mod:`tasks.quality.gx`), and adds
``freshness:COLUMN``, ``row_count_change`` and ``schema`` from the table and this routine's own stored
history (:mod:`tasks.quality.history`). Every check carries ``unexpected_count``, ``unexpected_percent``
and ``observed_value`` (null where it has none; SPEC §5). The item's metrics hold the profile, which the
next run reads back as history, and the Data Docs page of this validation.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.states import State

from opsflow.config import QualitySuite, resolve_secret
from opsflow.embedded import home_dir
from opsflow.results import Check, Item, RoutineResult
from tasks.quality.history import (
    freshness_check,
    history_of,
    profile_metrics,
    profile_table,
    row_count_change_check,
    schema_check,
)
from tasks.retry import IO_RETRIES, PermanentFailure
from tasks.routine import item_state

#: The fields every data-quality check carries (SPEC §5), null where a check has none.
MEASURES = ("unexpected_count", "unexpected_percent", "observed_value")


def gx_home() -> Path:
    """Great Expectations' file context (suites, validation results, Data Docs): ``$OPSFLOW_HOME/gx``."""
    return home_dir() / "gx"


def expectation_checks(suite: QualitySuite, url: str, run_name: str) -> tuple[list[Check], str | None]:
    """The suite's expectations as checks, and the Data Docs page of this validation."""
    if not suite.expectations:
        return [], None
    from tasks.quality.gx import run_expectations

    run = run_expectations(suite, url, gx_home(), run_name)
    checks = [
        Check(
            check=outcome.check,
            status=outcome.status,
            detail=outcome.detail,
            observed=outcome.observed_value,
            unexpected_count=outcome.unexpected_count,
            unexpected_percent=outcome.unexpected_percent,
            observed_value=outcome.observed_value,
            sample=outcome.sample,
        )
        for outcome in run.outcomes
    ]
    return checks, run.data_docs


def with_measures(check: Check) -> Check:
    """``check`` with the three SPEC fields present (the history checks have none of GX's)."""
    extra = check.model_extra or {}
    observed = extra.get("observed_value", check.observed)
    return check.model_copy(
        update={
            "unexpected_count": extra.get("unexpected_count"),
            "unexpected_percent": extra.get("unexpected_percent"),
            "observed_value": observed,
        }
    )


def check_table(suite: QualitySuite, as_of: datetime, history: Sequence[RoutineResult], run_name: str) -> Item:
    """Profile, expectations, freshness, row-count change and schema of one configured table."""
    url = resolve_secret(suite.url)
    if url is None:
        raise PermanentFailure(f"quality {suite.name}: url is not set")
    profile = profile_table(url, suite.table)
    checks, data_docs = expectation_checks(suite, url, run_name)
    if suite.freshness is not None:
        checks.append(freshness_check(url, profile, suite.freshness, as_of))
    runs = suite.row_count_change.runs if suite.row_count_change is not None else 1
    counts, previous_columns = history_of(history, suite.name, runs, as_of, table=suite.table)
    if suite.row_count_change is not None:
        checks.append(row_count_change_check(profile.row_count, counts, suite.row_count_change))
    if suite.schema_check is not None:
        checks.append(schema_check(profile.columns, previous_columns, suite.schema_check))
    metrics: dict[str, Any] = {**profile_metrics(profile), "data_docs": data_docs}
    return Item(name=suite.name, checks=[with_measures(check) for check in checks], metrics=metrics)


# -- task -------------------------------------------------------------------------------------------


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="quality[{suite.name}]")
def quality_task(
    suite: QualitySuite, as_of: datetime, history: Sequence[RoutineResult], run_name: str
) -> Item | State[Item]:
    """Retried for connection problems only: a missing table or column, a bad URL, are permanent."""
    return item_state(check_table(suite, as_of, history, run_name))
