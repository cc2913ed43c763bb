"""What the drill's modules share: the logger, the connect timeout, the item's check order, and small helpers
(a check, an exception's first line, libpq parameters without the password, a client tool's error line)."""

from __future__ import annotations

import logging
import os
from typing import Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from opsflow.redact import redact
from opsflow.results import Check

# One logger for the whole drill, whichever module logs: its records read ``tasks.drill: ...``.
log = logging.getLogger("tasks.drill")
CONNECT_TIMEOUT_SECONDS = 10

# The item's checks in report order: SPEC §5's names, plus ``target`` (a refusal) and ``amcheck``.
CHECK_ORDER = ("target", "download", "checksum", "restore", "tables", "sql:", "amcheck", "rto", "rpo", "cleanup")


def _check(name: str, status: str, detail: str, observed: Any = None, expected: Any = None, **extra: Any) -> Check:
    return Check(check=name, status=status, detail=detail, observed=observed, expected=expected, **extra)  # type: ignore[arg-type]


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """A conninfo string without the password, and an environment carrying it (not on a command line)."""
    params = conninfo_to_dict(url)
    password = params.pop("password", None)
    env = dict(os.environ)
    if password:
        env["PGPASSWORD"] = str(password)
    return make_conninfo(**params), env


def _error_line(stderr: str, what: str, code: int) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower() or "fatal" in line.lower()]
    chosen = errors[0] if errors else (lines[-1] if lines else f"{what} exited {code}")
    return redact(chosen)
