"""The drill's SQL, in one place: what a drill runs on a drill server (create, comment on, find and drop its
own scratch databases) and on the restored scratch database (tables and their rows, read-only checks).

None of it touches the ops store (its SQL is in :mod:`opsflow.store`). Names go in as identifiers, values
as parameters or literals; the operator's own ``sql:`` checks run as written, read-only. The guard that
only scratch databases are created or dropped is in :mod:`tasks.drill.targets`, before any connection.
"""

from __future__ import annotations

from psycopg import sql

# -- on a drill server (a maintenance connection, autocommit) --------------------------------------------

# Does the database (a parameter: its name) exist?
DATABASE_EXISTS = "select 1 from pg_database where datname = %s"

# Databases whose name starts with a prefix (a parameter): name, and the comment a drill left.
SCRATCH_DATABASES = """select d.datname, shobj_description(d.oid, 'pg_database')
               from pg_database d where starts_with(d.datname, %s) order by 1"""

# Roles whose name starts with a prefix (a parameter).
RESTORE_ROLES = "select rolname from pg_roles where starts_with(rolname, %s) order by 1"


def create_database(name: str) -> sql.Composed:
    """A clean scratch database ``name`` (from ``template0``)."""
    return sql.SQL("create database {} template template0").format(sql.Identifier(name))


def comment_on_database(name: str, comment: str) -> sql.Composed:
    """Leave ``comment`` (the drill's JSON marker) on database ``name``."""
    return sql.SQL("comment on database {} is {}").format(sql.Identifier(name), sql.Literal(comment))


def drop_database(name: str) -> sql.Composed:
    """Drop database ``name`` if it exists, ending its connections."""
    return sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))


# -- on the restored scratch database ----------------------------------------------------------------------

# The table a configured name (a parameter) resolves to, quoted as needed; NULL when there is none.
TABLE_REGCLASS = "select to_regclass(%s)::text"

# Before an operator's ``sql:`` check, in its own transaction.
READ_ONLY = "set transaction read only"


def count_rows_of(regclass: str) -> sql.Composed:
    """The exact row count of a table named by :data:`TABLE_REGCLASS`'s answer (already quoted)."""
    return sql.SQL("select count(*) from {}").format(sql.SQL(regclass))


# -- the restore role (on a drill server or an embedded target, a maintenance connection) --------------------


def create_restore_role(name: str, verifier: str) -> sql.Composed:
    """A login role without any power beyond what it owns; ``verifier`` is its hashed password."""
    return sql.SQL(
        "create role {} login nosuperuser nocreatedb nocreaterole noinherit noreplication nobypassrls password {}"
    ).format(sql.Identifier(name), sql.Literal(verifier))


def alter_database_owner(database: str, role: str) -> sql.Composed:
    return sql.SQL("alter database {} owner to {}").format(sql.Identifier(database), sql.Identifier(role))


def grant_role_to_current_user(role: str) -> sql.Composed:
    """Let the drill server's account act for ``role`` (so it may hand it the scratch database)."""
    return sql.SQL("grant {} to current_user").format(sql.Identifier(role))


def drop_role(name: str) -> sql.Composed:
    return sql.SQL("drop role if exists {}").format(sql.Identifier(name))
