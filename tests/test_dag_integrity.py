"""Every deployment in prefect.yaml imports, is the routine it claims, takes parameters its flow accepts,
and runs on a valid schedule in the timezone of opsflow.example.yaml; every routine has a deployment;
every I/O task carries the one retry policy (SPEC §7)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from prefect import Flow, Task
from prefect.exceptions import ParameterTypeError

import tasks
from flows.registry import OTHER_FLOWS, ROUTINES, preflight
from opsflow.config import Config, load_config
from tasks.retry import retry_unless_permanent

PROJECT = Path(__file__).resolve().parent.parent
DEPLOYMENTS = yaml.safe_load((PROJECT / "prefect.yaml").read_text())["deployments"]
# prefect.yaml's schedules carry the starter config's timezone (`opsflow deploy` and `opsflow serve` render
# the config's own); the example is read as opsflow reads any config (its ${VAR:-default}s with defaults).
EXAMPLE_TIMEZONE = load_config(PROJECT / "opsflow.example.yaml", environ={}).timezone
# What a deployment leaves to whoever starts a run, as FLOW/NAME -> a value for it: the on-demand drill's
# database is asked for by the UI's parameter form (or given by `opsflow drill NAME --remote`).
FILLED_AT_RUN_TIME: dict[str, dict[str, Any]] = {"dr-drill/on-demand": {"drill": {"database": "orders"}}}
# Tasks deliberately without retries: a probe's result is a measurement (a failed probe is data, not an error);
# a forecast is pure computation on samples already read (a retry would compute the same).
NOT_RETRIED = {"probe_task", "forecast_task"}


def test_there_are_deployments() -> None:
    assert len(DEPLOYMENTS) >= 1


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=lambda d: f"{d['entrypoint']}/{d['name']}")
def test_deployment_entrypoint_imports_a_named_flow_with_a_valid_schedule(deployment: dict) -> None:
    path, attribute = deployment["entrypoint"].split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    flow = getattr(module, attribute)
    assert isinstance(flow, Flow)
    assert flow.name in ROUTINES or flow.name in OTHER_FLOWS
    assert module.__doc__ and "Schedule" in module.__doc__, "a flow module's docstring says its schedule"
    assert deployment["work_pool"]["name"] == "opsflow"
    from prefect.client.schemas.schedules import CronSchedule

    for schedule in deployment.get("schedules", []):
        assert "cron" in schedule or "interval" in schedule
        ZoneInfo(schedule["timezone"])
        if "cron" in schedule:
            CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])  # raises on a bad expression


def _flow_of(deployment: dict[str, Any]) -> Flow:
    path, attribute = deployment["entrypoint"].split(":")
    return getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), attribute)


def test_every_deployment_has_a_name_of_its_own() -> None:
    names = [f"{_flow_of(d).name}/{d['name']}" for d in DEPLOYMENTS]
    assert len(names) == len(set(names)), names  # a second FLOW/NAME would silently replace the first
    assert set(FILLED_AT_RUN_TIME) <= set(names)


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=lambda d: f"{d['entrypoint']}/{d['name']}")
def test_deployment_parameters_validate_against_the_flows_parameter_model(deployment: dict) -> None:
    flow = _flow_of(deployment)
    name = f"{flow.name}/{deployment['name']}"
    parameters = deployment.get("parameters") or {}
    if name in FILLED_AT_RUN_TIME:
        with pytest.raises(ParameterTypeError):  # truly required: the run's form asks for it
            flow.validate_parameters(parameters)
        parameters = _merged(FILLED_AT_RUN_TIME[name], parameters)
    flow.validate_parameters(parameters)  # names, types and nested models; raises on any mismatch
    if flow.name in ROUTINES:  # and the values the routine itself checks before a run (e.g. sla-report's period)
        preflight(flow.name, Config(), parameters, datetime.now(UTC))


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merged(merged[key], value) if both else value
    return merged


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=lambda d: f"{d['entrypoint']}/{d['name']}")
def test_schedules_parse_and_run_in_the_example_configs_timezone(deployment: dict) -> None:
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

    for schedule in deployment.get("schedules", []):
        assert schedule["timezone"] == EXAMPLE_TIMEZONE, "prefect.yaml and opsflow.example.yaml disagree"
        if "cron" in schedule:
            CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
        else:
            anchor = schedule.get("anchor_date")
            IntervalSchedule(
                interval=timedelta(seconds=schedule["interval"]),
                anchor_date=datetime.fromisoformat(anchor) if anchor else datetime.now(UTC),
                timezone=schedule["timezone"],
            )


@pytest.mark.parametrize("target", [*ROUTINES.values(), *OTHER_FLOWS.values()])
def test_a_deployment_built_from_the_flow_object_finds_its_entrypoint(target: str) -> None:
    # serve() and to_deployment() derive the entrypoint from the flow object: flows made by the
    # routine template must still point at their own module.
    from prefect.deployments.runner import RunnerDeployment
    from prefect.flows import load_flow_from_entrypoint

    module, attribute = target.split(":")
    flow = getattr(importlib.import_module(module), attribute)
    entrypoint = RunnerDeployment.from_flow(flow, name="integrity").entrypoint
    assert entrypoint == f"{module.replace('.', '/')}.py:{attribute}"
    assert load_flow_from_entrypoint(entrypoint).name == flow.name


def test_every_routine_has_a_deployment() -> None:
    deployed = {d["entrypoint"] for d in DEPLOYMENTS}
    for target in [*ROUTINES.values(), *OTHER_FLOWS.values()]:
        module, attribute = target.split(":")
        assert f"{module.replace('.', '/')}.py:{attribute}" in deployed


def _all_tasks() -> list[tuple[str, Task]]:
    """Every task in ``tasks/``, its packages' modules included (``tasks/drill/``), each once (a re-export is not
    another task)."""
    found: dict[int, tuple[str, Task]] = {}
    for info in pkgutil.walk_packages(tasks.__path__, prefix="tasks."):
        module = importlib.import_module(info.name)
        for name, obj in inspect.getmembers(module):
            if isinstance(obj, Task):
                found.setdefault(id(obj), (name, obj))
    return list(found.values())


@pytest.mark.parametrize(("name", "task"), _all_tasks(), ids=lambda v: v if isinstance(v, str) else "")
def test_io_tasks_retry_with_exponential_backoff_jitter_and_a_condition(name: str, task: Task) -> None:
    if name in NOT_RETRIED:
        assert task.retries == 0
        return
    assert task.retries >= 3
    delays = task.retry_delay_seconds
    assert isinstance(delays, list) and delays[0] <= 2 and delays == sorted(delays) and delays[-1] > delays[0]
    assert task.retry_jitter_factor and task.retry_jitter_factor > 0
    assert task.retry_condition_fn is retry_unless_permanent
