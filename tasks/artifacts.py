"""Publish a routine's result to the Prefect UI: a markdown summary and a table, under a stable key.

A stable key per routine (``backup-verification``, ``dr-drill-orders``) makes
the UI's Artifacts page show each routine's history.

>>> publish_result(result, key="backup-verification", deliveries=report.deliveries)  # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from opsflow.results import RoutineResult
from reports.summary import DeliveryLike, checks_table, deliveries_markdown, summary_markdown
from tasks.retry import IO_RETRIES

_KEY = re.compile(r"^[a-z0-9-]+$")


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) from free-form parts.

    >>> artifact_key("dr-drill", "Orders_DB")
    'dr-drill-orders-db'
    """
    key = re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")
    assert _KEY.match(key), key
    return key


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="publish[{key}]")
def publish_result(
    result: RoutineResult, key: str, deliveries: Sequence[DeliveryLike] = (), report: str | None = None
) -> None:
    """Create the run's summary (markdown) and checks (table) artifacts.

    ``report`` replaces the generic summary with a routine's own (the drill report); the
    alerts section is appended either way.
    """
    markdown = summary_markdown(result, deliveries) if report is None else report + deliveries_markdown(deliveries)
    create_markdown_artifact(key=key, markdown=markdown, description=f"{result.routine}: {result.status}")
    create_table_artifact(key=f"{key}-checks", table=checks_table(result), description=f"{result.routine} checks")
