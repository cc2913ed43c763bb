"""SIGTERM of ``opsflow run`` stops what the CLI started (issue 13, item 19).

Without ``PREFECT_API_URL`` Prefect starts a temporary API server (uvicorn in a
subprocess, stopped at exit); a SIGTERM must not leave it orphaned.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _is_temporary_server(proc: psutil.Process) -> bool:
    try:
        cmdline = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return "uvicorn" in cmdline or "prefect server" in cmdline


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_temporary_prefect_server(pg_url: str, tmp_path: Path, signum: signal.Signals) -> None:
    config = tmp_path / "ops.yaml"
    config.write_text(f"store:\n  url: {pg_url}\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    env.pop("OPSFLOW_CONFIG", None)
    started: list[psutil.Process] = []
    stderr_path = tmp_path / "stderr.txt"
    with (
        stderr_path.open("wb") as stderr,
        subprocess.Popen(
            [sys.executable, "-m", "opsflow", "run", "sla-report", "--config", str(config)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        ) as cli,
    ):
        try:
            parent = psutil.Process(cli.pid)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and cli.poll() is None:
                children = parent.children(recursive=True)
                if any(_is_temporary_server(child) for child in children):
                    started = children
                    break
                time.sleep(0.1)
            assert started, f"no temporary Prefect server seen (exit {cli.poll()})"
            cli.send_signal(signum)
            try:
                # Not communicate(): an orphaned server would hold a pipe open.
                cli.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pytest.fail(f"opsflow run did not exit within 20 s of {signum.name}")
            err = stderr_path.read_text()
            _, alive = psutil.wait_procs(started, timeout=5)
            assert not alive, f"still running after {signum.name}: {alive}"
            assert "Traceback" not in err, err
            assert f"opsflow: stopped by {signum.name}" in err, err
            assert cli.returncode == 128 + signum, (cli.returncode, err)
        finally:
            _kill([*started, cli])


def _kill(procs: list[psutil.Process | subprocess.Popen[bytes]]) -> None:
    """Leave nothing running, whatever the test saw."""
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
            proc.kill()
