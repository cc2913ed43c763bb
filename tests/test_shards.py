"""Past one machine (issue 19): shard runs of the uptime probe spread over two workers of one pool.

Slow (a Prefect server on PostgreSQL, two workers, two flow runs: about a minute); marked ``slow``. A real
``prefect server start`` on loopback whose database is PostgreSQL (a database of its own on the
test PostgreSQL), a process work pool created here, a deployment of ``uptime_probe`` registered
with ``prefect deploy``, two ``prefect worker start --pool … --limit 1`` processes, each with an
``OPSFLOW_HOME`` of its own, and two shard runs ``shard K/2`` created with ``run_deployment``.
Every run completes; both workers ran some (each run's status page is written under the
``OPSFLOW_HOME`` of the worker that ran it, and the flow run's ``infrastructure_pid`` names a
process that worker started); every configured service has exactly one stored probe result.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings
from psycopg import sql

from opsflow.embedded import asyncpg_url, url_with_database
from opsflow.shards import shard_of
from opsflow.store import OpsStore
from tests.http_targets import HttpTarget
from tests.test_schedules import _environ, _stop, prefect_api, running_prefect_server

REPO = Path(__file__).resolve().parent.parent
PREFECT = (sys.executable, "-m", "prefect")
SHARDS = 2
SERVICES = [f"svc-{n:02d}" for n in range(16)]
POOL = "shards"

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def prefect_on_postgres(pg_server_url: str, tmp_path: Path) -> Iterator[tuple[str, Path, str]]:
    """``prefect server start`` on loopback with a PostgreSQL database of its own; (API URL, PREFECT_HOME,
    the libpq URL of that database)."""
    name = f"prefect_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    database = url_with_database(pg_server_url, name)
    home = tmp_path / "prefect-home"
    home.mkdir()
    try:
        with running_prefect_server(
            home, asyncpg_url(database), PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false"
        ) as api_url:
            yield api_url, home, database
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


def _api(api_url: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    return prefect_api(method, f"{api_url}{path}", body)


@pytest.mark.slow
def test_shard_runs_spread_over_two_workers_of_one_pool_and_probe_every_service_once(
    prefect_on_postgres: tuple[str, Path, str], pg_url: str, store: OpsStore, tmp_path: Path
) -> None:
    started = time.monotonic()
    api_url, home, prefect_database = prefect_on_postgres
    with HttpTarget() as target:
        config = tmp_path / "opsflow.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "store": {"url": pg_url},
                    "services": [{"name": n, "url": target.url(f"/{n}"), "timeout": "5s"} for n in SERVICES],
                }
            )
        )
        _api(api_url, "POST", "/work_pools/", {"name": POOL, "type": "process"})
        project = {
            "name": "opsflow-shards-test",
            "prefect-version": "3.8.8",
            "pull": [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}],
            "deployments": [
                {
                    "name": "every-minute",
                    "entrypoint": "flows/uptime_probe.py:uptime_probe",
                    "work_pool": {"name": POOL},
                    "parameters": {"config_path": str(config)},
                }
            ],
        }
        homes = [tmp_path / "worker-a", tmp_path / "worker-b"]
        workers = []
        logs = []
        for index, worker_home in enumerate(homes):
            log = (tmp_path / f"worker-{index}.log").open("w")
            logs.append(log)
            workers.append(
                subprocess.Popen(
                    [*PREFECT, "worker", "start", "--pool", POOL, "--type", "process", "--limit", "1"],
                    env=_environ(
                        api_url,
                        home,
                        OPSFLOW_HOME=str(worker_home),
                        PREFECT_WORKER_QUERY_SECONDS="1",
                        PREFECT_WORKER_PREFETCH_SECONDS="1",
                    ),
                    cwd=REPO,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        prefect_file = tmp_path / "prefect.yaml"
        prefect_file.write_text(yaml.safe_dump(project, sort_keys=False))
        # Registered while the workers start (neither needs the other).
        deploying = subprocess.Popen(
            [*PREFECT, "--no-prompt", "deploy", "--all", "--prefect-file", str(prefect_file)],
            env=_environ(api_url, home),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            output, _ = deploying.communicate(timeout=180)
            assert deploying.returncode == 0, output
            # Both workers are polling the pool before any run exists (so neither can take them all).
            pool_workers: list[Any] = []
            deadline = time.monotonic() + 90
            while len(pool_workers) < 2:
                assert time.monotonic() < deadline, "the two workers did not join the pool"
                assert all(w.poll() is None for w in workers), [p.read_text() for p in tmp_path.glob("worker-*.log")]
                time.sleep(0.5)
                pool_workers = _api(api_url, "POST", f"/work_pools/{POOL}/workers/filter", {})
            with temporary_settings({PREFECT_API_URL: api_url}):
                runs = [
                    run_deployment(
                        "uptime-probe/every-minute",
                        parameters={"shard": k, "shards": SHARDS},
                        flow_run_name=f"shard-{k}-of-{SHARDS}",
                        timeout=0,
                        as_subflow=False,
                    )
                    for k in range(1, SHARDS + 1)
                ]
            finished = wait_for(api_url, [str(run.id) for run in runs], timeout=150)
        finally:
            for worker in workers:
                _stop(worker)
            for log in logs:
                log.close()
        requests = [path.lstrip("/") for path, _ in target.requests]

    worker_logs = "\n".join(p.read_text()[-3000:] for p in tmp_path.glob("worker-*.log"))
    assert [run["state"]["type"] for run in finished] == ["COMPLETED"] * SHARDS, (finished, worker_logs)
    # Each worker ran at least one shard: its runs wrote the status page under its OPSFLOW_HOME.
    ran_on = [home for home in homes if (home / "status" / "index.html").exists()]
    assert ran_on == homes, worker_logs
    assert len({run["infrastructure_pid"] for run in finished}) == SHARDS
    # Every configured service probed exactly once, and stored exactly once.
    assert sorted(requests) == sorted(SERVICES)
    with store.connection() as conn:
        stored = dict(conn.execute("select service, count(*) from opsflow.probe_results group by service"))
        scopes = [row[0] for row in conn.execute("select scope from opsflow.routine_runs order by scope")]
    assert stored == dict.fromkeys(SERVICES, 1)
    assert scopes == [f"shard {k}/{SHARDS}" for k in range(1, SHARDS + 1)]
    assert {shard_of(n, SHARDS) for n in SERVICES} == set(range(1, SHARDS + 1))
    # The Prefect server kept its runs in its PostgreSQL database.
    with psycopg.connect(prefect_database) as conn:
        (kept,) = conn.execute("select count(*) from flow_run where name like 'shard-%%'").fetchone()  # type: ignore[misc]
    assert kept == SHARDS
    print(f"two workers, {SHARDS} shard runs: {time.monotonic() - started:.1f}s")


def wait_for(api_url: str, run_ids: list[str], timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        runs = [_api(api_url, "GET", f"/flow_runs/{run_id}") for run_id in run_ids]
        if all(
            run["state"] and run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") for run in runs
        ):
            return runs
        if time.monotonic() > deadline:
            return runs
        time.sleep(1)
