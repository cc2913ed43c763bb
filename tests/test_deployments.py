"""Deployments as one system: ``opsflow deploy`` and ``opsflow serve`` on a real Prefect server.

A ``prefect server start`` of this module's own on loopback (tests/test_schedules.py's), a config in
Europe/Berlin: ``opsflow deploy`` registers every deployment of ``prefect.yaml`` with its schedules in
that timezone, and again changes nothing; a process worker of the pool runs a deployment to
completion; ``opsflow serve`` registers every deployment, and stopping it leaves the schedules active.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from deployments.runner import read_deployments, render_prefect_yaml, runner_deployments
from tests.test_schedules import _environ, _post, _stop, prefect_api, running_prefect_server

REPO = Path(__file__).resolve().parent.parent
PREFECT = (sys.executable, "-m", "prefect")
DEPLOYMENTS = render_prefect_yaml()["deployments"]
TIMEZONE = "Europe/Berlin"
EXAMPLE_CONFIG = REPO / "opsflow.example.yaml"
# Never called: the automations need a channel to exist, and a failed run's notification may go nowhere.
CONFIG = f"""
timezone: {TIMEZONE}
storages:
  local: {{type: filesystem, path: /nonexistent/backups}}
backups:
  - {{name: orders-db, storage: local, prefix: orders/}}
databases:
  - {{name: orders, backup: orders-db}}
  - {{name: Billing_DB, backup: orders-db}}
notifications:
  webhook: {{url: "http://127.0.0.1:9/opsflow-test-hook"}}
"""
AUTOMATIONS = {"opsflow: flow run failed or crashed", "opsflow: scheduled run late"}


def full_name(entry: dict[str, Any]) -> str:
    return f"{entry['entrypoint'].split(':')[1].replace('_', '-')}/{entry['name']}"


# -- without a server -------------------------------------------------------------------------------


def test_the_example_config_passes_check_config(capsys: pytest.CaptureFixture[str]) -> None:
    from opsflow.cli import run

    assert run(["check-config", "--config", str(EXAMPLE_CONFIG)]) == 0, capsys.readouterr().err


def test_rendering_puts_every_schedule_in_the_given_timezone_and_changes_nothing_else() -> None:
    plain = render_prefect_yaml()
    rendered = render_prefect_yaml(timezone="Asia/Kathmandu")
    assert "definitions" not in rendered  # anchors resolved; Prefect needs none of it
    assert [full_name(entry) for entry in rendered["deployments"]] == [full_name(entry) for entry in DEPLOYMENTS]
    for before, after in zip(plain["deployments"], rendered["deployments"], strict=True):
        assert [schedule["timezone"] for schedule in after.get("schedules", [])] == ["Asia/Kathmandu"] * len(
            before.get("schedules", [])
        )
        unzoned = [{k: v for k, v in schedule.items() if k != "timezone"} for schedule in after.get("schedules", [])]
        assert unzoned == [{k: v for k, v in s.items() if k != "timezone"} for s in before.get("schedules", [])]
        assert {k: v for k, v in after.items() if k != "schedules"} == {
            k: v for k, v in before.items() if k != "schedules"
        }


def test_the_runner_builds_each_deployment_as_prefect_yaml_says() -> None:
    built = {
        f"{deployment.flow_name}/{deployment.name}": deployment
        for deployment in runner_deployments(read_deployments(timezone=TIMEZONE))
    }
    assert set(built) == {full_name(entry) for entry in DEPLOYMENTS}
    for entry in DEPLOYMENTS:
        deployment = built[full_name(entry)]
        assert deployment.tags == entry["tags"]
        assert deployment.parameters == entry.get("parameters", {})
        assert deployment.entrypoint == entry["entrypoint"]
        schedules = [schedule.schedule for schedule in deployment.schedules]
        assert [schedule.timezone for schedule in schedules] == [TIMEZONE] * len(entry.get("schedules", []))
        for schedule, declared in zip(schedules, entry.get("schedules", []), strict=True):
            if "cron" in declared:
                assert schedule.cron == declared["cron"]
            else:
                assert schedule.interval.total_seconds() == declared["interval"]
        declared_limit = entry.get("concurrency_limit")
        if declared_limit is None:
            assert deployment.concurrency_limit is None
        else:
            assert deployment.concurrency_limit == declared_limit["limit"]
            assert deployment.concurrency_options.collision_strategy.value == declared_limit["collision_strategy"]
    assert built["uptime-probe/every-minute"].concurrency_options.collision_strategy.value == "CANCEL_NEW"


def test_deploy_and_serve_need_a_prefect_api_url(tmp_path: Path) -> None:
    config = tmp_path / "opsflow.yaml"
    config.write_text(CONFIG)
    environ = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    environ |= {"PREFECT_HOME": str(tmp_path / "prefect-home"), "PYTHONPATH": str(REPO)}
    started = [
        subprocess.Popen(
            [sys.executable, "-m", "opsflow", command, "--config", str(config)],
            env=environ,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in ("deploy", "serve")
    ]
    for process in started:
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 2, stdout + stderr
        assert len(stderr.strip().splitlines()) == 1, stderr  # one line, no traceback
        assert "PREFECT_API_URL" in stderr


def test_deploy_to_a_server_that_does_not_answer_is_one_line_and_exit_3(tmp_path: Path) -> None:
    from tests.conftest import free_port

    config = tmp_path / "opsflow.yaml"
    config.write_text(CONFIG)
    done = subprocess.run(
        [sys.executable, "-m", "opsflow", "deploy", "--config", str(config)],
        env=_environ(f"http://127.0.0.1:{free_port()}/api", tmp_path / "prefect-home"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()], done.stderr
    assert done.stderr.startswith("opsflow: cannot set up the Prefect server:"), done.stderr


# -- on a Prefect server -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    home = tmp_path_factory.mktemp("prefect-home-deployments")
    with running_prefect_server(home) as api_url:
        yield api_url, home


@pytest.fixture(scope="module")
def config_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "opsflow.yaml"
    path.write_text(CONFIG)
    return path


def opsflow(server: tuple[str, Path], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    api_url, home = server
    return subprocess.run(
        [sys.executable, "-m", "opsflow", *args],
        env=_environ(api_url, home),
        cwd=cwd,  # not the project: deploy finds prefect.yaml and the flows itself
        capture_output=True,
        text=True,
        timeout=300,
    )


def registered(api_url: str) -> dict[str, dict[str, Any]]:
    """Every deployment on the server by FLOW/NAME."""
    flows = {flow["id"]: flow["name"] for flow in _post(api_url, "/flows/filter", {})}
    return {f"{flows[d['flow_id']]}/{d['name']}": d for d in _post(api_url, "/deployments/filter", {})}


@pytest.fixture(scope="module")
def deployed(server: tuple[str, Path], config_path: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    """``opsflow deploy`` on the fresh server, and how long it took."""
    started = time.monotonic()
    done = opsflow(server, config_path.parent, "deploy", "--config", str(config_path))
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    return done, elapsed


def test_deploy_registers_every_deployment_with_its_schedules_in_the_configs_timezone(
    server: tuple[str, Path], deployed: tuple[subprocess.CompletedProcess[str], float]
) -> None:
    api_url, _ = server
    done, elapsed = deployed
    print(f"opsflow deploy on a fresh server: {elapsed:.1f}s")
    found = registered(api_url)
    assert set(found) == {full_name(entry) for entry in DEPLOYMENTS}
    lines = [line for line in done.stdout.splitlines() if line.startswith("deployment ")]
    assert len(lines) == len(DEPLOYMENTS)  # one line per registered deployment
    for entry in DEPLOYMENTS:
        deployment = found[full_name(entry)]
        assert any(line.startswith(f"deployment {full_name(entry)} ({deployment['id']})") for line in lines)
        assert deployment["work_pool_name"] == "opsflow"
        assert deployment["paused"] is False
        assert deployment["tags"] == entry["tags"]
        assert deployment["parameters"] == entry.get("parameters", {})
        schedules = deployment["schedules"]
        assert len(schedules) == len(entry.get("schedules", []))
        for schedule, declared in zip(schedules, entry.get("schedules", []), strict=True):
            assert schedule["active"] is True
            assert schedule["schedule"]["timezone"] == TIMEZONE
            if "cron" in declared:
                assert schedule["schedule"]["cron"] == declared["cron"]
            else:
                assert schedule["schedule"]["interval"] == declared["interval"]
        if "concurrency_limit" in entry:
            assert deployment["global_concurrency_limit"]["limit"] == 1
            assert deployment["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"
        else:
            assert deployment["global_concurrency_limit"] is None

    # The scheduler plans in Berlin time: 06:00 there, whatever UTC says.
    daily = found["sla-report/daily"]["id"]
    deadline = time.monotonic() + 30
    while not (planned := _scheduled(api_url, daily)):
        assert time.monotonic() < deadline, "no run of sla-report/daily was scheduled"
        time.sleep(0.5)
    local = [moment.astimezone(ZoneInfo(TIMEZONE)) for moment in planned]
    assert {(moment.hour, moment.minute) for moment in local} == {(6, 0)}

    assert [pool["type"] for pool in _post(api_url, "/work_pools/filter", {}) if pool["name"] == "opsflow"] == [
        "process"
    ]
    assert {automation["name"] for automation in _post(api_url, "/automations/filter", {})} >= AUTOMATIONS


def _scheduled(api_url: str, deployment_id: str) -> list[datetime]:
    runs = _post(
        api_url,
        "/flow_runs/filter",
        {
            "deployments": {"id": {"any_": [deployment_id]}},
            "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
            "limit": 5,
        },
    )
    return [datetime.fromisoformat(run["expected_start_time"]) for run in runs]


def test_a_second_deploy_changes_nothing(
    server: tuple[str, Path], config_path: Path, deployed: tuple[subprocess.CompletedProcess[str], float]
) -> None:
    api_url, _ = server
    before = registered(api_url)
    started = time.monotonic()
    again = opsflow(server, config_path.parent, "deploy", "--config", str(config_path))
    print(f"opsflow deploy again: {time.monotonic() - started:.1f}s")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "work pool opsflow (process): exists" in again.stdout
    after = registered(api_url)
    assert {name: d["id"] for name, d in after.items()} == {name: d["id"] for name, d in before.items()}
    for name, deployment in after.items():  # schedules replaced, not added
        assert [s["schedule"] for s in deployment["schedules"]] == [s["schedule"] for s in before[name]["schedules"]]
    assert [pool["name"] for pool in _post(api_url, "/work_pools/filter", {})].count("opsflow") == 1
    automations = [automation["name"] for automation in _post(api_url, "/automations/filter", {})]
    assert sorted(name for name in automations if name in AUTOMATIONS) == sorted(AUTOMATIONS)


def test_a_failing_prefect_deploy_is_one_line(server: tuple[str, Path], config_path: Path, tmp_path: Path) -> None:
    api_url, home = server
    broken = tmp_path / "prefect.yaml"
    entry = {"name": "x", "entrypoint": "flows/nope.py:nope", "work_pool": {"name": "opsflow"}}
    broken.write_text(yaml.safe_dump({"deployments": [entry]}))
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from deployments.bootstrap import DeployFailed, deploy\n"
        "from opsflow.config import load_config\n"
        "from opsflow.errors import RoutineIncomplete\n"
        f"try:\n    deploy(load_config({str(config_path)!r}), Path({str(broken)!r}))\n"
        "except DeployFailed as exc:\n"
        "    assert isinstance(exc, RoutineIncomplete)  # exit 3 from the command line\n"
        "    print(exc)\n"
        "    sys.exit(3)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=_environ(api_url, home), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "prefect deploy failed (exit 1): FileNotFoundError: [Errno 2] No such file or directory: 'flows/nope.py'"
    ]


def test_a_process_worker_of_the_pool_runs_a_deployment_to_completion(
    server: tuple[str, Path],
    deployed: tuple[subprocess.CompletedProcess[str], float],
    tmp_path: Path,
    pg_url: str,
) -> None:
    api_url, home = server
    config = tmp_path / "opsflow.yaml"
    config.write_text(yaml.safe_dump({"timezone": TIMEZONE, "store": {"url": pg_url}}))
    deployment = registered(api_url)["sla-report/daily"]
    # A queue of its own, so the worker takes this run only (not the uptime probes falling due meanwhile).
    flow_run = _post(
        api_url,
        f"/deployments/{deployment['id']}/create_flow_run",
        {"parameters": {"out_dir": str(tmp_path / "out")}, "work_queue_name": "smoke"},
    )
    started = time.monotonic()
    worker = subprocess.run(
        [*PREFECT, "worker", "start", "--pool", "opsflow", "--type", "process", "--work-queue", "smoke", "--run-once"],
        env=_environ(api_url, home, OPSFLOW_CONFIG=str(config)),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    print(f"worker --run-once: {time.monotonic() - started:.1f}s")
    assert worker.returncode == 0, worker.stdout + worker.stderr
    run = _get(api_url, f"/flow_runs/{flow_run['id']}")
    assert run["state"]["type"] == "COMPLETED", (run["state"], worker.stdout[-3000:], worker.stderr[-3000:])
    assert run["work_queue_name"] == "smoke"
    assert list((tmp_path / "out").iterdir())  # the report's CSV, written by the run on the worker


def _get(api_url: str, path: str) -> Any:
    return prefect_api("GET", f"{api_url}{path}")


def _serve_until(
    server: tuple[str, Path], config: Path, log_path: Path, ready: Callable[[], bool], settle: float = 0.0
) -> subprocess.Popen[bytes]:
    """``opsflow serve`` in a subprocess, sent SIGTERM once ``ready()`` (and ``settle`` seconds); ended."""
    api_url, home = server
    with log_path.open("w") as log:
        served = subprocess.Popen(
            [sys.executable, "-m", "opsflow", "serve", "--config", str(config)],
            env=_environ(api_url, home),
            cwd=config.parent,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 120
            while not ready():
                assert served.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, f"serve never got ready: {log_path.read_text()[-3000:]}"
                time.sleep(0.05)
            time.sleep(settle)
            served.send_signal(signal.SIGTERM)
            served.wait(timeout=60)
        finally:
            _stop(served)
    return served


def test_serve_registers_every_deployment_and_stopping_it_leaves_the_schedules_active(
    server: tuple[str, Path],
    deployed: tuple[subprocess.CompletedProcess[str], float],
    tmp_path: Path,
    pg_url: str,
) -> None:
    api_url, _ = server
    config = tmp_path / "opsflow.yaml"
    config.write_text(CONFIG + f"store: {{url: {pg_url!r}}}\n")

    # The worker deployments of `opsflow deploy` are not taken over half-way: one line, exit 2.
    refused = opsflow(server, tmp_path, "serve", "--config", str(config))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "registered for workers" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1

    for deployment in registered(api_url).values():
        prefect_api("DELETE", f"{api_url}/deployments/{deployment['id']}")
    assert registered(api_url) == {}

    found: dict[str, Any] = {}

    def all_registered() -> bool:
        found.update(registered(api_url))
        return len(found) >= len(DEPLOYMENTS)

    log_path = tmp_path / "serve.log"
    served = _serve_until(server, config, log_path, all_registered, settle=1.0)
    assert served.returncode == 0, log_path.read_text()[-3000:]
    assert "Traceback" not in log_path.read_text(), log_path.read_text()[-3000:]

    # Stopped before Prefect's runner has its own SIGTERM handler (still registering): the same clean stop.
    early_log = tmp_path / "serve-early.log"
    early = _serve_until(server, config, early_log, lambda: "automation" in early_log.read_text())
    assert early.returncode == 0, early_log.read_text()[-3000:]
    assert "Traceback" not in early_log.read_text(), early_log.read_text()[-3000:]

    assert set(found) == {full_name(entry) for entry in DEPLOYMENTS}
    stopped = registered(api_url)
    for entry in DEPLOYMENTS:
        deployment = stopped[full_name(entry)]
        assert deployment["work_pool_name"] is None  # served: no worker involved
        assert deployment["paused"] is False  # pause_on_shutdown=False
        assert [s["active"] for s in deployment["schedules"]] == [True] * len(entry.get("schedules", []))
        assert {s["schedule"]["timezone"] for s in deployment["schedules"]} <= {TIMEZONE}
        if "concurrency_limit" in entry:
            assert deployment["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"
