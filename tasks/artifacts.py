"""Publish a run's rendered summary to the Prefect UI: a markdown artifact and a table, under a stable key.

A stable key per routine (``backup-verification``, ``dr-drill-orders``) makes
the UI's Artifacts page show each routine's history. What to show is rendered
by ``reports/`` (the flow's ``finish`` puts the two together). Publishing needs a Prefect API::

    publish_artifacts("backup-verification", markdown, rows, "backup-verification", "fail")
"""

from __future__ import annotations

import re
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks.retry import IO_RETRIES

_KEY = re.compile(r"^[a-z0-9-]+$")


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) from free-form parts.

    >>> artifact_key("dr-drill", "Orders_DB")
    'dr-drill-orders-db'
    """
    key = re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")
    if not _KEY.match(key):  # only when no part has a letter or digit
        raise ValueError(f"no artifact key in {parts!r}: it needs a letter or digit")
    return key


@task(**IO_RETRIES, cache_policy=NO_CACHE, task_run_name="publish[{key}]")
def publish_artifacts(key: str, markdown: str, table: list[dict[str, Any]], routine: str, status: str) -> None:
    """Create the run's markdown artifact under ``key`` and its table under ``<key>-checks``."""
    create_markdown_artifact(key=key, markdown=markdown, description=f"{routine}: {status}")
    create_table_artifact(key=f"{key}-checks", table=table, description=f"{routine} checks")
