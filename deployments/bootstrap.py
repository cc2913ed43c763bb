"""Everything the deployments need on the Prefect server, then the deployments themselves (``opsflow deploy``).

Against ``$PREFECT_API_URL``, idempotent (a second run changes nothing):

1. :func:`bootstrap` — the work pool ``opsflow`` (type ``process``; created when missing, left as it is
   when present), the automations for the config's notification channels
   (:func:`deployments.automations.apply_automations`) (one drill per database is a lock in the ops
   store, :mod:`tasks.drill.slot`: nothing to create here);
2. :func:`deploy` — :func:`bootstrap`, then ``prefect --no-prompt deploy --all`` of ``prefect.yaml``
   rendered with the config's ``timezone`` in every schedule (a temporary copy, run from the project
   directory: entrypoints and the workers' pull step point at this checkout), every deployment's
   ``job_variables.env`` carrying ``OPSFLOW_HOME`` as an absolute path (:func:`run_environment`: the
   workers' runs share the CLI's store and spool). A deployment that exists is updated in place: same
   id, its schedules replaced.

Usage::

    opsflow deploy --config opsflow.yaml      # prints what it set up and one line per deployment

    from deployments.bootstrap import deploy
    for deployment in deploy(config, say=print):  # say: what the bootstrap set up
        print(deployment.line())
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import yaml
from prefect.exceptions import PrefectException

from deployments.runner import PREFECT_YAML, PROJECT, render_prefect_yaml
from opsflow.config import Config
from opsflow.errors import RoutineIncomplete
from opsflow.redact import redact

log = logging.getLogger(__name__)

WORK_POOL = "opsflow"
WORK_POOL_TYPE = "process"
#: ``prefect deploy`` of seven deployments takes seconds; this only stops a hung server from hanging us.
DEPLOY_TIMEOUT_SECONDS = 600


#: What a Prefect API that cannot be reached or refuses a call raises (``PrefectHTTPStatusError`` is an httpx one).
_API_ERRORS = (httpx.HTTPError, PrefectException, OSError)


class DeployFailed(RoutineIncomplete):
    """The server could not be set up or ``prefect deploy`` failed (exit 3); the message is one line."""


@dataclass(frozen=True)
class Bootstrapped:
    """What :func:`bootstrap` left on the server, as lines to print (names and ids, never a secret)."""

    lines: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Registered:
    """One deployment of ``prefect.yaml`` as the server holds it after ``prefect deploy``."""

    flow: str
    name: str
    id: UUID
    schedules: list[str]
    concurrency: str | None = None

    @property
    def full_name(self) -> str:
        return f"{self.flow}/{self.name}"

    def line(self) -> str:
        parts = [", ".join(self.schedules) or "no schedule"]
        if self.concurrency:
            parts.append(self.concurrency)
        return f"deployment {self.full_name} ({self.id}): {'; '.join(parts)}"


def bootstrap(config: Config, *, work_pool: bool = True) -> Bootstrapped:
    """Create what the deployments need on the server: the work pool (unless ``work_pool`` is false, as
    for served deployments, which need none), and the automations."""
    from deployments.automations import apply_automations

    lines = []
    try:
        if work_pool:
            lines.append(ensure_work_pool())
        lines += apply_automations(config).summary().splitlines()
    except _API_ERRORS as exc:  # the API unreachable or refusing: one line, exit 3
        raise DeployFailed(f"cannot set up the Prefect server: {_one_line(exc)}") from None
    return Bootstrapped(lines)


def ensure_work_pool(name: str = WORK_POOL) -> str:
    """Create the process work pool ``name`` (with Prefect's default job template) unless it exists."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            pass
        else:
            return f"work pool {name} ({pool.type}): exists"
        try:
            client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type=WORK_POOL_TYPE,
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                    description="opsflow routines (prefect.yaml); workers: prefect worker start --pool opsflow",
                )
            )
        except ObjectAlreadyExists:  # created meanwhile by another deploy
            return f"work pool {name} ({WORK_POOL_TYPE}): exists"
    return f"work pool {name} ({WORK_POOL_TYPE}): created"


def deploy(config: Config, path: Path = PREFECT_YAML, say: Callable[[str], None] | None = None) -> list[Registered]:
    """:func:`bootstrap` (each line of what it set up told to ``say``), then every deployment of ``path``
    registered with its schedules in the config's timezone; returns the deployments as registered.
    Raises :class:`DeployFailed`."""
    from prefect.settings import PREFECT_API_URL

    for line in bootstrap(config).lines:
        if say is not None:
            say(line)
    document = with_run_environment(render_prefect_yaml(path, config.timezone, config.digests), run_environment())
    environ = os.environ | {
        # The API this process uses, whether it came from the environment or a Prefect profile.
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")])),
        "COLUMNS": "500",  # rich wraps messages at 80 columns in a pipe; one line each, please
    }
    with tempfile.TemporaryDirectory(prefix="opsflow-deploy-") as scratch:
        rendered = Path(scratch) / "prefect.yaml"
        rendered.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        command = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all", "--prefect-file", str(rendered)]
        log.debug("running %s in %s", " ".join(command), PROJECT)
        try:
            done = subprocess.run(
                command,
                cwd=PROJECT,
                env=environ,
                capture_output=True,
                text=True,
                timeout=DEPLOY_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise DeployFailed(f"prefect deploy did not finish within {DEPLOY_TIMEOUT_SECONDS}s") from None
    if done.returncode != 0:
        reason = _last_line(done.stderr) or _last_line(done.stdout) or "no output"
        raise DeployFailed(f"prefect deploy failed (exit {done.returncode}): {redact(reason)}")
    try:
        return read_registered(document.get("deployments") or [])
    except _API_ERRORS as exc:
        raise DeployFailed(f"cannot read the deployments back: {_one_line(exc)}") from None


def run_environment() -> dict[str, str]:
    """What every run of the deployments gets in its environment: ``$OPSFLOW_HOME`` as an absolute path
    (default ``./.opsflow`` of the directory ``opsflow deploy`` runs in), so a worker's runs, whatever
    their working directory, share one embedded store and one probe spool with the CLI."""
    from opsflow.embedded import anchor_home

    return {"OPSFLOW_HOME": str(anchor_home())}


def with_run_environment(document: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """``document`` (a rendered ``prefect.yaml``) with ``env`` added to every deployment's work pool
    ``job_variables.env`` (what a worker sets for the run's process); variables set there win."""
    for entry in document.get("deployments") or []:
        work_pool = dict(entry.get("work_pool") or {})
        job_variables = dict(work_pool.get("job_variables") or {})
        job_variables["env"] = {**env, **(job_variables.get("env") or {})}
        work_pool["job_variables"] = job_variables
        entry["work_pool"] = work_pool
    return document


def read_registered(entries: Sequence[dict[str, Any]]) -> list[Registered]:
    """The deployments of ``prefect.yaml``'s ``entries`` as the server holds them."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    registered = []
    with get_client(sync_client=True) as client:
        for entry in entries:
            flow = flow_name(entry["entrypoint"])
            try:
                deployment = client.read_deployment_by_name(f"{flow}/{entry['name']}")
            except ObjectNotFound:
                raise DeployFailed(f"prefect deploy did not register {flow}/{entry['name']}") from None
            registered.append(
                Registered(
                    flow=flow,
                    name=deployment.name,
                    id=deployment.id,
                    schedules=[describe_schedule(schedule.schedule) for schedule in deployment.schedules],
                    concurrency=_describe_concurrency(deployment),
                )
            )
    return registered


def flow_name(entrypoint: str) -> str:
    """The name of the flow at ``entrypoint`` (``flows/sla_report.py:sla_report`` -> ``sla-report``)."""
    from flows.registry import OTHER_FLOWS, ROUTINES

    path, attribute = entrypoint.split(":")
    target = f"{path.removesuffix('.py').replace('/', '.')}:{attribute}"
    for name, known in {**ROUTINES, **OTHER_FLOWS}.items():
        if known == target:
            return name
    from prefect.flows import load_flow_from_entrypoint  # a flow the registry does not list

    return str(load_flow_from_entrypoint(entrypoint).name)


def describe_schedule(schedule: Any) -> str:
    """``cron 0 6 * * * (Europe/Berlin)``, ``every 60s (UTC)``."""
    timezone = getattr(schedule, "timezone", None) or "UTC"
    if getattr(schedule, "cron", None):
        return f"cron {schedule.cron} ({timezone})"
    if getattr(schedule, "interval", None) is not None:
        return f"every {schedule.interval.total_seconds():g}s ({timezone})"
    return str(schedule)


def _describe_concurrency(deployment: Any) -> str | None:
    limit = deployment.global_concurrency_limit
    if limit is None:
        return None
    options = deployment.concurrency_options
    strategy = f", {options.collision_strategy.value}" if options is not None else ""
    return f"concurrency limit {limit.limit}{strategy}"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return redact(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:500]


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""
