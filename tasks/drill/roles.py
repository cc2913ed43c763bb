"""The restore role (SPEC §7): a drill (and a backup's ``restore_test``) restores as a login role that is not a
superuser and owns only the scratch database, so a backup cannot run programs or read files on the drill host
(``COPY ... TO PROGRAM`` in a function a materialized view calls, say); a dump that needs superuser powers
fails ``restore``, saying so. The role is created with the scratch database and dropped with it.

This module imports nothing of :mod:`tasks.backups`, which uses it for ``restore_test``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field

import psycopg
from psycopg.conninfo import make_conninfo

from tasks.drill.sql import alter_database_owner, create_restore_role, drop_role, grant_role_to_current_user

RESTORE_ROLE_PREFIX = "opsflow_restore_"
_DB_PREFIX = "opsflow_drill_"
_MAX_IDENTIFIER = 63
_CONNECT_TIMEOUT_SECONDS = 10

# What PostgreSQL says when a non-superuser may not do what the dump asks.
_NEEDS_SUPERUSER = re.compile(
    r"permission denied|must be (?:a )?superuser|must be owner|must have (?:privileges|admin|the \w+)|"
    r"only superusers?|superuser",
    re.IGNORECASE,
)


def restore_role_name(database: str) -> str:
    """The restore role of scratch database ``database`` (one role per scratch database).

    >>> restore_role_name("opsflow_drill_orders_20261122060000")
    'opsflow_restore_orders_20261122060000'
    >>> len(restore_role_name("opsflow_drill_" + "x" * 34 + "_20261122060000"))
    63
    """
    rest = database.removeprefix(_DB_PREFIX)
    name = RESTORE_ROLE_PREFIX + rest
    if len(name) <= _MAX_IDENTIFIER:
        return name
    digest = hashlib.sha256(database.encode()).hexdigest()[:8]
    stamp = rest[-14:] if rest[-14:].isdigit() else ""
    keep = _MAX_IDENTIFIER - len(RESTORE_ROLE_PREFIX) - len(digest) - 1 - (len(stamp) + 1 if stamp else 0)
    return RESTORE_ROLE_PREFIX + rest[:keep] + "_" + digest + (f"_{stamp}" if stamp else "")


@dataclass(frozen=True)
class RestoreRole:
    """A login role owning only its scratch database; its password (random, per drill) is never shown."""

    name: str
    password: str = field(repr=False)

    def conninfo(self, server_url: str, database: str) -> str:
        """A conninfo for exactly ``database`` on the server of ``server_url``, as this role: ``dbname``,
        ``user`` and ``password`` override whatever the URL (its query parameters, a service file) says."""
        return make_conninfo(server_url, dbname=database, user=self.name, password=self.password)


def create_role_owning(admin_url: str, database: str) -> RestoreRole:
    """Create the restore role of ``database`` (NOSUPERUSER NOCREATEDB NOCREATEROLE) and make it the owner."""
    role = RestoreRole(name=restore_role_name(database), password=secrets.token_urlsafe(32))
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_SECONDS) as conn:
        # Hashed here: the password itself never reaches the server (nor its statement log).
        verifier = conn.pgconn.encrypt_password(role.password.encode(), role.name.encode()).decode()
        conn.execute(drop_role(role.name))  # a half-made attempt's, before a retry
        conn.execute(create_restore_role(role.name, verifier))
        try:
            conn.execute(alter_database_owner(database, role.name))
        except psycopg.errors.InsufficientPrivilege:
            # A CREATEROLE (not superuser) drill server account must be able to SET ROLE to the new owner.
            conn.execute(grant_role_to_current_user(role.name))
            conn.execute(alter_database_owner(database, role.name))
    return role


def drop_role_of(conn: psycopg.Connection, database: str) -> None:
    """Drop the restore role of ``database`` (after the database), if it exists."""
    conn.execute(drop_role(restore_role_name(database)))


def needs_superuser(stderr: str) -> str | None:
    """The server's error when ``pg_restore`` failed for want of superuser powers, else None."""
    for line in stderr.splitlines():
        _, found, message = line.partition("ERROR:")
        if found and _NEEDS_SUPERUSER.search(message):
            return message.strip()
    return None
