"""Restore: ``pg_restore`` the backup into the scratch database; a failed restore is a ``fail`` (a finding)."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from opsflow.embedded import pg_restore_command
from opsflow.redact import redact
from opsflow.results import Check
from opsflow.units import format_duration
from tasks.backups import detect_pg_dump_format
from tasks.drill.clock import Phase
from tasks.drill.common import _check, _error_line, _libpq
from tasks.drill.roles import needs_superuser
from tasks.drill.targets import Target

#: pg_restore may take long, but never forever: three times the RTO target, at least an hour.
MIN_RESTORE_TIMEOUT_SECONDS = 3600


@dataclass(frozen=True)
class Restored:
    check: Check
    phase: Phase

    @property
    def ok(self) -> bool:
        return self.check.status == "ok"


def restore_backup(target: Target, path: Path, name: str, jobs: int, timeout: float) -> Restored:
    """``pg_restore`` the archive into the scratch database as its restore role (not a superuser: SPEC §7);
    a failure is a ``fail`` with pg_restore's first error, or saying the backup needs superuser powers."""
    started = time.monotonic()
    archive_format = detect_pg_dump_format(path)
    if archive_format is None:
        check = _check("restore", "fail", f"{name}: not a pg_dump archive (custom, tar or directory)")
        return Restored(check, Phase.since("restore", started))
    parallel = jobs if archive_format in ("custom", "directory") else 1  # pg_restore -j needs a seekable format
    conninfo, env = _libpq(target.restore_url)
    command = pg_restore_command(conninfo, path, parallel)
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        detail = f"{name}: pg_restore did not finish within {format_duration(timeout)}"
        return Restored(_check("restore", "fail", detail), Phase.since("restore", started))
    phase = Phase.since("restore", started)
    if done.returncode != 0:
        denied = needs_superuser(done.stderr)
        if denied is not None:
            detail = (
                f"{name}: the backup needs superuser powers ({redact(denied)}); "
                "a drill restores as a non-superuser role"
            )
            return Restored(_check("restore", "fail", detail), phase)
        error = _error_line(done.stderr, "pg_restore", done.returncode)
        return Restored(_check("restore", "fail", f"{name}: restore failed: {error}"), phase)
    detail = (
        f"{name}: {archive_format}-format archive restored into {target.plan.scratch} "
        f"with pg_restore -j {parallel} in {format_duration(round(phase.seconds, 3))}"
    )
    return Restored(_check("restore", "ok", detail, observed=round(phase.seconds, 3)), phase)
