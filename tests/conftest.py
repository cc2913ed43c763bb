"""Hermetic test harness: real servers, started by the tests on loopback.

- PostgreSQL: an embedded server for the session (or ``$OPSFLOW_TEST_PG_URL``),
  and a fresh database per test (``pg_url``, ``store``);
- S3: moto's S3 reached over HTTP by boto3 (``s3_endpoint``), with a request log and
  fault injection (``s3_server``);
- SMTP: an aiosmtpd server that keeps what it receives (``smtp_server``);
- Prefect: one session-scoped ``prefect_test_harness`` (``prefect_api``).
"""

from __future__ import annotations

import os

# Before anything imports Prefect: no telemetry (no network here), quiet logs.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import socket
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from opsflow.embedded import EmbeddedPostgres, url_with_database
from opsflow.store import OpsStore
from tests.receiver import HttpReceiver
from tests.s3_server import S3Server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- Two workers (pytest-xdist, ``--dist=loadfile`` in pyproject) ------------------

#: Files that share one worker, one after the other: each starts an ``opsflow demo`` (a dozen processes).
_SHARED_SCOPES = {"tests/test_ui.py": "tests/test_demo.py"}
#: The longest files first (measured), so that the short ones fill in behind them on both workers.
_LONGEST_FIRST = [
    "tests/test_demo.py",
    "tests/test_ui.py",
    "tests/test_dr_drill.py",
    "tests/test_deployments.py",
    "tests/test_schedules.py",
    "tests/test_home.py",
    "tests/test_backup_verification.py",
    "tests/test_uptime_probe.py",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first; within a file, the order it was written in."""
    rank = {path: index for index, path in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """A file per worker at a time, as ``--dist=loadfile``, with the demo files sharing one worker."""
    from xdist.scheduler import LoadFileScheduling

    class DemoFilesTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            return _SHARED_SCOPES.get(scope, scope)

    return DemoFilesTogether(config, log)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test touches the developer's ./.opsflow or their config and store settings."""
    monkeypatch.setenv("OPSFLOW_HOME", str(tmp_path / "opsflow-home"))
    monkeypatch.delenv("OPSFLOW_CONFIG", raising=False)
    monkeypatch.delenv("OPSFLOW_STORE_URL", raising=False)


# -- PostgreSQL ---------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """URL of the ``postgres`` database on the session's PostgreSQL server."""
    external = os.environ.get("OPSFLOW_TEST_PG_URL")
    if external:
        yield external
        return
    # Not under pytest's basetemp: a concurrent pytest run prunes old numbered
    # basetemps, and deleting a live data directory kills the server.
    server = EmbeddedPostgres.start(Path(tempfile.mkdtemp(prefix="opsflow-test-pg-")) / "data", keep_running=False)
    try:
        yield server.url("postgres")
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server_url: str) -> Iterator[str]:
    """A fresh, empty database for this test; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    try:
        yield url_with_database(pg_server_url, name)
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


@pytest.fixture
def store(pg_url: str) -> OpsStore:
    """An ops store in a fresh database, migrated."""
    ops_store = OpsStore(pg_url)
    ops_store.migrate()
    return ops_store


# -- S3 -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 over real HTTP on a loopback port, with a request log and fault injection
    (``requests_matching``, ``deny``, ``throttle``: see tests/s3_server.py)."""
    with S3Server() as server:
        yield server


@pytest.fixture(scope="session")
def s3_endpoint(s3_server: S3Server) -> str:
    """The S3 endpoint URL, e.g. ``http://127.0.0.1:40123`` (path-style addressing)."""
    return s3_server.url


@pytest.fixture
def s3_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture
def s3_client(s3_server: S3Server, s3_credentials: None) -> Iterator[object]:
    """A boto3 S3 client on the moto server; afterwards the server forgets every bucket,
    its request log and its faults."""
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server.url, region_name="us-east-1")
    try:
        yield client
    finally:
        client.close()
        s3_server.reset()


# -- SMTP -----------------------------------------------------------------------


@dataclass
class ReceivedMail:
    sender: str
    recipients: list[str]
    data: bytes


@dataclass
class SmtpServer:
    host: str
    port: int
    messages: list[ReceivedMail] = field(default_factory=list)


@pytest.fixture(scope="session")
def _smtp_session() -> Iterator[SmtpServer]:
    import logging

    from aiosmtpd.controller import Controller

    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's per-connection INFO lines
    server = SmtpServer(host="127.0.0.1", port=free_port())

    class Keep:
        async def handle_DATA(self, _server: object, _session: object, envelope: object) -> str:
            server.messages.append(
                ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), envelope.content)  # type: ignore[attr-defined]
            )
            return "250 OK"

    controller = Controller(Keep(), hostname=server.host, port=server.port)
    controller.start()
    try:
        yield server
    finally:
        controller.stop()


@pytest.fixture
def smtp_server(_smtp_session: SmtpServer) -> SmtpServer:
    """An SMTP server on loopback; ``messages`` holds what this test delivered."""
    _smtp_session.messages.clear()
    return _smtp_session


# -- Prefect ------------------------------------------------------------------


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """One Prefect test server for the whole session (flows run against it)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


# -- HTTP -----------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    """A loopback HTTP server recording every request (webhooks, Slack, PagerDuty...)."""
    with HttpReceiver() as server:
        yield server
