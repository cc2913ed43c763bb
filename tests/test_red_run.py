"""SPEC §1 "A red run says why", on a real Prefect server: a failing backup set's task run is Failed with
the check in its message while the healthy set's completes, the flow run's message names the item, the
run's logs hold one ERROR line per failing check, and no record of the run holds a traceback — for
``opsflow run``, for a run of a deployment served by ``serve()``, and for one executed the way a process
worker executes it (``prefect flow-run execute``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from opsflow.cli import run
from tests.backup_samples import write_backup

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TASK_RUN_NAME = re.compile(r"[a-z_]+-[0-9a-f]{3}")
STALE_DETAIL = re.compile(r"fresh: newest backup is \d+h\d*m?\d*s? old, limit 26h")


@pytest.fixture
def red_config(tmp_path: Path, pg_url: str) -> Path:
    """Two backup sets: ``shop-db`` written an hour ago, ``stale-db`` 40 hours ago (limit 26h)."""
    now = datetime.now(UTC)
    write_backup(tmp_path / "backups" / "shop", "shop.tar", b"backup" * 100, now - timedelta(hours=1))
    write_backup(tmp_path / "backups" / "stale", "stale.tar", b"backup" * 100, now - timedelta(hours=40))
    config = tmp_path / "opsflow.yaml"
    sets = "".join(
        f"  - {{name: {name}, storage: local, prefix: {prefix}/, format: file, checksum: none, max_age: 26h}}\n"
        for name, prefix in (("shop-db", "shop"), ("stale-db", "stale"))
    )
    config.write_text(
        f"store: {{url: '{pg_url}'}}\n"
        f"storages: {{local: {{type: filesystem, path: '{tmp_path / 'backups'}'}}}}\n"
        f"backups:\n{sets}"
    )
    return config


def _subprocess_env(**extra: str) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    return {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PYTHONPATH": str(REPO),
        **extra,
    }


def _run_records(flow_run_id: str) -> tuple[Any, list[Any], list[Any]]:
    """The flow run, its task runs and its log records, as the UI reads them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return flow_run, task_runs, logs


def assert_the_red_run_says_why(flow_run_id: str) -> None:
    deadline = time.monotonic() + 20  # a subprocess's last log batch may land a moment after its state
    while True:
        flow_run, task_runs, logs = _run_records(flow_run_id)
        errors = [log.message for log in logs if log.level >= 40]
        if any(message.startswith("stale-db: fresh:") for message in errors) or time.monotonic() > deadline:
            break
        time.sleep(0.5)

    assert flow_run.state.is_failed()
    assert flow_run.state.message.startswith("1 of 2 items failed: stale-db (fresh: newest backup is")
    runs = {task_run.name: task_run for task_run in task_runs}
    assert runs["verify[shop-db]"].state.is_completed()
    stale = runs["verify[stale-db]"]
    assert stale.state.is_failed() and STALE_DETAIL.match(stale.state.message), stale.state.message
    assert stale.run_count == 1  # a finding is not retried
    assert not [name for name in runs if DEFAULT_TASK_RUN_NAME.fullmatch(name)], sorted(runs)
    assert not [name for name in runs if "config" in name or "store" in name or "save" in name]

    reasons = [message for message in errors if message.startswith("stale-db:")]
    assert len(reasons) == 1 and STALE_DETAIL.search(reasons[0]), errors  # one line per failing check
    assert not [log.message for log in logs if "Traceback" in log.message], "a finding logged a traceback"
    assert not [log.message for log in logs if "Engine execution exited" in log.message]


def test_opsflow_run(prefect_api: None, red_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run(["run", "backup-verification", "--config", str(red_config), "--json"])
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert code == 1 and document["status"] == "fail"
    assert "Traceback" not in captured.err
    assert_the_red_run_says_why(document["flow_run_id"])


def test_a_served_deployment(prefect_api: None, red_config: Path, tmp_path: Path) -> None:
    from prefect.deployments import run_deployment

    script = (
        "from flows.backup_verification import backup_verification\n"
        f"backup_verification.serve(name='red-run-served', parameters={{'config_path': {str(red_config)!r}}})\n"
    )
    log_path = tmp_path / "served.log"
    with log_path.open("w") as log:
        served = subprocess.Popen(
            [sys.executable, "-c", script],
            env=_subprocess_env(PREFECT_RUNNER_POLL_FREQUENCY="1"),
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_for_deployment("backup-verification/red-run-served", served, log_path)
            flow_run = run_deployment("backup-verification/red-run-served", timeout=120, as_subflow=False)
            deadline = time.monotonic() + 30  # the run's process writes its last lines as it ends
            while "Finished in state Failed" not in log_path.read_text() and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(1)
            output = log_path.read_text()  # what the served run printed, before the runner's own shutdown
        finally:
            served.terminate()
            served.wait(timeout=30)
    assert flow_run.state is not None and flow_run.state.is_final(), log_path.read_text()[-3000:]
    assert_the_red_run_says_why(str(flow_run.id))
    assert "stale-db: fresh:" in output, output[-3000:]
    assert "Traceback" not in output and "Engine execution exited" not in output, output[-3000:]


def test_a_worker_executed_run(prefect_api: None, red_config: Path) -> None:
    from prefect.client.orchestration import get_client

    from flows.backup_verification import backup_verification

    deployment_id = backup_verification.to_deployment(
        name="red-run-worker", parameters={"config_path": str(red_config)}
    ).apply()
    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run_from_deployment(deployment_id)
    # What a process worker runs for a flow run it picked up.
    executed = subprocess.run(
        [sys.executable, "-m", "prefect", "flow-run", "execute", str(flow_run.id)],
        env=_subprocess_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = executed.stdout + executed.stderr
    assert "stale-db" in output, output[-3000:]
    assert "Traceback" not in output and "Engine execution exited" not in output, output[-3000:]
    assert_the_red_run_says_why(str(flow_run.id))


def _wait_for_deployment(name: str, served: subprocess.Popen[bytes], log_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + 90
    with get_client(sync_client=True) as client:
        while True:
            try:
                client.read_deployment_by_name(name)
                return
            except ObjectNotFound:
                assert served.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, "the deployment was never served"
                time.sleep(0.5)


def test_the_uptime_graph_shows_which_service_is_down(
    prefect_api: None, pg_url: str, tmp_path: Path, receiver: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.conftest import free_port

    config = tmp_path / "opsflow.yaml"
    config.write_text(
        f"store: {{url: '{pg_url}'}}\n"
        "services:\n"
        f"  - {{name: web, url: '{receiver.url('/health')}', timeout: 2s}}\n"
        f"  - {{name: legacy-api, tcp: '127.0.0.1:{free_port()}', timeout: 2s}}\n"
    )
    code = run(["run", "uptime-probe", "--config", str(config), "--json"])
    document = json.loads(capsys.readouterr().out)
    assert code == 1 and {i["name"]: i["status"] for i in document["items"]} == {"web": "ok", "legacy-api": "fail"}
    flow_run, task_runs, logs = _run_records(document["flow_run_id"])
    runs = {task_run.name: task_run for task_run in task_runs}
    assert runs["probe[web]"].state.is_completed()
    down = runs["probe[legacy-api]"].state
    assert down.is_failed() and down.message.startswith("legacy-api: ConnectError: connection refused"), down.message
    assert {"write[probe-results]", "incidents[all services]"} <= set(runs)
    assert not [name for name in runs if DEFAULT_TASK_RUN_NAME.fullmatch(name)], sorted(runs)
    assert flow_run.state.message.startswith("1 of 2 items failed: legacy-api (probe: ConnectError")
    assert any(log.level >= 40 and log.message.startswith("legacy-api: probe: ConnectError") for log in logs)
