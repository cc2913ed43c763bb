"""Who made a work directory, and whether it still runs: what lets a sweep remove leftovers of processes
killed outright (SIGKILL, OOM) and never those of a process still at work. Used by the DR drill's and
the backup restore test's sweeps.

A marker records the host, the pid and the process's start time (a pid alone may be reused).
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil

#: How long a leftover PostgreSQL gets to shut down ("fast" mode) before it is killed.
STOP_TIMEOUT_SECONDS = 30


def owner_marker() -> dict[str, Any]:
    """This process, as a marker records it: ``host``, ``pid``, ``pid_started``."""
    me = psutil.Process()
    return {"host": socket.gethostname(), "pid": me.pid, "pid_started": me.create_time()}


def owner_alive(info: Mapping[str, Any]) -> bool | None:
    """Whether the process a marker names still runs; None when it ran on another host (nobody here can tell)."""
    if info.get("host") != socket.gethostname():
        return None
    try:
        process = psutil.Process(int(info.get("pid", -1)))
        return abs(process.create_time() - float(info.get("pid_started", 0))) < 1.0
    except (psutil.Error, ValueError, TypeError):
        return False


def postmaster_of(pgdata: Path) -> psutil.Process | None:
    """The running postmaster of ``pgdata``, checked by its command line (a pid may be reused)."""
    try:
        process = psutil.Process(int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0]))
        command = process.cmdline()
    except (OSError, ValueError, psutil.Error):
        return None
    return process if any(part.startswith(str(pgdata)) for part in command) else None


def stop_postmaster(pgdata: Path, timeout: float = STOP_TIMEOUT_SECONDS) -> bool:
    """Stop the PostgreSQL running from ``pgdata`` ("fast" shutdown, killed after ``timeout``); True when one
    was running."""
    process = postmaster_of(pgdata)
    if process is None:
        return False
    try:
        process.send_signal(signal.SIGINT)  # PostgreSQL's "fast" shutdown
        try:
            process.wait(timeout)
        except psutil.TimeoutExpired:
            process.kill()
            process.wait(5)
    except psutil.NoSuchProcess:
        pass  # it ended on its own meanwhile
    return True
