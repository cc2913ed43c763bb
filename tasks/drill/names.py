"""Names: what a drill calls what it creates (scratch databases, work directories and their marker file,
concurrency slots), and :func:`safe_url`, a URL without its password."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from urllib.parse import parse_qsl, quote, urlencode

from psycopg.conninfo import conninfo_to_dict, make_conninfo

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

    Made of the same (truncated) slug as the scratch databases: two databases whose scratch databases
    would share a name share the slot, so they never drill at once.

    >>> slot_name("Orders_DB")
    'dr-drill-orders-db'
    >>> slot_name("x" * 40 + "-eu") == slot_name("x" * 40 + "-us")
    True
    """
    return "dr-drill-" + database_slug(name).replace("_", "-")


# Query parameters a scratch URL drops: they would name another database than the scratch one (SPEC §7).
_REDIRECTING = frozenset({"dbname"})
_SECRET = frozenset({"password"})


def _split_url(url: str) -> tuple[str, str, list[tuple[str, str]]] | None:
    """A libpq URL as (``scheme://authority``, path, query parameters decoded); None for key=value conninfo."""
    match = re.match(r"^(postgres(?:ql)?://)(.*)$", url, re.IGNORECASE | re.DOTALL)
    if match is None:
        return None
    rest, _, query = match.group(2).partition("?")
    # The authority ends at the first "/" after the userinfo's last "@" (a password may hold "/" or "@").
    at = rest.rfind("@")
    slash = rest.find("/", at + 1)
    authority, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    return match.group(1) + authority, path, parse_qsl(query.split("#", 1)[0], keep_blank_values=True)


def _join_url(head: str, path: str, params: list[tuple[str, str]]) -> str:
    query = urlencode(params, quote_via=quote, safe="/")
    return head + path + (f"?{query}" if query else "")


def scratch_url(server_url: str, database: str) -> str:
    """``server_url`` (a drill server's maintenance URL) pointing at exactly ``database``: libpq's ``dbname``
    query parameter (which would win over the path) is dropped, a key=value conninfo gets ``dbname`` set.

    >>> scratch_url("postgresql://ops@db/postgres?dbname=victim&sslmode=require", "scratch")
    'postgresql://ops@db/scratch?sslmode=require'
    >>> scratch_url("host=db dbname=victim", "scratch")
    'dbname=scratch host=db'
    """
    parts = _split_url(server_url)
    if parts is None:
        return make_conninfo(server_url, dbname=database)
    head, _, params = parts
    kept = [(key, value) for key, value in params if key not in _REDIRECTING]
    return _join_url(head, "/" + quote(database, safe=""), kept)


def safe_url(url: str) -> str:
    """``url`` without its password, in the userinfo or a ``password=`` parameter (what ``--keep`` prints:
    how to connect, never the secret).

    >>> safe_url("postgresql://postgres:@/scratch?host=/tmp/x")
    'postgresql://postgres@/scratch?host=/tmp/x'
    >>> safe_url("postgresql://ops:pw@db:5432/x")
    'postgresql://ops@db:5432/x'
    >>> safe_url("postgresql://ops@db/x?password=s3cret&sslmode=require")
    'postgresql://ops@db/x?sslmode=require'
    >>> safe_url("host=db password=s3cret dbname=x")
    'dbname=x host=db'
    """
    parts = _split_url(url)
    if parts is None:
        try:
            params = conninfo_to_dict(url)
        except Exception:  # not parseable: never echoed
            return "(a connection string that cannot be parsed)"
        return make_conninfo(**{key: value for key, value in params.items() if key not in _SECRET})
    head, path, query = parts
    scheme, _, authority = head.partition("://")
    userinfo, at, hosts = authority.rpartition("@")
    if at:
        authority = f"{userinfo.split(':', 1)[0]}@{hosts}"
    return _join_url(f"{scheme}://{authority}", path, [(k, v) for k, v in query if k not in _SECRET])
