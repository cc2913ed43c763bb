"""Schedules really fire, on the pinned Prefect server (sqlalchemy 2.1 once made its scheduler
silently create no runs; fastapi 0.151-0.154 made ``prefect deploy`` fail with a 422).

A real ``prefect server start`` (its own SQLite database, scheduler loop at 1 s),
``prefect deploy --all`` of this project's ``prefect.yaml``, and a served routine
with a cron schedule that must run on its own at the next minute.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import free_port

REPO = Path(__file__).resolve().parent.parent
DEPLOYMENTS = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]


def _environ(api_url: str, home: Path, **extra: str) -> dict[str, str]:
    environ = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    return environ | {
        "PREFECT_API_URL": api_url,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PYTHONPATH": str(REPO),
        **extra,
    }


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A Prefect server of its own (API URL, PREFECT_HOME), scheduling every second."""
    home = tmp_path_factory.mktemp("prefect-home")
    with running_prefect_server(home) as api_url:
        yield api_url, home


@contextlib.contextmanager
def running_prefect_server(home: Path, database_url: str | None = None, **settings: str) -> Iterator[str]:
    """``prefect server start`` on a free loopback port with its own SQLite database under ``home`` (also its
    PREFECT_HOME) or the database at ``database_url`` (SQLAlchemy's form), scheduling every second unless
    ``settings`` say otherwise; yields its API URL (tests/test_deployments.py and tests/test_shards.py too)."""
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    environ = _environ(
        api_url,
        home,
        **{
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": database_url or f"sqlite+aiosqlite:///{home / 'prefect.db'}",
            "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "1",
            "PREFECT_UI_ENABLED": "false",
            **settings,
        },
    )
    log = (home / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=environ,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (home / "server.log").read_text()
            try:
                if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the Prefect server did not start"
            time.sleep(0.5)
        yield api_url
    finally:
        _stop(server)
        log.close()


def _stop(process: subprocess.Popen[Any]) -> None:
    """Terminate ``process`` and wait for it; kill it if it lingers."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# What Prefect's own client retries (prefect.client.base): a busy SQLite-backed server answers 503.
_RETRIED_STATUSES = {429, 502, 503}


def prefect_api(method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    """``method`` on a Prefect API ``url``, retried as Prefect's client retries (and on a time-out: a
    server busy with a burst of first runs may take longer than one read); its JSON (None if empty)."""
    attempts = 6
    for attempt in range(attempts):
        try:
            response = httpx.request(method, url, json=body, timeout=30)
        except httpx.TimeoutException:
            if attempt == attempts - 1:
                raise
        else:
            if response.status_code not in _RETRIED_STATUSES or attempt == attempts - 1:
                break
        time.sleep(0.5 * 2**attempt)
    response.raise_for_status()
    return response.json() if response.content else None


def _post(api_url: str, path: str, body: dict[str, Any]) -> Any:
    return prefect_api("POST", f"{api_url}{path}", body)


def _scheduled_runs(api_url: str, deployment_id: str) -> list[datetime]:
    runs = _post(
        api_url,
        "/flow_runs/filter",
        {
            "deployments": {"id": {"any_": [deployment_id]}},
            "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
            "sort": "EXPECTED_START_TIME_ASC",
            "limit": 10,
        },
    )
    return [datetime.fromisoformat(run["expected_start_time"]) for run in runs]


def _prefect(api_url: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        env=_environ(api_url, home),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_prefect_deploy_registers_every_deployment_and_the_scheduler_plans_their_runs(
    prefect_server: tuple[str, Path],
) -> None:
    api_url, home = prefect_server
    created = _prefect(api_url, home, "work-pool", "create", "opsflow", "--type", "process")
    assert created.returncode == 0, created.stdout + created.stderr
    deployed = _prefect(api_url, home, "--no-prompt", "deploy", "--all")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr

    registered = {
        f"{flow_names[d['flow_id']]}/{d['name']}": d
        for flow_names in [{f["id"]: f["name"] for f in _post(api_url, "/flows/filter", {})}]
        for d in _post(api_url, "/deployments/filter", {})
    }
    assert len(registered) == len(DEPLOYMENTS)
    for entry in DEPLOYMENTS:
        flow_name = entry["entrypoint"].split(":")[1].replace("_", "-")
        deployment = registered[f"{flow_name}/{entry['name']}"]
        assert deployment["work_pool_name"] == "opsflow"
        if "concurrency_limit" in entry:  # prefect.yaml's {limit, collision_strategy}, as Prefect 3.8.8 reads it
            assert deployment["global_concurrency_limit"]["limit"] == entry["concurrency_limit"]["limit"]
            strategy = entry["concurrency_limit"]["collision_strategy"]
            assert deployment["concurrency_options"]["collision_strategy"] == strategy
        deadline = time.monotonic() + 30
        while len(times := _scheduled_runs(api_url, deployment["id"])) < (3 if entry.get("schedules") else 0):
            assert time.monotonic() < deadline, f"no runs scheduled for {flow_name}/{entry['name']}"
            time.sleep(0.5)
        now = datetime.now(UTC)
        if not entry.get("schedules"):
            assert times == []  # on demand only
            continue
        [schedule] = entry["schedules"]
        assert all(t > now - timedelta(minutes=2) for t in times)
        if "interval" in schedule:
            assert {b - a for a, b in itertools.pairwise(times)} == {timedelta(seconds=schedule["interval"])}
        else:
            minute, hour, day, _, weekday = schedule["cron"].split()
            for moment in times:  # the cron's fields hold for every planned run (all in UTC here)
                assert schedule["timezone"] == "UTC"
                assert moment.minute == int(minute) and moment.second == 0
                assert hour == "*" or moment.hour == int(hour)
                assert day == "*" or moment.day == int(day)
                assert weekday == "*" or moment.isoweekday() % 7 == int(weekday)


def test_a_cron_schedule_fires_the_routine_on_its_own(
    prefect_server: tuple[str, Path], tmp_path: Path, pg_url: str
) -> None:
    api_url, home = prefect_server
    config = tmp_path / "opsflow.yaml"
    config.write_text("timezone: UTC\n")
    script = (
        "from flows.sla_report import sla_report\n"
        "sla_report.serve(name='cron-smoke', cron='* * * * *', "
        f"parameters={{'period': 'day', 'config_path': {str(config)!r}, 'out_dir': {str(tmp_path / 'out')!r}}})\n"
    )
    log_path = tmp_path / "served.log"
    with log_path.open("w") as log:
        served = subprocess.Popen(
            [sys.executable, "-c", script],
            env=_environ(api_url, home, PREFECT_RUNNER_POLL_FREQUENCY="1", OPSFLOW_STORE_URL=pg_url),
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            run = _first_finished_run(api_url, "cron-smoke", served, deadline=time.monotonic() + 150)
        finally:
            _stop(served)
    assert run is not None, f"the cron schedule never fired a run:\n{log_path.read_text()[-3000:]}"
    assert run["state"]["type"] == "COMPLETED", run["state"]["message"]
    planned = datetime.fromisoformat(run["expected_start_time"])
    assert planned.second == 0 and planned.microsecond == 0  # on the minute, as the cron says
    assert run["auto_scheduled"] is True  # created by the scheduler, not by hand
    started = datetime.fromisoformat(run["start_time"])
    assert abs(started - planned) < timedelta(seconds=30)  # the runner may start a run a moment early


def _first_finished_run(
    api_url: str, deployment: str, served: subprocess.Popen[bytes], deadline: float
) -> dict[str, Any] | None:
    """The first run of ``deployment`` to reach a final state, or None at ``deadline`` or if ``served`` exits."""
    while served.poll() is None and time.monotonic() < deadline:
        runs = _post(
            api_url,
            "/flow_runs/filter",
            {
                "deployments": {"name": {"any_": [deployment]}},
                "flow_runs": {"state": {"type": {"any_": ["COMPLETED", "FAILED", "CRASHED"]}}},
                "limit": 1,
            },
        )
        if runs:
            return runs[0]  # type: ignore[no-any-return]
        time.sleep(1)
    return None


@pytest.mark.parametrize("entrypoint", sorted({d["entrypoint"] for d in DEPLOYMENTS}), ids=lambda e: e.split(":")[0])
def test_flow_modules_keep_their_annotations_resolvable(entrypoint: str) -> None:
    # The run above fails with "PeriodParam is not fully defined" under postponed annotations: a
    # deployment's runner rebuilds the parameter model where the names are not in scope.
    lines = (REPO / entrypoint.split(":")[0]).read_text().splitlines()
    assert "from __future__ import annotations" not in [line.strip() for line in lines]
