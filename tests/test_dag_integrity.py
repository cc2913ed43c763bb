"""Every deployment in prefect.yaml imports, is the routine it claims, and runs on a valid schedule;
every I/O task carries the one retry policy (SPEC §7)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from prefect import Flow, Task

import tasks
from flows.registry import OTHER_FLOWS, ROUTINES
from tasks.retry import retry_unless_permanent

PROJECT = Path(__file__).resolve().parent.parent
DEPLOYMENTS = yaml.safe_load((PROJECT / "prefect.yaml").read_text())["deployments"]
# Tasks deliberately without retries: a probe's result is a measurement (a failed probe is data, not an error).
NOT_RETRIED = {"probe_task"}


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
