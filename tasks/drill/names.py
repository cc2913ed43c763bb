"""Names: what a drill calls what it creates (scratch databases, work directories and their marker file,
concurrency slots), and :func:`safe_url`, a URL without its password."""

from __future__ import annotations

import re
from datetime import UTC, datetime

DB_PREFIX = "opsflow_drill_"
WORKDIR_PREFIX = "opsflow-drill-"
MARKER = "opsflow-drill.json"
_STAMP = "%Y%m%d%H%M%S"
_MAX_IDENTIFIER = 63


def database_slug(name: str) -> str:
    """``name`` as a fragment of a PostgreSQL identifier (lowercase letters, digits, ``_``).

    >>> database_slug("Orders-DB")
    'orders_db'
    """
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "db"
    return slug[: _MAX_IDENTIFIER - len(DB_PREFIX) - 1 - len("20261122060000")]


def scratch_prefix(name: str) -> str:
    return f"{DB_PREFIX}{database_slug(name)}_"


def scratch_database_name(name: str, at: datetime) -> str:
    """``opsflow_drill_<db>_<yyyymmddhhmmss>`` (UTC): the database a drill restores into.

    >>> scratch_database_name("orders", datetime(2026, 11, 22, 6, tzinfo=UTC))
    'opsflow_drill_orders_20261122060000'
    """
    return scratch_prefix(name) + at.astimezone(UTC).strftime(_STAMP)


def is_scratch_database_of(datname: str, name: str) -> bool:
    """Whether ``datname`` is a scratch database of ``name`` (``orders``, not ``orders_eu``)."""
    return re.fullmatch(re.escape(scratch_prefix(name)) + r"\d{14}", datname) is not None


def slot_name(name: str) -> str:
    """The Prefect global concurrency limit that lets one drill of ``name`` run at a time.

    >>> slot_name("Orders_DB")
    'dr-drill-orders-db'
    """
    return "dr-drill-" + (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "db")


def safe_url(url: str) -> str:
    """``url`` without its password (what ``--keep`` prints: how to connect, never the secret).

    >>> safe_url("postgresql://postgres:@/scratch?host=/tmp/x")
    'postgresql://postgres@/scratch?host=/tmp/x'
    >>> safe_url("postgresql://ops:pw@db:5432/x")
    'postgresql://ops@db:5432/x'
    """
    return re.sub(r"^([a-z]+://[^/@:?#]*):[^/@?#]*@", r"\1@", url)
