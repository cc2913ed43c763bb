"""The all-in-one runner: every deployment of ``prefect.yaml``, served by one process.

For single-machine installs without a worker (and for ``opsflow demo``): the same
``prefect.yaml`` that ``opsflow deploy`` registers for a work pool is read
here, each deployment built from its flow with the same name, schedules,
parameters, tags and concurrency limit (collision strategy included), and all
of them served by one ``serve()`` — which leaves the schedules active when it
stops (``pause_on_shutdown=False``), so stopping the runner never pauses
production. Every schedule runs in the config's ``timezone``
(:func:`render_prefect_yaml`, which ``opsflow deploy`` uses too).

    opsflow serve [--config ops.yaml]        # or: python -m deployments.runner
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsflow.prefect_yaml import PREFECT_YAML, PROJECT, render_prefect_yaml

if TYPE_CHECKING:
    from opsflow.config import Digests

__all__ = ["PREFECT_YAML", "PROJECT", "DeploymentSpec", "read_deployments", "render_prefect_yaml", "serve_all"]


@dataclass(frozen=True)
class DeploymentSpec:
    """One entry of ``prefect.yaml``'s ``deployments:``, as the runner needs it."""

    name: str
    entrypoint: str
    description: str = ""
    tags: tuple[str, ...] = ()
    parameters: Mapping[str, Any] = field(default_factory=dict)
    schedules: tuple[Mapping[str, Any], ...] = ()
    # An int, or prefect.yaml's mapping {limit, collision_strategy, grace_period_seconds}.
    concurrency_limit: int | Mapping[str, Any] | None = None

    @property
    def flow_module(self) -> str:
        return self.entrypoint.split(":")[0].removesuffix(".py").replace("/", ".")

    @property
    def flow_attribute(self) -> str:
        return self.entrypoint.split(":")[1]


def read_deployments(
    path: Path = PREFECT_YAML, timezone: str | None = None, digests: Digests | None = None
) -> list[DeploymentSpec]:
    """Every deployment of ``path`` (anchors and merge keys resolved), schedules in ``timezone`` and the
    digests at ``digests``' times when given."""
    document = render_prefect_yaml(path, timezone, digests)
    specs = []
    for entry in document.get("deployments") or []:
        specs.append(
            DeploymentSpec(
                name=entry["name"],
                entrypoint=entry["entrypoint"],
                description=entry.get("description") or "",
                tags=tuple(entry.get("tags") or ()),
                parameters=dict(entry.get("parameters") or {}),
                schedules=tuple(entry.get("schedules") or ()),
                concurrency_limit=entry.get("concurrency_limit"),
            )
        )
    return specs


def prefect_schedules(spec: DeploymentSpec) -> list[Any]:
    """The spec's schedules as Prefect schedule objects (cron or interval, with their timezone, and the
    schedule's own ``parameters``, ``slug`` and ``active`` when given)."""
    from prefect.schedules import Cron, Interval

    built = []
    for schedule in spec.schedules:
        timezone = schedule.get("timezone")
        # Per-schedule parameters (N sharded schedules of one deployment) and slug, as `prefect deploy` takes them.
        extra: dict[str, Any] = {
            key: schedule[key] for key in ("parameters", "slug", "active") if schedule.get(key) is not None
        }
        if "parameters" in extra:
            extra["parameters"] = dict(extra["parameters"])
        if "cron" in schedule:
            built.append(Cron(schedule["cron"], timezone=timezone, **extra))
        else:
            anchor = schedule.get("anchor_date")
            built.append(
                Interval(
                    timedelta(seconds=float(schedule["interval"])),
                    anchor_date=datetime.fromisoformat(anchor) if isinstance(anchor, str) else anchor,
                    timezone=timezone,
                    **extra,
                )
            )
    return built


def concurrency_limit(spec: DeploymentSpec) -> Any:
    """The spec's concurrency limit as ``to_deployment`` takes it: an int, or a ``ConcurrencyLimitConfig``
    carrying the collision strategy (``CANCEL_NEW``: a run due while one is running is cancelled)."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig

    limit = spec.concurrency_limit
    if isinstance(limit, Mapping):
        return ConcurrencyLimitConfig(**{key: value for key, value in limit.items() if value is not None})
    return limit


def runner_deployments(specs: Sequence[DeploymentSpec]) -> list[Any]:
    """Each spec as a deployment of its flow, ready to serve."""
    import importlib

    deployments = []
    for spec in specs:
        flow = getattr(importlib.import_module(spec.flow_module), spec.flow_attribute)
        deployments.append(
            flow.to_deployment(
                name=spec.name,
                description=spec.description,
                tags=list(spec.tags),
                parameters=dict(spec.parameters),
                schedules=prefect_schedules(spec),
                concurrency_limit=concurrency_limit(spec),
            )
        )
    return deployments


def serve_all(
    path: Path = PREFECT_YAML,
    config: Path | None = None,
    *,
    timezone: str | None = None,
    prepare: Callable[[], None] | None = None,
) -> None:
    """Serve every deployment of ``path`` until interrupted; schedules stay active afterwards.

    Runs read ``config`` (through ``$OPSFLOW_CONFIG``, which the runs it starts inherit) when given.
    Schedules run in ``timezone``, by default the ``timezone`` of that config (or of ``$OPSFLOW_CONFIG``,
    else ``./opsflow.yaml``; UTC without one). Runs start in the project directory (this process
    changes into it) with ``$OPSFLOW_HOME`` made absolute first (:func:`serve_environment`), so they
    keep the store and spool of the directory ``opsflow serve`` was started in. ``prepare`` is called
    once nothing stands in the way, just before serving (``opsflow serve``: the automations and drill
    limits).
    """
    from prefect import serve

    from opsflow.config import load_config

    path_of_config = serve_environment(config)
    loaded = load_config(path_of_config, missing_ok=config is None)
    deployments = runner_deployments(read_deployments(path, timezone or loaded.timezone, loaded.digests))
    refuse_worker_deployments(deployments)
    if prepare is not None:
        prepare()
    with warnings.catch_warnings():
        # Prefect 3.8.8's SIGTERM handler calls the async Runner.stop() without awaiting it (the runner stops
        # all the same, through sys.exit); its "never awaited" RuntimeWarning is noise on every stop.
        warnings.filterwarnings("ignore", message="coroutine 'Runner.astop' was never awaited", category=RuntimeWarning)
        serve(*deployments, pause_on_shutdown=False)


def serve_environment(config: Path | None = None) -> Path:
    """Set up this process as the runs it serves inherit it; return the config's path.

    ``$OPSFLOW_CONFIG`` and ``$OPSFLOW_HOME`` (default ``./.opsflow``) become absolute paths, read
    against the working directory ``opsflow serve`` started in, then this process changes into the
    project directory: runs start there, as on a worker (whose pull step goes there), the entrypoints
    read as in ``prefect.yaml``, and every run uses the one store and spool whatever the directory.
    """
    import os

    from opsflow.config import default_config_path
    from opsflow.embedded import anchor_home

    path_of_config = config if config is not None else default_config_path(None, os.environ)
    if config is not None or path_of_config.exists():  # absolute: runs start elsewhere (below)
        os.environ["OPSFLOW_CONFIG"] = str(path_of_config.resolve())
    path_of_config = path_of_config.resolve()
    anchor_home()
    os.chdir(PROJECT)
    return path_of_config


def refuse_worker_deployments(deployments: Sequence[Any]) -> None:
    """Refuse (``UsageError``) to serve deployments registered for a work pool (``opsflow deploy``).

    Serving one would take it over half-way: the server keeps its work pool and drops its code location,
    so a worker and this runner would both claim its runs, and this runner's would crash loading the flow.
    """
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound, PrefectException

    from opsflow.errors import RoutineIncomplete, UsageError

    taken: list[str] = []
    try:
        with get_client(sync_client=True) as client:
            for deployment in deployments:
                full_name = f"{deployment.flow_name}/{deployment.name}"
                try:
                    existing = client.read_deployment_by_name(full_name)
                except ObjectNotFound:
                    continue
                if existing.work_pool_name:
                    taken.append(f"{full_name} (work pool {existing.work_pool_name})")
    except (httpx.HTTPError, PrefectException, OSError) as exc:
        raise RoutineIncomplete(f"cannot reach the Prefect server: {type(exc).__name__}: {exc}") from None
    if taken:
        raise UsageError(
            f"{', '.join(taken)}: registered for workers (opsflow deploy); delete "
            f"{'it' if len(taken) == 1 else 'them'} (prefect deployment delete FLOW/NAME) to serve from here instead"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deployments.runner", description=__doc__.splitlines()[0])
    parser.add_argument("--config", metavar="PATH", help="opsflow.yaml handed to every run (config_path)")
    args = parser.parse_args(argv)
    from opsflow.config import ConfigError
    from opsflow.errors import RoutineIncomplete, UsageError

    try:
        serve_all(config=Path(args.config) if args.config else None)
    except (ConfigError, UsageError) as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None
    except RoutineIncomplete as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(3) from None


if __name__ == "__main__":
    main()
