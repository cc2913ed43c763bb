"""``opsflow demo`` (SPEC §3), for real: a Prefect server, PostgreSQL, S3, HTTP and SMTP on loopback,
every routine served and run once, then everything stopped.

- ``--once`` finishes in under three minutes with exit 0, names the UI and the ``export`` line, shows the
  backup verification red (the stale set) and every uptime and SLA run final, and leaves nothing running;
- without ``--once`` the schedules go on until SIGINT, which stops everything: tested in tests/test_ui.py on
  the serving demo its browser tests look at (one demo start fewer in the suite).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from deployments.demo import claim_ui_ports
from deployments.demo_services import MARKER, stop_marked

REPO = Path(__file__).resolve().parent.parent
FINAL = {"Completed", "Failed", "Cancelled", "Crashed"}
FINAL_TYPES = ["COMPLETED", "FAILED", "CRASHED", "CANCELLED"]


def _environ(home: Path) -> dict[str, str]:
    environ = {name: value for name, value in os.environ.items() if not name.startswith(("PREFECT_", "OPSFLOW_"))}
    return environ | {"OPSFLOW_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "COLUMNS": "200"}


def _demo_processes(home: Path) -> list[str]:
    """Processes (other than this one) whose command line or demo marker names ``home``."""
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            cmdline = " ".join(proc.cmdline())
            marked = proc.environ().get(MARKER, "")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
        if str(home) in cmdline or marked.startswith(str(home)):
            found.append(f"{proc.pid}: {cmdline[:200]}")
    return found


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _ports(output: str) -> dict[str, int]:
    """The UI's and the S3 endpoint's ports, as the demo printed them."""
    ui = re.search(r"The Prefect UI: http://127\.0\.0\.1:(\d+)", output)
    s3 = re.search(r"S3 endpoint http://127\.0\.0\.1:(\d+)", output)
    assert ui is not None, output[-3000:]
    assert s3 is not None, output[-3000:]
    return {"ui": int(ui[1]), "s3": int(s3[1])}


def _assert_nothing_left(home: Path, ports: dict[str, int]) -> None:
    deadline = time.monotonic() + 10  # a process the demo stopped may take a moment to be reaped
    while (left := _demo_processes(home)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert left == [], "still running after the demo:\n" + "\n".join(left)
    for name, port in ports.items():
        assert not _listening(port), f"the demo's {name} port {port} still answers"


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """A fresh OPSFLOW_HOME; whatever a failed test leaves running there is stopped afterwards."""
    home = tmp_path / "home"
    try:
        yield home
    finally:
        stop_marked(home / "demo")


def test_demo_once_runs_every_routine_and_stops_everything(home: Path) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "opsflow", "demo", "--once"],
        cwd=REPO,
        env=_environ(home),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    took = time.monotonic() - started
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:]
    assert took < 180, f"opsflow demo --once took {took:.0f}s"

    ports = _ports(output)
    ui = f"http://127.0.0.1:{ports['ui']}"
    assert f"The Prefect UI: {ui}" in done.stdout
    assert f"export PREFECT_API_URL={ui}/api" in done.stdout
    assert re.search(rf"the red run\s+{ui}/runs/flow-run/[0-9a-f-]{{36}}\s+\(backup-verification/daily\)", done.stdout)

    runs = done.stdout.split("\nRuns:\n", 1)[1]
    states = dict(re.findall(r"^  (\S+/\S+)\s+(\w+)", runs, re.MULTILINE))
    assert states["backup-verification/daily"] == "Failed", runs
    assert "crm-db (fresh: newest backup is" in runs  # the red run says why
    assert states["uptime-probe/every-minute"] in FINAL, runs
    for name in ("sla-report/daily", "sla-report/weekly", "sla-report/monthly"):
        assert states[name] in FINAL, runs
    assert states["dr-drill/on-demand"] == "Completed", runs  # the healthy backups restore
    assert "dr-drill/monthly" not in states, runs  # a second drill of shop would only wait for the first's slot
    for name in ("ops-digest/daily", "ops-digest/weekly"):
        assert states[name] in FINAL, runs
    assert "Crashed" not in states.values(), runs
    page = home / "demo" / "status" / "index.html"
    assert f"file://{page}" in done.stdout and "backup-verification" in page.read_text()
    mails = [path.read_text(errors="replace") for path in (home / "demo" / "mail").glob("*.eml")]
    assert any("ops digest" in mail.lower() and "ops-leads@example.com" in mail for mail in mails)
    _assert_nothing_left(home, ports)
    assert (home / "demo" / "opsflow.yaml").is_file()  # the demo's data stays for a look afterwards
    # The Prefect server's database is the embedded PostgreSQL: on SQLite, a dozen first runs writing at
    # once stalled API calls for a minute each ("database is locked").
    assert not list((home / "demo" / "prefect").rglob("*.db")), "the demo's Prefect server used SQLite"


def test_a_second_demo_takes_its_ui_port_only_after_the_first_ones_server_has_it(tmp_path: Path) -> None:
    """Two demos started at once both found 4200 free, and the second talked to the first one's server."""
    lock = tmp_path / "ports.lock"
    said: list[str] = []
    order: list[str] = []

    def second_demo() -> None:
        with claim_ui_ports(said.append, lock):
            order.append("second chooses")

    with claim_ui_ports(said.append, lock):
        second = threading.Thread(target=second_demo)
        second.start()
        time.sleep(0.5)
        order.append("first's server answers")
    second.join(timeout=10)
    assert order == ["first's server answers", "second chooses"]
    assert said == ["another demo is taking its UI port: waiting for its Prefect server to start"]
