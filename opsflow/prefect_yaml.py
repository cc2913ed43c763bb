"""``prefect.yaml`` as Prefect reads it, with the config's timezone and digest times written in.

The one reader of the project's deployments file: ``opsflow deploy`` and ``opsflow serve``
register what it renders, and ``ops-digest`` reads the schedules from it (when the Prefect
server has none registered) to tell a dead schedule from a routine that was never due.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from opsflow.config import WEEKDAYS, Digests

PROJECT = Path(__file__).resolve().parent.parent
PREFECT_YAML = PROJECT / "prefect.yaml"
#: The digest's deployments, whose times come from ``digests.daily.at`` / ``digests.weekly.day`` and ``at``.
DIGEST_FLOW = "ops-digest"


def flow_name(entry: Mapping[str, Any]) -> str:
    """The flow of a ``prefect.yaml`` entry by its entrypoint (``flows/x.py:ops_digest`` -> ``ops-digest``)."""
    return str(entry["entrypoint"]).split(":")[1].replace("_", "-")


def digest_crons(digests: Digests) -> dict[str, str]:
    """The digest deployments' cron by deployment name, at the configured times (cron counts Sunday as 0)."""
    crons: dict[str, str] = {}
    if digests.daily is not None:
        hour, minute = digests.daily.hour_minute
        crons["daily"] = f"{minute} {hour} * * *"
    if digests.weekly is not None:
        hour, minute = digests.weekly.hour_minute
        crons["weekly"] = f"{minute} {hour} * * {(WEEKDAYS.index(digests.weekly.day) + 1) % 7}"
    return crons


def render_prefect_yaml(
    path: Path = PREFECT_YAML, timezone: str | None = None, digests: Digests | None = None
) -> dict[str, Any]:
    """``path`` as Prefect reads it (anchors and merge keys resolved, ``definitions`` dropped), with every
    schedule in ``timezone`` when given (the config's: schedules run in it) and the digests' cron at the
    times ``digests`` sets, when given."""
    document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    document.pop("definitions", None)
    crons = digest_crons(digests) if digests is not None else {}
    for entry in document.get("deployments") or []:
        schedules = entry.get("schedules")
        if not schedules:
            continue
        if flow_name(entry) == DIGEST_FLOW and entry["name"] in crons:
            schedules = [{**schedule, "cron": crons[entry["name"]]} for schedule in schedules]
        if timezone is not None:
            schedules = [{**schedule, "timezone": timezone} for schedule in schedules]
        entry["schedules"] = schedules
    return document


def schedules_by_flow(
    path: Path = PREFECT_YAML, timezone: str | None = None, digests: Digests | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Every flow's schedules in ``path`` (all its deployments'), rendered as :func:`render_prefect_yaml`."""
    found: dict[str, list[dict[str, Any]]] = {}
    for entry in render_prefect_yaml(path, timezone, digests).get("deployments") or []:
        found.setdefault(flow_name(entry), []).extend(entry.get("schedules") or [])
    return found
